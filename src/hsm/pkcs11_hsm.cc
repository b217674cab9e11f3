#include "src/hsm/pkcs11_hsm.h"

#include <cstring>
#include <map>
#include <utility>

#include <openssl/rand.h>

#include <array>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "src/common/secret_file.h"
#include "src/common/strings.h"
#include "src/common/sync.h"
#include "src/hsm/pkcs11_module.h"
#include "src/hsm/session_pool.h"

namespace kms::hsm {
namespace {

constexpr uint8_t kBlobFormatV1 = 0x01;
constexpr size_t kBlobHeaderSize = 2;
constexpr size_t kNonceSize = 12;
constexpr size_t kTagSize = 16;
constexpr CK_ULONG kKekBytes = 32;
constexpr CK_ULONG kRsaBits = 4096;
constexpr size_t kMaxLabelBytes = 32;
constexpr size_t kMaxPinFileBytes = 1024;

// Templates only read these; the PKCS#11 API just is not const-correct.
CK_BBOOL kCkTrue = CK_TRUE;
CK_BBOOL kCkFalse = CK_FALSE;

CK_ATTRIBUTE Bool(CK_ATTRIBUTE_TYPE type, bool v) {
  return {type, v ? &kCkTrue : &kCkFalse, sizeof(CK_BBOOL)};
}
template <typename T>
CK_ATTRIBUTE Scalar(CK_ATTRIBUTE_TYPE type, const T* v) {
  return {type, const_cast<T*>(v), sizeof(T)};
}
CK_ATTRIBUTE Bytes(CK_ATTRIBUTE_TYPE type, std::string_view s) {
  return {type, const_cast<char*>(s.data()), static_cast<CK_ULONG>(s.size())};
}

// Destroys a key object when it goes out of scope, unless released.
class ObjectGuard {
 public:
  ObjectGuard(CK_FUNCTION_LIST* fn, CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object)
      : fn_(fn), session_(session), object_(object) {}
  ~ObjectGuard() {
    if (object_ != CK_INVALID_HANDLE) fn_->C_DestroyObject(session_, object_);
  }
  ObjectGuard(const ObjectGuard&) = delete;
  ObjectGuard& operator=(const ObjectGuard&) = delete;
  CK_OBJECT_HANDLE get() const { return object_; }
  CK_OBJECT_HANDLE Release() { return std::exchange(object_, CK_INVALID_HANDLE); }

 private:
  CK_FUNCTION_LIST* fn_;
  CK_SESSION_HANDLE session_;
  CK_OBJECT_HANDLE object_;
};

// Closes a session when it goes out of scope, unless released.
class SessionGuard {
 public:
  explicit SessionGuard(CK_FUNCTION_LIST* fn) : fn_(fn) {}
  ~SessionGuard() {
    if (handle_ != CK_INVALID_HANDLE) fn_->C_CloseSession(handle_);
  }
  SessionGuard(const SessionGuard&) = delete;
  SessionGuard& operator=(const SessionGuard&) = delete;
  CK_SESSION_HANDLE* out() { return &handle_; }
  CK_SESSION_HANDLE get() const { return handle_; }
  CK_SESSION_HANDLE Release() { return std::exchange(handle_, CK_INVALID_HANDLE); }

