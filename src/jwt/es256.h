// ES256 (ECDSA over P-256 with SHA-256, RFC 7518 §3.4) keys for JWT signing.
//
// Formats, as implemented here:
//  - Private key export/import: PKCS#8 PrivateKeyInfo, DER (RFC 5208), only ever in
//    SecretBytes. The in-memory key is an OpenSSL EVP_PKEY owned by Es256PrivateKey.
//  - Signature: the JWS form, raw r || s, each left-padded to 32 bytes (64 bytes), not
//    the DER ECDSA-Sig-Value OpenSSL produces.
//  - Public JWK, JSON text in this member order:
//      {"kty":"EC","crv":"P-256","x":<b64url 32 bytes>,"y":<b64url 32 bytes>,
//       "use":"sig","alg":"ES256","kid":<kid>}
//  - kid: the full RFC 7638 JWK thumbprint, base64url (no padding) of SHA-256 over
//      {"crv":"P-256","kty":"EC","x":"<x>","y":"<y>"}   (no whitespace)
//    43 characters. Anyone can recompute it from the published JWK (e.g. jose's
//    calculateJwkThumbprint), and a JWK whose kid is not its thumbprint is rejected.
//
// Thread-safe: both key types are immutable after creation; Sign and Verify may run
// concurrently on one key. Errors never contain key bytes.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "kms/common/secret.h"
#include "kms/common/status.h"
#include "src/common/ssl_ptr.h"

namespace kms::jwt {

inline constexpr size_t kEs256SignatureSize = 64;
inline constexpr size_t kP256CoordinateSize = 32;
using Es256Signature = std::array<uint8_t, kEs256SignatureSize>;

// The canonical RFC 7638 thumbprint input of a P-256 key whose coordinates are given
// base64url-encoded.
std::string Es256ThumbprintInput(std::string_view x_b64url, std::string_view y_b64url);
// base64url(SHA-256(thumbprint input)).
std::string Es256Thumbprint(std::string_view x_b64url, std::string_view y_b64url);

class Es256PublicKey {
 public:
  // From the affine coordinates (32 bytes each). INVALID_ARGUMENT when they are not a
  // point on P-256.
  static absl::StatusOr<std::unique_ptr<Es256PublicKey>> FromCoordinates(
      std::span<const uint8_t> x, std::span<const uint8_t> y);
  // From a JWK (JSON text). Requires kty "EC", crv "P-256", x and y; "alg" if present
  // must be "ES256", "use" if present "sig"; a private member "d" is refused. A "kid"
  // member, if present, must equal the thumbprint. INVALID_ARGUMENT otherwise.
  static absl::StatusOr<std::unique_ptr<Es256PublicKey>> FromJwk(std::string_view jwk_json);

  ~Es256PublicKey();
  Es256PublicKey(const Es256PublicKey&) = delete;
  Es256PublicKey& operator=(const Es256PublicKey&) = delete;

  // UNAUTHENTICATED when `signature` (raw r || s) does not verify over `message`;
  // INVALID_ARGUMENT when it is not 64 bytes.
  absl::Status Verify(std::span<const uint8_t> message,
                      std::span<const uint8_t> signature) const;

  const std::string& kid() const { return kid_; }
  // The public JWK, JSON text (format above), with kid().
  std::string JwkJson() const;
  const std::string& x_b64url() const { return x_; }
  const std::string& y_b64url() const { return y_; }

 private:
  friend class Es256PrivateKey;
  Es256PublicKey(SslUniquePtr<EVP_PKEY> pkey, std::string x, std::string y);

  SslUniquePtr<EVP_PKEY> pkey_;
  std::string x_;  // base64url
  std::string y_;
  std::string kid_;
};

class Es256PrivateKey {
 public:
  // A new key from the OpenSSL CSPRNG.
  static absl::StatusOr<std::unique_ptr<Es256PrivateKey>> Generate();
  // From PKCS#8 DER. INVALID_ARGUMENT when it is not a P-256 EC private key.
  static absl::StatusOr<std::unique_ptr<Es256PrivateKey>> FromPkcs8Der(
      std::span<const uint8_t> der);

  ~Es256PrivateKey();
  Es256PrivateKey(const Es256PrivateKey&) = delete;
  Es256PrivateKey& operator=(const Es256PrivateKey&) = delete;

  // PKCS#8 DER of the private key (with its public key).
  absl::StatusOr<SecretBytes> ToPkcs8Der() const;

  // ECDSA-SHA256 over `message`, as raw r || s. A fresh random nonce per call.
  absl::StatusOr<Es256Signature> Sign(std::span<const uint8_t> message) const;

  const Es256PublicKey& public_key() const { return *public_key_; }
  const std::string& kid() const { return public_key_->kid(); }

 private:
  Es256PrivateKey(SslUniquePtr<EVP_PKEY> pkey, std::unique_ptr<Es256PublicKey> public_key);
  static absl::StatusOr<std::unique_ptr<Es256PrivateKey>> FromPkey(SslUniquePtr<EVP_PKEY> pkey);

  SslUniquePtr<EVP_PKEY> pkey_;  // holds the private scalar; freed (and cleansed) by OpenSSL
  std::unique_ptr<Es256PublicKey> public_key_;
};

}  // namespace kms::jwt
