#include "src/server/vault/vault_door.h"

#include <algorithm>
#include <map>
#include <random>
#include <optional>
#include <set>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"
#include "src/common/base64.h"
#include "src/crypto/aes_gcm.h"
#include "src/crypto/mac.h"
#include "src/keys/key_ref.h"
#include "src/server/gate/call_record.h"
#include "src/server/gate/door_metrics.h"
#include "src/server/gate/identity.h"
#include "src/server/gate/inflight_budget.h"
#include "src/server/gate/public_status.h"
#include "src/server/gate/request_limits.h"

namespace kms::server::vault {

using Json = nlohmann::json;
using authz::Operation;

namespace {

constexpr char kJson[] = "application/json";
// random/:bytes: at most this many bytes per call.
constexpr int64_t kMaxRandomBytes = 64 * 1024;
// LIST keys: at most this many names (pages of kListPage).
constexpr int kListPage = 1000;
constexpr size_t kMaxListedKeys = 100000;
// Where a Vault context and associated_data are bound in kmsd's encryption context (the
// base64 text as the client sent it): a gRPC caller gives the same pairs to decrypt.
constexpr char kContextKey[] = "vault.context";
constexpr char kAssociatedDataKey[] = "vault.associated_data";
constexpr char kKeyType[] = "aes256-gcm96";

std::span<const uint8_t> Bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

std::string Dump(const Json& j) {
  // Replace, never throw, on bytes that are not UTF-8 (nothing of ours should carry any).
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

http::Response JsonResponse(int status, const Json& body) {
  return http::Response{.status = status, .content_type = kJson, .body = Dump(body)};
}

http::Response Errors(int status, std::vector<std::string> errors) {
  return JsonResponse(status, Json{{"errors", std::move(errors)}});
}

http::Response Error(int status, std::string message) {
  return Errors(status, {std::move(message)});
}

// Vault's status for a kmsd status: input problems 400, access 403, rate 429, backends
// 503, the rest 500.
int VaultStatus(const absl::Status& s) {
  switch (PublicCode(s)) {
    case absl::StatusCode::kOk: return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kNotFound:
      return 400;
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kUnauthenticated:
      return 403;
    case absl::StatusCode::kResourceExhausted: return 429;
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kDeadlineExceeded:
      return 503;
    default: return 500;
  }
}

// The text a caller reads: kmsd's public message; a data operation's unknown tenant is
// Vault's "encryption key not found".
std::string VaultMessage(const absl::Status& s, std::string_view op) {
  if (absl::IsNotFound(s)) return "encryption key not found";
  if (absl::IsPermissionDenied(s)) return "permission denied";
  return PublicMessage(s, op);
}

http::Response FromStatus(const absl::Status& s, std::string_view op) {
  return Error(VaultStatus(s), VaultMessage(s, op));
}

// The status a Vault answer stands for (the audit record's outcome).
absl::Status StatusOfAnswer(const http::Response& r) {
  if (r.status < 300) return absl::OkStatus();
  switch (r.status) {
    case 400: return absl::InvalidArgumentError("bad request");
    case 403: return absl::PermissionDeniedError("permission denied");
    case 404: return absl::NotFoundError("not found");
    case 429: return absl::ResourceExhaustedError("rate limited");
    case 503: return absl::UnavailableError("unavailable");
    default: return absl::InternalError("internal error");
  }
}

// The caller's X-Request-Id when well formed (as the gRPC door takes x-request-id), else
// a new one: to find a call in the logs and the audit log.
std::string RequestIdOf(const http::Request& req) {
  std::optional<std::string_view> id = req.Header("X-Request-Id");
  if (id.has_value() && !id->empty() && id->size() <= 64 &&
      std::all_of(id->begin(), id->end(), [](char c) {
        return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
      })) {
    return std::string(*id);
  }
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return absl::StrFormat("%016x", rng());
}

// The audit operation of a Vault request (a static string: CallRecord keeps a view).
std::string_view AuditMethod(std::string_view method, const std::vector<std::string>& seg) {
  const std::string_view what = seg.empty() ? "" : std::string_view(seg[0]);
  if (what == "keys") {
    if (seg.size() == 1) return "VaultListKeys";
    if (seg.size() == 3 && seg[2] == "rotate") return "VaultRotateKey";
    if (seg.size() == 3 && seg[2] == "config") return "VaultConfigKey";
    if (method == "DELETE") return "VaultDeleteKey";
    if (method == "GET" || method == "HEAD") return "VaultReadKey";
    return "VaultCreateKey";
  }
  if (what == "encrypt") return "VaultEncrypt";
  if (what == "decrypt") return "VaultDecrypt";
  if (what == "rewrap") return "VaultRewrap";
  if (what == "hmac") return "VaultHmac";
  if (what == "verify") return "VaultVerify";
  if (what == "random") return "VaultRandom";
  if (what == "hash") return "VaultHash";
  if (what == "datakey") return "VaultDataKey";
  return "Vault";
}

// Vault's response envelope around `data`.
Json Envelope(Json data, const std::vector<std::string>& warnings) {
  return Json{{"request_id", ""},     {"lease_id", ""},  {"renewable", false},
              {"lease_duration", 0},  {"data", std::move(data)}, {"wrap_info", nullptr},
              {"warnings", warnings.empty() ? Json(nullptr) : Json(warnings)},
              {"auth", nullptr}};
}

std::string Rfc3339(int64_t unix_seconds) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixSeconds(unix_seconds),
                          absl::UTCTimeZone());
}

std::string QueryValue(std::string_view query, std::string_view name) {
  for (absl::string_view part : absl::StrSplit(absl::string_view(query.data(), query.size()), '&')) {
    size_t eq = part.find('=');
    absl::string_view key = part.substr(0, eq);
    if (key == absl::string_view(name.data(), name.size())) {
      return eq == absl::string_view::npos ? "" : std::string(part.substr(eq + 1));
    }
  }
  return "";
}

// A request's parameters (a JSON object body, or none), read by name; names read are
// remembered so that the rest can be reported as ignored, as Vault warns.
class Params {
 public:
  static absl::StatusOr<Params> Parse(const std::string& body) {
    Params p;
    if (body.empty()) {
      p.json_ = Json::object();
      return p;
    }
    p.json_ = Json::parse(body, nullptr, /*allow_exceptions=*/false);
    if (p.json_.is_discarded() || !p.json_.is_object()) {
      return absl::InvalidArgumentError("failed to parse JSON input: the body must be a JSON object");
    }
    return p;
  }
  static Params Of(Json object) {
    Params p;
    p.json_ = std::move(object);
    return p;
  }

  const Json* Find(std::string_view name) {
    seen_.insert(std::string(name));
    auto it = json_.find(name);
    if (it == json_.end() || it->is_null()) return nullptr;
    return &*it;
  }
  bool Has(std::string_view name) { return Find(name) != nullptr; }

