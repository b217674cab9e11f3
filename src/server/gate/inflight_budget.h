// The memory bound of a door: the bytes of requests in flight, in total, across every
// call of the door at once. A call is admitted before its request is decoded (the raw
// gRPC handler knows the byte size first) and holds its share until its response has
// been sent; beyond the budget a call is refused at once with RESOURCE_EXHAUSTED and a
// retry hint, never queued (a queue would hold the bytes it is meant to bound).
//
// Config: limits.max_inflight_request_bytes. A request of n bytes holds n; the memory
// it costs while in flight is a small multiple of n (the received bytes, the decoded
// message, the response and its encoding), which the default accounts for
// (docs/security.md).
#pragma once

#include <atomic>
#include <cstdint>

#include "kms/common/status.h"

namespace kms::server {

// Thread-safe (one atomic counter; no lock).
class InflightBudget {
 public:
  explicit InflightBudget(int64_t max_bytes) : max_bytes_(max_bytes) {}
  InflightBudget(const InflightBudget&) = delete;
  InflightBudget& operator=(const InflightBudget&) = delete;

  // A share of the budget; returns it when destroyed. Movable.
  class Ticket {
   public:
    Ticket() = default;
    Ticket(Ticket&& other) noexcept : budget_(other.budget_), bytes_(other.bytes_) {
      other.budget_ = nullptr;
    }
    Ticket& operator=(Ticket&& other) noexcept;
    ~Ticket() { Release(); }
    int64_t bytes() const { return budget_ ? bytes_ : 0; }

   private:
    friend class InflightBudget;
    Ticket(InflightBudget* budget, int64_t bytes) : budget_(budget), bytes_(bytes) {}
    void Release();
    InflightBudget* budget_ = nullptr;
    int64_t bytes_ = 0;
  };

  // Admits `bytes` more. RESOURCE_EXHAUSTED ("server busy: too many request bytes in
  // flight; retry after 100 ms") when they would take the total past max_bytes. A
  // request larger than the whole budget is refused the same way (the config check
  // keeps the budget at least as large as the largest request a method accepts).
  absl::StatusOr<Ticket> Admit(int64_t bytes);

  int64_t in_flight() const { return in_flight_.load(std::memory_order_relaxed); }
  int64_t max_bytes() const { return max_bytes_; }
  // Calls refused since start (for metrics and tests).
  int64_t refused() const { return refused_.load(std::memory_order_relaxed); }

 private:
  const int64_t max_bytes_;
  std::atomic<int64_t> in_flight_{0};
  std::atomic<int64_t> refused_{0};
};

}  // namespace kms::server