 private:
  CK_FUNCTION_LIST* fn_;
  CK_SESSION_HANDLE handle_ = CK_INVALID_HANDLE;
};

absl::Status ValidateLabel(std::string_view what, std::string_view label) {
  if (label.empty() || label.size() > kMaxLabelBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(Av(what), " must be 1 to ", kMaxLabelBytes, " bytes, got ", label.size()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<CK_OBJECT_HANDLE>> FindObjects(CK_FUNCTION_LIST* fn,
                                                          CK_SESSION_HANDLE session,
                                                          std::vector<CK_ATTRIBUTE> tmpl) {
  CK_RV rv = fn->C_FindObjectsInit(session, tmpl.data(), tmpl.size());
  if (rv != CKR_OK) return RvToStatus(rv, "C_FindObjectsInit");
  std::vector<CK_OBJECT_HANDLE> found;
  CK_OBJECT_HANDLE batch[16];
  for (;;) {
    CK_ULONG n = 0;
    rv = fn->C_FindObjects(session, batch, 16, &n);
    if (rv != CKR_OK) break;
    found.insert(found.end(), batch, batch + n);
    if (n == 0) break;
  }
  CK_RV final_rv = fn->C_FindObjectsFinal(session);
  if (rv != CKR_OK) return RvToStatus(rv, "C_FindObjects");
  if (final_rv != CKR_OK) return RvToStatus(final_rv, "C_FindObjectsFinal");
  return found;
}

absl::StatusOr<std::vector<CK_OBJECT_HANDLE>> FindByLabel(CK_FUNCTION_LIST* fn,
                                                          CK_SESSION_HANDLE session,
                                                          CK_OBJECT_CLASS cls,
                                                          std::string_view label) {
  return FindObjects(fn, session,
                     {Scalar(CKA_CLASS, &cls), Bytes(CKA_LABEL, label), Bool(CKA_TOKEN, true)});
}

absl::StatusOr<CK_ULONG> GetUlong(CK_FUNCTION_LIST* fn, CK_SESSION_HANDLE session,
                                  CK_OBJECT_HANDLE object, CK_ATTRIBUTE_TYPE type,
                                  std::string_view what) {
  CK_ULONG v = 0;
  CK_ATTRIBUTE a = Scalar(type, &v);
  CK_RV rv = fn->C_GetAttributeValue(session, object, &a, 1);
  if (rv != CKR_OK) return RvToStatus(rv, absl::StrCat("C_GetAttributeValue(", Av(what), ")"));
  return v;
}

absl::StatusOr<bool> GetBool(CK_FUNCTION_LIST* fn, CK_SESSION_HANDLE session,
                             CK_OBJECT_HANDLE object, CK_ATTRIBUTE_TYPE type,
                             std::string_view what) {
  CK_BBOOL v = CK_FALSE;
  CK_ATTRIBUTE a = Scalar(type, &v);
  CK_RV rv = fn->C_GetAttributeValue(session, object, &a, 1);
  if (rv != CKR_OK) return RvToStatus(rv, absl::StrCat("C_GetAttributeValue(", Av(what), ")"));
  return v == CK_TRUE;
}

bool IsDecryptFailure(CK_RV rv) {
  // SoftHSM2 reports a GCM tag mismatch and a bad OAEP / key-wrap padding as
  // CKR_GENERAL_ERROR or CKR_ENCRYPTED_DATA_INVALID.
  return rv == CKR_ENCRYPTED_DATA_INVALID || rv == CKR_ENCRYPTED_DATA_LEN_RANGE ||
         rv == CKR_WRAPPED_KEY_INVALID || rv == CKR_WRAPPED_KEY_LEN_RANGE ||
         rv == CKR_GENERAL_ERROR || rv == CKR_DATA_LEN_RANGE || rv == CKR_DATA_INVALID;
}

struct ParsedBlob {
  KekWrapMechanism mechanism;
  std::span<const uint8_t> wrapped;
};

absl::StatusOr<ParsedBlob> ParseWrappedKek(std::span<const uint8_t> blob) {
  if (blob.size() <= kBlobHeaderSize) {
    return absl::InvalidArgumentError("wrapped KEK blob is too short");
  }
  if (blob[0] != kBlobFormatV1) {
    return absl::InvalidArgumentError(
        absl::StrCat("wrapped KEK blob has unknown format version ", blob[0]));
  }
  switch (blob[1]) {
    case static_cast<uint8_t>(KekWrapMechanism::kRsaOaepSha1):
    case static_cast<uint8_t>(KekWrapMechanism::kRsaOaepSha256):
    case static_cast<uint8_t>(KekWrapMechanism::kAesKeyWrapPad):
      return ParsedBlob{static_cast<KekWrapMechanism>(blob[1]), blob.subspan(kBlobHeaderSize)};
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("wrapped KEK blob names unknown mechanism ", blob[1]));
  }
}

bool MechanismFitsKind(KekWrapMechanism m, MasterKeyKind kind) {
  return kind == MasterKeyKind::kAes256 ? m == KekWrapMechanism::kAesKeyWrapPad
                                        : m != KekWrapMechanism::kAesKeyWrapPad;
}

// AES-GCM parameters: a kNonceSize-byte IV at `iv` and a kTagSize-byte tag.
CK_GCM_PARAMS GcmParams(const uint8_t* iv, std::span<const uint8_t> aad) {
  CK_GCM_PARAMS gcm{};
  gcm.pIv = const_cast<uint8_t*>(iv);
  gcm.ulIvLen = kNonceSize;
  gcm.ulIvBits = kNonceSize * 8;
  gcm.pAAD = const_cast<uint8_t*>(aad.data());
  gcm.ulAADLen = aad.size();
  gcm.ulTagBits = kTagSize * 8;
  return gcm;
}

// A CK_MECHANISM for a wrap mechanism; owns its parameter block.
class WrapMechanism {
 public:
  explicit WrapMechanism(KekWrapMechanism m) {
    switch (m) {
      case KekWrapMechanism::kRsaOaepSha1:
      case KekWrapMechanism::kRsaOaepSha256: {
        bool sha256 = m == KekWrapMechanism::kRsaOaepSha256;
        oaep_.hashAlg = sha256 ? CKM_SHA256 : CKM_SHA_1;
        oaep_.mgf = sha256 ? CKG_MGF1_SHA256 : CKG_MGF1_SHA1;
        oaep_.source = CKZ_DATA_SPECIFIED;
        oaep_.pSourceData = nullptr;
        oaep_.ulSourceDataLen = 0;
        mech_ = {CKM_RSA_PKCS_OAEP, &oaep_, sizeof(oaep_)};
        break;
      }
      case KekWrapMechanism::kAesKeyWrapPad:
        mech_ = {CKM_AES_KEY_WRAP_PAD, nullptr, 0};
        break;
    }
  }
  WrapMechanism(const WrapMechanism&) = delete;
  WrapMechanism& operator=(const WrapMechanism&) = delete;
  CK_MECHANISM* get() { return &mech_; }

 private:
  CK_RSA_PKCS_OAEP_PARAMS oaep_{};
  CK_MECHANISM mech_{};
};

// The OAEP hash chosen for RSA master keys, once per process and module path.
struct OaepChoiceTable {
  Mutex mu;
  std::map<std::string, KekWrapMechanism> by_module ABSL_GUARDED_BY(mu);
};
OaepChoiceTable& OaepChoices() {
  static auto* choices = new OaepChoiceTable;
  return *choices;
}

// Serializes find-or-create of master keys within the process.
Mutex& MasterKeyMutex() {
  static auto* mu = new Mutex;
  return *mu;
}

absl::StatusOr<std::vector<uint8_t>> GenerateRandom(size_t n) {
  std::vector<uint8_t> out(n);
  if (RAND_bytes(out.data(), static_cast<int>(n)) != 1) {
    return absl::InternalError("RAND_bytes failed");
  }
  return out;
}

}  // namespace

std::string_view KekWrapMechanismName(KekWrapMechanism mechanism) {
  switch (mechanism) {
    case KekWrapMechanism::kRsaOaepSha1:
      return "rsa-oaep-sha1";
    case KekWrapMechanism::kRsaOaepSha256:
      return "rsa-oaep-sha256";
    case KekWrapMechanism::kAesKeyWrapPad:
      return "aes-key-wrap-pad";
  }
  return "unknown";
}

absl::StatusOr<std::string_view> WrappedKekMechanismName(std::span<const uint8_t> wrapped_kek) {
  KMS_ASSIGN_OR_RETURN(ParsedBlob parsed, ParseWrappedKek(wrapped_kek));
  return KekWrapMechanismName(parsed.mechanism);
}

std::string Pkcs11Hsm::DescribeWrappedKek(std::span<const uint8_t> wrapped_kek) const {
  return std::string(WrappedKekMechanismName(wrapped_kek).value_or("unknown"));
}

struct Pkcs11Hsm::Impl {
  Impl(std::shared_ptr<Pkcs11Module> m, CK_SLOT_ID s, MasterKeyKind k, std::string token,
       std::string master)
      : module(std::move(m)),
        fn(module->fn()),
        slot(s),
        kind(k),
        token_label(std::move(token)),
        master_label(std::move(master)) {}

  ~Impl() {
    pool.reset();
    // Closing the anchor session destroys every KEK session object.
    MutexLock lock(&anchor_mu);
    if (anchor != CK_INVALID_HANDLE) fn->C_CloseSession(anchor);
  }

  absl::Status FindOrCreateMasterKey(bool create);
  // FAILED_PRECONDITION unless `wrap_key` may wrap and `unwrap_key` may unwrap.
  absl::Status CheckWrapCapable(std::string_view where, CK_OBJECT_HANDLE wrap_key,
                                CK_OBJECT_HANDLE unwrap_key)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(anchor_mu);
  absl::Status GenerateRsaMasterKey() ABSL_EXCLUSIVE_LOCKS_REQUIRED(anchor_mu);
  absl::Status GenerateAesMasterKey() ABSL_EXCLUSIVE_LOCKS_REQUIRED(anchor_mu);
  absl::StatusOr<KekWrapMechanism> ChooseWrapMechanism();
  absl::StatusOr<std::vector<uint8_t>> WrapNewKek(KekWrapMechanism m, CK_RV* wrap_rv = nullptr);
  absl::StatusOr<std::vector<uint8_t>> CreateKek(uint32_t version);
  absl::Status LoadKek(uint32_t version, std::span<const uint8_t> blob);
  absl::StatusOr<CK_OBJECT_HANDLE> KekHandle(uint32_t version) const;
  absl::Status UnloadKek(uint32_t version);
  absl::StatusOr<std::vector<uint8_t>> Seal(uint32_t version, std::span<const uint8_t> pt,
                                            std::span<const uint8_t> aad);
  absl::StatusOr<SecretBytes> Open(uint32_t version, std::span<const uint8_t> sealed,
                                   std::span<const uint8_t> aad);
  absl::Status Ping();
  absl::StatusOr<KeyProtection> Describe(CK_OBJECT_HANDLE object, CK_ATTRIBUTE_TYPE secret_attr);

  // Counts a failed public operation in `errors` and in its kind's count; returns
  // `result` unchanged.
  template <typename Result>
  Result CountError(HsmOperation op, Result result) {
    if (!result.ok()) {
      errors.fetch_add(1, std::memory_order_relaxed);
      errors_by_op[static_cast<size_t>(op)].fetch_add(1, std::memory_order_relaxed);
    }
    return result;
  }

  const std::shared_ptr<Pkcs11Module> module;
  CK_FUNCTION_LIST* const fn;
  const CK_SLOT_ID slot;
  const MasterKeyKind kind;
  const std::string token_label;
  const std::string master_label;

  // Set during Open, constant afterwards. For aes-256 both are the same secret key.
  CK_OBJECT_HANDLE master_wrap = CK_INVALID_HANDLE;    // rsa: public key
  CK_OBJECT_HANDLE master_unwrap = CK_INVALID_HANDLE;  // rsa: private key
  KekWrapMechanism wrap_mechanism = KekWrapMechanism::kAesKeyWrapPad;
  bool created_master = false;
  std::unique_ptr<SessionPool> pool;

  // The anchor session owns the KEK session objects and is closed only by ~Impl. Like
  // any session it is used by one thread at a time, hence the mutex (held across the
  // PKCS#11 calls made on this session: unwrapping a KEK, nothing on the hot path).
  Mutex anchor_mu ABSL_ACQUIRED_BEFORE(keks_mu);
  CK_SESSION_HANDLE anchor ABSL_GUARDED_BY(anchor_mu) = CK_INVALID_HANDLE;

  // Readers (every Seal/Open) take it shared; it is never held across a PKCS#11 call.
  mutable SharedMutex keks_mu;
  std::map<uint32_t, CK_OBJECT_HANDLE> keks ABSL_GUARDED_BY(keks_mu);

  std::atomic<uint64_t> seals{0};
  std::atomic<uint64_t> opens{0};
  std::atomic<uint64_t> kek_loads{0};
  std::atomic<uint64_t> errors{0};
  std::array<std::atomic<uint64_t>, kHsmOperationCount> errors_by_op{};
  std::atomic<uint64_t> pings{0};
  std::atomic<uint64_t> kek_creates{0};
};

absl::Status Pkcs11Hsm::Impl::FindOrCreateMasterKey(bool create) {
  MutexLock process_lock(&MasterKeyMutex());
  MutexLock lock(&anchor_mu);
  KMS_ASSIGN_OR_RETURN(auto priv, FindByLabel(fn, anchor, CKO_PRIVATE_KEY, master_label));
  KMS_ASSIGN_OR_RETURN(auto pub, FindByLabel(fn, anchor, CKO_PUBLIC_KEY, master_label));
  KMS_ASSIGN_OR_RETURN(auto secret, FindByLabel(fn, anchor, CKO_SECRET_KEY, master_label));
  const std::string where = absl::StrCat("master key '", master_label, "' on token '",
                                         token_label, "'");
  if (priv.size() > 1 || pub.size() > 1 || secret.size() > 1) {
    return absl::FailedPreconditionError(
        absl::StrCat(where, " is ambiguous: several objects carry that label"));
  }
  const bool has_rsa = !priv.empty() || !pub.empty();
  const bool has_aes = !secret.empty();
  if (has_rsa && has_aes) {
    return absl::FailedPreconditionError(
        absl::StrCat(where, " is ambiguous: both an RSA key and a secret key carry that label"));
  }
  if (kind == MasterKeyKind::kRsa4096 && has_aes) {
    return absl::FailedPreconditionError(absl::StrCat(
        where, " is an aes-256 key, but master key kind rsa-4096 is configured"));
  }
  if (kind == MasterKeyKind::kAes256 && has_rsa) {
    return absl::FailedPreconditionError(absl::StrCat(
        where, " is an rsa-4096 key pair, but master key kind aes-256 is configured"));
  }

  if (kind == MasterKeyKind::kRsa4096) {
    if (!has_rsa) {
      if (!create) {
        return absl::NotFoundError(
            absl::StrCat(where, " does not exist (and creating it is disabled)"));
      }
      KMS_RETURN_IF_ERROR(GenerateRsaMasterKey());
      created_master = true;
      return absl::OkStatus();
    }
    if (priv.empty() || pub.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          where, " is incomplete: ", priv.empty() ? "private" : "public", " key missing"));
    }
    KMS_ASSIGN_OR_RETURN(CK_ULONG type,
                         GetUlong(fn, anchor, priv[0], CKA_KEY_TYPE, "CKA_KEY_TYPE"));
    if (type != CKK_RSA) {
      return absl::FailedPreconditionError(absl::StrCat(where, " is not an RSA key"));
    }
    KMS_RETURN_IF_ERROR(CheckWrapCapable(where, pub[0], priv[0]));
    master_wrap = pub[0];
    master_unwrap = priv[0];
    return absl::OkStatus();
  }

