// The dev mode's PKI: a throwaway CA that issues the server certificate and client
// certificates for mTLS. EC P-256 keys, SHA-256 signatures, random 128-bit serials,
// subject and authority key identifiers. Not for production: no revocation, no HSM.
//
// Issued by CreateCa: basicConstraints CA:TRUE (critical), keyUsage keyCertSign+cRLSign.
// Leaves: basicConstraints CA:FALSE (critical), keyUsage digitalSignature, and
//   server: SAN DNS + IP, extendedKeyUsage serverAuth, CN = first DNS name;
//   client: SAN URI (a SPIFFE id, the identity kmsd authorizes), extendedKeyUsage
//           clientAuth, CN = common_name.
// Certificates start 5 minutes in the past, to tolerate clock skew.
//
// Errors: INVALID_ARGUMENT for bad inputs (names, days, PEM), INTERNAL for OpenSSL
// failures. All functions are thread-safe.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kms/common/secret.h"
#include "kms/common/status.h"

namespace kms::dev {

struct IssuedCert {
  std::string cert_pem;     // one PEM certificate
  kms::SecretBytes key_pem;  // its unencrypted PKCS#8 PEM private key
};

// `days` is 1..36500 everywhere.
absl::StatusOr<IssuedCert> CreateCa(std::string_view common_name, int days);

// `dns_names` must not be empty; `ips` are IPv4 or IPv6 literals.
absl::StatusOr<IssuedCert> IssueServerCert(const IssuedCert& ca,
                                           std::vector<std::string> dns_names,
                                           std::vector<std::string> ips, int days);

// `spiffe_uri` must start with "spiffe://".
absl::StatusOr<IssuedCert> IssueClientCert(const IssuedCert& ca, std::string_view common_name,
                                           std::string_view spiffe_uri, int days);

// For tests of what kmsd refuses: a client certificate (clientAuth, signed by `ca`) with
// any URI SANs (none, one, several; no DNS or IP SAN), any CN, and a validity given as
// offsets from now in seconds (both in the past: an expired certificate).
struct TestClientCert {
  std::string common_name;
  std::vector<std::string> uri_sans;
  int64_t not_before_offset_seconds = -300;
  int64_t not_after_offset_seconds = 86400;
};
absl::StatusOr<IssuedCert> IssueTestClientCert(const IssuedCert& ca, const TestClientCert& spec);

// Writes `data` to `path` atomically: a temporary file in the same directory, created
// (O_CREAT|O_EXCL) with `mode` so it is never more open than `mode`, then fsync,
// rename over `path`, fsync of the directory. The final mode is exactly `mode`
// (the umask can only narrow it at creation; it is then set to `mode` on the fd).
absl::Status WriteFileAtomic(const std::string& path, std::span<const uint8_t> data,
                             mode_t mode);
absl::Status WriteFileAtomic(const std::string& path, std::string_view data, mode_t mode);

// Writes the certificate (mode 0644) and the key (mode 0600), each atomically.
absl::Status WriteIssued(const IssuedCert& issued, const std::string& cert_path,
                         const std::string& key_path);

// Reads back what WriteIssued wrote (e.g. to reuse the dev CA), checking that both
// parse and that the key belongs to the certificate. NOT_FOUND for a missing file.
absl::StatusOr<IssuedCert> LoadIssued(const std::string& cert_path, const std::string& key_path);

}  // namespace kms::dev
