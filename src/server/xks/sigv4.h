// AWS Signature Version 4 verification (the AWS General Reference, "Signature Version 4
// signing process"; for XKS, aws-kms-xksproxy-api-spec v1.0.3 Appendix A): the
// canonical request, the string to sign, the signing key derived from a secret access
// key, and the check of an `Authorization: AWS4-HMAC-SHA256 ...` header, including the
// request time's skew window. The payload hash is always computed from the body
// received (an x-amz-content-sha256 header is never trusted).
//
// No transport here: the door hands in the request's method, path, query, header
// fields and body. Pure functions and an immutable verifier: thread-safe.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "kms/common/secret.h"
#include "kms/common/status.h"

namespace kms::server::xks {

struct SignedRequest {
  std::string_view method;  // "POST"
  std::string_view path;    // as sent, not percent-decoded
  std::string_view query;   // after '?', raw; empty when none
  std::span<const std::pair<std::string, std::string>> headers;  // names as sent
  std::string_view body;
};

// The parts of an Authorization header.
struct SigV4Authorization {
  std::string access_key_id;
  std::string date;     // YYYYMMDD of the credential scope
  std::string region;
  std::string service;
  std::vector<std::string> signed_headers;  // as listed (lower case, ';'-separated)
  std::string signature;                    // lower-case hex
};

// INVALID_ARGUMENT when `value` is not "AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/
// SERVICE/aws4_request, SignedHeaders=a;b, Signature=HEX".
absl::StatusOr<SigV4Authorization> ParseAuthorization(std::string_view value);

// Task 1: the canonical request over `signed_headers` (lower-case names). Every byte of
// the path but unreserved characters and '/' is percent-encoded (upper-case hex), so an
// already-encoded path is encoded again, as AWS does for every service but S3; query
// parameters are percent-decoded, re-encoded and sorted; header values are trimmed,
// inner runs of spaces collapsed, repeated fields joined with ','. NOT_FOUND when a
// signed header is missing from the request.
absl::StatusOr<std::string> CanonicalRequest(const SignedRequest& request,
                                             std::span<const std::string> signed_headers);
// Task 2.
std::string StringToSign(std::string_view amz_date, std::string_view scope,
                         std::string_view canonical_request);
// Task 3: hex HMAC-SHA-256 of `string_to_sign` under the key derived from `secret`
// (HMAC chain over "AWS4"+secret, date, region, service, "aws4_request").
std::string Signature(const SecretBytes& secret, std::string_view date, std::string_view region,
                      std::string_view service, std::string_view string_to_sign);

// Parses YYYYMMDD'T'HHMMSS'Z' (UTC) into Unix seconds; INVALID_ARGUMENT otherwise.
absl::StatusOr<int64_t> ParseAmzDate(std::string_view amz_date);

struct SigV4Credential {
  std::string access_key_id;
  SecretBytes secret_access_key;
};

class SigV4Verifier {
 public:
  struct Options {
    std::string region;   // the configured region; a request signed for another fails
    std::string service;  // "kms-xks-proxy"
    int64_t max_skew_seconds = 300;  // the specification: 5 minutes either way
  };

  // INVALID_ARGUMENT without credentials, with a duplicate access key id, or an empty
  // secret or region or service. Several credentials are accepted at once, so a pair
  // can be rotated without downtime.
  static absl::StatusOr<SigV4Verifier> Create(Options options,
                                              std::vector<SigV4Credential> credentials);

  // OK with the access key id that signed the request, when the Authorization header is
  // well formed, names a configured access key id, this region and service, signs
  // `host` and `x-amz-date` (and every header it lists exists), the date is within the
  // skew window of `now_unix` and the scope's date is the request date's, and the
  // signature matches (compared in constant time). UNAUTHENTICATED otherwise, with a
  // message that names which check failed and no secret.
  absl::StatusOr<std::string> Verify(const SignedRequest& request, int64_t now_unix) const;

  size_t credential_count() const { return credentials_.size(); }

 private:
  SigV4Verifier(Options options, std::vector<SigV4Credential> credentials)
      : options_(std::move(options)), credentials_(std::move(credentials)) {}
  Options options_;
  std::vector<SigV4Credential> credentials_;
};

}  // namespace kms::server::xks
