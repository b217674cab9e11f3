// Mutexes with clang thread-safety annotations, over the std:: primitives: the one lock
// idiom of kmsd. Guarded members say ABSL_GUARDED_BY(mu_), helpers that expect a lock held
// say ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_); clang checks both (-Wthread-safety, the clang
// tree of tools/test.sh). Condition variables are plain std::condition_variable, waited on
// through Mutex::Await / AwaitUntil / WaitUntil, which keep the analysis informed.
//
// Why not absl::Mutex: Debian's abseil is built without ThreadSanitizer support, so TSan
// cannot see absl::Mutex's happens-before edges and reports false races; pthread-based
// std::mutex is intercepted by TSan. These wrappers keep both tools useful.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <shared_mutex>

#include "absl/base/thread_annotations.h"

namespace kms {

class ABSL_LOCKABLE Mutex {
 public:
  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }
  // Tells the lock analysis that the caller holds this mutex (a callback that runs only
  // inside a locked scope); checks nothing at run time.
  void AssertHeld() const ABSL_ASSERT_EXCLUSIVE_LOCK() {}

  // Waits on `cv` until `ready()` holds. The caller holds this mutex (as it does again on
  // return); `ready` runs with it held.
  template <typename Pred>
  void Await(std::condition_variable& cv, Pred ready) ABSL_EXCLUSIVE_LOCKS_REQUIRED(this) {
    std::unique_lock<std::mutex> lock(mu_, std::adopt_lock);
    cv.wait(lock, ready);
    lock.release();
  }

  // Waits on `cv` until `ready()` holds or `deadline` passes; returns ready(). Held as
  // for Await.
  template <typename Pred>
  bool AwaitUntil(std::condition_variable& cv, std::chrono::steady_clock::time_point deadline,
                  Pred ready) ABSL_EXCLUSIVE_LOCKS_REQUIRED(this) {
    std::unique_lock<std::mutex> lock(mu_, std::adopt_lock);
    bool ok = cv.wait_until(lock, deadline, ready);
    lock.release();
    return ok;
  }

  // Waits on `cv` once: until a notification, a spurious wakeup or `deadline`. Returns
  // false when it returned because the deadline passed. For callers that re-check their
  // state in a loop; held as for Await.
  bool WaitUntil(std::condition_variable& cv, std::chrono::steady_clock::time_point deadline)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(this) {
    std::unique_lock<std::mutex> lock(mu_, std::adopt_lock);
    const bool notified = cv.wait_until(lock, deadline) == std::cv_status::no_timeout;
    lock.release();
    return notified;
  }

 private:
  std::mutex mu_;
};

class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() {
    if (held_) mu_->Unlock();
  }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

  // Releases the mutex before the scope ends (e.g. around a slow call), and takes it
  // again; the destructor unlocks only if held.
  void Unlock() ABSL_UNLOCK_FUNCTION() {
    held_ = false;
    mu_->Unlock();
  }
  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() {
    mu_->Lock();
    held_ = true;
  }

 private:
  Mutex* const mu_;
  bool held_ = true;
};

class ABSL_LOCKABLE SharedMutex {
 public:
  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }
  void ReaderLock() ABSL_SHARED_LOCK_FUNCTION() { mu_.lock_shared(); }
  void ReaderUnlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock_shared(); }

 private:
  std::shared_mutex mu_;
};

class ABSL_SCOPED_LOCKABLE WriterLock {
 public:
  explicit WriterLock(SharedMutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  ~WriterLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  WriterLock(const WriterLock&) = delete;
  WriterLock& operator=(const WriterLock&) = delete;

 private:
  SharedMutex* const mu_;
};

class ABSL_SCOPED_LOCKABLE ReaderLock {
 public:
  explicit ReaderLock(SharedMutex* mu) ABSL_SHARED_LOCK_FUNCTION(mu) : mu_(mu) {
    mu_->ReaderLock();
  }
  ~ReaderLock() ABSL_UNLOCK_FUNCTION() { mu_->ReaderUnlock(); }
  ReaderLock(const ReaderLock&) = delete;
  ReaderLock& operator=(const ReaderLock&) = delete;

 private:
  SharedMutex* const mu_;
};

}  // namespace kms
