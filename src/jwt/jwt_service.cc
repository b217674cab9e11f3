#include "src/jwt/jwt_service.h"

#include <algorithm>
#include <cstdlib>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"
#include "src/common/big_endian.h"

namespace kms::jwt {
namespace {

using S = KeyLifecycleState;
using E = KeyLifecycleEvent;

constexpr int64_t kTenYears = int64_t{10} * 365 * 86400;
constexpr std::string_view kAadLabel = "kmsd:jwt:v1";

absl::Status OutOfRange(absl::string_view field, int64_t lo, int64_t hi) {
  return absl::InvalidArgumentError(
      absl::StrCat("jwt options: ", field, " must be in [", lo, ", ", hi, "]"));
}

// Prefixes a backend error with what we were doing, keeping its code.
absl::Status Annotate(const absl::Status& st, absl::string_view what) {
  return absl::Status(st.code(), absl::StrCat(what, ": ", st.message()));
}

}  // namespace

// --- Options

absl::Status ValidateOptions(const JwtServiceOptions& o) {
  if (o.max_ttl_seconds < 1 || o.max_ttl_seconds > 604800) {
    return OutOfRange("max_ttl_seconds", 1, 604800);
  }
  if (o.clock_skew_seconds < 0 || o.clock_skew_seconds > 3600) {
    return OutOfRange("clock_skew_seconds", 0, 3600);
  }
  if (o.jwks_cache_seconds < 1 || o.jwks_cache_seconds > 86400) {
    return OutOfRange("jwks_cache_seconds", 1, 86400);
  }
  if (o.refresh_interval_seconds < 1 || o.refresh_interval_seconds > 3600) {
    return OutOfRange("refresh_interval_seconds", 1, 3600);
  }
  // A rotation must have finished (next key signing, old one retired) before the next
  // one is due, or keys would pile up in the JWKS.
  const int64_t min_period = o.prepublish_seconds() + o.overlap_seconds() + 1;
  if (o.rotation_period_seconds < min_period || o.rotation_period_seconds > kTenYears) {
    return OutOfRange("rotation_period_seconds", min_period, kTenYears);
  }
  if (o.key_max_age_seconds < 1 || o.key_max_age_seconds > kTenYears) {
    return OutOfRange("key_max_age_seconds", 1, kTenYears);
  }
  // Our own tokens must stay under the verifier's size cap (base64 grows by 4/3).
  if (o.max_claims_bytes < 2 || o.max_claims_bytes > kMaxClaimsBytesLimit) {
    return OutOfRange("max_claims_bytes", 2, kMaxClaimsBytesLimit);
  }
  return absl::OkStatus();
}

absl::Status ApplyEnvironmentOverrides(JwtServiceOptions& options) {
  return ApplyEnvironmentOverrides(options, [](const char* name) { return std::getenv(name); });
}

absl::Status ApplyEnvironmentOverrides(JwtServiceOptions& options,
                                       const std::function<const char*(const char*)>& getenv) {
  // Applied in this order, so KMS_ROTATION_PERIOD wins over the seed's name.
  const std::pair<const char*, int64_t*> vars[] = {
      {"KEY_MAX_AGE", &options.key_max_age_seconds},
      {"VAULT_ROTATION_PERIOD", &options.rotation_period_seconds},
      {"KMS_ROTATION_PERIOD", &options.rotation_period_seconds},
      {"JWT_ACCESS_TOKEN_TTL", &options.max_ttl_seconds},
  };
  for (const auto& [name, field] : vars) {
    const char* value = getenv(name);
    if (value == nullptr || *value == '\0') continue;
    const std::string_view text(value);
    int64_t parsed = 0;
    const bool digits_only = text.size() <= 18 && std::all_of(text.begin(), text.end(), [](char c) {
      return c >= '0' && c <= '9';
    });
    if (!digits_only || !absl::SimpleAtoi(absl::string_view(text.data(), text.size()), &parsed) || parsed <= 0 || parsed > kTenYears) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, " must be a positive whole number of seconds (at most ", kTenYears,
                       ")"));
    }
    *field = parsed;
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> RotationPeriodFromEnvironment(
    const std::function<const char*(const char*)>& getenv) {
  JwtServiceOptions o;
  o.rotation_period_seconds = 0;
  KMS_RETURN_IF_ERROR(ApplyEnvironmentOverrides(o, [&getenv](const char* name) -> const char* {
    const std::string_view n(name);
    return n == "KMS_ROTATION_PERIOD" || n == "VAULT_ROTATION_PERIOD" ? getenv(name) : nullptr;
  }));
  return o.rotation_period_seconds;
}

