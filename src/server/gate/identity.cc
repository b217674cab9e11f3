#include "src/server/gate/identity.h"

#include <arpa/inet.h>

namespace kms::server {

namespace {

bool IsIpAddress(const std::string& s) {
  unsigned char buf[16];
  return inet_pton(AF_INET, s.c_str(), buf) == 1 || inet_pton(AF_INET6, s.c_str(), buf) == 1;
}

}  // namespace

SanKind ClassifySan(const std::string& san) {
  if (IsIpAddress(san)) return SanKind::kIp;
  if (san.find("://") != std::string::npos || san.find(':') != std::string::npos) {
    return SanKind::kUri;
  }
  if (san.find('@') != std::string::npos) return SanKind::kEmail;
  return SanKind::kDns;
}

std::string SpiffeIdOf(const std::vector<std::string>& uri_sans) {
  if (uri_sans.size() != 1 || uri_sans[0].rfind("spiffe://", 0) != 0) return "";
  return uri_sans[0];
}

std::string IdentityOf(const CertificateNames& names) {
  if (!names.spiffe_id.empty()) return names.spiffe_id;
  if (!names.uri_sans.empty()) return "";
  if (!names.dns_sans.empty()) return names.dns_sans.front();
  return names.common_name.find("://") == std::string::npos ? names.common_name : "";
}

}  // namespace kms::server
