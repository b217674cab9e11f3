// The key store's change epoch as the scheduler's EpochSource.
#pragma once

#include "kms/store/store_health.h"
#include "src/sched/scheduler.h"

namespace kms::sched {

class StoreEpochSource final : public EpochSource {
 public:
  explicit StoreEpochSource(store::StoreHealth& store) : store_(store) {}  // must outlive this
  absl::StatusOr<int64_t> GetEpoch() override { return store_.GetEpoch(); }

 private:
  store::StoreHealth& store_;
};

}  // namespace kms::sched