  absl::StatusOr<std::optional<std::string>> String(std::string_view name) {
    const Json* v = Find(name);
    if (v == nullptr) return std::nullopt;
    if (!v->is_string()) return absl::InvalidArgumentError(absl::StrCat(std::string(name), " must be a string"));
    return v->get<std::string>();
  }
  absl::StatusOr<std::optional<int64_t>> Int(std::string_view name) {
    const Json* v = Find(name);
    if (v == nullptr) return std::nullopt;
    int64_t out = 0;
    if (v->is_number_integer()) return v->get<int64_t>();
    if (v->is_number_float()) {
      double d = v->get<double>();
      if (d == static_cast<double>(static_cast<int64_t>(d))) return static_cast<int64_t>(d);
    }
    if (v->is_string() && absl::SimpleAtoi(v->get<std::string>(), &out)) return out;
    return absl::InvalidArgumentError(absl::StrCat(std::string(name), " must be an integer"));
  }
  absl::StatusOr<std::optional<bool>> Bool(std::string_view name) {
    const Json* v = Find(name);
    if (v == nullptr) return std::nullopt;
    if (v->is_boolean()) return v->get<bool>();
    if (v->is_string()) {
      const std::string s = v->get<std::string>();
      if (s == "true" || s == "1") return true;
      if (s == "false" || s == "0" || s.empty()) return false;
    }
    return absl::InvalidArgumentError(absl::StrCat(std::string(name), " must be a boolean"));
  }

  // Vault: "Endpoint ignored these unrecognized parameters: [a b]".
  void WarnUnread(std::vector<std::string>& warnings) const {
    std::vector<std::string> unread;
    for (const auto& [k, v] : json_.items()) {
      if (!seen_.contains(k)) unread.push_back(k);
    }
    if (!unread.empty()) {
      warnings.push_back(absl::StrCat("Endpoint ignored these unrecognized parameters: [",
                                      absl::StrJoin(unread, " "), "]"));
    }
  }

 private:
  Json json_;
  std::set<std::string> seen_;
};

#define VAULT_TRY_ASSIGN(lhs, expr)                        \
  auto lhs##_or = (expr);                                  \
  if (!lhs##_or.ok()) return Error(400, std::string(lhs##_or.status().message())); \
  auto lhs = std::move(*lhs##_or)

absl::StatusOr<crypto::HashAlgorithm> HashNamed(std::string_view name) {
  if (name.empty() || name == "sha2-256") return crypto::HashAlgorithm::kSha256;
  if (name == "sha2-224") return crypto::HashAlgorithm::kSha224;
  if (name == "sha2-384") return crypto::HashAlgorithm::kSha384;
  if (name == "sha2-512") return crypto::HashAlgorithm::kSha512;
  return absl::InvalidArgumentError(
      "unsupported hash algorithm: kmsd supports sha2-224, sha2-256, sha2-384 and sha2-512");
}

std::string Hex(std::span<const uint8_t> bytes) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (uint8_t b : bytes) {
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 15]);
  }
  return out;
}

// "vault:v<N>:<base64>" → N and the decoded bytes. INVALID_ARGUMENT otherwise.
absl::Status ParseVersioned(std::string_view text, std::string_view what, uint32_t* version,
                            std::vector<uint8_t>* bytes) {
  constexpr std::string_view kPrefix = "vault:v";
  if (!text.starts_with(kPrefix)) {
    return absl::InvalidArgumentError(absl::StrCat("invalid ", std::string(what), ": no vault prefix"));
  }
  text.remove_prefix(kPrefix.size());
  size_t colon = text.find(':');
  uint32_t n = 0;
  if (colon == std::string_view::npos || colon == 0 || colon > 10 ||
      !absl::SimpleAtoi(absl::string_view(text.data(), colon), &n) || n == 0) {
    return absl::InvalidArgumentError(absl::StrCat("invalid ", std::string(what), ": bad key version"));
  }
  absl::StatusOr<std::vector<uint8_t>> decoded = Base64Decode(text.substr(colon + 1));
  if (!decoded.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("invalid ", std::string(what), ": failed to base64-decode"));
  }
  *version = n;
  *bytes = std::move(*decoded);
  return absl::OkStatus();
}

std::string Versioned(uint32_t version, std::span<const uint8_t> bytes) {
  return absl::StrCat("vault:v", version, ":", Base64Encode(bytes));
}

// The DEK versions an answer used (key_version of its items, at most 8), for the audit
// record of the current call.
void NoteKeyVersions(const Json& results) {
  CallRecord* call = CallScope::Current();
  if (call == nullptr) return;
  std::set<uint32_t> versions;
  for (const Json& r : results) {
    if (auto it = r.find("key_version"); it != r.end() && it->is_number_unsigned() && versions.size() < 8) {
      versions.insert(it->get<uint32_t>());
    }
  }
  if (!versions.empty()) call->key_versions = absl::StrCat("dek:", absl::StrJoin(versions, ","));
}

// The outcome of one batch item (or of the single request).
struct ItemResult {
  absl::Status status;
  Json value = Json::object();
};

}  // namespace

class VaultDoor::Impl {
 public:
  Impl(const config::Config& config, VaultDoorInfo info, const Clock& clock)
      : config_(config), info_(std::move(info)), clock_(clock),
        root_(absl::StrCat("/v1/", config.vault.mount, "/")),
        budget_(config.limits.max_inflight_request_bytes) {}

  void Attach(keys::KeyManager& keys, const jwt::JwtService& jwt, const CallGate& gate,
              std::function<bool()> serving) {
    keys_ = &keys;
    gate_ = &gate;
    serving_ = std::move(serving);
    tokens_ = std::make_unique<VaultTokens>(jwt, clock_, config_.vault.TokenTtl(config_.jwt));
    attached_.store(true, std::memory_order_release);
  }

  // `operation` receives the request's operation name as it is routed (the metrics'
  // label: VaultDoor::Serve lists the values).
  http::Response Serve(const http::Request& req, std::string_view* operation);
  http::Response Health(const http::Request& req, bool seal_status);

 private:
  struct Caller {
    std::string identity;
    VaultToken token;
  };

  bool serving() const { return attached_.load(std::memory_order_acquire) && serving_(); }

  absl::StatusOr<std::string> CertIdentity(const http::Request& req) const;
  http::Response Login(const http::Request& req);
  http::Response LookupSelf(const Caller& caller);
  http::Response Transit(const http::Request& req, const Caller& caller, std::string_view rest);

  // keys/...
  http::Response CreateKey(const Caller& c, const keys::TenantId& id, Params& p);
  http::Response ReadKey(const Caller& c, const keys::TenantId& id);
  http::Response DeleteKey(const Caller& c, const keys::TenantId& id);
  http::Response ListKeys(const Caller& c);
  http::Response RotateKey(const Caller& c, const keys::TenantId& id, Params& p);
  http::Response ConfigKey(const Caller& c, const keys::TenantId& id, Params& p);
  // The key's data as Vault's read answers it.
  absl::StatusOr<Json> KeyData(const keys::TenantId& id);
  http::Response KeyAnswer(const keys::TenantId& id, std::vector<std::string> warnings);

  // encrypt, decrypt, rewrap, hmac, verify: one item or batch_input.
  enum class ItemOp { kEncrypt, kDecrypt, kRewrap, kHmac, kVerify };
  http::Response Items(const Caller& c, ItemOp op, const keys::TenantId& id, Params& p,
                       std::string_view path_algorithm);
  ItemResult Item(ItemOp op, const keys::TenantId& id, Params& item, uint32_t key_version,
                  crypto::HashAlgorithm algorithm);
  absl::Status CheckLatest(const keys::TenantId& id, uint32_t key_version);

  http::Response Random(Params& p, std::string_view source, std::string_view bytes_path);
  http::Response Hash(Params& p, std::string_view path_algorithm);
  // datakey/plaintext|wrapped/:name: kmsd's GenerateDataKey. The wrapped key is a field
  // ciphertext of the key bytes, printed as vault:v<N>:, so decrypt/:name yields the key.
  http::Response DataKey(const Caller& c, std::string_view kind, const keys::TenantId& id,
                         Params& p);

