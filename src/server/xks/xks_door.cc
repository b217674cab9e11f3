#include "src/server/xks/xks_door.h"

#include <algorithm>
#include <chrono>
#include <optional>
#include <random>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"
#include "src/common/base64.h"
#include "src/common/log.h"
#include "src/common/strict_json.h"
#include "absl/strings/str_format.h"
#include "src/server/gate/call_record.h"
#include "src/server/gate/door_metrics.h"
#include "src/server/gate/public_status.h"

namespace kms::server::xks {
namespace {

using Json = nlohmann::json;

constexpr int kMaxJsonDepth = 8;
constexpr std::string_view kApiPath = "/kms/xks/v1/";

// The specification's error names (section "Error codes").
constexpr std::string_view kValidation = "ValidationException";
constexpr std::string_view kInvalidState = "InvalidStateException";
constexpr std::string_view kInvalidCiphertext = "InvalidCiphertextException";
constexpr std::string_view kInvalidKeyUsage = "InvalidKeyUsageException";
constexpr std::string_view kAuthenticationFailed = "AuthenticationFailedException";
constexpr std::string_view kAccessDenied = "AccessDeniedException";
constexpr std::string_view kKeyNotFound = "KeyNotFoundException";
constexpr std::string_view kInvalidUriPath = "InvalidUriPathException";
constexpr std::string_view kThrottling = "ThrottlingException";
constexpr std::string_view kUnsupported = "UnsupportedOperationException";
constexpr std::string_view kDependencyTimeout = "DependencyTimeoutException";
constexpr std::string_view kInternal = "InternalException";

// Printable ASCII only, at most `max` characters: safe in a log line and in the
// specification's errorMessage.
std::string Printable(std::string_view in, size_t max) {
  std::string out;
  for (char c : in) {
    if (out.size() >= max) break;
    out.push_back(c >= 0x20 && c <= 0x7e && c != '"' && c != '\\' ? c : '?');
  }
  return out;
}

std::string Str(const absl::Status& s) { return std::string(s.message()); }

}  // namespace

struct XksDoor::Outcome {
  http::Response response;
};

// The audit record of one request, and its scope once the request id is known.
struct XksDoor::Audit {
  CallRecord call;
  std::string method;  // the audit operation; `call.method` views it
  std::optional<CallScope> scope;
};

namespace {

// kmsRequestId when it is a plain id (UUID-like, at most 64 characters), else a new one.
std::string AuditRequestId(const std::string& kms_request_id) {
  const bool plain = !kms_request_id.empty() && kms_request_id.size() <= 64 &&
                     std::all_of(kms_request_id.begin(), kms_request_id.end(), [](char c) {
                       return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '-' ||
                              c == '.' || c == '_';
                     });
  if (plain) return kms_request_id;
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return absl::StrFormat("xks-%016x", rng());
}

// The status code an XKS error stands for, for the audit record.
absl::StatusCode CodeFor(const std::string& error_name) {
  static const std::pair<std::string_view, absl::StatusCode> kCodes[] = {
      {"", absl::StatusCode::kOk},
      {"ValidationException", absl::StatusCode::kInvalidArgument},
      {"InvalidStateException", absl::StatusCode::kFailedPrecondition},
      {"InvalidCiphertextException", absl::StatusCode::kInvalidArgument},
      {"InvalidKeyUsageException", absl::StatusCode::kFailedPrecondition},
      {"AuthenticationFailedException", absl::StatusCode::kUnauthenticated},
      {"AccessDeniedException", absl::StatusCode::kPermissionDenied},
      {"KeyNotFoundException", absl::StatusCode::kNotFound},
      {"InvalidUriPathException", absl::StatusCode::kNotFound},
      {"ThrottlingException", absl::StatusCode::kResourceExhausted},
      {"UnsupportedOperationException", absl::StatusCode::kUnimplemented},
      {"DependencyTimeoutException", absl::StatusCode::kUnavailable},
  };
  for (const auto& [name, code] : kCodes) {
    if (name == error_name) return code;
  }
  return absl::StatusCode::kInternal;
}

}  // namespace

http::Response XksError(int http_status, std::string_view error_name, std::string_view message) {
  Json body = {{"errorName", std::string(error_name)}};
  if (!message.empty()) body["errorMessage"] = Printable(message, 511);
  return http::Response{.status = http_status,
                        .content_type = "application/json",
                        .body = body.dump()};
}

http::Response XksDoor::DeadlineResponse() {
  return XksError(503, kDependencyTimeout, "the key manager did not answer within the latency budget");
}

http::Response XksDoor::BusyResponse() {
  http::Response r = XksError(429, kThrottling, "too many requests in flight; retry");
  r.headers.emplace_back("Retry-After", "1");
  return r;
}

XksDoor::XksDoor(keys::KeyManager& keys, const CallGate& gate, SigV4Verifier verifier,
                 const Clock& clock, XksDoorOptions options)
    : keys_(keys),
      gate_(gate),
      verifier_(std::move(verifier)),
      clock_(clock),
      options_(std::move(options)) {}

namespace {

// The request body after its JSON was read: typed access with the spec's error names.
class Body {
 public:
  explicit Body(const Json& json) : json_(json) {}

