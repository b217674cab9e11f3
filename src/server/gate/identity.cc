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

bool IsValidSpiffeId(std::string_view id) {
  constexpr std::string_view kScheme = "spiffe://";
  if (id.size() > 2048 || id.substr(0, kScheme.size()) != kScheme) return false;
  std::string_view rest = id.substr(kScheme.size());
  const size_t slash = rest.find('/');
  const std::string_view domain = rest.substr(0, slash);
  if (domain.empty() || domain.size() > 255) return false;
  for (char c : domain) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_')) {
      return false;
    }
  }
  if (slash == std::string_view::npos) return true;
  std::string_view path = rest.substr(slash);  // "/seg/seg"
  while (!path.empty()) {
    path.remove_prefix(1);  // the '/'
    const size_t next = path.find('/');
    const std::string_view segment = path.substr(0, next);
    if (segment.empty() || segment == "." || segment == "..") return false;
    for (char c : segment) {
      if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '.' || c == '-' || c == '_')) {
        return false;
      }
    }
    if (next == std::string_view::npos) break;
    path.remove_prefix(next);
  }
  return true;
}

std::string SpiffeIdOf(const std::vector<std::string>& uri_sans) {
  if (uri_sans.size() != 1 || !IsValidSpiffeId(uri_sans[0])) return "";
  return uri_sans[0];
}

std::string IdentityOf(const CertificateNames& names) {
  if (!names.spiffe_id.empty()) return names.spiffe_id;
  if (!names.uri_sans.empty()) return "";
  if (!names.dns_sans.empty()) return names.dns_sans.front();
  return names.common_name.find("://") == std::string::npos ? names.common_name : "";
}

}  // namespace kms::server