  const config::Config config_;
  const VaultDoorInfo info_;
  const Clock& clock_;
  const std::string root_;  // "/v1/<mount>/"
  std::atomic<bool> attached_{false};
  keys::KeyManager* keys_ = nullptr;
  const CallGate* gate_ = nullptr;
  std::function<bool()> serving_;
  std::unique_ptr<VaultTokens> tokens_;
  // The door's memory bound (gate/inflight_budget.h), as the gRPC door has its own: the
  // body bytes of the requests being served, checked before the body is parsed.
  InflightBudget budget_;
};

absl::StatusOr<std::string> VaultDoor::Impl::CertIdentity(const http::Request& req) const {
  if (!req.client_certificate.has_value()) {
    return absl::PermissionDeniedError("permission denied: a client certificate is required");
  }
  const http::ClientCertificate& cert = *req.client_certificate;
  CertificateNames names{.spiffe_id = SpiffeIdOf(cert.uri_sans),
                         .uri_sans = cert.uri_sans,
                         .dns_sans = cert.dns_sans,
                         .common_name = cert.common_name};
  std::string identity = IdentityOf(names);
  if (identity.empty() || cert.sha256.size() != 32) {
    return absl::PermissionDeniedError("permission denied: the client certificate has no identity");
  }
  return identity;
}

http::Response VaultDoor::Impl::Health(const http::Request& req, bool seal_status) {
  const bool up = serving();
  const std::string version = absl::StrCat(info_.version, "+kmsd");
  if (seal_status) {
    return JsonResponse(200, Json{{"type", "shamir"},         {"initialized", true},
                                  {"sealed", !up},            {"t", 1},
                                  {"n", 1},                   {"progress", 0},
                                  {"nonce", ""},              {"version", version},
                                  {"build_date", ""},         {"migration", false},
                                  {"cluster_name", "kmsd"},   {"cluster_id", info_.node_id},
                                  {"recovery_seal", false},   {"storage_type", "kmsd"}});
  }
  Json body{{"initialized", true},
            {"sealed", !up},
            {"standby", false},
            {"performance_standby", false},
            {"replication_performance_mode", "disabled"},
            {"replication_dr_mode", "disabled"},
            {"server_time_utc", clock_.UnixSeconds()},
            {"version", version},
            {"cluster_name", "kmsd"},
            {"cluster_id", info_.node_id}};
  // Vault: 200 unsealed and active, 503 sealed (sealedcode= may change it).
  int status = up ? 200 : 503;
  if (!up) {
    int64_t code = 0;
    if (absl::SimpleAtoi(QueryValue(req.query, "sealedcode"), &code) && code >= 200 && code < 600) {
      status = static_cast<int>(code);
    }
  }
  return JsonResponse(status, body);
}

http::Response VaultDoor::Impl::Serve(const http::Request& req, std::string_view* operation) {
  std::string_view path = req.path;
  *operation = path == "/v1/sys/health"             ? "VaultHealth"
               : path == "/v1/sys/seal-status"      ? "VaultSealStatus"
               : path == "/v1/sys/init"             ? "VaultInit"
               : path == "/v1/auth/cert/login"      ? "VaultLogin"
               : path == "/v1/auth/token/lookup-self" ? "VaultLookupSelf"
                                                    : "VaultOther";
  // A transit call: named from the path Transit routes on (trailing slashes dropped as
  // it drops them), so the audit record and the metrics name the operation that runs,
  // refusals before it included.
  std::string_view rest;
  std::vector<std::string> seg;
  std::string_view method = "Vault";
  if (path.starts_with(root_)) {
    rest = path.substr(root_.size());
    while (rest.ends_with('/')) rest.remove_suffix(1);
    seg = absl::StrSplit(absl::string_view(rest.data(), rest.size()), '/');
    method = AuditMethod(req.method, seg);
    if (method != "Vault") *operation = method;
  }
  if (!attached_.load(std::memory_order_acquire)) return Error(503, "Vault is sealed");
  if (path == "/v1/sys/health") return Health(req, false);
  if (path == "/v1/sys/seal-status") return Health(req, true);
  if (path == "/v1/sys/init") return JsonResponse(200, Json{{"initialized", true}});
  const bool write = req.method == "POST" || req.method == "PUT";
  absl::StatusOr<InflightBudget::Ticket> ticket = budget_.Admit(static_cast<int64_t>(req.body.size()));
  if (!ticket.ok()) {
    http::Response busy = FromStatus(ticket.status(), "vault");
    busy.headers.emplace_back("Retry-After", "1");
    return busy;
  }

  absl::StatusOr<std::string> identity = CertIdentity(req);
  if (path == "/v1/auth/cert/login") {
    if (!write) return Error(405, "unsupported operation");
    if (!identity.ok()) return Error(403, std::string(identity.status().message()));
    return Login(req);
  }
  // Everything else needs the token and the certificate it was issued to.
  if (!identity.ok()) return Error(403, "permission denied");
  std::optional<std::string_view> header = req.Header("X-Vault-Token");
  std::string_view token = header.value_or("");
  if (token.empty()) {
    if (std::optional<std::string_view> auth = req.Header("Authorization");
        auth.has_value() && auth->starts_with("Bearer ")) {
      token = auth->substr(7);
    }
  }
  if (token.empty()) return Error(403, "permission denied");
  absl::StatusOr<VaultToken> checked = tokens_->Check(token, *identity, req.client_certificate->sha256);
  if (!checked.ok()) return FromStatus(checked.status(), "vault token");
  Caller caller{.identity = *identity, .token = std::move(*checked)};

  if (path == "/v1/auth/token/lookup-self") {
    if (req.method != "GET" && !write) return Error(405, "unsupported operation");
    return LookupSelf(caller);
  }
  if (!path.starts_with(root_)) return Error(404, "unsupported path");
  // One audit record per decided call, as the gRPC door does (grpc/unary.h): the gate
  // fills the record when it decides; the answer's status is reported once.
  CallRecord call{.request_id = RequestIdOf(req), .method = method};
  http::Response answer;
  {
    CallScope scope(&call);
    answer = Transit(req, caller, rest);
    if (call.gate != nullptr) {
      const absl::Status outcome = StatusOfAnswer(answer);
      const absl::Status reported = call.gate->Report(call, outcome);
      // A change that succeeded but could not be recorded in time is not answered OK.
      if (outcome.ok() && !reported.ok()) answer = FromStatus(reported, call.method);
    }
  }
  answer.headers.emplace_back("X-Request-Id", call.request_id);
  return answer;
}

http::Response VaultDoor::Impl::Login(const http::Request& req) {
  absl::StatusOr<std::string> identity = CertIdentity(req);
  if (!identity.ok()) return Error(403, std::string(identity.status().message()));
  absl::StatusOr<Params> params = Params::Parse(req.body);
  if (!params.ok()) return Error(400, std::string(params.status().message()));
  std::vector<std::string> warnings;
  // "name" picks a Vault cert role; kmsd has one rule for every certificate (its policy).
  if (params->Has("name")) {
    warnings.push_back("name: kmsd has no cert roles; the policy for the certificate's identity applies");
  }
  params->WarnUnread(warnings);
  absl::StatusOr<VaultToken> token = tokens_->Issue(*identity, req.client_certificate->sha256);
  if (!token.ok()) return FromStatus(token.status(), "vault login");
  const int64_t ttl = token->expires_at - token->issued_at;
  Json envelope = Envelope(nullptr, warnings);
  envelope["auth"] = Json{{"client_token", token->token},
                          {"accessor", ""},
                          {"policies", {"default"}},
                          {"token_policies", {"default"}},
                          {"identity_policies", nullptr},
                          {"metadata", {{"identity", *identity}}},
                          {"lease_duration", ttl},
                          {"renewable", false},
                          {"entity_id", ""},
                          {"token_type", "service"},
                          {"orphan", true},
                          {"mfa_requirement", nullptr},
                          {"num_uses", 0}};
  return JsonResponse(200, envelope);
}

