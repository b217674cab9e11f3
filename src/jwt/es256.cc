#include "src/jwt/es256.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>

#include <cstring>
#include <utility>
#include <vector>

#include "nlohmann/json.hpp"
#include "src/common/base64.h"

namespace kms::jwt {
namespace {

using PkeyPtr = SslUniquePtr<EVP_PKEY>;
using PkeyCtxPtr = SslUniquePtr<EVP_PKEY_CTX>;
using MdCtxPtr = SslUniquePtr<EVP_MD_CTX>;
using EcdsaSigPtr = SslUniquePtr<ECDSA_SIG>;
using BnPtr = SslUniquePtr<BIGNUM>;

constexpr char kGroupName[] = "prime256v1";  // OpenSSL's name for P-256 (secp256r1)

std::string B64(std::span<const uint8_t> bytes) { return Base64UrlEncode(bytes); }

// The affine coordinates of an EC key, 32 bytes each.
absl::Status GetCoordinates(const EVP_PKEY* pkey, std::array<uint8_t, 32>& x,
                            std::array<uint8_t, 32>& y) {
  BIGNUM* bx = nullptr;
  BIGNUM* by = nullptr;
  if (EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_EC_PUB_X, &bx) != 1 ||
      EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_EC_PUB_Y, &by) != 1) {
    BN_free(bx);
    BN_free(by);
    return absl::InternalError("es256: cannot read the public point");
  }
  BnPtr hold_x(bx), hold_y(by);
  if (BN_bn2binpad(bx, x.data(), 32) != 32 || BN_bn2binpad(by, y.data(), 32) != 32) {
    return absl::InternalError("es256: public point coordinate out of range");
  }
  return absl::OkStatus();
}

bool IsP256(const EVP_PKEY* pkey) {
  if (EVP_PKEY_is_a(pkey, "EC") != 1) return false;
  char name[64] = {0};
  size_t len = 0;
  if (EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, name, sizeof(name),
                                     &len) != 1) {
    return false;
  }
  return std::string_view(name, len) == kGroupName;
}

std::array<uint8_t, 32> Sha256(std::string_view data) {
  std::array<uint8_t, 32> md{};
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md.data(), &len, EVP_sha256(), nullptr);
  return md;
}

}  // namespace

std::string Es256ThumbprintInput(std::string_view x_b64url, std::string_view y_b64url) {
  // RFC 7638 §3.2: the required members only, in lexicographic order, no whitespace.
  // base64url text needs no JSON escaping.
  std::string out = R"({"crv":"P-256","kty":"EC","x":")";
  out.append(x_b64url);
  out.append(R"(","y":")");
  out.append(y_b64url);
  out.append(R"("})");
  return out;
}

std::string Es256Thumbprint(std::string_view x_b64url, std::string_view y_b64url) {
  return B64(Sha256(Es256ThumbprintInput(x_b64url, y_b64url)));
}

// --- Es256PublicKey

Es256PublicKey::Es256PublicKey(PkeyPtr pkey, std::string x, std::string y)
    : pkey_(std::move(pkey)), x_(std::move(x)), y_(std::move(y)), kid_(Es256Thumbprint(x_, y_)) {}

Es256PublicKey::~Es256PublicKey() = default;