std::vector<uint8_t> JwtKeyAad(std::string_view kid, uint32_t kek_version) {
  std::vector<uint8_t> aad(kAadLabel.begin(), kAadLabel.end());
  AppendLengthPrefixed(aad, kid);
  AppendU32(aad, kek_version);
  return aad;
}

std::string JwksDocument::CacheControl() const {
  return absl::StrCat("public, max-age=", max_age_seconds);
}

// --- Construction

JwtService::JwtService(keys::KekRing* kek_ring, store::JwtKeyStore* store,
                       store::StoreHealth* epoch, const Clock* clock, JwtServiceOptions options)
    : kek_ring_(kek_ring),
      store_(store),
      epoch_(epoch),
      clock_(clock),
      options_(std::move(options)),
      policy_{options_.issuer, options_.max_ttl_seconds, options_.max_ttl_seconds,
              options_.max_claims_bytes},
      view_(std::make_shared<const View>()) {}

JwtService::~JwtService() = default;

absl::StatusOr<std::unique_ptr<JwtService>> JwtService::Create(keys::KekRing* kek_ring,
                                                               store::JwtKeyStore* store,
                                                               store::StoreHealth* epoch,
                                                               const Clock* clock,
                                                               JwtServiceOptions options) {
  if (kek_ring == nullptr || store == nullptr || epoch == nullptr || clock == nullptr) {
    return absl::InvalidArgumentError("JwtService: missing KEK ring, store or clock");
  }
  KMS_RETURN_IF_ERROR(ValidateOptions(options));
  return std::unique_ptr<JwtService>(
      new JwtService(kek_ring, store, epoch, clock, std::move(options)));
}

// --- Views and the state they imply

std::shared_ptr<const JwtService::View> JwtService::Snapshot() const {
  ReaderLock lock(&view_mu_);
  return view_;
}

void JwtService::Publish(std::shared_ptr<const View> view, std::string_view why) {
  S before;
  {
    WriterLock lock(&view_mu_);
    before = view_->state;
    view_ = view;
  }
  if (before == view->state) return;
  const auto from = std::string(KeyLifecycleStateName(before));
  const auto to = std::string(KeyLifecycleStateName(view->state));
  if (view->state == S::kCritical) {
    spdlog::error("jwt: state {} -> {} ({}): degraded for longer than KEY_MAX_AGE; {}", from,
                  to, why, view->last_error);
  } else if (view->state == S::kDegraded) {
    spdlog::warn("jwt: state {} -> {} ({}): signing with in-memory keys, rotation impossible; {}",
                 from, to, why, view->last_error);
  } else {
    spdlog::info("jwt: state {} -> {} ({})", from, to, why);
  }
}

bool JwtService::Published(const LoadedKey& key, int64_t now) {
  return key.record.retire_at == 0 || now < key.record.retire_at;
}

const JwtService::LoadedKey* JwtService::SigningKey(const View& view, int64_t now) {
  for (auto it = view.keys.rbegin(); it != view.keys.rend(); ++it) {
    if (it->record.activate_at <= now && Published(*it, now)) return &*it;
  }
  return nullptr;
}