http::Response VaultDoor::Impl::LookupSelf(const Caller& c) {
  const int64_t now = clock_.UnixSeconds();
  Json data{{"accessor", ""},
            {"creation_time", c.token.issued_at},
            {"creation_ttl", c.token.expires_at - c.token.issued_at},
            {"display_name", absl::StrCat("cert-", c.identity)},
            {"entity_id", ""},
            {"expire_time", Rfc3339(c.token.expires_at)},
            {"explicit_max_ttl", 0},
            {"id", c.token.token},
            {"issue_time", Rfc3339(c.token.issued_at)},
            {"meta", {{"identity", c.identity}}},
            {"num_uses", 0},
            {"orphan", true},
            {"path", "auth/cert/login"},
            {"policies", {"default"}},
            {"renewable", false},
            {"ttl", std::max<int64_t>(0, c.token.expires_at - now)},
            {"type", "service"}};
  return JsonResponse(200, Envelope(std::move(data), {}));
}

http::Response VaultDoor::Impl::Transit(const http::Request& req, const Caller& c,
                                        std::string_view rest) {
  while (rest.ends_with('/')) rest.remove_suffix(1);
  std::vector<std::string> seg = absl::StrSplit(absl::string_view(rest.data(), rest.size()), '/');
  const std::string& m = req.method;
  const bool write = m == "POST" || m == "PUT";
  const bool list = m == "LIST" || (m == "GET" && QueryValue(req.query, "list") == "true");
  absl::StatusOr<Params> parsed = Params::Parse(req.body);
  if (!parsed.ok()) return Error(400, std::string(parsed.status().message()));
  Params& p = *parsed;
  const std::string& what = seg[0];

  auto key_id = [&](size_t i) -> absl::StatusOr<keys::TenantId> {
    if (seg.size() <= i) return absl::InvalidArgumentError("missing key name");
    absl::StatusOr<keys::TenantId> id = keys::TenantId::Parse(seg[i]);
    if (!id.ok()) {
      return absl::InvalidArgumentError(
          "invalid key name: 1-64 characters of [A-Za-z0-9._-], starting with a letter or digit");
    }
    return id;
  };

  if (what == "keys") {
    if (seg.size() == 1) {
      if (!list) return Error(405, "unsupported operation");
      return ListKeys(c);
    }
    VAULT_TRY_ASSIGN(id, key_id(1));
    if (seg.size() == 2) {
      if (write) return CreateKey(c, id, p);
      if (m == "GET" || m == "HEAD") return ReadKey(c, id);
      if (m == "DELETE") return DeleteKey(c, id);
      return Error(405, "unsupported operation");
    }
    if (seg.size() == 3 && seg[2] == "rotate") {
      return write ? RotateKey(c, id, p) : Error(405, "unsupported operation");
    }
    if (seg.size() == 3 && seg[2] == "config") {
      return write ? ConfigKey(c, id, p) : Error(405, "unsupported operation");
    }
    if (seg.size() >= 3 && (seg[2] == "import" || seg[2] == "import_version" || seg[2] == "trim")) {
      return Error(400, absl::StrCat("keys/:name/", seg[2], " is not supported by kmsd: keys are generated and trimmed by kmsd"));
    }
    return Error(404, "unsupported path");
  }
  static const std::map<std::string, ItemOp, std::less<>> kItemOps = {
      {"encrypt", ItemOp::kEncrypt}, {"decrypt", ItemOp::kDecrypt}, {"rewrap", ItemOp::kRewrap},
      {"hmac", ItemOp::kHmac},       {"verify", ItemOp::kVerify}};
  if (auto op = kItemOps.find(what); op != kItemOps.end()) {
    const bool has_algorithm = op->second == ItemOp::kHmac || op->second == ItemOp::kVerify;
    if (seg.size() < 2 || seg.size() > (has_algorithm ? 3u : 2u)) return Error(404, "unsupported path");
    if (!write) return Error(405, "unsupported operation");
    VAULT_TRY_ASSIGN(id, key_id(1));
    return Items(c, op->second, id, p, seg.size() == 3 ? std::string_view(seg[2]) : "");
  }
  if (what == "random") {
    if (!write && m != "GET") return Error(405, "unsupported operation");
    if (seg.size() > 3) return Error(404, "unsupported path");
    if (seg.size() == 3) return Random(p, seg[1], seg[2]);
    if (seg.size() == 2) {
      // random/:source or random/:bytes
      int64_t n = 0;
      if (absl::SimpleAtoi(seg[1], &n)) return Random(p, "", seg[1]);
      return Random(p, seg[1], "");
    }
    return Random(p, "", "");
  }
  if (what == "hash") {
    if (!write) return Error(405, "unsupported operation");
    if (seg.size() > 2) return Error(404, "unsupported path");
    return Hash(p, seg.size() == 2 ? std::string_view(seg[1]) : "");
  }
  if (what == "datakey") {
    if (seg.size() != 3) return Error(404, "unsupported path");
    if (seg[1] != "plaintext" && seg[1] != "wrapped") {
      return Error(400, "invalid type: datakey/plaintext or datakey/wrapped");
    }
    if (!write) return Error(405, "unsupported operation");
    VAULT_TRY_ASSIGN(id, key_id(2));
    return DataKey(c, seg[1], id, p);
  }
  static const std::set<std::string, std::less<>> kRefused = {
      "sign", "export", "backup", "restore", "cache-config", "wrapping_key", "keys-config",
      "byok-export"};
  if (kRefused.contains(what)) {
    return Error(400, absl::StrCat(what, " is not supported by kmsd (docs/vault.md)"));
  }
  return Error(404, "unsupported path");
}

// --- keys

absl::StatusOr<Json> VaultDoor::Impl::KeyData(const keys::TenantId& id) {
  KMS_ASSIGN_OR_RETURN(keys::TenantInfo info, keys_->GetTenant(id));
  if (info.tenant.state == store::TenantState::kShredded) return absl::NotFoundError("key deleted");
  KMS_ASSIGN_OR_RETURN(std::vector<store::DekRecord> deks, keys_->ListDekVersions(id));
  Json versions = Json::object();
  for (const store::DekRecord& d : deks) {
    if (d.state == store::DekState::kActive && d.version >= info.tenant.min_decrypt_version) {
      versions[std::to_string(d.version)] = d.created_at;
    }
  }
  return Json{{"name", id.str()},
              {"type", kKeyType},
              {"keys", std::move(versions)},
              {"latest_version", info.tenant.primary_dek_version},
              {"min_available_version", 0},
              {"min_decryption_version", info.tenant.min_decrypt_version},
              {"min_encryption_version", 0},
              {"deletion_allowed", true},
              {"derived", false},
              {"exportable", false},
              {"allow_plaintext_backup", false},
              {"auto_rotate_period", config_.rotation.dek_period_seconds},
              {"convergent_encryption", false},
              {"imported_key", false},
              {"supports_encryption", true},
              {"supports_decryption", true},
              {"supports_derivation", true},
              {"supports_signing", false}};
}