  // A required or optional string member. A present member of another type is a
  // ValidationException.
  absl::StatusOr<std::optional<std::string>> String(const Json& obj, std::string_view key) const {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return std::optional<std::string>();
    if (!it->is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(std::string(key), " must be a string"));
    }
    return std::optional<std::string>(it->get<std::string>());
  }

  const Json& json() const { return json_; }

 private:
  const Json& json_;
};

struct Failure {
  int status;
  std::string_view name;
  std::string message;
};

// Maps a gate refusal to the specification's error.
Failure GateFailure(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kResourceExhausted:
      return {429, kThrottling, Str(s)};
    case absl::StatusCode::kFailedPrecondition:
      return {400, kInvalidKeyUsage, Str(s)};
    case absl::StatusCode::kPermissionDenied:
      return {403, kAccessDenied, Str(s)};
    default:
      return {500, kInternal, PublicMessage(s, "xks gate")};
  }
}

// Maps a domain error to the specification's error. `decrypting`: an INVALID_ARGUMENT is
// the uniform "decryption failed" (InvalidCiphertextException).
Failure DomainFailure(const absl::Status& s, bool decrypting, std::string_view operation) {
  switch (s.code()) {
    case absl::StatusCode::kNotFound:
      return {404, kKeyNotFound, "the external key was not found"};
    case absl::StatusCode::kInvalidArgument:
      return decrypting ? Failure{400, kInvalidCiphertext,
                                  "the ciphertext, IV, tag, metadata or AAD is invalid or does not match"}
                        : Failure{400, kValidation, Str(s)};
    case absl::StatusCode::kFailedPrecondition:
      // A shredded key, or a ciphertext under a retired key version.
      return {400, kInvalidState, Str(s)};
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
      return {503, kDependencyTimeout, PublicMessage(s, operation)};
    case absl::StatusCode::kResourceExhausted:
      return {429, kThrottling, PublicMessage(s, operation)};
    default:
      return {500, kInternal, PublicMessage(s, operation)};
  }
}

bool ValidKeyId(std::string_view id) {
  if (id.empty() || id.size() > kMaxKeyIdBytes) return false;
  for (char c : id) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.' && c != '_') {
      return false;
    }
  }
  return true;
}

}  // namespace