bool JwtService::DualActive(const View& view, int64_t now) {
  const LoadedKey* signing = SigningKey(view, now);
  for (const LoadedKey& k : view.keys) {
    if (&k != signing && k.record.activate_at <= now && k.record.retire_at != 0 &&
        now < k.record.retire_at) {
      return true;
    }
  }
  return false;
}

KeyLifecycleState JwtService::Apply(KeyLifecycleState state, KeyLifecycleEvent event) const {
  std::optional<S> next = Next(state, event);
  if (!next.has_value()) {
    // The callers only derive events the table has; this is a bug, not a runtime case.
    spdlog::error("jwt: no transition from {} on {}", std::string(KeyLifecycleStateName(state)),
                  std::string(KeyLifecycleEventName(event)));
    return state;
  }
  return *next;
}

KeyLifecycleState JwtService::EffectiveState(const View& view, int64_t now) const {
  S s = view.state;
  if (s == S::kLoading) return s;
  if (!view.backends_ok && (s == S::kActive || s == S::kDualActive)) {
    s = Apply(s, E::kBackendDown);
  }
  // Before BackendUp: an outage that outlived KEY_MAX_AGE is Critical even when the
  // probe that ends it is the first one after the limit.
  if (s == S::kDegraded && view.degraded_since != 0 &&
      now - view.degraded_since >= options_.key_max_age_seconds) {
    s = Apply(s, E::kMaxAgeExceeded);
  }
  if (view.backends_ok && s == S::kDegraded) s = Apply(s, E::kBackendUp);
  const bool dual = DualActive(view, now);
  if (s == S::kActive && dual) {
    s = Apply(s, E::kNextKeyActivated);
  } else if (s == S::kDualActive && !dual) {
    s = Apply(s, E::kOverlapEnded);
  }
  return s;
}

void JwtService::Reconcile(View& view, int64_t now) const {
  view.state = EffectiveState(view, now);
}

bool JwtService::ready() const { return Snapshot()->state != S::kLoading; }

KeyLifecycleState JwtService::state() const {
  auto view = Snapshot();
  return EffectiveState(*view, clock_->UnixSeconds());
}

// --- Serving path

absl::StatusOr<SignedJwt> JwtService::SignDocument(std::string_view typ,
                                                   std::string_view claims_json,
                                                   int64_t ttl_seconds) const {
  if (typ.empty() || absl::EqualsIgnoreCase(absl::string_view(typ.data(), typ.size()), "JWT")) {
    return absl::InvalidArgumentError("a document type must not be an access token's");
  }
  return SignAs(typ, claims_json, ttl_seconds);
}

absl::StatusOr<VerifiedJwt> JwtService::VerifyDocument(std::string_view typ,
                                                       std::string_view token) const {
  if (typ.empty() || absl::EqualsIgnoreCase(absl::string_view(typ.data(), typ.size()), "JWT")) {
    return absl::InvalidArgumentError("a document type must not be an access token's");
  }
  return VerifyAs(typ, token);
}

absl::StatusOr<SignedJwt> JwtService::SignAs(std::string_view typ, std::string_view claims_json,
                                             int64_t ttl_seconds) const {
  auto view = Snapshot();
  const int64_t now = clock_->UnixSeconds();
  const S state = EffectiveState(*view, now);
  if (state == S::kLoading) return absl::UnavailableError("jwt: signing keys not loaded yet");
  if (!MaySign(state, options_.fail_closed_when_critical)) {
    return absl::UnavailableError(
        "jwt: signing refused: key backends unreachable for longer than KEY_MAX_AGE");
  }
  KMS_ASSIGN_OR_RETURN(BuiltClaims claims, BuildClaims(claims_json, ttl_seconds, now, policy_));
  const LoadedKey* key = SigningKey(*view, now);
  if (key == nullptr) return absl::UnavailableError("jwt: no signing key is active");
  // The key must stay published until the token has expired for every verifier.
  if (key->record.retire_at != 0 &&
      claims.expires_at + options_.clock_skew_seconds > key->record.retire_at) {
    return absl::InvalidArgumentError("ttl exceeds the signing key's overlap window");
  }
  KMS_ASSIGN_OR_RETURN(std::string token, EncodeCompact(*key->key, claims.payload_json, typ));
  SignedJwt out;
  out.jwt = std::move(token);
  out.kid = key->record.kid;
  out.issued_at = claims.issued_at;
  out.expires_at = claims.expires_at;
  return out;
}