http::Response VaultDoor::Impl::KeyAnswer(const keys::TenantId& id, std::vector<std::string> warnings) {
  absl::StatusOr<Json> data = KeyData(id);
  if (!data.ok()) return FromStatus(data.status(), "vault read key");
  return JsonResponse(200, Envelope(std::move(*data), warnings));
}

http::Response VaultDoor::Impl::CreateKey(const Caller& c, const keys::TenantId& id, Params& p) {
  std::vector<std::string> warnings;
  VAULT_TRY_ASSIGN(type, p.String("type"));
  if (type.has_value() && *type != kKeyType) {
    return Error(400, absl::StrCat("key type is not supported by kmsd: only ", kKeyType));
  }
  VAULT_TRY_ASSIGN(convergent, p.Bool("convergent_encryption"));
  if (convergent.value_or(false)) return Error(400, "convergent encryption is not supported by kmsd");
  VAULT_TRY_ASSIGN(exportable, p.Bool("exportable"));
  if (exportable.value_or(false)) return Error(400, "exportable keys are not supported by kmsd: key material never leaves it");
  VAULT_TRY_ASSIGN(backup, p.Bool("allow_plaintext_backup"));
  if (backup.value_or(false)) return Error(400, "plaintext backup is not supported by kmsd");
  VAULT_TRY_ASSIGN(key_size, p.Int("key_size"));
  if (key_size.has_value() && *key_size != 0 && *key_size != 32) {
    return Error(400, "key_size is not supported by kmsd: keys are AES-256");
  }
  if (p.Has("managed_key_name") || p.Has("managed_key_id")) {
    return Error(400, "managed keys are not supported by kmsd");
  }
  VAULT_TRY_ASSIGN(period, p.Int("auto_rotate_period"));
  if (period.value_or(0) != 0) {
    return Error(400, "auto_rotate_period is not supported per key: kmsd rotates every key after rotation.dek_period_seconds");
  }
  VAULT_TRY_ASSIGN(derived, p.Bool("derived"));
  if (derived.value_or(false)) {
    warnings.push_back("derived: kmsd binds any context given into the ciphertext, for every key; the flag is not stored and a context is not required");
  }
  p.WarnUnread(warnings);
  if (absl::Status s = gate_->Admit(c.identity, Operation::kCreateTenant, id.str()); !s.ok()) {
    return FromStatus(s, "vault create key");
  }
  absl::StatusOr<keys::TenantInfo> created = keys_->CreateTenant(id);
  if (!created.ok() && !absl::IsAlreadyExists(created.status())) {
    return FromStatus(created.status(), "vault create key");
  }
  return KeyAnswer(id, std::move(warnings));
}

http::Response VaultDoor::Impl::ReadKey(const Caller& c, const keys::TenantId& id) {
  if (absl::Status s = gate_->Admit(c.identity, Operation::kGetTenant, id.str()); !s.ok()) {
    return FromStatus(s, "vault read key");
  }
  absl::StatusOr<Json> data = KeyData(id);
  if (absl::IsNotFound(data.status())) return Errors(404, {});  // as Vault: no such key
  if (!data.ok()) return FromStatus(data.status(), "vault read key");
  return JsonResponse(200, Envelope(std::move(*data), {}));
}

http::Response VaultDoor::Impl::DeleteKey(const Caller& c, const keys::TenantId& id) {
  if (absl::Status s = gate_->Admit(c.identity, Operation::kShred, id.str()); !s.ok()) {
    return FromStatus(s, "vault delete key");
  }
  absl::StatusOr<keys::ShredResult> shred = keys_->ShredTenant(id);
  if (!shred.ok()) return FromStatus(shred.status(), "vault delete key");
  return http::Response{.status = 204, .content_type = kJson};
}

http::Response VaultDoor::Impl::ListKeys(const Caller& c) {
  if (absl::Status s = gate_->Admit(c.identity, Operation::kListTenants, CallGate::kEveryTenant);
      !s.ok()) {
    return FromStatus(s, "vault list keys");
  }
  std::vector<std::string> names;
  std::string after;
  do {
    absl::StatusOr<store::TenantPage> page = keys_->ListTenants(after, kListPage);
    if (!page.ok()) return FromStatus(page.status(), "vault list keys");
    for (const store::TenantRecord& t : page->tenants) {
      // Named keys and blind-index rows are not transit keys (a transit key name is a
      // tenant id), as the admin door's listing leaves them out.
      if (t.state == store::TenantState::kActive && !keys::IsReservedStorageId(t.id)) {
        names.push_back(t.id);
      }
    }
    after = page->next_after;
  } while (!after.empty() && names.size() < kMaxListedKeys);
  if (names.empty()) return Errors(404, {});  // as Vault answers an empty LIST
  std::vector<std::string> warnings;
  if (!after.empty()) {
    warnings.push_back(absl::StrCat("only the first ", names.size(), " keys are listed"));
  }
  return JsonResponse(200, Envelope(Json{{"keys", names}}, warnings));
}

http::Response VaultDoor::Impl::RotateKey(const Caller& c, const keys::TenantId& id, Params& p) {
  std::vector<std::string> warnings;
  if (p.Has("managed_key_name") || p.Has("managed_key_id")) {
    return Error(400, "managed keys are not supported by kmsd");
  }
  p.WarnUnread(warnings);
  if (absl::Status s = gate_->Admit(c.identity, Operation::kRotate, id.str()); !s.ok()) {
    return FromStatus(s, "vault rotate key");
  }
  absl::StatusOr<keys::TenantInfo> rotated = keys_->RotateTenantDek(id);
  if (!rotated.ok()) return FromStatus(rotated.status(), "vault rotate key");
  return KeyAnswer(id, std::move(warnings));
}

http::Response VaultDoor::Impl::ConfigKey(const Caller& c, const keys::TenantId& id, Params& p) {
  std::vector<std::string> warnings;
  VAULT_TRY_ASSIGN(min_decrypt, p.Int("min_decryption_version"));
  VAULT_TRY_ASSIGN(min_encrypt, p.Int("min_encryption_version"));
  VAULT_TRY_ASSIGN(deletion, p.Bool("deletion_allowed"));
  VAULT_TRY_ASSIGN(exportable, p.Bool("exportable"));
  VAULT_TRY_ASSIGN(backup, p.Bool("allow_plaintext_backup"));
  VAULT_TRY_ASSIGN(period, p.Int("auto_rotate_period"));
  if (exportable.value_or(false)) return Error(400, "exportable keys are not supported by kmsd: key material never leaves it");
  if (backup.value_or(false)) return Error(400, "plaintext backup is not supported by kmsd");
  if (period.value_or(0) != 0) {
    return Error(400, "auto_rotate_period is not supported per key: kmsd rotates every key after rotation.dek_period_seconds");
  }
  if (deletion.has_value() && !*deletion) {
    return Error(400, "deletion_allowed=false is not supported by kmsd: deleting a key (crypto-shredding) is allowed by the policy's shred grant; withhold that grant instead");
  }
  if (deletion.has_value()) {
    warnings.push_back("deletion_allowed: kmsd lets a caller delete (crypto-shred) a key when the policy grants it shred");
  }
  if (min_decrypt.has_value() && (*min_decrypt < 0 || *min_decrypt > UINT32_MAX)) {
    return Error(400, "min_decryption_version is out of range");
  }
  if (min_encrypt.has_value() && *min_encrypt < 0) return Error(400, "min_encryption_version is out of range");
  p.WarnUnread(warnings);
  if (absl::Status s = gate_->Admit(c.identity, Operation::kRotate, id.str()); !s.ok()) {
    return FromStatus(s, "vault key config");
  }
  absl::StatusOr<keys::TenantInfo> info = keys_->GetTenant(id);
  if (!info.ok()) return FromStatus(info.status(), "vault key config");
  if (info->tenant.state == store::TenantState::kShredded) return Error(400, "encryption key not found");
  const uint32_t latest = info->tenant.primary_dek_version;
  if (min_encrypt.has_value() && *min_encrypt != 0) {
    if (*min_encrypt > latest) {
      return Error(400, "cannot set min encryption version to a value greater than the latest version");
    }
    warnings.push_back("min_encryption_version: kmsd always encrypts under the latest version; the minimum is implied and not stored");
  }
  if (min_decrypt.has_value() && *min_decrypt != 0) {
    const uint32_t wanted = static_cast<uint32_t>(*min_decrypt);
    if (wanted < info->tenant.min_decrypt_version) {
      return Error(400, "kmsd never lowers min_decryption_version: retired key versions stay retired");
    }
    if (wanted > info->tenant.min_decrypt_version) {
      absl::StatusOr<keys::TenantInfo> set = keys_->SetMinDecryptVersion(id, wanted);
      if (!set.ok()) return FromStatus(set.status(), "vault key config");
    }
  }
  return KeyAnswer(id, std::move(warnings));
}