absl::StatusOr<std::unique_ptr<Es256PublicKey>> Es256PublicKey::FromCoordinates(
    std::span<const uint8_t> x, std::span<const uint8_t> y) {
  if (x.size() != kP256CoordinateSize || y.size() != kP256CoordinateSize) {
    return absl::InvalidArgumentError("es256: coordinates must be 32 bytes each");
  }
  uint8_t point[1 + 2 * kP256CoordinateSize];
  point[0] = 0x04;  // uncompressed (SEC 1 §2.3.3)
  std::memcpy(point + 1, x.data(), 32);
  std::memcpy(point + 33, y.data(), 32);

  SslUniquePtr<OSSL_PARAM_BLD> bld(OSSL_PARAM_BLD_new());
  if (bld == nullptr ||
      OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, kGroupName, 0) !=
          1 ||
      OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, point,
                                       sizeof(point)) != 1) {
    return absl::InternalError("es256: cannot build key parameters");
  }
  SslUniquePtr<OSSL_PARAM> params(OSSL_PARAM_BLD_to_param(bld.get()));
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr));
  if (params == nullptr || ctx == nullptr || EVP_PKEY_fromdata_init(ctx.get()) != 1) {
    return absl::InternalError("es256: cannot set up key import");
  }
  EVP_PKEY* raw = nullptr;
  if (EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params.get()) != 1 ||
      raw == nullptr) {
    return absl::InvalidArgumentError("es256: not a point on P-256");
  }
  PkeyPtr pkey(raw);
  // fromdata decodes the point; check it explicitly anyway (on the curve, not infinity).
  PkeyCtxPtr check(EVP_PKEY_CTX_new_from_pkey(nullptr, pkey.get(), nullptr));
  if (check == nullptr || EVP_PKEY_public_check(check.get()) != 1) {
    return absl::InvalidArgumentError("es256: not a point on P-256");
  }
  return std::unique_ptr<Es256PublicKey>(new Es256PublicKey(std::move(pkey), B64(x), B64(y)));
}

absl::StatusOr<std::unique_ptr<Es256PublicKey>> Es256PublicKey::FromJwk(
    std::string_view jwk_json) {
  nlohmann::json jwk = nlohmann::json::parse(jwk_json, nullptr, /*allow_exceptions=*/false);
  if (!jwk.is_object()) return absl::InvalidArgumentError("jwk: not a JSON object");
  auto member = [&](const char* name) -> const nlohmann::json* {
    auto it = jwk.find(name);
    return it == jwk.end() ? nullptr : &*it;
  };
  auto is_string = [&](const char* name, std::string_view want) {
    const nlohmann::json* m = member(name);
    return m != nullptr && m->is_string() && m->get_ref<const std::string&>() == want;
  };
  if (!is_string("kty", "EC")) return absl::InvalidArgumentError("jwk: kty must be EC");
  if (!is_string("crv", "P-256")) return absl::InvalidArgumentError("jwk: crv must be P-256");
  if (member("d") != nullptr) return absl::InvalidArgumentError("jwk: private member present");
  if (member("alg") != nullptr && !is_string("alg", "ES256")) {
    return absl::InvalidArgumentError("jwk: alg must be ES256");
  }
  if (member("use") != nullptr && !is_string("use", "sig")) {
    return absl::InvalidArgumentError("jwk: use must be sig");
  }
  const nlohmann::json* x = member("x");
  const nlohmann::json* y = member("y");
  if (x == nullptr || y == nullptr || !x->is_string() || !y->is_string()) {
    return absl::InvalidArgumentError("jwk: x and y must be strings");
  }
  auto xb = Base64UrlDecode(x->get_ref<const std::string&>());
  auto yb = Base64UrlDecode(y->get_ref<const std::string&>());
  if (!xb.ok() || !yb.ok()) return absl::InvalidArgumentError("jwk: x or y is not base64url");
  KMS_ASSIGN_OR_RETURN(std::unique_ptr<Es256PublicKey> key, FromCoordinates(*xb, *yb));
  if (const nlohmann::json* kid = member("kid"); kid != nullptr) {
    if (!kid->is_string() || kid->get_ref<const std::string&>() != key->kid()) {
      return absl::InvalidArgumentError("jwk: kid is not the key's RFC 7638 thumbprint");
    }
  }
  return key;
}

std::string Es256PublicKey::JwkJson() const {
  // Built by hand for a fixed member order; every value is base64url or a constant.
  std::string out = R"({"kty":"EC","crv":"P-256","x":")";
  out.append(x_);
  out.append(R"(","y":")");
  out.append(y_);
  out.append(R"(","use":"sig","alg":"ES256","kid":")");
  out.append(kid_);
  out.append(R"("})");
  return out;
}