absl::StatusOr<VerifiedJwt> JwtService::VerifyAs(std::string_view typ,
                                                 std::string_view token) const {
  auto view = Snapshot();
  const int64_t now = clock_->UnixSeconds();
  if (view->state == S::kLoading) return absl::UnavailableError("jwt: keys not loaded yet");
  KeyLookup lookup = [&](std::string_view kid) -> const Es256PublicKey* {
    for (const LoadedKey& k : view->keys) {
      if (k.record.kid == kid && Published(k, now)) return &k.key->public_key();
    }
    return nullptr;
  };
  return VerifyCompact(token, lookup, now, options_.clock_skew_seconds, typ);
}

absl::StatusOr<JwksDocument> JwtService::Jwks() const {
  auto view = Snapshot();
  const int64_t now = clock_->UnixSeconds();
  if (view->state == S::kLoading) return absl::UnavailableError("jwt: keys not loaded yet");
  JwksDocument doc;
  doc.json = R"({"keys":[)";
  bool first = true;
  for (const LoadedKey& k : view->keys) {
    if (!Published(k, now)) continue;
    if (!first) doc.json += ",";
    first = false;
    doc.json += k.key->public_key().JwkJson();
  }
  doc.json += "]}";
  doc.max_age_seconds = options_.jwks_cache_seconds;
  return doc;
}

absl::StatusOr<SignedReceipt> JwtService::SignShredReceipt(
    const ShredReceiptClaims& claims) const {
  auto view = Snapshot();
  const int64_t now = clock_->UnixSeconds();
  const S state = EffectiveState(*view, now);
  if (state == S::kLoading) return absl::UnavailableError("jwt: signing keys not loaded yet");
  if (!MaySign(state, options_.fail_closed_when_critical)) {
    return absl::UnavailableError(
        "jwt: signing refused: key backends unreachable for longer than KEY_MAX_AGE");
  }
  const LoadedKey* key = SigningKey(*view, now);
  if (key == nullptr) return absl::UnavailableError("jwt: no signing key is active");
  nlohmann::json payload = {{"tenant", claims.tenant},
                            {"destroyed_dek_versions", claims.destroyed_dek_versions},
                            {"shredded_at", claims.shredded_at},
                            {"iat", claims.shredded_at},
                            {"node", claims.node}};
  if (!options_.issuer.empty()) payload["iss"] = options_.issuer;
  if (claims.already_shredded) payload["already_shredded"] = true;
  std::string text;
  try {
    text = payload.dump();
  } catch (const nlohmann::json::exception&) {  // a tenant id or node that is not UTF-8
    return absl::InvalidArgumentError("jwt: receipt claims are not valid UTF-8");
  }
  KMS_ASSIGN_OR_RETURN(std::string jws, EncodeCompact(*key->key, text, kShredReceiptType));
  return SignedReceipt{.jws = std::move(jws), .kid = key->record.kid};
}

absl::StatusOr<JwksDocument> JwtService::ReceiptKeys() const {
  auto view = Snapshot();
  if (view->state == S::kLoading) return absl::UnavailableError("jwt: keys not loaded yet");
  JwksDocument doc;
  doc.json = absl::StrCat(R"({"keys":[)", absl::StrJoin(view->receipt_jwks, ","), "]}");
  doc.max_age_seconds = options_.jwks_cache_seconds;
  return doc;
}

