// Pkcs11Hsm: the Hsm seam over any PKCS#11 module (tested against SoftHSM2 2.6).
//
// Key objects
//   master key   token object found by CKA_LABEL == CKA_ID == options.master_key_label,
//                created on first use when options.create_master_key:
//                  rsa-4096: RSA key pair; private key CKA_SENSITIVE, !CKA_EXTRACTABLE,
//                            CKA_UNWRAP only; public key CKA_WRAP only.
//                  aes-256 : AES secret key, CKA_SENSITIVE, !CKA_EXTRACTABLE, CKA_WRAP and
//                            CKA_UNWRAP only.
//   KEK v<N>     AES-256 SESSION object (CKA_TOKEN=false), CKA_SENSITIVE, !CKA_EXTRACTABLE,
//                CKA_ENCRYPT/CKA_DECRYPT only, unwrapped from its stored blob. It lives on
//                one long-lived "anchor" session, so it dies with this object (or with the
//                process); the KEK plaintext never enters kmsd memory.
//
// Wrapped-KEK blob (what CreateKek returns and LoadKek reads), format version 1:
//
//   offset  size  field
//   0       1     blob format version = 0x01
//   1       1     wrapping mechanism id:
//                   0x01 rsa-oaep-sha1    CKM_RSA_PKCS_OAEP, SHA-1, MGF1-SHA1, no label
//                   0x02 rsa-oaep-sha256  CKM_RSA_PKCS_OAEP, SHA-256, MGF1-SHA256, no label
//                   0x03 aes-key-wrap-pad CKM_AES_KEY_WRAP_PAD (RFC 5649 / SP 800-38F KWP)
//   2       n     the wrapped AES-256 key as C_WrapKey returned it
//                   (n = 512 for RSA-4096, n = 40 for AES key wrap with padding)
//
// For an rsa-4096 master key the OAEP hash is chosen once per process and module: SHA-256
// when the token accepts it, else SHA-1 (SoftHSM2 2.6 refuses SHA-256 inside OAEP).
// Blobs always carry the mechanism, so both kinds stay readable.
//
// Sealed blob (Seal/Open): nonce(12) || AES-256-GCM ciphertext || tag(16), computed inside
// the HSM with CKM_AES_GCM (ulIvBits = 96, ulTagBits = 128, AAD as given).
//
// Thread safety: every method may be called concurrently; destroy the object only when no
// call is in flight. Each operation borrows its own
// PKCS#11 session from a pool (a session is never shared by two threads); when all
// `max_sessions` are busy, callers wait. Several Pkcs11Hsm objects (and InitToken) may use
// the same module in one process: the module is C_Initialize'd once and C_Finalize'd when
// the last user goes. C_Login is per process: a second Pkcs11Hsm on a token this process
// is already logged in to is accepted by the token without re-checking the PIN.
//
// Errors: every CK_RV becomes an absl::Status in RvToStatus ("C_Login: CKR_PIN_INCORRECT").
// Messages never contain PINs or key bytes.
#pragma once

#include <array>

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kms/common/secret.h"
#include "kms/common/status.h"
#include "kms/hsm/hsm.h"

namespace kms::hsm {

struct Pkcs11Options {
  std::string module_path;  // e.g. /usr/lib/softhsm/libsofthsm2.so
  std::string token_label;  // at most 32 bytes
  std::string pin_file;     // the user PIN; trailing whitespace/newlines are ignored
  std::string master_key_label = "kmsd-master";
  MasterKeyKind master_key_kind = MasterKeyKind::kRsa4096;
  bool create_master_key = true;  // false: a missing master key is an error
  int max_sessions = 16;          // PKCS#11 sessions used for Seal/Open/Ping at most
};

// The public operations, for per-kind counts.
enum class HsmOperation : size_t { kCreateKek, kLoadKek, kUnloadKek, kSeal, kOpen, kPing };
inline constexpr size_t kHsmOperationCount = 6;
// "create_kek", "load_kek", "unload_kek", "seal", "open", "ping" (the metrics' label).
inline std::string_view HsmOperationName(HsmOperation op) {
  constexpr std::string_view kNames[kHsmOperationCount] = {"create_kek", "load_kek", "unload_kek",
                                                           "seal",       "open",     "ping"};
  return kNames[static_cast<size_t>(op)];
}

// Counters since the Pkcs11Hsm was opened (successful operations, and failed ones).
struct HsmStats {
  uint64_t seals = 0;      // successful
  uint64_t opens = 0;      // successful
  uint64_t kek_loads = 0;  // successful
  uint64_t errors = 0;     // failed operations of every kind
  uint64_t pings = 0;        // attempted
  uint64_t kek_creates = 0;  // attempted
  std::array<uint64_t, kHsmOperationCount> errors_by_operation{};  // indexed by HsmOperation
  int sessions_in_use = 0;  // PKCS#11 sessions lent to an operation now
  int sessions_max = 0;     // the pool's bound (Pkcs11Options::max_sessions)
};

// What a key object's protection attributes say (for diagnostics and tests; no key bytes).
struct KeyProtection {
  bool token_object = false;       // CKA_TOKEN
  bool sensitive = false;          // CKA_SENSITIVE
  bool extractable = false;        // CKA_EXTRACTABLE
  bool always_sensitive = false;   // CKA_ALWAYS_SENSITIVE
  bool never_extractable = false;  // CKA_NEVER_EXTRACTABLE
  // Whether the token let CKA_VALUE (secret keys) or CKA_PRIVATE_EXPONENT (RSA) be read.
  // Probed with a size query only, so no key byte is ever copied out.
  bool value_readable = false;
};

// Wrapped-KEK mechanism ids (byte 1 of a wrapped-KEK blob).
enum class KekWrapMechanism : uint8_t {
  kRsaOaepSha1 = 1,
  kRsaOaepSha256 = 2,
  kAesKeyWrapPad = 3,
};
std::string_view KekWrapMechanismName(KekWrapMechanism mechanism);
// The mechanism a wrapped-KEK blob of this backend records ("rsa-oaep-sha1", ...);
// INVALID_ARGUMENT when the header does not parse. Pkcs11Hsm::DescribeWrappedKek is the
// seam's way to this; the free function serves the backend and its tests.
absl::StatusOr<std::string_view> WrappedKekMechanismName(std::span<const uint8_t> wrapped_kek);

class Pkcs11Hsm final : public Hsm {
 public:
  // Loads the module, finds the token by label, logs in with the PIN from the pin file,
  // and finds (or creates) the master key. Errors: NOT_FOUND (module, token or master key
  // missing), PERMISSION_DENIED (wrong or locked PIN), FAILED_PRECONDITION (master key of
  // the other kind, ambiguous labels), INVALID_ARGUMENT (bad options), UNAVAILABLE.
  static absl::StatusOr<std::unique_ptr<Pkcs11Hsm>> Open(const Pkcs11Options& options);

