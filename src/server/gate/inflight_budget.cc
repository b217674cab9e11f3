#include "src/server/gate/inflight_budget.h"

#include <utility>

namespace kms::server {

InflightBudget::Ticket& InflightBudget::Ticket::operator=(Ticket&& other) noexcept {
  if (this != &other) {
    Release();
    budget_ = std::exchange(other.budget_, nullptr);
    bytes_ = other.bytes_;
  }
  return *this;
}

void InflightBudget::Ticket::Release() {
  if (budget_ != nullptr) {
    budget_->in_flight_.fetch_sub(bytes_, std::memory_order_acq_rel);
    budget_ = nullptr;
  }
}

absl::StatusOr<InflightBudget::Ticket> InflightBudget::Admit(int64_t bytes) {
  if (bytes < 0) bytes = 0;
  int64_t current = in_flight_.load(std::memory_order_relaxed);
  do {
    if (bytes > max_bytes_ - current) {
      refused_.fetch_add(1, std::memory_order_relaxed);
      return absl::ResourceExhaustedError(
          "server busy: too many request bytes in flight; retry after 100 ms");
    }
  } while (!in_flight_.compare_exchange_weak(current, current + bytes, std::memory_order_acq_rel,
                                             std::memory_order_relaxed));
  return Ticket(this, bytes);
}

}  // namespace kms::server
