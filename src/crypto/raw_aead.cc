#include "src/crypto/raw_aead.h"

#include <openssl/evp.h>

#include "src/common/big_endian.h"

namespace kms::crypto {

std::vector<uint8_t> RawMetadata(uint32_t dek_version) {
  std::vector<uint8_t> out;
  out.reserve(kRawMetadataSize);
  out.push_back(kRawMetadataV1);
  AppendU32(out, dek_version);
  return out;
}

absl::StatusOr<uint32_t> ParseRawMetadata(std::span<const uint8_t> metadata) {
  if (metadata.size() != kRawMetadataSize || metadata[0] != kRawMetadataV1) {
    return absl::InvalidArgumentError("not kmsd ciphertext metadata");
  }
  const uint32_t version = (uint32_t{metadata[1]} << 24) | (uint32_t{metadata[2]} << 16) |
                           (uint32_t{metadata[3]} << 8) | uint32_t{metadata[4]};
  if (version == 0) return absl::InvalidArgumentError("not kmsd ciphertext metadata");
  return version;
}

absl::StatusOr<std::vector<uint8_t>> RawAad(std::span<const uint8_t> aad,
                                            std::span<const uint8_t> metadata) {
  if (aad.size() > kMaxRawAadBytes) {
    return absl::InvalidArgumentError("additional authenticated data is too long");
  }
  if (metadata.size() > 255) return absl::InvalidArgumentError("ciphertext metadata is too long");
  std::vector<uint8_t> out;
  out.reserve(2 + aad.size() + 1 + metadata.size());
  out.push_back(static_cast<uint8_t>(aad.size() >> 8));
  out.push_back(static_cast<uint8_t>(aad.size()));
  AppendBytes(out, aad);
  out.push_back(static_cast<uint8_t>(metadata.size()));
  AppendBytes(out, metadata);
  return out;
}

absl::StatusOr<RawSealed> RawSeal(const AesGcmKey& key, std::span<const uint8_t> gcm_aad,
                                  std::span<const uint8_t> plaintext) {
  RawSealed out;
  out.iv.resize(kAesGcmNonceSize);
  KMS_RETURN_IF_ERROR(NonceBytes(std::span<uint8_t, kAesGcmNonceSize>(out.iv.data(), kAesGcmNonceSize)));
  std::vector<uint8_t> sealed(plaintext.size() + kAesGcmTagSize);
  KMS_RETURN_IF_ERROR(key.Encrypt(out.iv, plaintext, gcm_aad, sealed));
  out.ciphertext.assign(sealed.begin(), sealed.end() - kAesGcmTagSize);
  out.tag.assign(sealed.end() - kAesGcmTagSize, sealed.end());
  return out;
}

absl::Status RawOpen(const AesGcmKey& key, std::span<const uint8_t> gcm_aad,
                     std::span<const uint8_t> iv, std::span<const uint8_t> ciphertext,
                     std::span<const uint8_t> tag, std::span<uint8_t> out) {
  if (iv.size() != kAesGcmNonceSize) return absl::InvalidArgumentError("the IV is not 12 bytes");
  if (tag.size() != kAesGcmTagSize) return absl::InvalidArgumentError("the tag is not 16 bytes");
  std::vector<uint8_t> joined;
  joined.reserve(ciphertext.size() + tag.size());
  AppendBytes(joined, ciphertext);
  AppendBytes(joined, tag);
  return key.Decrypt(iv, joined, gcm_aad, out);
}

Sha256Digest RawIntegrityValue(std::span<const uint8_t> aad, std::span<const uint8_t> metadata,
                               const RawSealed& sealed) {
  Sha256Digest md{};
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  unsigned int len = 0;
  if (ctx != nullptr && EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) == 1) {
    for (std::span<const uint8_t> part :
         {aad, metadata, std::span<const uint8_t>(sealed.iv),
          std::span<const uint8_t>(sealed.ciphertext), std::span<const uint8_t>(sealed.tag)}) {
      EVP_DigestUpdate(ctx, part.data(), part.size());
    }
    EVP_DigestFinal_ex(ctx, md.data(), &len);
  }
  EVP_MD_CTX_free(ctx);
  return md;
}

}  // namespace kms::crypto
