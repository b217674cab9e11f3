#include "src/crypto/field_cipher.h"

#include <openssl/crypto.h>

#include <algorithm>
#include <limits>

#include "src/common/big_endian.h"

namespace kms::crypto {
namespace {

constexpr std::string_view kAadLabel = "kmsd:field:v1";

bool FitsU32(size_t n) { return n <= std::numeric_limits<uint32_t>::max(); }

}  // namespace

absl::StatusOr<std::vector<uint8_t>> FieldAad(std::string_view tenant_id, uint32_t dek_version,
                                              std::span<const ContextPair> context) {
  if (!FitsU32(tenant_id.size()) || !FitsU32(context.size())) {
    return absl::InvalidArgumentError("field AAD input too long");
  }
  // Sort pointers, not pairs: the caller's span stays untouched and nothing is copied.
  // string_view compares through char_traits<char>, which orders as unsigned bytes.
  std::vector<const ContextPair*> sorted;
  sorted.reserve(context.size());
  size_t size = kAadLabel.size() + 4 + tenant_id.size() + 4 + 4;
  for (const ContextPair& pair : context) {
    if (!FitsU32(pair.first.size()) || !FitsU32(pair.second.size())) {
      return absl::InvalidArgumentError("field AAD context entry too long");
    }
    sorted.push_back(&pair);
    size += 4 + pair.first.size() + 4 + pair.second.size();
  }
  std::sort(sorted.begin(), sorted.end(),
            [](const ContextPair* a, const ContextPair* b) { return a->first < b->first; });
  for (size_t i = 1; i < sorted.size(); ++i) {
    // A duplicate would make the encoding depend on the caller's order of the pairs.
    if (sorted[i - 1]->first == sorted[i]->first) {
      return absl::InvalidArgumentError("duplicate key in field encryption context");
    }
  }

  std::vector<uint8_t> aad;
  aad.reserve(size);
  AppendBytes(aad, kAadLabel);
  AppendLengthPrefixed(aad, tenant_id);
  AppendU32(aad, dek_version);
  AppendU32(aad, static_cast<uint32_t>(sorted.size()));
  for (const ContextPair* pair : sorted) {
    AppendLengthPrefixed(aad, pair->first);
    AppendLengthPrefixed(aad, pair->second);
  }
  return aad;
}

absl::StatusOr<FieldView> ParseField(std::span<const uint8_t> ciphertext) {
  if (ciphertext.size() < kFieldOverhead) {
    return absl::InvalidArgumentError("field ciphertext too short");
  }
  if (ciphertext[0] != kFieldFormatV1) {
    return absl::InvalidArgumentError("unknown field ciphertext version");
  }
  FieldView view;
  view.dek_version = LoadU32(ciphertext.subspan<1, 4>());
  if (view.dek_version == 0) {
    return absl::InvalidArgumentError("field ciphertext has DEK version 0");
  }
  view.nonce = ciphertext.subspan(5, kAesGcmNonceSize);
  view.ciphertext_and_tag = ciphertext.subspan(kFieldHeaderSize);
  return view;
}

absl::Status SealField(const AesGcmKey& key, uint32_t dek_version, std::span<const uint8_t> aad,
                       std::span<const uint8_t> plaintext, std::string* out) {
  if (dek_version == 0) {
    // ParseField would reject the result: DEK versions start at 1.
    return absl::InvalidArgumentError("DEK version 0 is not valid");
  }
  // One allocation; the header, nonce, ciphertext and tag are all written in place.
  out->resize(kFieldOverhead + plaintext.size());
  uint8_t* buf = reinterpret_cast<uint8_t*>(out->data());
  buf[0] = kFieldFormatV1;
  StoreU32(std::span<uint8_t, 4>(buf + 1, 4), dek_version);
  std::span<uint8_t, kAesGcmNonceSize> nonce(buf + 5, kAesGcmNonceSize);
  absl::Status status = NonceBytes(nonce);
  if (status.ok()) {
    status =
        key.Encrypt(nonce, plaintext, aad,
                    std::span<uint8_t>(buf + kFieldHeaderSize, plaintext.size() + kAesGcmTagSize));
  }
  if (!status.ok()) out->clear();
  return status;
}

absl::Status SealFieldWithNonce(const AesGcmKey& key, uint32_t dek_version,
                                std::span<const uint8_t> aad,
                                std::span<const uint8_t, kAesGcmNonceSize> nonce,
                                std::span<const uint8_t> plaintext, std::string* out) {
  if (dek_version == 0) return absl::InvalidArgumentError("DEK version 0 is not valid");
  out->resize(kFieldOverhead + plaintext.size());
  uint8_t* buf = reinterpret_cast<uint8_t*>(out->data());
  buf[0] = kFieldFormatV1;
  StoreU32(std::span<uint8_t, 4>(buf + 1, 4), dek_version);
  std::copy(nonce.begin(), nonce.end(), buf + 5);
  absl::Status status =
      key.Encrypt(std::span<const uint8_t>(buf + 5, kAesGcmNonceSize), plaintext, aad,
                  std::span<uint8_t>(buf + kFieldHeaderSize, plaintext.size() + kAesGcmTagSize));
  if (!status.ok()) out->clear();
  return status;
}

size_t FieldPlaintextSize(const FieldView& field) {
  return field.ciphertext_and_tag.size() < kAesGcmTagSize
             ? 0
             : field.ciphertext_and_tag.size() - kAesGcmTagSize;
}

absl::Status OpenField(const AesGcmKey& key, const FieldView& field, std::span<const uint8_t> aad,
                       std::span<uint8_t> out) {
  if (field.nonce.size() != kAesGcmNonceSize || field.ciphertext_and_tag.size() < kAesGcmTagSize ||
      out.size() != FieldPlaintextSize(field)) {
    return absl::InvalidArgumentError("malformed field view");
  }
  absl::Status status = key.Decrypt(field.nonce, field.ciphertext_and_tag, aad, out);
  if (!status.ok()) {
    OPENSSL_cleanse(out.data(), out.size());
    return absl::DataLossError("decryption failed");
  }
  return absl::OkStatus();
}

absl::Status OpenField(const AesGcmKey& key, const FieldView& field, std::span<const uint8_t> aad,
                       std::string* out) {
  if (field.nonce.size() != kAesGcmNonceSize || field.ciphertext_and_tag.size() < kAesGcmTagSize) {
    return absl::InvalidArgumentError("malformed field view");
  }
  out->resize(field.ciphertext_and_tag.size() - kAesGcmTagSize);
  absl::Status status =
      key.Decrypt(field.nonce, field.ciphertext_and_tag, aad,
                  std::span<uint8_t>(reinterpret_cast<uint8_t*>(out->data()), out->size()));
  if (!status.ok()) {
    OPENSSL_cleanse(out->data(), out->size());
    out->clear();
    // One uniform error whatever went wrong inside, so failures cannot be told apart.
    return absl::DataLossError("decryption failed");
  }
  return absl::OkStatus();
}

}  // namespace kms::crypto
