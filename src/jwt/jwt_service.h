// JwtService: the ES256 JWT signing service (DESIGN §5, §7).
//
// Keys. Every key is a row of the store's jwt_keys (JwtKeyRecord); its phase at time t
// follows from its timestamps alone, so replicas agree without talking:
//   pending    t < activate_at                       published in the JWKS, not signing
//   signing    the newest key with activate_at <= t and (retire_at == 0 or t < retire_at)
//   verifying  activated, not the signing key, t < retire_at   (overlap after rotation)
//   retired    retire_at != 0 and t >= retire_at     gone from the JWKS, refused
// Rotation at time t (Rotate, or Tick when the signing key is rotation_period old):
//   next.activate_at    = t + prepublish      prepublish = jwks_cache + refresh_interval
//                                                          + clock_skew
//   current.retire_at   = next.activate_at + max_ttl + clock_skew        (the overlap)
// so a verifier holding a JWKS cached for jwks_cache seconds has the new kid before the
// first token signed with it (even from a replica that learns of the rotation one
// refresh_interval late), and the old kid stays published until every token it signed
// has expired (exp <= next.activate_at + max_ttl) plus the verifiers' leeway. Sign
// refuses a token whose exp + clock_skew would pass its key's retire_at.
//
// Private keys are stored as Seal(KEK, PKCS#8 DER, AAD) through the KEK ring seam
// (include/kms/keys/kek_ring.h: in the HSM), where the AAD is
//   "kmsd:jwt:v1" || u32be(len(kid)) || kid || u32be(kek_version)
// (JwtKeyAad), so a blob cannot be moved to another kid or KEK version. Unwrapped keys
// live only in memory (Es256PrivateKey, an OpenSSL EVP_PKEY).
//
// States (key_lifecycle.h): Loading until Load() succeeds; Active / DualActive from the
// key timestamps; Degraded once a probe of the store or the HSM fails (signing goes on
// with the in-memory keys; rotation is refused); Critical when degraded for longer than
// key_max_age (signing goes on unless fail_closed_when_critical; leaving it takes Ack()
// or a manual Rotate() once the backends answer again). The state shown is always the
// table's state with the time-derived events applied at the moment of the call.
//
// Threads. Sign, Verify, Jwks, Status and state() are the serving path: they copy an
// immutable snapshot under a shared lock and never wait for I/O. Load, Tick, Rotate, Ack
// and RewrapKeys are maintenance: they serialize on their own mutex (held across store
// and HSM calls, but never taken by the serving path) and publish a new snapshot under
// a short exclusive lock. Time comes from the injected Clock; ECDSA nonces and new keys
// come from OpenSSL's CSPRNG.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "kms/common/clock.h"
#include "kms/common/status.h"
#include "kms/keys/kek_ring.h"
#include "kms/store/jwt_key_store.h"
#include "kms/store/store_health.h"
#include "src/common/sync.h"
#include "src/jwt/es256.h"
#include "src/jwt/jwt.h"
#include "src/jwt/key_lifecycle.h"

namespace kms::jwt {

struct JwtServiceOptions {
  // Added as "iss" when the caller gives none; a caller's "iss" must equal it. Empty:
  // no issuer configured.
  std::string issuer;
  int64_t max_ttl_seconds = 900;  // JWT_ACCESS_TOKEN_TTL; also the default TTL
  int64_t clock_skew_seconds = 60;
  // The JWKS Cache-Control max-age, and the least time a key is published before it signs.
  int64_t jwks_cache_seconds = 300;
  // How often the caller runs Tick(): part of the pre-publish window.
  int64_t refresh_interval_seconds = 30;
  int64_t rotation_period_seconds = 7776000;  // KMS_ROTATION_PERIOD / VAULT_ROTATION_PERIOD
  int64_t key_max_age_seconds = 604800;       // KEY_MAX_AGE
  bool fail_closed_when_critical = false;
  size_t max_claims_bytes = 8192;
  bool scheduled_rotation = true;  // Tick() rotates when the signing key is due