// --- encrypt, decrypt, rewrap, hmac, verify

absl::Status VaultDoor::Impl::CheckLatest(const keys::TenantId& id, uint32_t key_version) {
  if (key_version == 0) return absl::OkStatus();
  KMS_ASSIGN_OR_RETURN(uint32_t latest, keys_->PrimaryDekVersion(id));
  if (key_version > latest) return absl::InvalidArgumentError("requested version is greater than the latest version");
  if (key_version != latest) {
    return absl::InvalidArgumentError(
        "kmsd encrypts only under the latest key version: omit key_version or give the latest");
  }
  return absl::OkStatus();
}

http::Response VaultDoor::Impl::Items(const Caller& c, ItemOp op, const keys::TenantId& id,
                                      Params& p, std::string_view path_algorithm) {
  std::vector<std::string> warnings;
  Operation gate_op = Operation::kEncrypt;
  std::string_view name = "vault encrypt";
  switch (op) {
    case ItemOp::kEncrypt: gate_op = Operation::kEncrypt; name = "vault encrypt"; break;
    case ItemOp::kDecrypt: gate_op = Operation::kDecrypt; name = "vault decrypt"; break;
    case ItemOp::kRewrap: gate_op = Operation::kReEncrypt; name = "vault rewrap"; break;
    case ItemOp::kHmac: gate_op = Operation::kEncrypt; name = "vault hmac"; break;
    case ItemOp::kVerify: gate_op = Operation::kDecrypt; name = "vault verify"; break;
  }
  // Options kmsd refuses rather than ignore.
  VAULT_TRY_ASSIGN(type, p.String("type"));
  if (type.has_value() && !type->empty() && *type != kKeyType) {
    return Error(400, absl::StrCat("key type is not supported by kmsd: only ", kKeyType));
  }
  VAULT_TRY_ASSIGN(convergent, p.Bool("convergent_encryption"));
  if (convergent.value_or(false)) return Error(400, "convergent encryption is not supported by kmsd");
  if (op == ItemOp::kVerify && (p.Has("signature") || p.Has("cmac"))) {
    return Error(400, "signature and CMAC verification are not supported by kmsd: only hmac");
  }
  if (op == ItemOp::kHmac || op == ItemOp::kVerify) {
    if (p.Has("mac_length")) return Error(400, "mac_length is not supported by kmsd");
  }
  VAULT_TRY_ASSIGN(key_version64, p.Int("key_version"));
  if (key_version64.has_value() && (*key_version64 < 0 || *key_version64 > UINT32_MAX)) {
    return Error(400, "key_version is out of range");
  }
  const uint32_t key_version = static_cast<uint32_t>(key_version64.value_or(0));
  if (key_version != 0 && (op == ItemOp::kDecrypt || op == ItemOp::kVerify)) {
    warnings.push_back("key_version: the version comes from the ciphertext");
  }
  VAULT_TRY_ASSIGN(param_algorithm, p.String("algorithm"));
  VAULT_TRY_ASSIGN(hash_algorithm, p.String("hash_algorithm"));  // verify's name for it
  if (!param_algorithm.has_value()) param_algorithm = hash_algorithm;
  crypto::HashAlgorithm algorithm = crypto::HashAlgorithm::kSha256;
  if (op == ItemOp::kHmac || op == ItemOp::kVerify) {
    VAULT_TRY_ASSIGN(a, HashNamed(!path_algorithm.empty() ? path_algorithm
                                                          : std::string_view(param_algorithm.value_or(""))));
    algorithm = a;
  }
  VAULT_TRY_ASSIGN(partial_code, p.Int("partial_failure_response_code"));
  if (partial_code.has_value() && (*partial_code < 200 || *partial_code > 599)) {
    return Error(400, "partial_failure_response_code must be an HTTP status code");
  }

  // The items: batch_input, or the request itself.
  std::vector<Params> items;
  const bool batch = p.Has("batch_input");
  if (batch) {
    const Json* input = p.Find("batch_input");
    if (!input->is_array()) return Error(400, "batch_input must be an array of objects");
    if (input->empty()) return Error(400, "missing batch input to process");
    if (static_cast<int64_t>(input->size()) > config_.vault.MaxBatch(config_.limits)) {
      return Error(400, absl::StrCat("batch_input has more than ", config_.vault.MaxBatch(config_.limits), " items"));
    }
    items.reserve(input->size());
    for (const Json& item : *input) {
      if (!item.is_object()) return Error(400, "batch_input must be an array of objects");
      items.push_back(Params::Of(item));
    }
  } else {
    // Read here so the unread check below sees them.
    for (std::string_view k : {"plaintext", "ciphertext", "context", "associated_data", "nonce",
                               "reference", "input", "hmac"}) {
      p.Find(k);
    }
  }
  p.WarnUnread(warnings);
  if (absl::Status s = gate_->Admit(c.identity, gate_op, id.str()); !s.ok()) return FromStatus(s, name);
  if (op == ItemOp::kEncrypt || op == ItemOp::kRewrap || op == ItemOp::kHmac) {
    if (absl::Status s = (op == ItemOp::kHmac) ? absl::OkStatus() : CheckLatest(id, key_version); !s.ok()) {
      return FromStatus(s, name);
    }
  }

  if (!batch) {
    ItemResult r = Item(op, id, p, key_version, algorithm);
    if (!r.status.ok()) return FromStatus(r.status, name);
    NoteKeyVersions(Json::array({r.value}));
    return JsonResponse(200, Envelope(std::move(r.value), warnings));
  }
  Json results = Json::array();
  absl::Status first_error;
  int failed = 0;
  for (Params& item : items) {
    VAULT_TRY_ASSIGN(reference, item.String("reference"));
    ItemResult r = Item(op, id, item, key_version, algorithm);
    if (!r.status.ok()) {
      ++failed;
      // Input problems are the item's; a backend failure is the request's.
      if (first_error.ok() || VaultStatus(first_error) == 400) {
        if (first_error.ok() || VaultStatus(r.status) != 400) first_error = r.status;
      }
      r.value = Json{{"error", VaultMessage(r.status, name)}};
    }
    if (reference.has_value()) r.value["reference"] = *reference;
    results.push_back(std::move(r.value));
  }
  NoteKeyVersions(results);
  Json envelope = Envelope(Json{{"batch_results", std::move(results)}}, warnings);
  if (failed == 0) return JsonResponse(200, envelope);
  int status = VaultStatus(first_error);
  if (status == 400 && partial_code.has_value() && failed < static_cast<int>(items.size())) {
    status = static_cast<int>(*partial_code);
  }
  if (status >= 400) envelope["errors"] = {VaultMessage(first_error, name)};
  return JsonResponse(status, envelope);
}