  if (!has_aes) {
    if (!create) {
      return absl::NotFoundError(
          absl::StrCat(where, " does not exist (and creating it is disabled)"));
    }
    KMS_RETURN_IF_ERROR(GenerateAesMasterKey());
    created_master = true;
    return absl::OkStatus();
  }
  KMS_ASSIGN_OR_RETURN(CK_ULONG type,
                       GetUlong(fn, anchor, secret[0], CKA_KEY_TYPE, "CKA_KEY_TYPE"));
  KMS_ASSIGN_OR_RETURN(CK_ULONG len,
                       GetUlong(fn, anchor, secret[0], CKA_VALUE_LEN, "CKA_VALUE_LEN"));
  if (type != CKK_AES || len != kKekBytes) {
    return absl::FailedPreconditionError(absl::StrCat(where, " is not an AES-256 key"));
  }
  KMS_RETURN_IF_ERROR(CheckWrapCapable(where, secret[0], secret[0]));
  master_wrap = secret[0];
  master_unwrap = secret[0];
  return absl::OkStatus();
}

absl::Status Pkcs11Hsm::Impl::CheckWrapCapable(std::string_view where,
                                               CK_OBJECT_HANDLE wrap_key,
                                               CK_OBJECT_HANDLE unwrap_key) {
  KMS_ASSIGN_OR_RETURN(bool can_wrap, GetBool(fn, anchor, wrap_key, CKA_WRAP, "CKA_WRAP"));
  KMS_ASSIGN_OR_RETURN(bool can_unwrap,
                       GetBool(fn, anchor, unwrap_key, CKA_UNWRAP, "CKA_UNWRAP"));
  if (!can_unwrap || !can_wrap) {
    return absl::FailedPreconditionError(
        absl::StrCat(Av(where), " is not usable for wrapping (CKA_WRAP/CKA_UNWRAP not set)"));
  }
  // A pre-provisioned master key must be as protected as one kmsd would create: its
  // secret part sensitive and never extractable.
  KMS_ASSIGN_OR_RETURN(bool sensitive, GetBool(fn, anchor, unwrap_key, CKA_SENSITIVE, "CKA_SENSITIVE"));
  KMS_ASSIGN_OR_RETURN(bool extractable,
                       GetBool(fn, anchor, unwrap_key, CKA_EXTRACTABLE, "CKA_EXTRACTABLE"));
  if (!sensitive || extractable) {
    return absl::FailedPreconditionError(absl::StrCat(
        Av(where), " is not protected: its secret part must be CKA_SENSITIVE and not CKA_EXTRACTABLE"));
  }
  return absl::OkStatus();
}

absl::Status Pkcs11Hsm::Impl::GenerateRsaMasterKey() {
  CK_ULONG bits = kRsaBits;
  static const CK_BYTE kExponent[] = {0x01, 0x00, 0x01};
  std::vector<CK_ATTRIBUTE> pub_tmpl = {
      Bool(CKA_TOKEN, true),
      Bool(CKA_PRIVATE, false),
      Scalar(CKA_MODULUS_BITS, &bits),
      {CKA_PUBLIC_EXPONENT, const_cast<CK_BYTE*>(kExponent), sizeof(kExponent)},
      Bool(CKA_WRAP, true),
      Bool(CKA_ENCRYPT, false),
      Bool(CKA_VERIFY, false),
      Bytes(CKA_LABEL, master_label),
      Bytes(CKA_ID, master_label),
  };
  std::vector<CK_ATTRIBUTE> priv_tmpl = {
      Bool(CKA_TOKEN, true),
      Bool(CKA_PRIVATE, true),
      Bool(CKA_SENSITIVE, true),
      Bool(CKA_EXTRACTABLE, false),
      Bool(CKA_UNWRAP, true),
      Bool(CKA_DECRYPT, false),
      Bool(CKA_SIGN, false),
      Bytes(CKA_LABEL, master_label),
      Bytes(CKA_ID, master_label),
  };
  CK_MECHANISM mech = {CKM_RSA_PKCS_KEY_PAIR_GEN, nullptr, 0};
  CK_OBJECT_HANDLE pub = CK_INVALID_HANDLE;
  CK_OBJECT_HANDLE priv = CK_INVALID_HANDLE;
  CK_RV rv = fn->C_GenerateKeyPair(anchor, &mech, pub_tmpl.data(), pub_tmpl.size(),
                                   priv_tmpl.data(), priv_tmpl.size(), &pub, &priv);
  if (rv != CKR_OK) return RvToStatus(rv, "C_GenerateKeyPair(rsa-4096 master key)");
  master_wrap = pub;
  master_unwrap = priv;
  return absl::OkStatus();
}

absl::Status Pkcs11Hsm::Impl::GenerateAesMasterKey() {
  CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
  CK_KEY_TYPE type = CKK_AES;
  CK_ULONG len = kKekBytes;
  std::vector<CK_ATTRIBUTE> tmpl = {
      Scalar(CKA_CLASS, &cls),
      Scalar(CKA_KEY_TYPE, &type),
      Scalar(CKA_VALUE_LEN, &len),
      Bool(CKA_TOKEN, true),
      Bool(CKA_PRIVATE, true),
      Bool(CKA_SENSITIVE, true),
      Bool(CKA_EXTRACTABLE, false),
      Bool(CKA_WRAP, true),
      Bool(CKA_UNWRAP, true),
      Bool(CKA_ENCRYPT, false),
      Bool(CKA_DECRYPT, false),
      Bool(CKA_SIGN, false),
      Bool(CKA_VERIFY, false),
      Bytes(CKA_LABEL, master_label),
      Bytes(CKA_ID, master_label),
  };
  CK_MECHANISM mech = {CKM_AES_KEY_GEN, nullptr, 0};
  CK_OBJECT_HANDLE key = CK_INVALID_HANDLE;
  CK_RV rv = fn->C_GenerateKey(anchor, &mech, tmpl.data(), tmpl.size(), &key);
  if (rv != CKR_OK) return RvToStatus(rv, "C_GenerateKey(aes-256 master key)");
  master_wrap = key;
  master_unwrap = key;
  return absl::OkStatus();
}

// Generates a throw-away extractable AES-256 session key, wraps it with `m`, destroys it.
// `wrap_rv` receives the result of C_WrapKey, when it was called.
absl::StatusOr<std::vector<uint8_t>> Pkcs11Hsm::Impl::WrapNewKek(KekWrapMechanism m,
                                                                 CK_RV* wrap_rv) {
  KMS_ASSIGN_OR_RETURN(SessionLease lease, pool->Acquire());
  CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
  CK_KEY_TYPE type = CKK_AES;
  CK_ULONG len = kKekBytes;
  std::vector<CK_ATTRIBUTE> tmpl = {
      Scalar(CKA_CLASS, &cls),
      Scalar(CKA_KEY_TYPE, &type),
      Scalar(CKA_VALUE_LEN, &len),
      Bool(CKA_TOKEN, false),
      Bool(CKA_PRIVATE, true),
      Bool(CKA_SENSITIVE, true),
      // Only so that the master key can wrap it; the value is never readable.
      Bool(CKA_EXTRACTABLE, true),
      Bool(CKA_ENCRYPT, false),
      Bool(CKA_DECRYPT, false),
      Bool(CKA_WRAP, false),
      Bool(CKA_UNWRAP, false),
  };
  CK_MECHANISM gen = {CKM_AES_KEY_GEN, nullptr, 0};
  CK_OBJECT_HANDLE raw = CK_INVALID_HANDLE;
  CK_RV rv = lease.Check(fn->C_GenerateKey(lease.handle(), &gen, tmpl.data(), tmpl.size(), &raw));
  if (rv != CKR_OK) return RvToStatus(rv, "C_GenerateKey(KEK)");
  ObjectGuard temp(fn, lease.handle(), raw);

  WrapMechanism mech(m);
  CK_ULONG wrapped_len = 0;
  rv = lease.Check(fn->C_WrapKey(lease.handle(), mech.get(), master_wrap, temp.get(), nullptr,
                                 &wrapped_len));
  if (wrap_rv != nullptr) *wrap_rv = rv;
  if (rv != CKR_OK) return RvToStatus(rv, "C_WrapKey");
  std::vector<uint8_t> blob(kBlobHeaderSize + wrapped_len);
  blob[0] = kBlobFormatV1;
  blob[1] = static_cast<uint8_t>(m);
  rv = lease.Check(fn->C_WrapKey(lease.handle(), mech.get(), master_wrap, temp.get(),
                                 blob.data() + kBlobHeaderSize, &wrapped_len));
  if (wrap_rv != nullptr) *wrap_rv = rv;
  if (rv != CKR_OK) return RvToStatus(rv, "C_WrapKey");
  blob.resize(kBlobHeaderSize + wrapped_len);
  return blob;
}

absl::StatusOr<KekWrapMechanism> Pkcs11Hsm::Impl::ChooseWrapMechanism() {
  if (kind == MasterKeyKind::kAes256) return KekWrapMechanism::kAesKeyWrapPad;
  {
    OaepChoiceTable& table = OaepChoices();
    MutexLock lock(&table.mu);
    auto it = table.by_module.find(module->path());
    if (it != table.by_module.end()) return it->second;
  }
  // Probe once: wrap a throw-away key with OAEP/SHA-256. Tokens that only do SHA-1 in OAEP
  // (SoftHSM2 2.6) refuse the parameters.
  KekWrapMechanism chosen = KekWrapMechanism::kRsaOaepSha256;
  CK_RV wrap_rv = CKR_OK;
  absl::StatusOr<std::vector<uint8_t>> probe = WrapNewKek(chosen, &wrap_rv);
  if (!probe.ok()) {
    if (wrap_rv != CKR_ARGUMENTS_BAD && wrap_rv != CKR_MECHANISM_PARAM_INVALID) {
      return probe.status();
    }
    chosen = KekWrapMechanism::kRsaOaepSha1;
  }
  OaepChoiceTable& table = OaepChoices();
  MutexLock lock(&table.mu);
  return table.by_module.emplace(module->path(), chosen).first->second;
}

absl::StatusOr<CK_OBJECT_HANDLE> Pkcs11Hsm::Impl::KekHandle(uint32_t version) const {
  ReaderLock lock(&keks_mu);
  auto it = keks.find(version);
  if (it == keks.end()) {
    return absl::NotFoundError(absl::StrCat("KEK version ", version, " is not loaded"));
  }
  return it->second;
}

absl::StatusOr<std::vector<uint8_t>> Pkcs11Hsm::Impl::CreateKek(uint32_t version) {
  if (KekHandle(version).ok()) {
    return absl::AlreadyExistsError(absl::StrCat("KEK version ", version, " is already loaded"));
  }
  KMS_ASSIGN_OR_RETURN(std::vector<uint8_t> blob, WrapNewKek(wrap_mechanism));
  // From here on the only live copy of the KEK is the non-extractable unwrapped object.
  KMS_RETURN_IF_ERROR(LoadKek(version, blob));
  return blob;
}

absl::Status Pkcs11Hsm::Impl::LoadKek(uint32_t version, std::span<const uint8_t> blob) {
  KMS_ASSIGN_OR_RETURN(ParsedBlob parsed, ParseWrappedKek(blob));
  if (!MechanismFitsKind(parsed.mechanism, kind)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KEK version ", version, " was wrapped with ", Av(KekWrapMechanismName(parsed.mechanism)),
        ", which does not fit the ", Av(MasterKeyKindName(kind)), " master key"));
  }
  if (KekHandle(version).ok()) return absl::OkStatus();

  CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
  CK_KEY_TYPE type = CKK_AES;
  const std::string label = absl::StrCat("kmsd-kek-v", version);
  std::vector<CK_ATTRIBUTE> tmpl = {
      Scalar(CKA_CLASS, &cls),
      Scalar(CKA_KEY_TYPE, &type),
      Bool(CKA_TOKEN, false),
      Bool(CKA_PRIVATE, true),
      Bool(CKA_SENSITIVE, true),
      Bool(CKA_EXTRACTABLE, false),
      Bool(CKA_ENCRYPT, true),
      Bool(CKA_DECRYPT, true),
      Bool(CKA_WRAP, false),
      Bool(CKA_UNWRAP, false),
      Bool(CKA_SIGN, false),
      Bool(CKA_VERIFY, false),
      Bytes(CKA_LABEL, label),
  };
  WrapMechanism mech(parsed.mechanism);

  MutexLock lock(&anchor_mu);
  if (KekHandle(version).ok()) return absl::OkStatus();  // loaded meanwhile
  if (anchor == CK_INVALID_HANDLE) return WithCkr(absl::UnavailableError("HSM anchor session is gone"), CKR_DEVICE_REMOVED);
  CK_OBJECT_HANDLE raw = CK_INVALID_HANDLE;
  CK_RV rv = fn->C_UnwrapKey(anchor, mech.get(), master_unwrap,
                             const_cast<uint8_t*>(parsed.wrapped.data()),
                             parsed.wrapped.size(), tmpl.data(), tmpl.size(), &raw);
  if (rv != CKR_OK) {
    if (IsDecryptFailure(rv)) {
      return absl::DataLossError(
          absl::StrCat("unwrap failed: C_UnwrapKey: ", CkrName(rv), " (KEK version ", version,
                       " blob does not unwrap under master key '", master_label, "')"));
    }
    return RvToStatus(rv, "C_UnwrapKey");
  }
  ObjectGuard kek(fn, anchor, raw);
  // SoftHSM2 2.6 leaves CKA_VALUE_LEN at 0 on unwrapped keys; check it where it is set.
  KMS_ASSIGN_OR_RETURN(CK_ULONG len, GetUlong(fn, anchor, raw, CKA_VALUE_LEN, "CKA_VALUE_LEN"));
  if (len != 0 && len != kKekBytes) {
    return absl::DataLossError(
        absl::StrCat("KEK version ", version, " blob does not hold an AES-256 key (", len, " bytes)"));
  }
  {
    WriterLock keks_lock(&keks_mu);
    keks.emplace(version, kek.Release());
  }
  kek_loads.fetch_add(1, std::memory_order_relaxed);
  return absl::OkStatus();
}