std::vector<std::string> JwtService::ReceiptJwks(const std::vector<store::JwtKeyRecord>& rows) {
  std::vector<std::string> out;
  for (const store::JwtKeyRecord& row : rows) {
    auto jwk = Es256PublicKey::FromJwk(row.public_jwk);
    if (!jwk.ok() || (*jwk)->kid() != row.kid) {
      spdlog::warn("jwt: stored JWK of key {} is invalid; not listed for receipts", row.kid);
      continue;
    }
    out.push_back((*jwk)->JwkJson());
  }
  return out;
}

JwtServiceStatus JwtService::Status() const {
  auto view = Snapshot();
  const int64_t now = clock_->UnixSeconds();
  JwtServiceStatus st;
  st.now = now;
  st.state = EffectiveState(*view, now);
  st.state_name = std::string(KeyLifecycleStateName(st.state));
  st.degraded_since = view->degraded_since;
  st.backends_ok = view->backends_ok;
  st.last_error = view->last_error;
  const LoadedKey* signing = SigningKey(*view, now);
  if (signing != nullptr) st.signing_kid = signing->record.kid;
  bool pending = false;
  for (const LoadedKey& k : view->keys) {
    if (!Published(k, now)) continue;
    JwtKeyStatus ks;
    ks.kid = k.record.kid;
    ks.created_at = k.record.created_at;
    ks.activate_at = k.record.activate_at;
    ks.retire_at = k.record.retire_at;
    ks.kek_version = k.record.kek_version;
    if (now < k.record.activate_at) {
      ks.phase = "pending";
      pending = true;
    } else {
      ks.phase = &k == signing ? "signing" : "verifying";
    }
    st.keys.push_back(std::move(ks));
  }
  if (signing != nullptr && !pending) {
    st.next_rotation_at = signing->record.activate_at + options_.rotation_period_seconds;
  }
  return st;
}

// --- Maintenance

absl::StatusOr<std::pair<std::shared_ptr<const Es256PrivateKey>, store::JwtKeyRecord>>
JwtService::NewKey(int64_t now, int64_t activate_at) {
  const uint32_t kek_version = kek_ring_->primary_version();
  if (kek_version == 0) return absl::FailedPreconditionError("jwt: no primary KEK version");
  KMS_ASSIGN_OR_RETURN(std::unique_ptr<Es256PrivateKey> key, Es256PrivateKey::Generate());
  KMS_ASSIGN_OR_RETURN(SecretBytes der, key->ToPkcs8Der());
  auto sealed = kek_ring_->Seal(kek_version, der.span(), JwtKeyAad(key->kid(), kek_version));
  if (!sealed.ok()) return Annotate(sealed.status(), "jwt: cannot seal a new key");
  store::JwtKeyRecord row;
  row.kid = key->kid();
  row.public_jwk = key->public_key().JwkJson();
  row.wrapped_private = std::move(*sealed);
  row.kek_version = kek_version;
  row.created_at = now;
  row.activate_at = activate_at;
  row.retire_at = 0;
  row.row_version = 1;
  return std::make_pair(std::shared_ptr<const Es256PrivateKey>(std::move(key)), std::move(row));
}

absl::StatusOr<std::vector<JwtService::LoadedKey>> JwtService::ReadKeys(
    const std::vector<store::JwtKeyRecord>& rows, const View& current, int64_t now,
    const KeyMap& seeded) {
  std::vector<LoadedKey> out;
  for (const store::JwtKeyRecord& row : rows) {
    if (row.retire_at != 0 && now >= row.retire_at) continue;  // retired: not needed
    LoadedKey loaded;
    loaded.record = row;
    loaded.record.wrapped_private.clear();
    for (const LoadedKey& k : current.keys) {
      if (k.record.kid == row.kid) loaded.key = k.key;
    }
    for (const auto& [kid, key] : seeded) {
      if (loaded.key == nullptr && kid == row.kid) loaded.key = key;
    }
    if (loaded.key == nullptr) {
      auto jwk = Es256PublicKey::FromJwk(row.public_jwk);
      if (!jwk.ok() || (*jwk)->kid() != row.kid) {
        return absl::DataLossError(absl::StrCat("jwt: stored JWK of key ", row.kid,
                                                " is invalid or does not match its kid"));
      }
      auto der = kek_ring_->Open(row.kek_version, row.wrapped_private,
                                 JwtKeyAad(row.kid, row.kek_version));
      if (!der.ok()) {
        return Annotate(der.status(), absl::StrCat("jwt: cannot unwrap key ", row.kid));
      }
      auto key = Es256PrivateKey::FromPkcs8Der(der->span());
      if (!key.ok() || (*key)->kid() != row.kid) {
        return absl::DataLossError(
            absl::StrCat("jwt: unwrapped key ", row.kid, " does not match its public key"));
      }
      loaded.key = std::move(*key);
    }
    out.push_back(std::move(loaded));
  }
  if (out.empty()) return absl::FailedPreconditionError("jwt: the store holds no usable key");
  return out;
}