ItemResult VaultDoor::Impl::Item(ItemOp op, const keys::TenantId& id, Params& item,
                                 uint32_t key_version, crypto::HashAlgorithm algorithm) {
  ItemResult out;
  auto fail = [&](absl::Status s) {
    out.status = std::move(s);
    return std::move(out);
  };
  auto base64_field = [&](std::string_view field, bool required,
                          std::string* text) -> absl::StatusOr<std::vector<uint8_t>> {
    KMS_ASSIGN_OR_RETURN(std::optional<std::string> v, item.String(field));
    if (!v.has_value() || v->empty()) {
      if (required) return absl::InvalidArgumentError(absl::StrCat("missing ", std::string(field), " to process"));
      return std::vector<uint8_t>{};
    }
    absl::StatusOr<std::vector<uint8_t>> decoded = Base64Decode(*v);
    if (!decoded.ok()) return absl::InvalidArgumentError(absl::StrCat("failed to base64-decode ", std::string(field)));
    if (text != nullptr) *text = std::move(*v);
    return decoded;
  };

  // context and associated_data, bound into kmsd's encryption context as their base64
  // text (the pairs a gRPC caller gives to decrypt the same ciphertext).
  std::string context_text, ad_text;
  std::map<std::string, std::string> pairs;
  if (op != ItemOp::kHmac && op != ItemOp::kVerify) {
    if (auto s = base64_field("context", false, &context_text); !s.ok()) return fail(s.status());
    if (auto s = base64_field("associated_data", false, &ad_text); !s.ok()) return fail(s.status());
    if (absl::StatusOr<std::optional<std::string>> nonce = item.String("nonce");
        !nonce.ok() || (nonce->has_value() && !(*nonce)->empty())) {
      return fail(absl::InvalidArgumentError("nonce is not supported by kmsd: nonces are always random"));
    }
    if (!context_text.empty()) pairs.emplace(kContextKey, context_text);
    if (!ad_text.empty()) pairs.emplace(kAssociatedDataKey, ad_text);
  }
  absl::StatusOr<keys::EncryptionContext> context = ValidateContext(pairs, config_.limits);
  if (!context.ok()) return fail(context.status());

  switch (op) {
    case ItemOp::kEncrypt: {
      absl::StatusOr<std::vector<uint8_t>> plaintext = base64_field("plaintext", false, nullptr);
      if (!plaintext.ok()) return fail(plaintext.status());
      std::string_view pt(reinterpret_cast<const char*>(plaintext->data()), plaintext->size());
      if (absl::Status s = ValidatePlaintext(pt, config_.limits); !s.ok()) return fail(s);
      absl::StatusOr<keys::EncryptResult> r = keys_->Encrypt(id, *context, *plaintext);
      std::fill(plaintext->begin(), plaintext->end(), 0);
      if (!r.ok()) return fail(r.status());
      if (key_version != 0 && r->dek_version != key_version) {
        return fail(absl::UnavailableError("the key rotated during the request; retry"));
      }
      out.value = Json{{"ciphertext", Versioned(r->dek_version, Bytes(r->ciphertext))},
                       {"key_version", r->dek_version}};
      return out;
    }
    case ItemOp::kDecrypt:
    case ItemOp::kRewrap: {
      absl::StatusOr<std::optional<std::string>> text = item.String("ciphertext");
      if (!text.ok()) return fail(text.status());
      if (!text->has_value() || (*text)->empty()) {
        return fail(absl::InvalidArgumentError("missing ciphertext to process"));
      }
      uint32_t version = 0;
      std::vector<uint8_t> bytes;
      if (absl::Status s = ParseVersioned(**text, "ciphertext", &version, &bytes); !s.ok()) return fail(s);
      std::string_view ct(reinterpret_cast<const char*>(bytes.data()), bytes.size());
      if (absl::Status s = ValidateCiphertext(ct, config_.limits); !s.ok()) {
        return fail(absl::InvalidArgumentError("invalid ciphertext: wrong length"));
      }
      if (op == ItemOp::kDecrypt) {
        absl::StatusOr<keys::DecryptResult> r = keys_->Decrypt(id, *context, bytes);
        if (!r.ok()) return fail(r.status());
        std::span<const uint8_t> pt = Bytes(r->plaintext);
        if (r->dek_version != version) {
          std::fill(r->plaintext.begin(), r->plaintext.end(), 0);
          return fail(absl::InvalidArgumentError("invalid ciphertext: key version does not match"));
        }
        out.value = Json{{"plaintext", Base64Encode(pt)}};
        std::fill(r->plaintext.begin(), r->plaintext.end(), 0);
        return out;
      }
      absl::StatusOr<keys::ReEncryptResult> r = keys_->ReEncrypt(id, *context, bytes);
      if (!r.ok()) return fail(r.status());
      if (r->source_dek_version != version) {
        return fail(absl::InvalidArgumentError("invalid ciphertext: key version does not match"));
      }
      out.value = Json{{"ciphertext", Versioned(r->dek_version, Bytes(r->ciphertext))},
                       {"key_version", r->dek_version}};
      return out;
    }
    case ItemOp::kHmac:
    case ItemOp::kVerify: {
      absl::StatusOr<std::vector<uint8_t>> input = base64_field("input", false, nullptr);
      if (!input.ok()) return fail(input.status());
      if (static_cast<int64_t>(input->size()) > config_.limits.max_plaintext_bytes) {
        return fail(absl::InvalidArgumentError(
            absl::StrCat("input is larger than ", config_.limits.max_plaintext_bytes, " bytes")));
      }
      if (op == ItemOp::kHmac) {
        absl::StatusOr<keys::HmacResult> r = keys_->Hmac(id, key_version, algorithm, *input);
        if (!r.ok()) return fail(r.status());
        out.value = Json{{"hmac", Versioned(r->dek_version, r->mac)}, {"key_version", r->dek_version}};
        return out;
      }
      absl::StatusOr<std::optional<std::string>> hmac = item.String("hmac");
      if (!hmac.ok()) return fail(hmac.status());
      if (!hmac->has_value() || (*hmac)->empty()) {
        return fail(absl::InvalidArgumentError("missing hmac to process"));
      }
      uint32_t version = 0;
      std::vector<uint8_t> mac;
      if (absl::Status s = ParseVersioned(**hmac, "hmac", &version, &mac); !s.ok()) return fail(s);
      absl::StatusOr<bool> valid = keys_->VerifyHmac(id, version, algorithm, *input, mac);
      if (!valid.ok()) return fail(valid.status());
      out.value = Json{{"valid", *valid}};
      return out;
    }
  }
  return fail(absl::InternalError("unknown operation"));
}

// --- datakey