absl::Status Pkcs11Hsm::Impl::UnloadKek(uint32_t version) {
  MutexLock lock(&anchor_mu);
  CK_OBJECT_HANDLE kek = CK_INVALID_HANDLE;
  {
    WriterLock keks_lock(&keks_mu);
    auto it = keks.find(version);
    if (it == keks.end()) return absl::OkStatus();
    kek = it->second;
    keks.erase(it);
  }
  if (anchor == CK_INVALID_HANDLE) return absl::OkStatus();  // the object died with it
  CK_RV rv = fn->C_DestroyObject(anchor, kek);
  if (rv != CKR_OK && rv != CKR_OBJECT_HANDLE_INVALID) {
    return RvToStatus(rv, "C_DestroyObject(KEK)");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint8_t>> Pkcs11Hsm::Impl::Seal(uint32_t version,
                                                           std::span<const uint8_t> pt,
                                                           std::span<const uint8_t> aad) {
  KMS_ASSIGN_OR_RETURN(CK_OBJECT_HANDLE kek, KekHandle(version));
  KMS_ASSIGN_OR_RETURN(std::vector<uint8_t> out, GenerateRandom(kNonceSize));
  out.resize(kNonceSize + pt.size() + kTagSize);

  CK_GCM_PARAMS gcm = GcmParams(out.data(), aad);
  CK_MECHANISM mech = {CKM_AES_GCM, &gcm, sizeof(gcm)};

  // Some modules reject a null data pointer even with length 0.
  uint8_t empty = 0;
  CK_BYTE_PTR in = pt.empty() ? &empty : const_cast<uint8_t*>(pt.data());

  KMS_ASSIGN_OR_RETURN(SessionLease lease, pool->Acquire());
  CK_RV rv = lease.Check(fn->C_EncryptInit(lease.handle(), &mech, kek));
  if (rv != CKR_OK) return RvToStatus(rv, "C_EncryptInit(AES-GCM)");
  CK_ULONG out_len = pt.size() + kTagSize;
  rv = lease.Check(fn->C_Encrypt(lease.handle(), in, pt.size(), out.data() + kNonceSize, &out_len));
  if (rv != CKR_OK) return RvToStatus(rv, "C_Encrypt(AES-GCM)");
  out.resize(kNonceSize + out_len);
  seals.fetch_add(1, std::memory_order_relaxed);
  return out;
}

absl::StatusOr<SecretBytes> Pkcs11Hsm::Impl::Open(uint32_t version,
                                                  std::span<const uint8_t> sealed,
                                                  std::span<const uint8_t> aad) {
  KMS_ASSIGN_OR_RETURN(CK_OBJECT_HANDLE kek, KekHandle(version));
  if (sealed.size() < kNonceSize + kTagSize) {
    return absl::DataLossError("unwrap failed: sealed blob is too short");
  }
  CK_GCM_PARAMS gcm = GcmParams(sealed.data(), aad);
  CK_MECHANISM mech = {CKM_AES_GCM, &gcm, sizeof(gcm)};

  const std::span<const uint8_t> ct = sealed.subspan(kNonceSize);
  // Room for ciphertext + tag: always enough, so the operation never stays active after a
  // CKR_BUFFER_TOO_SMALL.
  SecretBytes plain(ct.size());

  KMS_ASSIGN_OR_RETURN(SessionLease lease, pool->Acquire());
  CK_RV rv = lease.Check(fn->C_DecryptInit(lease.handle(), &mech, kek));
  if (rv != CKR_OK) return RvToStatus(rv, "C_DecryptInit(AES-GCM)");
  CK_ULONG plain_len = plain.size();
  rv = lease.Check(fn->C_Decrypt(lease.handle(), const_cast<uint8_t*>(ct.data()), ct.size(),
                                 plain.data(), &plain_len));
  if (rv != CKR_OK) {
    if (IsDecryptFailure(rv)) {
      return absl::DataLossError(absl::StrCat(
          "unwrap failed: C_Decrypt: ", CkrName(rv),
          " (sealed data or AAD does not authenticate under KEK version ", version, ")"));
    }
    return RvToStatus(rv, "C_Decrypt(AES-GCM)");
  }
  if (plain_len > plain.size()) return absl::InternalError("C_Decrypt overran its buffer");
  plain.Truncate(plain_len);
  opens.fetch_add(1, std::memory_order_relaxed);
  return plain;
}

absl::Status Pkcs11Hsm::Impl::Ping() {
  KMS_ASSIGN_OR_RETURN(SessionLease lease, pool->Acquire());
  CK_SESSION_INFO info{};
  CK_RV rv = lease.Check(fn->C_GetSessionInfo(lease.handle(), &info));
  if (rv != CKR_OK) return RvToStatus(rv, "C_GetSessionInfo");
  if (info.state != CKS_RO_USER_FUNCTIONS && info.state != CKS_RW_USER_FUNCTIONS) {
    return WithCkr(absl::UnavailableError(absl::StrCat("token '", token_label,
                                                       "' session is no longer logged in")),
                   CKR_USER_NOT_LOGGED_IN);
  }
  return absl::OkStatus();
}

absl::StatusOr<KeyProtection> Pkcs11Hsm::Impl::Describe(CK_OBJECT_HANDLE object,
                                                        CK_ATTRIBUTE_TYPE secret_attr) {
  KMS_ASSIGN_OR_RETURN(SessionLease lease, pool->Acquire());
  const CK_SESSION_HANDLE s = lease.handle();
  KeyProtection p;
  KMS_ASSIGN_OR_RETURN(p.token_object, GetBool(fn, s, object, CKA_TOKEN, "CKA_TOKEN"));
  KMS_ASSIGN_OR_RETURN(p.sensitive, GetBool(fn, s, object, CKA_SENSITIVE, "CKA_SENSITIVE"));
  KMS_ASSIGN_OR_RETURN(p.extractable,
                       GetBool(fn, s, object, CKA_EXTRACTABLE, "CKA_EXTRACTABLE"));
  KMS_ASSIGN_OR_RETURN(p.always_sensitive,
                       GetBool(fn, s, object, CKA_ALWAYS_SENSITIVE, "CKA_ALWAYS_SENSITIVE"));
  KMS_ASSIGN_OR_RETURN(p.never_extractable,
                       GetBool(fn, s, object, CKA_NEVER_EXTRACTABLE, "CKA_NEVER_EXTRACTABLE"));
  // Size query only (pValue = NULL): no key byte is copied even if the token would allow it.
  CK_ATTRIBUTE probe = {secret_attr, nullptr, 0};
  CK_RV rv = lease.Check(fn->C_GetAttributeValue(s, object, &probe, 1));
  p.value_readable = rv == CKR_OK && probe.ulValueLen != CK_UNAVAILABLE_INFORMATION;
  return p;
}

Pkcs11Hsm::Pkcs11Hsm(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Pkcs11Hsm::~Pkcs11Hsm() = default;

absl::StatusOr<std::unique_ptr<Pkcs11Hsm>> Pkcs11Hsm::Open(const Pkcs11Options& options) {
  KMS_RETURN_IF_ERROR(ValidateLabel("token label", options.token_label));
  if (options.master_key_label.empty()) {
    return absl::InvalidArgumentError("master key label is empty");
  }
  if (options.pin_file.empty()) return absl::InvalidArgumentError("PIN file is not set");
  if (options.max_sessions < 1) return absl::InvalidArgumentError("max_sessions must be >= 1");

  KMS_ASSIGN_OR_RETURN(std::shared_ptr<Pkcs11Module> module,
                       Pkcs11Module::Acquire(options.module_path));
  CK_FUNCTION_LIST* fn = module->fn();
  KMS_ASSIGN_OR_RETURN(std::vector<CK_SLOT_ID> slots,
                       FindSlotsByTokenLabel(fn, options.token_label));
  if (slots.empty()) {
    return absl::NotFoundError(absl::StrCat("no initialized token labelled '",
                                            options.token_label, "' in PKCS#11 module ",
                                            module->path()));
  }
  if (slots.size() > 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        slots.size(), " tokens are labelled '", options.token_label, "'; labels must be unique"));
  }

  auto impl = std::make_unique<Impl>(module, slots[0], options.master_key_kind,
                                     options.token_label, options.master_key_label);
  SessionGuard anchor(fn);
  CK_RV rv = fn->C_OpenSession(impl->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, nullptr,
                               nullptr, anchor.out());
  if (rv != CKR_OK) return RvToStatus(rv, "C_OpenSession");
  {
    KMS_ASSIGN_OR_RETURN(SecretBytes pin, ReadSecretFile(options.pin_file, "PIN", kMaxPinFileBytes,
                                                         SecretFileTrim::kTrailingWhitespace));
    rv = fn->C_Login(anchor.get(), CKU_USER, pin.data(), pin.size());
  }  // the PIN is wiped here
  if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
    absl::Status s = RvToStatus(rv, "C_Login");
    if (rv == CKR_PIN_INCORRECT || rv == CKR_PIN_LOCKED || rv == CKR_PIN_LEN_RANGE) {
      return WithCkr(absl::Status(s.code(), absl::StrCat(s.message(), " (user PIN from ",
                                                         options.pin_file, " rejected by token '",
                                                         options.token_label, "')")),
                     rv);
    }
    return s;
  }
  {
    MutexLock lock(&impl->anchor_mu);
    impl->anchor = anchor.Release();
  }
  impl->pool = std::make_unique<SessionPool>(module, impl->slot, options.max_sessions);
  KMS_RETURN_IF_ERROR(impl->FindOrCreateMasterKey(options.create_master_key));
  KMS_ASSIGN_OR_RETURN(impl->wrap_mechanism, impl->ChooseWrapMechanism());
  return std::unique_ptr<Pkcs11Hsm>(new Pkcs11Hsm(std::move(impl)));
}