namespace {

// Half the P-256 group order, big-endian. ECDSA accepts (r, s) and (r, n - s) alike; kmsd
// signs only with s <= n/2, so each token it issues has one canonical encoding (a
// consumer keying a revocation list on token strings can refuse high-s variants).
// Verification stays standard and accepts both (RFC 7515's own A.3 example is high-s).
constexpr uint8_t kHalfOrder[32] = {
    0x7f, 0xff, 0xff, 0xff, 0x80, 0x00, 0x00, 0x00, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xde, 0x73, 0x7d, 0x56, 0xd3, 0x8b, 0xcf, 0x42, 0x79, 0xdc, 0xe5, 0x61, 0x7e, 0x31, 0x92, 0xa8};
constexpr uint8_t kOrder[32] = {
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51};

bool HighS(const uint8_t* s) { return std::memcmp(s, kHalfOrder, 32) > 0; }

// s := n - s, on 32-byte big-endian numbers (s < n).
void NegateS(uint8_t* s) {
  int borrow = 0;
  for (int i = 31; i >= 0; --i) {
    int d = int{kOrder[i]} - int{s[i]} - borrow;
    borrow = d < 0 ? 1 : 0;
    s[i] = static_cast<uint8_t>(d + (borrow << 8));
  }
}

}  // namespace

absl::Status Es256PublicKey::Verify(std::span<const uint8_t> message,
                                    std::span<const uint8_t> signature) const {
  if (signature.size() != kEs256SignatureSize) {
    return absl::InvalidArgumentError("es256: signature must be 64 bytes");
  }
  BnPtr r(BN_bin2bn(signature.data(), 32, nullptr));
  BnPtr s(BN_bin2bn(signature.data() + 32, 32, nullptr));
  EcdsaSigPtr sig(ECDSA_SIG_new());
  if (r == nullptr || s == nullptr || sig == nullptr ||
      ECDSA_SIG_set0(sig.get(), r.get(), s.get()) != 1) {
    return absl::InternalError("es256: out of memory");
  }
  r.release();  // owned by sig now
  s.release();
  uint8_t der[80];
  int der_len = i2d_ECDSA_SIG(sig.get(), nullptr);
  if (der_len <= 0 || der_len > static_cast<int>(sizeof(der))) {
    return absl::InternalError("es256: cannot encode the signature");
  }
  uint8_t* p = der;
  i2d_ECDSA_SIG(sig.get(), &p);

  MdCtxPtr ctx(EVP_MD_CTX_new());
  if (ctx == nullptr ||
      EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_sha256(), nullptr, pkey_.get()) != 1) {
    return absl::InternalError("es256: cannot set up verification");
  }
  // OpenSSL rejects r or s of zero or not below the group order.
  const int rc = EVP_DigestVerify(ctx.get(), der, static_cast<size_t>(der_len), message.data(),
                                  message.size());
  if (rc != 1) return absl::UnauthenticatedError("es256: signature does not verify");
  return absl::OkStatus();
}

// --- Es256PrivateKey

Es256PrivateKey::Es256PrivateKey(PkeyPtr pkey, std::unique_ptr<Es256PublicKey> public_key)
    : pkey_(std::move(pkey)), public_key_(std::move(public_key)) {}

Es256PrivateKey::~Es256PrivateKey() = default;

absl::StatusOr<std::unique_ptr<Es256PrivateKey>> Es256PrivateKey::FromPkey(PkeyPtr pkey) {
  if (!IsP256(pkey.get())) return absl::InvalidArgumentError("es256: not a P-256 EC key");
  std::array<uint8_t, 32> x{}, y{};
  KMS_RETURN_IF_ERROR(GetCoordinates(pkey.get(), x, y));
  KMS_ASSIGN_OR_RETURN(std::unique_ptr<Es256PublicKey> pub,
                       Es256PublicKey::FromCoordinates(x, y));
  return std::unique_ptr<Es256PrivateKey>(new Es256PrivateKey(std::move(pkey), std::move(pub)));
}

