#include "kms/common/clock.h"

#include <chrono>

namespace kms {

int64_t RealClock::UnixSeconds() const {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

RealClock& RealClock::Instance() {
  // Stateless and trivially destructible in practice; leaked so that it outlives every
  // static that might read the time during shutdown.
  static RealClock* clock = new RealClock();
  return *clock;
}

}  // namespace kms
