// AWS Signature Version 4 as the XKS door checks it (src/server/xks/sigv4.h; the AWS
// SigV4 specification): ParseAuthorization on the whole input, then a request built
// from the input's fields, verified by SigV4Verifier with the request's own
// Authorization header and with one signed correctly by the Signature() steps.
// Input layout (fuzz_util.h ByteReader fields): method (8), path (64), query (64),
// host (32), extra header name (16) and value (32), Authorization (200), then the body.
// Invariants: a parsed Authorization header is well formed (64 lower-case hex digits,
// lower-case signed headers) and parses again to the same parts from its canonical
// text; Verify answers only OK or UNAUTHENTICATED; a request signed with the configured
// secret verifies (unless a signed header is missing), and a changed body then does not.
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "src/server/xks/sigv4.h"
#include "tests/fuzz/fuzz_targets.h"
#include "tests/fuzz/fuzz_util.h"

namespace kms::fuzz {
namespace {

using server::xks::SignedRequest;
using server::xks::SigV4Authorization;
using server::xks::SigV4Verifier;

constexpr char kAccessKeyId[] = "AKIDFUZZ";
constexpr char kRegion[] = "us-east-1";
constexpr char kService[] = "kms-xks-proxy";
constexpr char kAmzDate[] = "20231114T221320Z";  // kFuzzNow (1700000000)
constexpr uint8_t kSecret[] = {'f', 'u', 'z', 'z', '-', 's', 'e', 'c', 'r', 'e', 't'};

const SigV4Verifier& Verifier() {
  static const SigV4Verifier* verifier = [] {
    std::vector<server::xks::SigV4Credential> credentials;
    credentials.push_back({kAccessKeyId, SecretBytes::CopyOf(std::span(kSecret))});
    auto made = SigV4Verifier::Create({.region = kRegion, .service = kService}, std::move(credentials));
    FUZZ_CHECK(made.ok());
    return new SigV4Verifier(std::move(*made));
  }();
  return *verifier;
}

std::string Text(const SigV4Authorization& a) {
  return absl::StrCat("AWS4-HMAC-SHA256 Credential=", a.access_key_id, "/", a.date, "/", a.region,
                      "/", a.service, "/aws4_request, SignedHeaders=",
                      absl::StrJoin(a.signed_headers, ";"), ", Signature=", a.signature);
}

void CheckParse(std::string_view value) {
  absl::StatusOr<SigV4Authorization> parsed = server::xks::ParseAuthorization(value);
  if (!parsed.ok()) {
    FUZZ_CHECK(parsed.status().code() == absl::StatusCode::kInvalidArgument);
    return;
  }
  FUZZ_CHECK(!parsed->access_key_id.empty());
  FUZZ_CHECK(parsed->signature.size() == 64);
  for (char c : parsed->signature) FUZZ_CHECK((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
  FUZZ_CHECK(!parsed->signed_headers.empty());
  for (const std::string& h : parsed->signed_headers) {
    FUZZ_CHECK(!h.empty());
    for (char c : h) FUZZ_CHECK(!(c >= 'A' && c <= 'Z'));
  }
  absl::StatusOr<SigV4Authorization> again = server::xks::ParseAuthorization(Text(*parsed));
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(again->access_key_id == parsed->access_key_id && again->date == parsed->date &&
             again->region == parsed->region && again->service == parsed->service &&
             again->signed_headers == parsed->signed_headers &&
             again->signature == parsed->signature);
}

// Verify with `authorization` in front of the request's other headers.
absl::StatusOr<std::string> VerifyWith(const SignedRequest& base,
                                       std::vector<std::pair<std::string, std::string>> headers,
                                       std::string authorization, std::string_view body) {
  headers.insert(headers.begin(), {"Authorization", std::move(authorization)});
  SignedRequest request = base;
  request.headers = headers;
  request.body = body;
  absl::StatusOr<std::string> verified = Verifier().Verify(request, kFuzzNow);
  FUZZ_CHECK(verified.ok() || verified.status().code() == absl::StatusCode::kUnauthenticated);
  return verified;
}

}  // namespace

int FuzzSigV4(const uint8_t* data, size_t size) {
  CheckParse(AsText({data, size}));

  ByteReader r(data, size);
  const std::string method(r.Field(8));
  const std::string path(r.Field(64));
  const std::string query(r.Field(64));
  const std::string host(r.Field(32));
  const std::string extra_name(r.Field(16));
  const std::string extra_value(r.Field(32));
  const std::string fuzzed_authorization(r.Field(200));
  const std::string body(AsText(r.Rest()));
  CheckParse(fuzzed_authorization);

  std::vector<std::pair<std::string, std::string>> headers = {{"Host", host},
                                                              {"X-Amz-Date", kAmzDate}};
  if (!extra_name.empty()) headers.emplace_back(extra_name, extra_value);
  const SignedRequest base{.method = method, .path = path, .query = query, .body = body};
  VerifyWith(base, headers, fuzzed_authorization, body).IgnoreError();

  // Signed as a client following the specification signs it.
  const std::vector<std::string> signed_headers = {"host", "x-amz-date"};
  SignedRequest to_sign = base;
  to_sign.headers = headers;
  absl::StatusOr<std::string> canonical = server::xks::CanonicalRequest(to_sign, signed_headers);
  if (!canonical.ok()) return 0;
  const std::string date(kAmzDate, 8);
  const std::string scope = absl::StrCat(date, "/", kRegion, "/", kService, "/aws4_request");
  const std::string signature =
      server::xks::Signature(SecretBytes::CopyOf(std::span(kSecret)), date, kRegion, kService,
                             server::xks::StringToSign(kAmzDate, scope, *canonical));
  const std::string authorization =
      absl::StrCat("AWS4-HMAC-SHA256 Credential=", kAccessKeyId, "/", scope,
                   ", SignedHeaders=host;x-amz-date, Signature=", signature);
  absl::StatusOr<std::string> verified = VerifyWith(base, headers, authorization, body);
  FUZZ_CHECK(verified.ok() && *verified == kAccessKeyId);
  const std::string changed = body + "x";
  FUZZ_CHECK(!VerifyWith(base, headers, authorization, changed).ok());
  return 0;
}

}  // namespace kms::fuzz
