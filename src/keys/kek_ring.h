// HsmKekRing: the KEK ring (include/kms/keys/kek_ring.h) over the HSM seam and the
// store's KEK table. A KEK is generated inside the HSM, stored only wrapped under the
// master key, and unwrapped into a non-extractable HSM session object on every node that
// uses it (DESIGN §2); KEK plaintext never enters kmsd memory.
//
// Thread-safe. Loading and rotating serialize on one mutex that the data path never
// takes: Seal/Open of an already loaded version go straight to the HSM.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "kms/common/clock.h"
#include "kms/coord/coordination.h"
#include "kms/hsm/hsm.h"
#include "kms/keys/kek_ring.h"
#include "kms/store/kek_store.h"
#include "src/common/sync.h"

namespace kms::keys {

// One KEK version as operators see it.
struct KekInfo {
  uint32_t version = 0;
  store::KekState state = store::KekState::kActive;
  int64_t created_at = 0;  // Unix seconds
  std::string mechanism;   // how the master key wrapped it ("rsa-oaep-sha1", ...)
};

class HsmKekRing final : public KekRing {
 public:
  // Loads every active KEK into the HSM, creating KEK version 1 on the very first start
  // (a replica that loses that race uses the winner's). The pointers must outlive the
  // ring. Errors of the store and the HSM pass through (UNAVAILABLE: retry).
  static absl::StatusOr<std::unique_ptr<HsmKekRing>> Create(hsm::Hsm* hsm,
                                                            store::KekStore* store,
                                                            const Clock* clock);

  // --- KekRing
  uint32_t primary_version() const override { return primary_.load(); }
  // DATA_LOSS when the store holds no active KEK `kek_version`.
  absl::Status EnsureLoaded(uint32_t kek_version) override;
  absl::StatusOr<std::vector<uint8_t>> Seal(uint32_t kek_version,
                                            std::span<const uint8_t> plaintext,
                                            std::span<const uint8_t> aad) override;
  absl::StatusOr<SecretBytes> Open(uint32_t kek_version, std::span<const uint8_t> sealed,
                                   std::span<const uint8_t> aad) override;
  absl::StatusOr<std::vector<uint8_t>> Reseal(uint32_t from_version,
                                              std::span<const uint8_t> sealed,
                                              std::span<const uint8_t> from_aad,
                                              uint32_t to_version,
                                              std::span<const uint8_t> to_aad) override;
  absl::Status Ping() override { return hsm_->Ping(); }

  // --- Operators and coherence
  // Creates the next KEK version in the HSM, stores it wrapped and makes it primary for
  // new keys. Keys sealed under older versions stay readable (their versions stay
  // loaded) until the re-wrap moves them. ABORTED when another replica rotated at the
  // same moment.
  absl::StatusOr<uint32_t> Rotate();
  // Also unloads versions that are no longer active (retired, destroyed): their HSM
  // session objects are destroyed on this node.
  absl::Status Refresh() override;
  absl::StatusOr<std::vector<KekInfo>> List();

  // Called after every KEK change this node makes, for the invalidation bus.
  void SetChangeListener(std::function<void(const coord::InvalidationEvent&)> listener);

 private:
  HsmKekRing(hsm::Hsm* hsm, store::KekStore* store, const Clock* clock)
      : hsm_(hsm), store_(store), clock_(clock) {}
  absl::Status LoadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<uint32_t> RotateLocked();
  // Unloads a version this node created but could not commit; when the HSM refuses,
  // the version is poisoned: never used here until a later unload succeeds.
  absl::Status DropUncommitted(uint32_t kek_version);
  bool Poisoned(uint32_t kek_version) const;

  hsm::Hsm* const hsm_;
  store::KekStore* const store_;
  const Clock* const clock_;
  // Set once before serving (SetChangeListener), read after: no lock.
  std::function<void(const coord::InvalidationEvent&)> listener_;
  std::atomic<uint32_t> primary_{0};
  Mutex mu_;  // serializes (re)loading and rotation; never held on the data path
  // Versions read from the store and loaded in the HSM; versions that could not be
  // unloaded after a lost race. Taken briefly on the data path (reader side).
  mutable SharedMutex committed_mu_;
  absl::flat_hash_set<uint32_t> committed_ ABSL_GUARDED_BY(committed_mu_);
  absl::flat_hash_set<uint32_t> poisoned_ ABSL_GUARDED_BY(committed_mu_);
  std::set<uint32_t> loaded_ ABSL_GUARDED_BY(mu_);  // versions this ring loaded into the HSM
};

}  // namespace kms::keys
