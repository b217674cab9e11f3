#include "src/server/identity.h"

#include <arpa/inet.h>

namespace kms::server {

namespace {

std::string First(const grpc::AuthContext& auth, const char* property) {
  for (const grpc::string_ref& v : auth.FindPropertyValues(property)) {
    return std::string(v.data(), v.size());
  }
  return "";
}

bool IsIpAddress(const std::string& s) {
  unsigned char buf[16];
  return inet_pton(AF_INET, s.c_str(), buf) == 1 || inet_pton(AF_INET6, s.c_str(), buf) == 1;
}

}  // namespace

std::string PeerIdentity(const grpc::AuthContext& auth) {
  if (!auth.IsPeerAuthenticated()) return "";
  // gRPC sets peer_spiffe_id only when the certificate has exactly one URI SAN.
  if (std::string spiffe = First(auth, "peer_spiffe_id"); !spiffe.empty()) return spiffe;
  // A certificate that carries URI SANs but no single SPIFFE id has no identity: falling
  // back to its DNS SAN or CN would let "CN=spiffe://..." pose as a SPIFFE id.
  std::string dns;
  for (const grpc::string_ref& v : auth.FindPropertyValues("x509_subject_alternative_name")) {
    std::string san(v.data(), v.size());
    if (san.find("://") != std::string::npos || (san.find(':') != std::string::npos && !IsIpAddress(san))) {
      return "";  // a URI SAN
    }
    if (dns.empty() && !IsIpAddress(san) && san.find('@') == std::string::npos) dns = san;
  }
  if (!dns.empty()) return dns;
  std::string cn = First(auth, "x509_common_name");
  return cn.find("://") == std::string::npos ? cn : "";
}

}  // namespace kms::server
