// The v1 field ciphertext (field_cipher.h): ParseField and OpenField with a fixed key,
// and FieldAad with a fuzzed tenant and context.
//
// Input layout (ByteReader): tenant (length byte, <= 64 bytes), pair count byte
// (mod 5), then per pair key and value (length byte, <= 32 bytes each), then the rest
// is the field ciphertext. tests/fuzz/make_seeds.cc writes seeds in this layout.
#include <algorithm>
#include <string>
#include <vector>

#include "kms/common/secret.h"
#include "src/crypto/aes_gcm.h"
#include "src/crypto/field_cipher.h"
#include "tests/fuzz/fuzz_targets.h"
#include "tests/fuzz/fuzz_util.h"

namespace kms::fuzz {
namespace {

const crypto::AesGcmKey& FieldKey() {
  static const crypto::AesGcmKey* key = [] {
    SetSecretMemoryLocking(false);
    auto k = crypto::AesGcmKey::Create(SecretBytes::CopyOf(std::span(kFieldKeyBytes)));
    FUZZ_CHECK(k.ok());
    return k->release();
  }();
  return *key;
}

bool HasDuplicateKey(std::vector<crypto::ContextPair> pairs) {
  std::sort(pairs.begin(), pairs.end());
  for (size_t i = 1; i < pairs.size(); ++i) {
    if (pairs[i - 1].first == pairs[i].first) return true;
  }
  return false;
}

}  // namespace

int FuzzField(const uint8_t* data, size_t size) {
  const crypto::AesGcmKey& key = FieldKey();
  ByteReader in(data, size);
  const std::string_view tenant = in.Field(64);
  std::vector<crypto::ContextPair> context(in.U8() % 5);
  for (auto& [k, v] : context) {
    k = in.Field(32);
    v = in.Field(32);
  }
  const std::span<const uint8_t> ciphertext = in.Rest();

  auto field = crypto::ParseField(ciphertext);
  const uint32_t dek_version = field.ok() ? field->dek_version : 1;

  // The AAD: duplicate keys are refused; otherwise its size is the documented layout's
  // and it does not depend on the order of the pairs.
  auto aad = crypto::FieldAad(tenant, dek_version, context);
  if (HasDuplicateKey(context)) {
    FUZZ_CHECK(!aad.ok() && aad.status().code() == absl::StatusCode::kInvalidArgument);
  } else {
    FUZZ_CHECK(aad.ok());
    size_t expected = 13 + 4 + tenant.size() + 4 + 4;
    for (const auto& [k, v] : context) expected += 4 + k.size() + 4 + v.size();
    FUZZ_CHECK(aad->size() == expected);
    std::vector<crypto::ContextPair> reversed(context.rbegin(), context.rend());
    auto aad2 = crypto::FieldAad(tenant, dek_version, reversed);
    FUZZ_CHECK(aad2.ok() && *aad2 == *aad);
  }
  const std::vector<uint8_t> aad_bytes = aad.ok() ? *aad : std::vector<uint8_t>{};

  if (field.ok()) {
    FUZZ_CHECK(ciphertext.size() >= crypto::kFieldOverhead);
    FUZZ_CHECK(field->dek_version != 0);
    FUZZ_CHECK(field->nonce.size() == crypto::kAesGcmNonceSize);
    FUZZ_CHECK(field->ciphertext_and_tag.size() == ciphertext.size() - crypto::kFieldHeaderSize);
    std::string plaintext;
    absl::Status opened = crypto::OpenField(key, *field, aad_bytes, &plaintext);
    if (opened.ok()) {
      FUZZ_CHECK(plaintext.size() == ciphertext.size() - crypto::kFieldOverhead);
    } else {
      FUZZ_CHECK(opened.code() == absl::StatusCode::kDataLoss && plaintext.empty());
    }
  } else {
    FUZZ_CHECK(field.status().code() == absl::StatusCode::kInvalidArgument);
  }

  // Seal then open: the ciphertext bytes as a plaintext come back unchanged, and the
  // sealed form fails under a different AAD.
  std::string sealed;
  FUZZ_CHECK(crypto::SealField(key, dek_version, aad_bytes, ciphertext, &sealed).ok());
  FUZZ_CHECK(sealed.size() == ciphertext.size() + crypto::kFieldOverhead);
  auto reparsed = crypto::ParseField(AsBytes(sealed));
  FUZZ_CHECK(reparsed.ok() && reparsed->dek_version == dek_version);
  std::string opened;
  FUZZ_CHECK(crypto::OpenField(key, *reparsed, aad_bytes, &opened).ok());
  FUZZ_CHECK(AsBytes(opened).size() == ciphertext.size() &&
             std::equal(opened.begin(), opened.end(), ciphertext.begin(),
                        [](char a, uint8_t b) { return static_cast<uint8_t>(a) == b; }));
  std::vector<uint8_t> other_aad = aad_bytes;
  other_aad.push_back(0);
  FUZZ_CHECK(crypto::OpenField(key, *reparsed, other_aad, &opened).code() ==
             absl::StatusCode::kDataLoss);
  return 0;
}

}  // namespace kms::fuzz