XksDoor::Outcome XksDoor::Serve(const http::Request& request, XksRequestRecord& record,
                                Audit& audit) const {
  const auto fail = [&](int status, std::string_view name, absl::string_view message) {
    record.error_name = std::string(name);
    return Outcome{XksError(status, name, std::string_view(message.data(), message.size()))};
  };
  const auto fail_with = [&](const Failure& f) { return fail(f.status, f.name, f.message); };

  // 1. Authentication: nothing else is looked at before the signature verifies.
  const SignedRequest signed_request{.method = request.method,
                                     .path = request.path,
                                     .query = request.query,
                                     .headers = request.headers,
                                     .body = request.body};
  absl::StatusOr<std::string> access_key = verifier_.Verify(signed_request, clock_.UnixSeconds());
  if (!access_key.ok()) {
    spdlog::info("xks: authentication failed from {}: {}", request.peer_address,
                 Printable(std::string(access_key.status().message()), 200));
    return fail(401, kAuthenticationFailed, "the request signature did not verify");
  }
  record.access_key_id = *access_key;

  // 2. The URI: {prefix}/kms/xks/v1/health or .../keys/{id}/{operation}.
  std::string_view path = request.path;
  const std::string base = absl::StrCat(options_.uri_prefix, std::string(kApiPath));
  if (!path.starts_with(base)) return fail(404, kInvalidUriPath, "the URI path is not an XKS API path");
  path.remove_prefix(base.size());
  std::string key_id;
  if (path == "health") {
    record.operation = "health";
  } else if (path.starts_with("keys/")) {
    path.remove_prefix(5);
    size_t slash = path.find('/');
    if (slash == std::string_view::npos) return fail(404, kInvalidUriPath, "the URI path names no operation");
    key_id = std::string(path.substr(0, slash));
    std::string_view op = path.substr(slash + 1);
    if (op != "metadata" && op != "encrypt" && op != "decrypt") {
      return fail(404, kInvalidUriPath, "unknown XKS operation");
    }
    record.operation = std::string(op);
    if (!ValidKeyId(key_id)) return fail(404, kInvalidUriPath, "the external key id is malformed");
    record.key_id = key_id;
  } else {
    return fail(404, kInvalidUriPath, "the URI path is not an XKS API path");
  }
  if (request.method != "POST") return fail(405, kValidation, "XKS APIs take POST");

  // 3. The body.
  absl::StatusOr<Json> parsed = ParseStrictJson(request.body, "request", kMaxJsonDepth);
  if (!parsed.ok() || !parsed->is_object()) return fail(400, kValidation, "the body is not a JSON object");
  const Json& root = *parsed;
  Body body(root);
  auto meta = root.find("requestMetadata");
  if (meta == root.end() || !meta->is_object()) {
    return fail(400, kValidation, "requestMetadata is required");
  }
  auto md = [&](std::string_view key, bool required, std::string* out) -> absl::Status {
    KMS_ASSIGN_OR_RETURN(std::optional<std::string> v, body.String(*meta, key));
    if (!v && required) {
      return absl::InvalidArgumentError(absl::StrCat("requestMetadata.", std::string(key), " is required"));
    }
    if (v && v->size() > kMaxArnBytes) {
      return absl::InvalidArgumentError(absl::StrCat("requestMetadata.", std::string(key), " is too long"));
    }
    if (v) *out = std::move(*v);
    return absl::OkStatus();
  };
  const bool key_op = record.operation != "health";
  std::string kms_key_arn;
  for (absl::Status s : {md("kmsOperation", true, &record.kms_operation),
                         md("kmsRequestId", true, &record.kms_request_id),
                         md("awsPrincipalArn", key_op, &record.aws_principal_arn),
                         md("kmsKeyArn", false, &kms_key_arn)}) {
    if (!s.ok()) return fail(400, kValidation, s.message());
  }

  // From here the call may reach the gate: it is audited under the KMS request id.
  if (record.operation != "health") {
    audit.call.request_id = AuditRequestId(record.kms_request_id);
    audit.method = absl::StrCat(record.operation == "metadata"  ? "XksGetKeyMetadata"
                                : record.operation == "encrypt" ? "XksEncrypt"
                                                                : "XksDecrypt",
                                ":", Printable(record.kms_operation, 64));
    audit.call.method = audit.method;
    audit.scope.emplace(&audit.call);
  }

  // 4. The operation.
  if (record.operation == "health") {
    // Excluded from secondary authorization by the specification: the signature is the check.
    EkmHealth health = options_.backend_health ? options_.backend_health() : EkmHealth::kActive;
    if (!options_.health_key.empty() && health != EkmHealth::kUnavailable) {
      absl::StatusOr<keys::TenantId> probe = keys::TenantId::Parse(options_.health_key);
      static constexpr uint8_t kProbe[] = {'x', 'k', 's', '-', 'h', 'e', 'a', 'l', 't', 'h'};
      absl::Status round_trip = probe.status();
      if (round_trip.ok()) {
        absl::StatusOr<keys::RawCiphertext> sealed = keys_.RawEncrypt(*probe, {}, kProbe);
        round_trip = sealed.status();
        if (sealed.ok()) {
          round_trip = keys_.RawDecrypt(*probe, {},
                                        keys::RawCiphertextView{.iv = sealed->iv,
                                                                .ciphertext = sealed->ciphertext,
                                                                .tag = sealed->tag,
                                                                .metadata = sealed->metadata})
                           .status();
        }
      }
      if (!round_trip.ok()) {
        spdlog::warn("xks: health round trip on the health key failed: {}", round_trip.ToString());
        health = EkmHealth::kUnavailable;
      }
    }
    const char* status = health == EkmHealth::kActive     ? "ACTIVE"
                         : health == EkmHealth::kDegraded ? "DEGRADED"
                                                          : "UNAVAILABLE";
    Json out = {{"xksProxyFleetSize", 1},
                {"xksProxyVendor", "kmsd"},
                {"xksProxyModel", absl::StrCat("kmsd XKS proxy ", options_.version)},
                {"ekmVendor", "kmsd"},
                {"ekmFleetDetails",
                 Json::array({{{"id", options_.node_id.empty() ? "kmsd" : options_.node_id},
                               {"model", absl::StrCat("kmsd ", options_.version, " (PKCS#11 HSM)")},
                               {"healthStatus", status}}})}};
    return Outcome{http::Response{.content_type = "application/json", .body = out.dump()}};
  }

  absl::StatusOr<keys::TenantId> tenant = keys::TenantId::Parse(key_id);
  if (!tenant.ok()) return fail(404, kKeyNotFound, "the external key was not found");

  if (record.operation == "metadata") {
    if (absl::Status s = gate_.Admit(options_.identity, authz::Operation::kGetTenant, key_id); !s.ok()) {
      return fail_with(GateFailure(s));
    }
    absl::StatusOr<keys::TenantInfo> info = keys_.GetTenant(*tenant);
    if (!info.ok()) return fail_with(DomainFailure(info.status(), false, "xks metadata"));
    const authz::KeyUsage usage = gate_.UsageOf(key_id);
    Json key_usage = Json::array();
    if (usage.encrypt) key_usage.push_back("ENCRYPT");
    if (usage.decrypt) key_usage.push_back("DECRYPT");
    const bool enabled = info->tenant.state == store::TenantState::kActive;
    Json out = {{"keySpec", "AES_256"},
                {"keyUsage", key_usage},
                {"keyStatus", enabled ? "ENABLED" : "DISABLED"}};
    return Outcome{http::Response{.content_type = "application/json", .body = out.dump()}};
  }

  // Encrypt and decrypt share these fields.
  auto base64_field = [&](std::string_view key, bool required,
                          std::optional<std::vector<uint8_t>>* out) -> absl::Status {
    KMS_ASSIGN_OR_RETURN(std::optional<std::string> text, body.String(root, key));
    if (!text) {
      if (required) return absl::InvalidArgumentError(absl::StrCat(std::string(key), " is required"));
      return absl::OkStatus();
    }
    absl::StatusOr<std::vector<uint8_t>> bytes = Base64Decode(*text);
    if (!bytes.ok()) return absl::InvalidArgumentError(absl::StrCat(std::string(key), " is not Base64"));
    *out = std::move(*bytes);
    return absl::OkStatus();
  };
  std::optional<std::string> algorithm;
  {
    absl::StatusOr<std::optional<std::string>> a = body.String(root, "encryptionAlgorithm");
    if (!a.ok()) return fail(400, kValidation, a.status().message());
    if (!*a) return fail(400, kValidation, "encryptionAlgorithm is required");
    algorithm = **a;
  }
  if (*algorithm != "AES_GCM") return fail(501, kUnsupported, "only AES_GCM is supported");
  std::optional<std::vector<uint8_t>> aad;
  if (absl::Status s = base64_field("additionalAuthenticatedData", false, &aad); !s.ok()) {
    return fail(400, kValidation, s.message());
  }
  if (aad && aad->size() > kMaxAadBytes) {
    return fail(501, kUnsupported, "additionalAuthenticatedData is over 8192 bytes");
  }
  const std::span<const uint8_t> aad_bytes = aad ? std::span<const uint8_t>(*aad) : std::span<const uint8_t>();

  if (record.operation == "encrypt") {
    std::optional<std::vector<uint8_t>> plaintext;
    if (absl::Status s = base64_field("plaintext", true, &plaintext); !s.ok()) {
      return fail(400, kValidation, s.message());
    }
    if (plaintext->size() > kMaxPlaintextBytes) return fail(501, kUnsupported, "plaintext is over 4300 bytes");
    bool want_cdiv = false;
    {
      absl::StatusOr<std::optional<std::string>> a =
          body.String(root, "ciphertextDataIntegrityValueAlgorithm");
      if (!a.ok()) return fail(400, kValidation, a.status().message());
      if (*a) {
        if (**a != "SHA_256") {
          return fail(400, kValidation, "ciphertextDataIntegrityValueAlgorithm must be SHA_256");
        }
        want_cdiv = true;
      }
    }
    if (absl::Status s = gate_.Admit(options_.identity, authz::Operation::kEncrypt, key_id); !s.ok()) {
      return fail_with(GateFailure(s));
    }
    absl::StatusOr<keys::RawCiphertext> sealed =
        keys_.RawEncrypt(*tenant, aad_bytes, *plaintext, want_cdiv);
    std::fill(plaintext->begin(), plaintext->end(), 0);
    if (!sealed.ok()) return fail_with(DomainFailure(sealed.status(), false, "xks encrypt"));
    Json out = {{"ciphertext", Base64Encode(sealed->ciphertext)},
                {"ciphertextMetadata", Base64Encode(sealed->metadata)},
                {"initializationVector", Base64Encode(sealed->iv)},
                {"authenticationTag", Base64Encode(sealed->tag)}};
    if (want_cdiv) out["ciphertextDataIntegrityValue"] = Base64Encode(sealed->integrity_value);
    record.key_versions = absl::StrCat("dek:", sealed->dek_version);
    return Outcome{http::Response{.content_type = "application/json", .body = out.dump()}};
  }

  // decrypt
  std::optional<std::vector<uint8_t>> ciphertext, metadata, iv, tag;
  for (absl::Status s : {base64_field("ciphertext", true, &ciphertext),
                         base64_field("ciphertextMetadata", false, &metadata),
                         base64_field("initializationVector", true, &iv),
                         base64_field("authenticationTag", true, &tag)}) {
    if (!s.ok()) return fail(400, kValidation, s.message());
  }
  if (ciphertext->size() > kMaxCiphertextBytes) return fail(501, kUnsupported, "ciphertext is over 4300 bytes");
  if (metadata && metadata->size() > kMaxMetadataBytes) {
    return fail(400, kValidation, "ciphertextMetadata is over 20 bytes");
  }
  if (iv->size() != 12 && iv->size() != 16) {
    return fail(400, kInvalidCiphertext, "initializationVector must be 12 or 16 bytes");
  }
  if (tag->size() != 16) return fail(400, kInvalidCiphertext, "authenticationTag must be 16 bytes");
  if (absl::Status s = gate_.Admit(options_.identity, authz::Operation::kDecrypt, key_id); !s.ok()) {
    return fail_with(GateFailure(s));
  }
  absl::StatusOr<keys::DecryptResult> opened = keys_.RawDecrypt(
      *tenant, aad_bytes,
      keys::RawCiphertextView{.iv = *iv,
                              .ciphertext = *ciphertext,
                              .tag = *tag,
                              .metadata = metadata ? std::span<const uint8_t>(*metadata)
                                                   : std::span<const uint8_t>()});
  if (!opened.ok()) return fail_with(DomainFailure(opened.status(), true, "xks decrypt"));
  record.key_versions = absl::StrCat("dek:", opened->dek_version);
  Json out = {{"plaintext", Base64Encode(std::span<const uint8_t>(
                                reinterpret_cast<const uint8_t*>(opened->plaintext.data()),
                                opened->plaintext.size()))}};
  std::fill(opened->plaintext.begin(), opened->plaintext.end(), '\0');
  return Outcome{http::Response{.content_type = "application/json", .body = out.dump()}};
}

