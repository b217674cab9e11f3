// The wrapped DEK blob (wrapped_dek.h) as read back from the store: arbitrary bytes to
// keys::WrappedDekKekVersion, which accepts exactly the 65-byte v1 blobs and returns
// their big-endian KEK version, and to keys::UnwrapDek against a FakeKekRing holding KEK
// version 1 = kFieldKeyBytes (tenant "acme", DEK version 1, as the seeds are made).
#include <algorithm>

#include "src/keys/wrapped_dek.h"
#include "tests/fakes/fake_kek_ring.h"
#include "tests/fuzz/fuzz_targets.h"
#include "tests/fuzz/fuzz_util.h"

namespace kms::fuzz {
namespace {

testing::FakeKekRing& Ring() {
  static testing::FakeKekRing* ring = [] {
    SetSecretMemoryLocking(false);
    auto* r = new testing::FakeKekRing();
    auto kek_blob = testing::FakeHsm::WrapKnownKek(kFieldKeyBytes);
    FUZZ_CHECK(kek_blob.ok() && r->hsm().LoadKek(1, *kek_blob).ok());
    r->set_primary(1);
    return r;
  }();
  return *ring;
}

}  // namespace

int FuzzWrappedDek(const uint8_t* data, size_t size) {
  testing::FakeKekRing& hsm = Ring();
  const std::span<const uint8_t> blob(data, size);
  auto kek_version = keys::WrappedDekKekVersion(blob);
  const bool well_formed =
      size == 1 + 4 + 12 + keys::kDekSize + 16 && data[0] == keys::kWrappedDekV1;
  FUZZ_CHECK(kek_version.ok() == well_formed);
  if (kek_version.ok()) {
    const uint32_t expected = (uint32_t{data[1]} << 24) | (uint32_t{data[2]} << 16) |
                              (uint32_t{data[3]} << 8) | uint32_t{data[4]};
    FUZZ_CHECK(*kek_version == expected);
  } else {
    FUZZ_CHECK(kek_version.status().code() == absl::StatusCode::kDataLoss ||
               kek_version.status().code() == absl::StatusCode::kInvalidArgument);
  }

  auto dek = keys::UnwrapDek(hsm, "acme", 1, blob);
  if (dek.ok()) {
    FUZZ_CHECK(kek_version.ok() && *kek_version == 1 && dek->size() == keys::kDekSize);
    // Bound to tenant and DEK version: the same blob fails for another of either.
    // (HSM failures reach callers as INTERNAL: see FromHsm in src/keys/wrapped_dek.cc.)
    FUZZ_CHECK(keys::UnwrapDek(hsm, "acmf", 1, blob).status().code() ==
               absl::StatusCode::kInternal);
    FUZZ_CHECK(keys::UnwrapDek(hsm, "acme", 2, blob).status().code() ==
               absl::StatusCode::kInternal);
  } else {
    // DATA_LOSS: a malformed blob; INTERNAL: the HSM refused it (no such KEK, no tag match).
    FUZZ_CHECK(dek.status().code() == absl::StatusCode::kDataLoss ||
               dek.status().code() == absl::StatusCode::kInternal);
  }

  // Wrap then unwrap, with the input as tenant id: the DEK comes back.
  const std::string_view tenant = AsText(blob.first(std::min<size_t>(size, 64)));
  SecretBytes fresh(keys::kDekSize);
  std::copy_n(data, std::min<size_t>(size, keys::kDekSize), fresh.data());
  auto wrapped = keys::WrapDek(hsm, 1, tenant, 3, fresh);
  FUZZ_CHECK(wrapped.ok());
  auto back = keys::UnwrapDek(hsm, tenant, 3, *wrapped);
  FUZZ_CHECK(back.ok() && back->Equals(fresh));

  const std::vector<uint8_t> aad = keys::DekAad(tenant, 7, 9);
  FUZZ_CHECK(aad.size() == 11 + 4 + tenant.size() + 4 + 4);
  return 0;
}

}  // namespace kms::fuzz