  int64_t prepublish_seconds() const {
    return jwks_cache_seconds + refresh_interval_seconds + clock_skew_seconds;
  }
  int64_t overlap_seconds() const { return max_ttl_seconds + clock_skew_seconds; }
};

// INVALID_ARGUMENT naming the field when an option is out of range.
absl::Status ValidateOptions(const JwtServiceOptions& options);

// Reads KEY_MAX_AGE, VAULT_ROTATION_PERIOD, KMS_ROTATION_PERIOD (wins over VAULT_...)
// and JWT_ACCESS_TOKEN_TTL: positive integers of seconds. Unset or empty variables
// change nothing; anything else is INVALID_ARGUMENT naming the variable.
absl::Status ApplyEnvironmentOverrides(JwtServiceOptions& options);
// The same with an injected getenv (tests).
absl::Status ApplyEnvironmentOverrides(JwtServiceOptions& options,
                                       const std::function<const char*(const char*)>& getenv);
// The rotation period the environment sets for every key kind (KMS_ROTATION_PERIOD, else
// VAULT_ROTATION_PERIOD), parsed by ApplyEnvironmentOverrides' rules; 0 when neither is
// set. INVALID_ARGUMENT as there. The scheduled KEK and DEK rotations use it too.
absl::StatusOr<int64_t> RotationPeriodFromEnvironment(
    const std::function<const char*(const char*)>& getenv);

// The AAD that binds a sealed JWT private key to its kid and KEK version.
std::vector<uint8_t> JwtKeyAad(std::string_view kid, uint32_t kek_version);

struct SignedJwt {
  std::string jwt;
  std::string kid;
  int64_t issued_at = 0;
  int64_t expires_at = 0;
};

struct JwksDocument {
  std::string json;             // {"keys":[<JWK>, ...]}, ordered by activate_at
  int64_t max_age_seconds = 0;  // for "Cache-Control: public, max-age=<n>"
  std::string CacheControl() const;
};

// The header typ of a shred receipt: never "JWT", so VerifyCompact (and any verifier
// that checks typ) refuses it as an access token.
inline constexpr std::string_view kShredReceiptType = "kmsd-shred-receipt+jwt";

// What a shred receipt attests (ShredTenant, DESIGN §7).
struct ShredReceiptClaims {
  std::string tenant;
  std::vector<uint32_t> destroyed_dek_versions;
  int64_t shredded_at = 0;  // Unix seconds
  std::string node;         // the node_id of the kmsd that shredded
  bool already_shredded = false;
};

struct SignedReceipt {
  std::string jws;  // compact JWS
  std::string kid;
};

struct RotationResult {
  std::string new_kid;
  int64_t new_activate_at = 0;
  std::string old_kid;
  int64_t old_retire_at = 0;
};

struct JwtKeyStatus {
  std::string kid;
  std::string phase;  // "pending", "signing", "verifying"
  int64_t created_at = 0;
  int64_t activate_at = 0;
  int64_t retire_at = 0;  // 0: not scheduled
  uint32_t kek_version = 0;
};

struct JwtServiceStatus {
  KeyLifecycleState state = KeyLifecycleState::kLoading;
  std::string state_name;
  std::string signing_kid;
  std::vector<JwtKeyStatus> keys;  // the published keys, ordered by activate_at
  int64_t degraded_since = 0;      // 0: not degraded
  bool backends_ok = false;        // the last probe of store and HSM succeeded
  std::string last_error;          // of the last failed probe
  int64_t next_rotation_at = 0;    // 0: a rotation is in progress (a pending key)
  int64_t now = 0;
};

class JwtService {
 public:
  // Validates the options; does no I/O (the service starts in Loading). New keys are
  // sealed under the ring's primary KEK version; keys sealed under a version this node
  // has not loaded yet (another replica rotated the KEK) are opened through the ring,
  // which loads it. `store` holds the keys; `epoch` (the same store) tells when another
  // replica changed them. The pointers must outlive the service.
  static absl::StatusOr<std::unique_ptr<JwtService>> Create(keys::KekRing* kek_ring,
                                                            store::JwtKeyStore* store,
                                                            store::StoreHealth* epoch,
                                                            const Clock* clock,
                                                            JwtServiceOptions options);
  ~JwtService();
  JwtService(const JwtService&) = delete;
  JwtService& operator=(const JwtService&) = delete;

