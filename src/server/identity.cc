#include "src/server/identity.h"

namespace kms::server {

namespace {
std::string First(const grpc::AuthContext& auth, const char* property) {
  for (const grpc::string_ref& v : auth.FindPropertyValues(property)) {
    return std::string(v.data(), v.size());
  }
  return "";
}
}  // namespace

std::string PeerIdentity(const grpc::AuthContext& auth) {
  if (!auth.IsPeerAuthenticated()) return "";
  // gRPC sets peer_spiffe_id only when the certificate has exactly one URI SAN.
  if (std::string spiffe = First(auth, "peer_spiffe_id"); !spiffe.empty()) return spiffe;
  for (const grpc::string_ref& v : auth.FindPropertyValues("x509_subject_alternative_name")) {
    std::string san(v.data(), v.size());
    if (san.find("://") == std::string::npos && san.find('@') == std::string::npos) return san;
  }
  return First(auth, "x509_common_name");
}

}  // namespace kms::server
