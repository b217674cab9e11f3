#include "src/keys/kek_ring.h"

#include <algorithm>
#include <set>

#include "spdlog/spdlog.h"

namespace kms::keys {

absl::StatusOr<std::unique_ptr<HsmKekRing>> HsmKekRing::Create(hsm::Hsm* hsm,
                                                               store::KekStore* store,
                                                               const Clock* clock) {
  std::unique_ptr<HsmKekRing> ring(new HsmKekRing(hsm, store, clock));
  MutexLock lock(&ring->mu_);
  KMS_RETURN_IF_ERROR(ring->LoadLocked());
  return ring;
}

absl::Status HsmKekRing::LoadLocked() {
  KMS_ASSIGN_OR_RETURN(std::vector<store::KekRecord> keks, store_->ListKeks());
  if (keks.empty()) {
    // First start: the first KEK is generated in the HSM and stored only wrapped.
    KMS_ASSIGN_OR_RETURN(std::vector<uint8_t> wrapped, hsm_->CreateKek(1));
    store::KekRecord first{.version = 1,
                           .wrapped = std::move(wrapped),
                           .state = store::KekState::kActive,
                           .created_at = clock_->UnixSeconds()};
    absl::Status inserted = store_->InsertKek(first);
    if (absl::IsAlreadyExists(inserted)) {
      // Another replica won the race: drop ours, use the stored one.
      KMS_RETURN_IF_ERROR(hsm_->UnloadKek(1));
    } else if (!inserted.ok()) {
      return inserted;
    } else {
      spdlog::info("created KEK version 1 ({})",
                   hsm_->DescribeWrappedKek(first.wrapped));
    }
    KMS_ASSIGN_OR_RETURN(keks, store_->ListKeks());
  }
  uint32_t primary = 0;
  std::set<uint32_t> active;
  for (const store::KekRecord& kek : keks) {
    if (kek.state != store::KekState::kActive) continue;
    KMS_RETURN_IF_ERROR(hsm_->LoadKek(kek.version, kek.wrapped));
    loaded_.insert(kek.version);
    active.insert(kek.version);
    primary = std::max(primary, kek.version);
  }
  if (primary == 0) return absl::FailedPreconditionError("the store holds no active KEK");
  // A version retired (or destroyed) since: its HSM session object goes.
  for (auto it = loaded_.begin(); it != loaded_.end();) {
    if (active.count(*it) != 0) {
      ++it;
      continue;
    }
    KMS_RETURN_IF_ERROR(hsm_->UnloadKek(*it));
    spdlog::info("KEK version {} is no longer active: unloaded from the HSM", *it);
    it = loaded_.erase(it);
  }
  primary_.store(primary);
  return absl::OkStatus();
}

absl::Status HsmKekRing::Refresh() {
  MutexLock lock(&mu_);
  return LoadLocked();
}

absl::Status HsmKekRing::EnsureLoaded(uint32_t kek_version) {
  if (hsm_->HasKek(kek_version)) return absl::OkStatus();
  // A KEK created by another replica since this node read the ring.
  KMS_RETURN_IF_ERROR(Refresh());
  if (!hsm_->HasKek(kek_version)) {
    return absl::DataLossError("a key names a KEK version that is not active");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint8_t>> HsmKekRing::Seal(uint32_t kek_version,
                                                      std::span<const uint8_t> plaintext,
                                                      std::span<const uint8_t> aad) {
  KMS_RETURN_IF_ERROR(EnsureLoaded(kek_version));
  return hsm_->Seal(kek_version, plaintext, aad);
}

absl::StatusOr<SecretBytes> HsmKekRing::Open(uint32_t kek_version, std::span<const uint8_t> sealed,
                                             std::span<const uint8_t> aad) {
  KMS_RETURN_IF_ERROR(EnsureLoaded(kek_version));
  return hsm_->Open(kek_version, sealed, aad);
}

absl::StatusOr<std::vector<uint8_t>> HsmKekRing::Reseal(uint32_t from_version,
                                                        std::span<const uint8_t> sealed,
                                                        std::span<const uint8_t> from_aad,
                                                        uint32_t to_version,
                                                        std::span<const uint8_t> to_aad) {
  // SoftHSM2 cannot wrap with AES-GCM (C_WrapKey), so the key passes through kmsd memory
  // for this instant: SecretBytes is locked, excluded from core dumps and wiped on return.
  KMS_ASSIGN_OR_RETURN(SecretBytes plaintext, Open(from_version, sealed, from_aad));
  return Seal(to_version, plaintext.span(), to_aad);
}

absl::StatusOr<uint32_t> HsmKekRing::Rotate() {
  MutexLock lock(&mu_);
  KMS_ASSIGN_OR_RETURN(std::vector<store::KekRecord> keks, store_->ListKeks());
  uint32_t next = 1;
  for (const store::KekRecord& k : keks) next = std::max(next, k.version + 1);
  KMS_ASSIGN_OR_RETURN(std::vector<uint8_t> wrapped, hsm_->CreateKek(next));
  absl::Status inserted = store_->InsertKek(store::KekRecord{.version = next,
                                                             .wrapped = wrapped,
                                                             .state = store::KekState::kActive,
                                                             .created_at = clock_->UnixSeconds()});
  if (!inserted.ok()) {
    // Another replica created this version first: ours must not stay loaded under its number.
    KMS_RETURN_IF_ERROR(hsm_->UnloadKek(next));
    if (absl::IsAlreadyExists(inserted)) {
      return absl::AbortedError("another replica rotated the KEK at the same time; retry");
    }
    return inserted;
  }
  loaded_.insert(next);
  primary_.store(next);
  spdlog::info("created KEK version {} ({}); new keys are sealed under it", next,
               hsm_->DescribeWrappedKek(wrapped));
  if (listener_) listener_(coord::InvalidationEvent{.kind = coord::InvalidationEvent::Kind::kKek});
  return next;
}

absl::StatusOr<std::vector<KekInfo>> HsmKekRing::List() {
  KMS_ASSIGN_OR_RETURN(std::vector<store::KekRecord> keks, store_->ListKeks());
  std::vector<KekInfo> out;
  out.reserve(keks.size());
  for (const store::KekRecord& k : keks) {
    out.push_back(KekInfo{.version = k.version,
                          .state = k.state,
                          .created_at = k.created_at,
                          .mechanism = hsm_->DescribeWrappedKek(k.wrapped)});
  }
  return out;
}

void HsmKekRing::SetChangeListener(std::function<void(const coord::InvalidationEvent&)> listener) {
  listener_ = std::move(listener);
}

}  // namespace kms::keys