  // Reads and unwraps the keys, creating the very first key when the store has none
  // (a replica that loses that race loads the winner's). Loading -> Active. A no-op
  // once loaded. Errors of the store/HSM pass through (retry with backoff).
  absl::Status Load();
  bool ready() const;

  // Signs `claims_json` (jwt.h rules) for `ttl_seconds` (0: max_ttl). INVALID_ARGUMENT
  // for bad claims or TTL; UNAVAILABLE when not loaded, or Critical with
  // fail_closed_when_critical.
  absl::StatusOr<SignedJwt> Sign(std::string_view claims_json, int64_t ttl_seconds) const {
    return SignAs(kAccessTokenType, claims_json, ttl_seconds);
  }
  // Verifies against the keys published now. UNAUTHENTICATED when the token is
  // rejected; UNAVAILABLE when not loaded.
  absl::StatusOr<VerifiedJwt> Verify(std::string_view token) const {
    return VerifyAs(kAccessTokenType, token);
  }
  // The JWKS to serve now. UNAVAILABLE when not loaded.
  absl::StatusOr<JwksDocument> Jwks() const;

  // A shred receipt: a compact JWS signed with the current signing key, header
  // {"alg":"ES256","typ":"kmsd-shred-receipt+jwt","kid":...}, payload (members sorted)
  //   {"already_shredded":bool (only when true),"destroyed_dek_versions":[n,...],
  //    "iat":shredded_at,"iss":<issuer, when configured>,"node":..,"shredded_at":..,
  //    "tenant":..}
  // No "exp": a receipt is evidence, it does not expire. Verifiable with any JOSE
  // library against ReceiptKeys(). UNAVAILABLE as Sign is (not loaded, fail-closed
  // Critical).
  absl::StatusOr<SignedReceipt> SignShredReceipt(const ShredReceiptClaims& claims) const;
  // The public keys that verify receipts: every signing key the store holds, retired
  // ones included (rows are never deleted), as a JWKS ({"keys":[...]}, ordered by
  // activate_at). A key that signed a receipt stays listed after JWT rotation and
  // retirement, while Jwks() (access tokens) drops it. UNAVAILABLE when not loaded.
  absl::StatusOr<JwksDocument> ReceiptKeys() const;

  // A manual rotation (format above). FAILED_PRECONDITION when not loaded or when a
  // rotation is already in progress (a pending key); UNAVAILABLE when Degraded or the
  // backends do not answer; ABORTED when another replica rotated at the same moment
  // (its key is loaded). From Critical, success returns to Active.
  absl::StatusOr<RotationResult> Rotate();
  // Periodic maintenance, every refresh_interval_seconds: loads when still Loading;
  // probes the store (re-reading keys when its epoch moved) and the HSM; applies
  // Degraded/Critical; prunes retired keys; rotates when the signing key is
  // rotation_period old (not in Degraded/Critical) and `may_rotate` (only the replica
  // that leads runs scheduled rotations). Returns the probe's error, if any.
  absl::Status Tick(bool may_rotate = true);
  // The operator's acknowledgement of Critical. FAILED_PRECONDITION when not Critical;
  // UNAVAILABLE while a backend still fails (the state stays Critical).
  absl::Status Ack();
  // Re-seals every key not yet under `kek_version` (KEK rotation), compare-and-set per
  // key. Returns how many were re-sealed.
  absl::StatusOr<int> RewrapKeys(uint32_t kek_version);

  JwtServiceStatus Status() const;
  KeyLifecycleState state() const;
  const JwtServiceOptions& options() const { return options_; }