http::Response XksDoor::Handle(const http::Request& request) const {
  const auto started = std::chrono::steady_clock::now();
  XksRequestRecord record{.operation = "unknown"};
  Audit audit;
  Outcome outcome = Serve(request, record, audit);
  record.http_status = outcome.response.status;
  if (audit.call.gate != nullptr) {
    // Per AWS principal and KMS operation, so the aggregated audit records say who used
    // the key for what.
    audit.call.identity = absl::StrCat(audit.call.identity, " as ",
                                       Printable(record.aws_principal_arn, kMaxArnBytes));
    audit.call.key_versions = record.key_versions;
    const absl::StatusCode code = CodeFor(record.error_name);
    audit.call.gate
        ->Report(audit.call, code == absl::StatusCode::kOk ? absl::OkStatus()
                                                           : absl::Status(code, record.error_name))
        .IgnoreError();  // data-plane records never fail the call
  }
  record.latency_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
  static constexpr DoorMetricNames kMetrics{
      .requests_total = "kmsd_xks_requests_total",
      .requests_help = "XKS proxy API requests, by operation and the specification's error name "
                       "(\"none\" on success).",
      .duration_seconds = "kmsd_xks_request_duration_seconds",
      .duration_help = "Time from a received XKS request to its answer, by operation.",
      .operation_label = "operation",
      .outcome_label = "error"};
  RecordDoorRequest(metrics_, kMetrics, record.operation,
                    record.error_name.empty() ? "none" : record.error_name,
                    record.latency_ms / 1000.0);
  if (recorder_) {
    recorder_(record);
  } else {
    LogEvent(spdlog::level::info, "xks_request",
             {{"operation", record.operation},
              {"key", record.key_id},
              {"aws_principal_arn", Printable(record.aws_principal_arn, kMaxArnBytes)},
              {"kms_operation", Printable(record.kms_operation, 128)},
              {"kms_request_id", Printable(record.kms_request_id, 128)},
              {"access_key_id", Printable(record.access_key_id, 64)},
              {"identity", options_.identity},
              {"result", record.error_name.empty() ? "ok" : record.error_name},
              {"http_status", std::to_string(record.http_status)},
              {"latency_ms", absl::StrFormat("%.2f", record.latency_ms)}});
  }
  audit.scope.reset();
  return std::move(outcome.response);
}

}  // namespace kms::server::xks