absl::StatusOr<JwtService::View> JwtService::Probe(const View& current, int64_t now, bool force,
                                                   const KeyMap& seeded) {
  auto epoch = epoch_->GetEpoch();
  if (!epoch.ok()) return Annotate(epoch.status(), "jwt: store unreachable");
  View next = current;
  if (force || *epoch != current.epoch) {
    auto rows = store_->ListJwtKeys();
    if (!rows.ok()) return Annotate(rows.status(), "jwt: store unreachable");
    KMS_ASSIGN_OR_RETURN(next.keys, ReadKeys(*rows, current, now, seeded));
    next.receipt_jwks = ReceiptJwks(*rows);
    next.epoch = *epoch;
  }
  absl::Status ping = kek_ring_->Ping();
  if (!ping.ok()) return Annotate(ping, "jwt: HSM unreachable");
  return next;
}

void JwtService::RecordFailure(const View& current, int64_t now, const absl::Status& error) {
  auto next = std::make_shared<View>(current);
  next->backends_ok = false;
  next->last_error = std::string(error.message());
  if (next->degraded_since == 0) next->degraded_since = now;
  Reconcile(*next, now);
  if (current.backends_ok) spdlog::warn("jwt: backend probe failed: {}", next->last_error);
  Publish(std::move(next), "backend probe failed");
}

absl::Status JwtService::Load() {
  MutexLock lock(&maintenance_mu_);
  if (Snapshot()->state != S::kLoading) return absl::OkStatus();
  return LoadLocked(clock_->UnixSeconds());
}

absl::Status JwtService::LoadLocked(int64_t now) {
  auto epoch = epoch_->GetEpoch();
  if (!epoch.ok()) return Annotate(epoch.status(), "jwt: load");
  auto rows = store_->ListJwtKeys();
  if (!rows.ok()) return Annotate(rows.status(), "jwt: load");
  KeyMap seeded;
  if (rows->empty()) {
    // Active from now - clock_skew, so a replica whose clock is a little behind has a
    // signing key too. Nothing can have cached a JWKS yet: no pre-publish needed.
    KMS_ASSIGN_OR_RETURN(auto made, NewKey(now, now - options_.clock_skew_seconds));
    absl::Status st = store_->InsertFirstJwtKey(made.second);
    if (st.ok()) {
      spdlog::info("jwt: created the first signing key {}", made.second.kid);
      seeded.emplace_back(made.second.kid, made.first);
    } else if (!absl::IsAlreadyExists(st)) {
      return Annotate(st, "jwt: load");
    }
    epoch = epoch_->GetEpoch();
    if (!epoch.ok()) return Annotate(epoch.status(), "jwt: load");
    rows = store_->ListJwtKeys();
    if (!rows.ok()) return Annotate(rows.status(), "jwt: load");
  }
  KMS_ASSIGN_OR_RETURN(std::vector<LoadedKey> keys, ReadKeys(*rows, View{}, now, seeded));
  auto next = std::make_shared<View>();
  next->keys = std::move(keys);
  next->receipt_jwks = ReceiptJwks(*rows);
  next->epoch = *epoch;
  next->backends_ok = true;
  next->state = Apply(S::kLoading, E::kKeysLoaded);
  Reconcile(*next, now);
  Publish(std::move(next), "keys loaded");
  return absl::OkStatus();
}

