#include "src/cli/key_views.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <sstream>

namespace kms::cli {

using nlohmann::json;

std::string Rfc3339(int64_t unix_seconds) {
  if (unix_seconds == 0) return "-";
  const std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  if (gmtime_r(&t, &tm) == nullptr) return std::to_string(unix_seconds);
  char buf[32];
  if (std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
    return std::to_string(unix_seconds);
  }
  return buf;
}

std::string Age(int64_t seconds) {
  if (seconds < 0) seconds = 0;
  const int64_t d = seconds / 86400, h = seconds % 86400 / 3600, m = seconds % 3600 / 60,
                s = seconds % 60;
  if (d > 0) return std::to_string(d) + "d " + std::to_string(h) + "h";
  if (h > 0) return std::to_string(h) + "h " + std::to_string(m) + "m";
  if (m > 0) return std::to_string(m) + "m " + std::to_string(s) + "s";
  return std::to_string(s) + "s";
}

json ListKeysJson(const v1::ListKeysResponse& resp) {
  json keks = json::array();
  for (const v1::KekKeyInfo& k : resp.keks()) {
    keks.push_back({{"version", k.version()},
                    {"state", k.state()},
                    {"primary", k.primary()},
                    {"created_at", Rfc3339(k.created_at_unix())},
                    {"created_at_unix", k.created_at_unix()},
                    {"age_seconds", k.age_seconds()},
                    {"wrap_mechanism", k.wrap_mechanism()},
                    {"deks_wrapped", k.deks_wrapped()},
                    {"jwt_keys_wrapped", k.jwt_keys_wrapped()}});
  }
  json tenants = json::array();
  for (const v1::TenantKeys& t : resp.tenants()) {
    json versions = json::array();
    for (const v1::DekVersionInfo& d : t.dek_versions()) {
      versions.push_back({{"version", d.version()},
                          {"state", d.state()},
                          {"primary", d.primary()},
                          {"created_at", Rfc3339(d.created_at_unix())},
                          {"created_at_unix", d.created_at_unix()},
                          {"age_seconds", d.age_seconds()},
                          {"encryptions", d.encryptions()},
                          {"kek_version", d.kek_version()}});
    }
    tenants.push_back({{"tenant_id", t.tenant_id()}, {"dek_versions", versions}});
  }
  return {{"keks", keks},
          {"tenants", tenants},
          {"next_page_token", resp.next_page_token()},
          {"kek_rotation_due_in_seconds", resp.kek_rotation_due_in_seconds()}};
}

std::string ListKeysText(const v1::ListKeysResponse& resp, bool with_keks) {
  std::ostringstream out;
  if (with_keks) out << "KEK versions:\n";
  for (const v1::KekKeyInfo& k : resp.keks()) {
    if (!with_keks) break;
    out << "  v" << k.version() << (k.primary() ? " (primary)" : "") << "  " << k.state()
        << "  created " << Rfc3339(k.created_at_unix()) << " (" << Age(k.age_seconds())
        << " ago)  " << k.wrap_mechanism() << "  wraps " << k.deks_wrapped() << " DEKs, "
        << k.jwt_keys_wrapped() << " JWT keys\n";
  }
  for (const v1::TenantKeys& t : resp.tenants()) {
    out << "tenant " << t.tenant_id() << ":\n";
    for (const v1::DekVersionInfo& d : t.dek_versions()) {
      out << "  DEK v" << d.version() << (d.primary() ? " (primary)" : "") << "  " << d.state()
          << "  created " << Rfc3339(d.created_at_unix()) << " (" << Age(d.age_seconds())
          << " ago)  " << d.encryptions() << " encryptions  KEK v" << d.kek_version() << "\n";
    }
  }
  if (!resp.next_page_token().empty()) {
    out << "next page: --page-token " << resp.next_page_token() << "\n";
  }
  return out.str();
}

std::string DefaultReceiptPath(const std::string& tenant_id) {
  return "shred-receipt-" + tenant_id + ".jws";
}

absl::Status WriteNewFile(const std::string& path, const std::string& contents) {
  // O_EXCL with O_CREAT fails on any existing path, a symbolic link included (even a
  // dangling one), so nothing is ever replaced or written through a link.
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    const int err = errno;
    if (err == EEXIST) {
      return absl::AlreadyExistsError(path + " exists; refusing to overwrite it");
    }
    return absl::InternalError("cannot create " + path + ": " + std::strerror(err));
  }
  size_t written = 0;
  while (written < contents.size()) {
    const ssize_t n = ::write(fd, contents.data() + written, contents.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      ::close(fd);
      ::unlink(path.c_str());
      return absl::InternalError("cannot write " + path + ": " + std::strerror(err));
    }
    written += static_cast<size_t>(n);
  }
  const int synced = ::fsync(fd);
  const int sync_err = errno;
  const int closed = ::close(fd);
  if (synced != 0 || closed != 0) {
    const int err = synced != 0 ? sync_err : errno;
    ::unlink(path.c_str());
    return absl::InternalError("cannot write " + path + ": " + std::strerror(err));
  }
  return absl::OkStatus();
}

}  // namespace kms::cli