absl::Status Pkcs11Hsm::InitToken(const std::string& module_path, const std::string& label,
                                  const SecretBytes& so_pin, const SecretBytes& user_pin) {
  KMS_RETURN_IF_ERROR(ValidateLabel("token label", label));
  if (so_pin.empty() || user_pin.empty()) return absl::InvalidArgumentError("empty PIN");
  KMS_ASSIGN_OR_RETURN(std::shared_ptr<Pkcs11Module> module, Pkcs11Module::Acquire(module_path));
  CK_FUNCTION_LIST* fn = module->fn();

  KMS_ASSIGN_OR_RETURN(std::vector<CK_SLOT_ID> existing, FindSlotsByTokenLabel(fn, label));
  if (!existing.empty()) {
    return absl::AlreadyExistsError(absl::StrCat("a token labelled '", label, "' exists already"));
  }
  CK_ULONG n = 0;
  CK_RV rv = fn->C_GetSlotList(CK_TRUE, nullptr, &n);
  if (rv != CKR_OK) return RvToStatus(rv, "C_GetSlotList");
  std::vector<CK_SLOT_ID> slots(n);
  rv = fn->C_GetSlotList(CK_TRUE, slots.data(), &n);
  if (rv != CKR_OK) return RvToStatus(rv, "C_GetSlotList");
  slots.resize(n);
  CK_SLOT_ID free_slot = 0;
  bool found = false;
  for (CK_SLOT_ID slot : slots) {
    CK_TOKEN_INFO info{};
    if (fn->C_GetTokenInfo(slot, &info) != CKR_OK) continue;
    if ((info.flags & CKF_TOKEN_INITIALIZED) == 0) {
      free_slot = slot;
      found = true;
      break;
    }
  }
  if (!found) {
    return absl::FailedPreconditionError(
        absl::StrCat("PKCS#11 module ", module->path(), " has no uninitialized token"));
  }

  unsigned char padded[kMaxLabelBytes];
  std::memset(padded, ' ', sizeof(padded));
  std::memcpy(padded, label.data(), label.size());
  rv = fn->C_InitToken(free_slot, const_cast<uint8_t*>(so_pin.data()), so_pin.size(), padded);
  if (rv != CKR_OK) return RvToStatus(rv, "C_InitToken");

  // SoftHSM2 moves the freshly initialized token to a new slot id: look it up again.
  KMS_ASSIGN_OR_RETURN(std::vector<CK_SLOT_ID> inited, FindSlotsByTokenLabel(fn, label));
  if (inited.size() != 1) {
    return absl::InternalError(
        absl::StrCat("token '", label, "' not found after C_InitToken"));
  }
  SessionGuard session(fn);
  rv = fn->C_OpenSession(inited[0], CKF_SERIAL_SESSION | CKF_RW_SESSION, nullptr, nullptr,
                         session.out());
  if (rv != CKR_OK) return RvToStatus(rv, "C_OpenSession");
  rv = fn->C_Login(session.get(), CKU_SO, const_cast<uint8_t*>(so_pin.data()), so_pin.size());
  if (rv != CKR_OK) return RvToStatus(rv, "C_Login(SO)");
  rv = fn->C_InitPIN(session.get(), const_cast<uint8_t*>(user_pin.data()), user_pin.size());
  CK_RV logout_rv = fn->C_Logout(session.get());
  if (rv != CKR_OK) return RvToStatus(rv, "C_InitPIN");
  if (logout_rv != CKR_OK) return RvToStatus(logout_rv, "C_Logout(SO)");
  return absl::OkStatus();
}

