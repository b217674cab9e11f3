#include "src/crypto/mac.h"

#include <cstdlib>
#include <cstring>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>

namespace kms::crypto {
namespace {

const EVP_MD* Md(HashAlgorithm algorithm) {
  switch (algorithm) {
    case HashAlgorithm::kSha224: return EVP_sha224();
    case HashAlgorithm::kSha256: return EVP_sha256();
    case HashAlgorithm::kSha384: return EVP_sha384();
    case HashAlgorithm::kSha512: return EVP_sha512();
  }
  return EVP_sha256();
}

// HMAC into `out` (at least EVP_MAX_MD_SIZE bytes); its length, or 0 when OpenSSL fails.
unsigned int HmacInto(const EVP_MD* md, std::span<const uint8_t> key, std::span<const uint8_t> data,
                      uint8_t* out) {
  static const uint8_t kEmpty = 0;
  unsigned int n = 0;
  if (HMAC(md, key.empty() ? &kEmpty : key.data(), static_cast<int>(key.size()),
           data.empty() ? &kEmpty : data.data(), data.size(), out, &n) == nullptr) {
    return 0;
  }
  return n;
}

std::span<const uint8_t> AsBytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

}  // namespace

absl::StatusOr<std::vector<uint8_t>> Digest(HashAlgorithm algorithm, std::span<const uint8_t> data) {
  std::vector<uint8_t> out(EVP_MAX_MD_SIZE);
  unsigned int n = 0;
  if (EVP_Digest(data.data(), data.size(), out.data(), &n, Md(algorithm), nullptr) != 1) {
    return absl::InternalError("digest failed");
  }
  out.resize(n);
  return out;
}

absl::StatusOr<std::vector<uint8_t>> Hmac(HashAlgorithm algorithm, std::span<const uint8_t> key,
                                          std::span<const uint8_t> data) {
  std::vector<uint8_t> out(EVP_MAX_MD_SIZE);
  const unsigned int n = HmacInto(Md(algorithm), key, data, out.data());
  if (n == 0) return absl::InternalError("HMAC failed");
  out.resize(n);
  return out;
}

Sha256Digest Sha256(std::span<const uint8_t> data) {
  Sha256Digest md{};
  unsigned int n = 0;
  if (EVP_Digest(data.data(), data.size(), md.data(), &n, EVP_sha256(), nullptr) != 1 ||
      n != md.size()) {
    std::abort();  // out of memory (see the header)
  }
  return md;
}

Sha256Digest Sha256(std::string_view data) { return Sha256(AsBytes(data)); }

Sha256Digest HmacSha256(std::span<const uint8_t> key, std::span<const uint8_t> data) {
  uint8_t out[EVP_MAX_MD_SIZE];
  if (HmacInto(EVP_sha256(), key, data, out) != kSha256Size) std::abort();  // out of memory
  Sha256Digest md;
  std::memcpy(md.data(), out, md.size());
  OPENSSL_cleanse(out, sizeof(out));
  return md;
}

Sha256Digest HmacSha256(std::span<const uint8_t> key, std::string_view data) {
  return HmacSha256(key, AsBytes(data));
}

std::string LowerHex(std::span<const uint8_t> bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (uint8_t b : bytes) {
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 0xf]);
  }
  return out;
}

bool ConstantTimeEquals(std::span<const uint8_t> a, std::span<const uint8_t> b) {
  return a.size() == b.size() && (a.empty() || CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0);
}

absl::StatusOr<SecretBytes> HkdfSha256(std::span<const uint8_t> ikm, std::span<const uint8_t> info,
                                       size_t length) {
  if (length == 0 || length > 255 * 32) return absl::InvalidArgumentError("HKDF length out of range");
  EVP_KDF* kdf = EVP_KDF_fetch(nullptr, "HKDF", nullptr);
  if (kdf == nullptr) return absl::InternalError("HKDF unavailable");
  EVP_KDF_CTX* ctx = EVP_KDF_CTX_new(kdf);
  EVP_KDF_free(kdf);
  if (ctx == nullptr) return absl::InternalError("HKDF failed");
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, const_cast<uint8_t*>(ikm.data()),
                                        ikm.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, const_cast<uint8_t*>(info.data()),
                                        info.size()),
      OSSL_PARAM_construct_end()};
  SecretBytes out(length);
  const int ok = EVP_KDF_derive(ctx, out.data(), out.size(), params);
  EVP_KDF_CTX_free(ctx);
  if (ok != 1) return absl::InternalError("HKDF failed");
  return out;
}

}  // namespace kms::crypto