  // Initializes the first uninitialized token of the module with `label`, then sets the
  // user PIN (as SO: C_InitPIN). PINs never pass through a command line. The token may
  // change slot id afterwards (SoftHSM2 does): find it by label.
  // ALREADY_EXISTS when an initialized token already has that label.
  static absl::Status InitToken(const std::string& module_path, const std::string& label,
                                const SecretBytes& so_pin, const SecretBytes& user_pin);

  ~Pkcs11Hsm() override;
  Pkcs11Hsm(const Pkcs11Hsm&) = delete;
  Pkcs11Hsm& operator=(const Pkcs11Hsm&) = delete;

  // Hsm. CreateKek of a version that is already loaded fails with ALREADY_EXISTS (unload
  // it first); LoadKek validates the blob header (INVALID_ARGUMENT) and the unwrap
  // (DATA_LOSS "unwrap failed: ...").
  MasterKeyKind master_key_kind() const override;
  absl::StatusOr<std::vector<uint8_t>> CreateKek(uint32_t kek_version) override;
  absl::Status LoadKek(uint32_t kek_version, std::span<const uint8_t> wrapped_kek) override;
  bool HasKek(uint32_t kek_version) const override;
  // An operation that already looked up the KEK may still fail with an UNAVAILABLE/INTERNAL
  // key-handle error if it races with the unload.
  absl::Status UnloadKek(uint32_t kek_version) override;
  absl::StatusOr<std::vector<uint8_t>> Seal(uint32_t kek_version,
                                            std::span<const uint8_t> plaintext,
                                            std::span<const uint8_t> aad) override;
  absl::StatusOr<SecretBytes> Open(uint32_t kek_version, std::span<const uint8_t> sealed,
                                   std::span<const uint8_t> aad) override;
  absl::Status Ping() override;
  std::string DescribeWrappedKek(std::span<const uint8_t> wrapped_kek) const override;

  // The mechanism CreateKek wraps new KEKs with (decided at Open; worth logging).
  KekWrapMechanism kek_wrap_mechanism() const;
  // True when Open created the master key (it did not exist on the token).
  bool created_master_key() const;
  HsmStats stats() const;

  // Known-answer test of AES-256-GCM inside the token (the zero key, zero 96-bit IV and
  // 16 zero bytes of McGrew & Viega's test case 14, as in NIST's GCM validation): a
  // temporary session key object is created, encrypts and decrypts, and is destroyed.
  // FAILED_PRECONDITION when the token computes a wrong answer (a misbehaving module or
  // proxy), the call's own status when the token cannot be reached (a down one).
  absl::Status KnownAnswerTest();

  // Diagnostics: protection attributes of a loaded KEK (NOT_FOUND if not loaded) and of
  // the master key (for rsa-4096: the private key).
  absl::StatusOr<KeyProtection> DescribeKek(uint32_t kek_version) const;
  absl::StatusOr<KeyProtection> DescribeMasterKey() const;

 private:
  struct Impl;
  explicit Pkcs11Hsm(std::unique_ptr<Impl> impl);

  std::unique_ptr<Impl> impl_;
};

}  // namespace kms::hsm