MasterKeyKind Pkcs11Hsm::master_key_kind() const { return impl_->kind; }

absl::StatusOr<std::vector<uint8_t>> Pkcs11Hsm::CreateKek(uint32_t kek_version) {
  impl_->kek_creates.fetch_add(1, std::memory_order_relaxed);
  return impl_->CountError(HsmOperation::kCreateKek, impl_->CreateKek(kek_version));
}

absl::Status Pkcs11Hsm::LoadKek(uint32_t kek_version, std::span<const uint8_t> wrapped_kek) {
  return impl_->CountError(HsmOperation::kLoadKek, impl_->LoadKek(kek_version, wrapped_kek));
}

bool Pkcs11Hsm::HasKek(uint32_t kek_version) const { return impl_->KekHandle(kek_version).ok(); }

absl::Status Pkcs11Hsm::UnloadKek(uint32_t kek_version) {
  return impl_->CountError(HsmOperation::kUnloadKek, impl_->UnloadKek(kek_version));
}

absl::StatusOr<std::vector<uint8_t>> Pkcs11Hsm::Seal(uint32_t kek_version,
                                                     std::span<const uint8_t> plaintext,
                                                     std::span<const uint8_t> aad) {
  return impl_->CountError(HsmOperation::kSeal, impl_->Seal(kek_version, plaintext, aad));
}

