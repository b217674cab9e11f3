// A mutex with clang thread-safety annotations over std::mutex, for src/store/postgres.
//
// Why not absl::Mutex: Debian's abseil is built without ThreadSanitizer support, so TSan
// cannot see absl::Mutex's happens-before edges; std::mutex (pthread) is intercepted.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>

#include "absl/base/thread_annotations.h"

namespace kms::store::pg {

class ABSL_LOCKABLE Mutex {
 public:
  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }

  // Waits on `cv` until `ready()` holds or `deadline` passes; returns ready(). The
  // caller holds this mutex (as it does again on return); `ready` runs with it held.
  template <typename Pred>
  bool AwaitUntil(std::condition_variable& cv, std::chrono::steady_clock::time_point deadline,
                  Pred ready) ABSL_EXCLUSIVE_LOCKS_REQUIRED(this) {
    std::unique_lock<std::mutex> lock(mu_, std::adopt_lock);
    bool ok = cv.wait_until(lock, deadline, ready);
    lock.release();
    return ok;
  }

 private:
  std::mutex mu_;
};

class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};

}  // namespace kms::store::pg