absl::Status JwtService::Tick(bool may_rotate) {
  MutexLock lock(&maintenance_mu_);
  const int64_t now = clock_->UnixSeconds();
  auto current = Snapshot();
  if (current->state == S::kLoading) return LoadLocked(now);

  auto probed = Probe(*current, now, /*force=*/false, {});
  if (!probed.ok()) {
    RecordFailure(*current, now, probed.status());
    return probed.status();
  }
  auto next = std::make_shared<View>(std::move(*probed));
  std::erase_if(next->keys, [now](const LoadedKey& k) { return !Published(k, now); });
  next->backends_ok = true;
  next->last_error.clear();
  Reconcile(*next, now);
  if (next->state != S::kCritical) next->degraded_since = 0;
  if (next->keys.empty()) {  // only a store edited by hand gets here
    absl::Status st = absl::FailedPreconditionError("jwt: every key is retired");
    RecordFailure(*current, now, st);
    return st;
  }
  const S state = next->state;
  const LoadedKey& newest = next->keys.back();
  const bool due = options_.scheduled_rotation && may_rotate &&
                   (state == S::kActive || state == S::kDualActive) &&
                   newest.record.activate_at <= now &&
                   now - newest.record.activate_at >= options_.rotation_period_seconds;
  Publish(std::move(next), "tick");

  if (due) {
    auto rotated = RotateLocked(now, /*scheduled=*/true);
    if (!rotated.ok() && !absl::IsAborted(rotated.status())) {
      spdlog::warn("jwt: scheduled rotation failed: {}", std::string(rotated.status().message()));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<RotationResult> JwtService::Rotate() {
  MutexLock lock(&maintenance_mu_);
  return RotateLocked(clock_->UnixSeconds(), /*scheduled=*/false);
}

absl::StatusOr<RotationResult> JwtService::RotateLocked(int64_t now, bool scheduled) {
  auto current = Snapshot();
  const S state = EffectiveState(*current, now);
  if (state == S::kLoading) return absl::FailedPreconditionError("jwt: keys not loaded yet");
  if (state == S::kDegraded) {
    return absl::UnavailableError("jwt: rotation impossible while degraded (store or HSM down)");
  }
  if (state == S::kCritical && scheduled) {
    return absl::FailedPreconditionError("jwt: critical: rotation waits for an operator");
  }
  // A fresh read: the compare-and-set needs the current row_version.
  auto probed = Probe(*current, now, /*force=*/true, {});
  if (!probed.ok()) {
    RecordFailure(*current, now, probed.status());
    return absl::UnavailableError(
        absl::StrCat("jwt: rotation impossible: ", probed.status().message()));
  }
  View fresh = std::move(*probed);
  const LoadedKey newest = fresh.keys.back();
  if (newest.record.activate_at > now || newest.record.retire_at != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("jwt: a rotation is in progress: key ", newest.record.kid,
                     " activates at ", newest.record.activate_at));
  }

  KMS_ASSIGN_OR_RETURN(auto made, NewKey(now, now + options_.prepublish_seconds()));
  auto& [key, row] = made;
  const int64_t old_retire_at = row.activate_at + options_.overlap_seconds();
  absl::Status st =
      store_->RotateJwtKey(newest.record.kid, newest.record.row_version, old_retire_at, row);
  if (!st.ok()) {
    if (absl::IsAborted(st) || absl::IsAlreadyExists(st)) {
      // Another replica rotated first: take its key now rather than at the next tick.
      auto reread = Probe(fresh, now, /*force=*/true, {});
      if (reread.ok()) {
        auto next = std::make_shared<View>(std::move(*reread));
        Reconcile(*next, now);
        Publish(std::move(next), "rotated by another replica");
      }
      return absl::AbortedError("jwt: another replica rotated the key first");
    }
    if (absl::IsUnavailable(st)) RecordFailure(fresh, now, st);
    return Annotate(st, "jwt: rotation");
  }

  // Committed: apply it locally (the next tick re-reads the store anyway).
  auto next = std::make_shared<View>(std::move(fresh));
  for (LoadedKey& k : next->keys) {
    if (k.record.kid == newest.record.kid) {
      k.record.retire_at = old_retire_at;
      k.record.row_version += 1;
    }
  }
  LoadedKey added;
  added.record = row;
  added.record.wrapped_private.clear();
  added.key = key;
  next->keys.push_back(std::move(added));
  next->receipt_jwks.push_back(key->public_key().JwkJson());
  next->backends_ok = true;
  next->last_error.clear();
  next->state = state;
  next->state = Apply(next->state, E::kRotationSucceeded);
  next->degraded_since = 0;
  Reconcile(*next, now);
  spdlog::info("jwt: rotated: key {} signs from {}; key {} retires at {}", row.kid,
               row.activate_at, newest.record.kid, old_retire_at);

  RotationResult result;
  result.new_kid = row.kid;
  result.new_activate_at = row.activate_at;
  result.old_kid = newest.record.kid;
  result.old_retire_at = old_retire_at;
  Publish(std::move(next), scheduled ? "scheduled rotation" : "rotation");
  return result;
}

absl::Status JwtService::Ack() {
  MutexLock lock(&maintenance_mu_);
  const int64_t now = clock_->UnixSeconds();
  auto current = Snapshot();
  const S state = EffectiveState(*current, now);
  if (state != S::kCritical) {
    return absl::FailedPreconditionError(
        absl::StrCat("jwt: nothing to acknowledge: state is ",
                     std::string(KeyLifecycleStateName(state))));
  }
  auto probed = Probe(*current, now, /*force=*/false, {});
  if (!probed.ok()) {
    RecordFailure(*current, now, probed.status());
    return absl::UnavailableError(
        absl::StrCat("jwt: backends still unreachable, staying critical: ",
                     probed.status().message()));
  }
  auto next = std::make_shared<View>(std::move(*probed));
  next->backends_ok = true;
  next->last_error.clear();
  next->state = Apply(S::kCritical, E::kOperatorAck);
  next->degraded_since = 0;
  Reconcile(*next, now);
  spdlog::info("jwt: critical state acknowledged by an operator");
  Publish(std::move(next), "operator ack");
  return absl::OkStatus();
}

absl::StatusOr<int> JwtService::RewrapKeys(uint32_t kek_version) {
  if (kek_version == 0) return absl::InvalidArgumentError("jwt: KEK version 0");
  MutexLock lock(&maintenance_mu_);
  auto rows = store_->ListJwtKeys();
  if (!rows.ok()) return Annotate(rows.status(), "jwt: re-wrap");
  int rewrapped = 0;
  for (const store::JwtKeyRecord& row : *rows) {
    if (row.kek_version == kek_version) continue;
    auto sealed = kek_ring_->Reseal(row.kek_version, row.wrapped_private,
                                    JwtKeyAad(row.kid, row.kek_version), kek_version,
                                    JwtKeyAad(row.kid, kek_version));
    if (!sealed.ok()) {
      return Annotate(sealed.status(), absl::StrCat("jwt: re-wrap of key ", row.kid));
    }
    absl::Status st = store_->UpdateJwtKeyWrapping(row.kid, row.row_version, kek_version, *sealed);
    if (absl::IsAborted(st)) continue;  // changed meanwhile (a rotation): next run
    if (!st.ok()) return Annotate(st, absl::StrCat("jwt: re-wrap of key ", row.kid));
    ++rewrapped;
  }
  return rewrapped;
}

}  // namespace kms::jwt