absl::StatusOr<SecretBytes> Pkcs11Hsm::Open(uint32_t kek_version, std::span<const uint8_t> sealed,
                                            std::span<const uint8_t> aad) {
  return impl_->CountError(HsmOperation::kOpen, impl_->Open(kek_version, sealed, aad));
}

absl::Status Pkcs11Hsm::Ping() {
  impl_->pings.fetch_add(1, std::memory_order_relaxed);
  return impl_->CountError(HsmOperation::kPing, impl_->Ping());
}

absl::Status Pkcs11Hsm::KnownAnswerTest() {
  // McGrew & Viega, "The Galois/Counter Mode of Operation", test case 14.
  static constexpr uint8_t kExpected[32] = {
      0xce, 0xa7, 0x40, 0x3d, 0x4d, 0x60, 0x6b, 0x6e, 0x07, 0x4e, 0xc5, 0xd3, 0xba, 0xf3, 0x9d, 0x18,
      0xd0, 0xd1, 0xc8, 0xa7, 0x99, 0x99, 0x6b, 0xf0, 0x26, 0x5b, 0x98, 0xb5, 0xd4, 0x8a, 0xb9, 0x19};
  Impl& d = *impl_;
  CK_FUNCTION_LIST* fn = d.fn;
  uint8_t key[kKekBytes] = {};
  uint8_t iv[kNonceSize] = {};
  uint8_t plain[16] = {};
  CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
  CK_KEY_TYPE type = CKK_AES;
  std::vector<CK_ATTRIBUTE> tmpl = {
      Scalar(CKA_CLASS, &cls),      Scalar(CKA_KEY_TYPE, &type),   Bool(CKA_TOKEN, false),
      Bool(CKA_SENSITIVE, true),    Bool(CKA_EXTRACTABLE, false),  Bool(CKA_ENCRYPT, true),
      Bool(CKA_DECRYPT, true),      {CKA_VALUE, key, sizeof(key)},
  };
  KMS_ASSIGN_OR_RETURN(SessionLease lease, d.pool->Acquire());
  CK_OBJECT_HANDLE raw = CK_INVALID_HANDLE;
  CK_RV rv = lease.Check(fn->C_CreateObject(lease.handle(), tmpl.data(), tmpl.size(), &raw));
  if (rv != CKR_OK) return RvToStatus(rv, "self-test C_CreateObject(AES key)");
  ObjectGuard object(fn, lease.handle(), raw);
  CK_GCM_PARAMS gcm = GcmParams(iv, {});
  CK_MECHANISM mech = {CKM_AES_GCM, &gcm, sizeof(gcm)};
  uint8_t out[sizeof(kExpected)] = {};
  CK_ULONG out_len = sizeof(out);
  rv = lease.Check(fn->C_EncryptInit(lease.handle(), &mech, raw));
  if (rv != CKR_OK) return RvToStatus(rv, "self-test C_EncryptInit(AES-GCM)");
  rv = lease.Check(fn->C_Encrypt(lease.handle(), plain, sizeof(plain), out, &out_len));
  if (rv != CKR_OK) return RvToStatus(rv, "self-test C_Encrypt(AES-GCM)");
  if (out_len != sizeof(kExpected) || std::memcmp(out, kExpected, sizeof(kExpected)) != 0) {
    return absl::FailedPreconditionError(
        "HSM self-test failed: AES-256-GCM known answer mismatch (the PKCS#11 module or a "
        "proxy in front of it computes wrong results)");
  }
  uint8_t back[sizeof(kExpected)] = {0xff};
  CK_ULONG back_len = sizeof(back);
  rv = lease.Check(fn->C_DecryptInit(lease.handle(), &mech, raw));
  if (rv != CKR_OK) return RvToStatus(rv, "self-test C_DecryptInit(AES-GCM)");
  rv = lease.Check(fn->C_Decrypt(lease.handle(), out, out_len, back, &back_len));
  if (rv != CKR_OK && !IsDecryptFailure(rv)) return RvToStatus(rv, "self-test C_Decrypt(AES-GCM)");
  if (rv != CKR_OK || back_len != sizeof(plain) || std::memcmp(back, plain, sizeof(plain)) != 0) {
    return absl::FailedPreconditionError(
        "HSM self-test failed: AES-256-GCM known answer does not decrypt");
  }
  return absl::OkStatus();
}