absl::StatusOr<std::unique_ptr<Es256PrivateKey>> Es256PrivateKey::Generate() {
  EVP_PKEY* raw = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", kGroupName);
  if (raw == nullptr) return absl::InternalError("es256: key generation failed");
  return FromPkey(PkeyPtr(raw));
}

absl::StatusOr<std::unique_ptr<Es256PrivateKey>> Es256PrivateKey::FromPkcs8Der(
    std::span<const uint8_t> der) {
  if (der.empty() || der.size() > 4096) {
    return absl::InvalidArgumentError("es256: not a PKCS#8 private key");
  }
  const unsigned char* p = der.data();
  SslUniquePtr<PKCS8_PRIV_KEY_INFO> p8(
      d2i_PKCS8_PRIV_KEY_INFO(nullptr, &p, static_cast<long>(der.size())));
  if (p8 == nullptr || p != der.data() + der.size()) {
    return absl::InvalidArgumentError("es256: not a PKCS#8 private key");
  }
  EVP_PKEY* raw = EVP_PKCS82PKEY(p8.get());
  if (raw == nullptr) return absl::InvalidArgumentError("es256: not a PKCS#8 private key");
  PkeyPtr pkey(raw);
  PkeyCtxPtr check(EVP_PKEY_CTX_new_from_pkey(nullptr, pkey.get(), nullptr));
  if (check == nullptr || EVP_PKEY_pairwise_check(check.get()) != 1) {
    return absl::InvalidArgumentError("es256: inconsistent private key");
  }
  return FromPkey(std::move(pkey));
}

absl::StatusOr<SecretBytes> Es256PrivateKey::ToPkcs8Der() const {
  SslUniquePtr<PKCS8_PRIV_KEY_INFO> p8(EVP_PKEY2PKCS8(pkey_.get()));
  if (p8 == nullptr) return absl::InternalError("es256: cannot export the private key");
  const int len = i2d_PKCS8_PRIV_KEY_INFO(p8.get(), nullptr);
  if (len <= 0) return absl::InternalError("es256: cannot export the private key");
  // Encoded straight into the zeroizing buffer; the PKCS8 structure cleanses its own
  // copy when freed.
  SecretBytes out(static_cast<size_t>(len));
  unsigned char* p = out.data();
  if (i2d_PKCS8_PRIV_KEY_INFO(p8.get(), &p) != len) {
    return absl::InternalError("es256: cannot export the private key");
  }
  return out;
}

absl::StatusOr<Es256Signature> Es256PrivateKey::Sign(std::span<const uint8_t> message) const {
  MdCtxPtr ctx(EVP_MD_CTX_new());
  if (ctx == nullptr ||
      EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, pkey_.get()) != 1) {
    return absl::InternalError("es256: cannot set up signing");
  }
  uint8_t der[80];  // a P-256 ECDSA-Sig-Value is at most 72 bytes
  size_t der_len = sizeof(der);
  if (EVP_DigestSign(ctx.get(), der, &der_len, message.data(), message.size()) != 1) {
    return absl::InternalError("es256: signing failed");
  }
  const unsigned char* p = der;
  EcdsaSigPtr sig(d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(der_len)));
  if (sig == nullptr) return absl::InternalError("es256: cannot decode the signature");
  const BIGNUM* r = nullptr;
  const BIGNUM* s = nullptr;
  ECDSA_SIG_get0(sig.get(), &r, &s);
  Es256Signature out{};
  if (BN_bn2binpad(r, out.data(), 32) != 32 || BN_bn2binpad(s, out.data() + 32, 32) != 32) {
    return absl::InternalError("es256: signature value out of range");
  }
  if (HighS(out.data() + 32)) NegateS(out.data() + 32);
  return out;
}

}  // namespace kms::jwt