http::Response VaultDoor::Impl::DataKey(const Caller& c, std::string_view kind,
                                        const keys::TenantId& id, Params& p) {
  constexpr std::string_view kName = "vault datakey";
  const bool with_plaintext = kind == "plaintext";
  std::vector<std::string> warnings;
  VAULT_TRY_ASSIGN(bits, p.Int("bits"));
  if (bits.has_value() && *bits != 256) {
    return Error(400, "bits is not supported by kmsd: data keys are 256 bits");
  }
  VAULT_TRY_ASSIGN(nonce, p.String("nonce"));
  if (nonce.has_value() && !nonce->empty()) {
    return Error(400, "nonce is not supported by kmsd: nonces are always random");
  }
  VAULT_TRY_ASSIGN(key_version64, p.Int("key_version"));
  if (key_version64.has_value() && (*key_version64 < 0 || *key_version64 > UINT32_MAX)) {
    return Error(400, "key_version is out of range");
  }
  const uint32_t key_version = static_cast<uint32_t>(key_version64.value_or(0));
  VAULT_TRY_ASSIGN(context_text, p.String("context"));
  std::map<std::string, std::string> pairs;
  if (context_text.has_value() && !context_text->empty()) {
    if (!Base64Decode(*context_text).ok()) return Error(400, "failed to base64-decode context");
    pairs.emplace(kContextKey, *context_text);
  }
  p.WarnUnread(warnings);
  absl::StatusOr<keys::EncryptionContext> context = ValidateContext(pairs, config_.limits);
  if (!context.ok()) return FromStatus(context.status(), kName);
  const Operation op = with_plaintext ? Operation::kGenerateDataKey
                                      : Operation::kGenerateDataKeyWithoutPlaintext;
  if (absl::Status s = gate_->Admit(c.identity, op, id.str()); !s.ok()) return FromStatus(s, kName);
  if (absl::Status s = CheckLatest(id, key_version); !s.ok()) return FromStatus(s, kName);
  absl::StatusOr<keys::DataKey> key = keys_->GenerateDataKey(id, *context, with_plaintext);
  if (!key.ok()) return FromStatus(key.status(), kName);
  if (key_version != 0 && key->dek_version != key_version) {
    return FromStatus(absl::UnavailableError("the key rotated during the request; retry"), kName);
  }
  Json data{{"ciphertext", Versioned(key->dek_version, Bytes(key->wrapped))},
            {"key_version", key->dek_version}};
  if (with_plaintext) data["plaintext"] = Base64Encode(key->plaintext.span());
  NoteKeyVersions(Json::array({data}));
  http::Response r = JsonResponse(200, Envelope(std::move(data), warnings));
  return r;
}

// --- random, hash: no key; a valid token is all they need.

http::Response VaultDoor::Impl::Random(Params& p, std::string_view source, std::string_view bytes_path) {
  std::vector<std::string> warnings;
  VAULT_TRY_ASSIGN(bytes_param, p.Int("bytes"));
  VAULT_TRY_ASSIGN(format, p.String("format"));
  VAULT_TRY_ASSIGN(source_param, p.String("source"));
  std::string src = !source.empty() ? std::string(source) : source_param.value_or("platform");
  if (src != "platform" && src != "seal" && src != "all") {
    return Error(400, "unsupported entropy source: platform, seal or all");
  }
  int64_t n = bytes_param.value_or(32);
  if (!bytes_path.empty() && !absl::SimpleAtoi(absl::string_view(bytes_path.data(), bytes_path.size()), &n)) {
    return Error(400, "bytes must be an integer");
  }
  if (n < 1 || n > kMaxRandomBytes) {
    return Error(400, absl::StrCat("bytes must be between 1 and ", kMaxRandomBytes));
  }
  const std::string fmt = format.value_or("base64");
  if (fmt != "base64" && fmt != "hex") return Error(400, "unsupported encoding format: base64 or hex");
  p.WarnUnread(warnings);
  std::vector<uint8_t> random(static_cast<size_t>(n));
  if (absl::Status s = crypto::RandomBytes(random); !s.ok()) return FromStatus(s, "vault random");
  const std::string text = fmt == "hex" ? Hex(random) : Base64Encode(random);
  return JsonResponse(200, Envelope(Json{{"random_bytes", text}}, warnings));
}

http::Response VaultDoor::Impl::Hash(Params& p, std::string_view path_algorithm) {
  std::vector<std::string> warnings;
  VAULT_TRY_ASSIGN(input_text, p.String("input"));
  VAULT_TRY_ASSIGN(param_algorithm, p.String("algorithm"));
  VAULT_TRY_ASSIGN(format, p.String("format"));
  VAULT_TRY_ASSIGN(algorithm, HashNamed(!path_algorithm.empty()
                                            ? path_algorithm
                                            : std::string_view(param_algorithm.value_or(""))));
  const std::string fmt = format.value_or("hex");
  if (fmt != "base64" && fmt != "hex") return Error(400, "unsupported encoding format: base64 or hex");
  if (!input_text.has_value()) return Error(400, "missing input to process");
  absl::StatusOr<std::vector<uint8_t>> input = Base64Decode(*input_text);
  if (!input.ok()) return Error(400, "failed to base64-decode input");
  p.WarnUnread(warnings);
  absl::StatusOr<std::vector<uint8_t>> sum = crypto::Digest(algorithm, *input);
  if (!sum.ok()) return FromStatus(sum.status(), "vault hash");
  const std::string text = fmt == "hex" ? Hex(*sum) : Base64Encode(*sum);
  return JsonResponse(200, Envelope(Json{{"sum", text}}, warnings));
}

// --- the door

VaultDoor::VaultDoor(const config::Config& config, VaultDoorInfo info, const Clock& clock)
    : max_body_bytes_(config.vault.MaxBody(config.http)),
      impl_(std::make_unique<Impl>(config, std::move(info), clock)) {}

VaultDoor::~VaultDoor() = default;

void VaultDoor::Attach(keys::KeyManager& keys, const jwt::JwtService& jwt, const CallGate& gate,
                       std::function<bool()> serving) {
  impl_->Attach(keys, jwt, gate, std::move(serving));
}

http::Response VaultDoor::Serve(const http::Request& request) {
  const auto started = std::chrono::steady_clock::now();
  http::Response answer;
  std::string_view operation = "VaultOther";
  try {
    answer = impl_->Serve(request, &operation);
  } catch (const std::exception& e) {  // nlohmann_json; nothing else of ours throws
    spdlog::error("vault door: {} {}: {}", request.method, request.path, e.what());
    answer = Error(500, "internal error");
  }
  static constexpr DoorMetricNames kMetrics{
      .requests_total = "kmsd_vault_requests_total",
      .requests_help = "Vault-compatible door requests, by operation and the HTTP status answered.",
      .duration_seconds = "kmsd_vault_request_duration_seconds",
      .duration_help = "Time from a received Vault-compatible request to its answer, by operation.",
      .operation_label = "operation",
      .outcome_label = "code"};
  RecordDoorRequest(metrics_, kMetrics, std::string(operation),
                    std::to_string(answer.status),
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  return answer;
}

void VaultDoor::Register(http::HttpsServer& server) {
  // Health and seal status answer from memory: on the event loop, like /readyz.
  for (const char* path : {"/v1/sys/health", "/v1/sys/seal-status", "/v1/sys/init"}) {
    server.Handle(path, [this](const http::Request& r) { return Serve(r); },
                  http::Route{.methods = {"GET"}, .kind = http::HandlerKind::kNonBlocking,
                              .json_errors = true});
  }
  // The rest may wait on the store or the HSM: the worker pool, with the door's body limit.
  server.HandlePrefix("/v1/", [this](const http::Request& r) { return Serve(r); },
                      http::Route{.methods = {"GET", "POST", "PUT", "DELETE", "LIST"},
                                  .kind = http::HandlerKind::kBlocking,
                                  .max_body_bytes = max_body_bytes_,
                                  .json_errors = true});
}

}  // namespace kms::server::vault
