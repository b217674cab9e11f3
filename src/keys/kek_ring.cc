#include "src/keys/kek_ring.h"

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
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
    if (!inserted.ok()) {
      // Ours is not the stored KEK 1 (another replica won the race, or the insert
      // failed): it must not stay loaded under that number.
      KMS_RETURN_IF_ERROR(DropUncommitted(1));
      if (!absl::IsAlreadyExists(inserted)) return inserted;
    } else {
      spdlog::info("created KEK version 1 ({})",
                   hsm_->DescribeWrappedKek(first.wrapped));
    }
    KMS_ASSIGN_OR_RETURN(keks, store_->ListKeks());
  }
  uint32_t primary = 0;
  absl::flat_hash_set<uint32_t> loaded;
  for (const store::KekRecord& kek : keks) {
    if (kek.state != store::KekState::kActive) continue;
    if (Poisoned(kek.version)) KMS_RETURN_IF_ERROR(DropUncommitted(kek.version));
    KMS_RETURN_IF_ERROR(hsm_->LoadKek(kek.version, kek.wrapped));
    loaded_.insert(kek.version);
    loaded.insert(kek.version);
    primary = std::max(primary, kek.version);
  }
  if (primary == 0) return absl::FailedPreconditionError("the store holds no active KEK");
  {
    WriterLock lock(&committed_mu_);
    committed_ = loaded;
  }
  // A version retired (or destroyed) since: its HSM session object goes.
  for (auto it = loaded_.begin(); it != loaded_.end();) {
    if (loaded.contains(*it)) {
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

bool HsmKekRing::Poisoned(uint32_t kek_version) const {
  ReaderLock lock(&committed_mu_);
  return poisoned_.contains(kek_version);
}

absl::Status HsmKekRing::DropUncommitted(uint32_t kek_version) {
  absl::Status unloaded = hsm_->UnloadKek(kek_version);
  WriterLock lock(&committed_mu_);
  if (!unloaded.ok()) {
    // The HSM may still hold our KEK under a number another replica's KEK has: never
    // use that version on this node until it is unloaded.
    poisoned_.insert(kek_version);
    return absl::InternalError(
        absl::StrCat("KEK version ", kek_version, " could not be unloaded after a lost race"));
  }
  poisoned_.erase(kek_version);
  return absl::OkStatus();
}

absl::Status HsmKekRing::Refresh() {
  MutexLock lock(&mu_);
  return LoadLocked();
}

absl::Status HsmKekRing::EnsureLoaded(uint32_t kek_version) {
  {
    // Only versions read from the store count: a KEK this node is creating is loaded in
    // the HSM before its row is committed, and may lose the race for its number.
    ReaderLock lock(&committed_mu_);
    if (committed_.contains(kek_version) && hsm_->HasKek(kek_version)) return absl::OkStatus();
  }
  // A KEK created by another replica since this node read the ring.
  KMS_RETURN_IF_ERROR(Refresh());
  ReaderLock lock(&committed_mu_);
  if (!committed_.contains(kek_version) || !hsm_->HasKek(kek_version)) {
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
  KMS_ASSIGN_OR_RETURN(uint32_t next, RotateLocked());
  // Told after the lock is released: the listener publishes on the bus.
  if (listener_) listener_(coord::InvalidationEvent{.kind = coord::InvalidationEvent::Kind::kKek});
  return next;
}

absl::StatusOr<uint32_t> HsmKekRing::RotateLocked() {
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
    // Another replica created this version first (or the insert failed): ours must not
    // stay loaded under its number.
    KMS_RETURN_IF_ERROR(DropUncommitted(next));
    if (absl::IsAlreadyExists(inserted)) {
      return absl::AbortedError("another replica rotated the KEK at the same time; retry");
    }
    return inserted;
  }
  loaded_.insert(next);
  {
    WriterLock committed(&committed_mu_);
    committed_.insert(next);
  }
  primary_.store(next);
  spdlog::info("created KEK version {} ({}); new keys are sealed under it", next,
               hsm_->DescribeWrappedKek(wrapped));
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