  // A token of another kind than an access token, signed like Sign() (same claims rules,
  // TTL bounds and keys) but with header typ `typ`, which must not be "JWT": so
  // VerifyCompact, Verify() and any verifier that checks typ refuse it as an access
  // token. The Vault door's certificate-bound tokens use it. INVALID_ARGUMENT for
  // typ "JWT"; otherwise errors as Sign.
  absl::StatusOr<SignedJwt> SignDocument(std::string_view typ, std::string_view claims_json,
                                         int64_t ttl_seconds) const;
  // Verifies a token of kind `typ` (header typ exactly `typ`) as Verify() does.
  absl::StatusOr<VerifiedJwt> VerifyDocument(std::string_view typ, std::string_view token) const;

 private:
  absl::StatusOr<SignedJwt> SignAs(std::string_view typ, std::string_view claims_json,
                                   int64_t ttl_seconds) const;
  absl::StatusOr<VerifiedJwt> VerifyAs(std::string_view typ, std::string_view token) const;

  struct LoadedKey {
    store::JwtKeyRecord record;  // wrapped_private cleared
    std::shared_ptr<const Es256PrivateKey> key;
  };
  // Immutable once published.
  struct View {
    KeyLifecycleState state = KeyLifecycleState::kLoading;
    std::vector<LoadedKey> keys;  // not retired when read; ordered by activate_at, kid
    int64_t epoch = -1;           // the store epoch the keys were read at (or after)
    int64_t degraded_since = 0;
    bool backends_ok = false;
    std::string last_error;
    // Public JWKs of every stored key, retired ones too (ReceiptKeys).
    std::vector<std::string> receipt_jwks;
  };
  // The public JWKs of `rows`, checked against their kids (a bad row is skipped).
  static std::vector<std::string> ReceiptJwks(const std::vector<store::JwtKeyRecord>& rows);
  using KeyMap = std::vector<std::pair<std::string, std::shared_ptr<const Es256PrivateKey>>>;

  JwtService(keys::KekRing* kek_ring, store::JwtKeyStore* store, store::StoreHealth* epoch,
             const Clock* clock,
             JwtServiceOptions options);

  std::shared_ptr<const View> Snapshot() const;
  void Publish(std::shared_ptr<const View> view, std::string_view why);

  // The state with the events implied by `view` at `now` applied (pure).
  KeyLifecycleState EffectiveState(const View& view, int64_t now) const;
  static const LoadedKey* SigningKey(const View& view, int64_t now);
  static bool Published(const LoadedKey& key, int64_t now);
  static bool DualActive(const View& view, int64_t now);

  // Maintenance helpers; maintenance_mu_ held.
  absl::Status LoadLocked(int64_t now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(maintenance_mu_);
  // Re-reads the keys when the store epoch moved (always when `force`), then pings the
  // HSM. On success the returned view carries the fresh keys; health is not touched.
  absl::StatusOr<View> Probe(const View& current, int64_t now, bool force,
                             const KeyMap& seeded);
  absl::StatusOr<std::vector<LoadedKey>> ReadKeys(const std::vector<store::JwtKeyRecord>& rows,
                                                  const View& current, int64_t now,
                                                  const KeyMap& seeded);
  // A new key and its row, sealed under the primary KEK.
  absl::StatusOr<std::pair<std::shared_ptr<const Es256PrivateKey>, store::JwtKeyRecord>> NewKey(
      int64_t now, int64_t activate_at);
  absl::StatusOr<RotationResult> RotateLocked(int64_t now, bool scheduled)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(maintenance_mu_);
  // Records a failed probe in a new view (Degraded/Critical through the table).
  void RecordFailure(const View& current, int64_t now, const absl::Status& error);
  KeyLifecycleState Apply(KeyLifecycleState state, KeyLifecycleEvent event) const;
  // Applies the health and time events to `view.state`.
  void Reconcile(View& view, int64_t now) const;

  keys::KekRing* const kek_ring_;
  store::JwtKeyStore* const store_;
  store::StoreHealth* const epoch_;
  const Clock* const clock_;
  const JwtServiceOptions options_;
  const ClaimsPolicy policy_;

  Mutex maintenance_mu_;  // serializes Load/Tick/Rotate/Ack/RewrapKeys
  mutable SharedMutex view_mu_;
  std::shared_ptr<const View> view_ ABSL_GUARDED_BY(view_mu_);  // never null
};

}  // namespace kms::jwt