KekWrapMechanism Pkcs11Hsm::kek_wrap_mechanism() const { return impl_->wrap_mechanism; }

bool Pkcs11Hsm::created_master_key() const { return impl_->created_master; }

HsmStats Pkcs11Hsm::stats() const {
  HsmStats s;
  s.seals = impl_->seals.load(std::memory_order_relaxed);
  s.opens = impl_->opens.load(std::memory_order_relaxed);
  s.kek_loads = impl_->kek_loads.load(std::memory_order_relaxed);
  s.errors = impl_->errors.load(std::memory_order_relaxed);
  s.pings = impl_->pings.load(std::memory_order_relaxed);
  s.kek_creates = impl_->kek_creates.load(std::memory_order_relaxed);
  for (size_t i = 0; i < kHsmOperationCount; ++i) {
    s.errors_by_operation[i] = impl_->errors_by_op[i].load(std::memory_order_relaxed);
  }
  s.sessions_in_use = impl_->pool->lent_sessions();
  s.sessions_max = impl_->pool->max_sessions();
  return s;
}

absl::StatusOr<KeyProtection> Pkcs11Hsm::DescribeKek(uint32_t kek_version) const {
  KMS_ASSIGN_OR_RETURN(CK_OBJECT_HANDLE kek, impl_->KekHandle(kek_version));
  return impl_->Describe(kek, CKA_VALUE);
}

absl::StatusOr<KeyProtection> Pkcs11Hsm::DescribeMasterKey() const {
  return impl_->Describe(impl_->master_unwrap, impl_->kind == MasterKeyKind::kRsa4096
                                                   ? CKA_PRIVATE_EXPONENT
                                                   : CKA_VALUE);
}

}  // namespace kms::hsm
