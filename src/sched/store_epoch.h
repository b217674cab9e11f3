// The key store's change epoch as the scheduler's EpochSource.
#pragma once

#include "kms/store/key_store.h"
#include "src/sched/scheduler.h"

namespace kms::sched {

class StoreEpochSource final : public EpochSource {
 public:
  explicit StoreEpochSource(store::KeyStore& store) : store_(store) {}  // must outlive this
  absl::StatusOr<int64_t> GetEpoch() override { return store_.GetEpoch(); }

 private:
  store::KeyStore& store_;
};

}  // namespace kms::sched
