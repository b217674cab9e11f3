// A pool of PKCS#11 sessions on one slot: one session per operation in flight, since a
// session must never be used by two threads at once (SoftHSM2 crashes). Private to src/hsm.
#pragma once

#include <chrono>

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "kms/common/status.h"
#include "src/common/sync.h"
#include "src/hsm/pkcs11_module.h"

namespace kms::hsm {

class SessionPool;

// A borrowed session, returned to the pool when it goes out of scope. Call Check() with
// every CK_RV the session produced: a dead session (IsDeadSessionRv) is closed and
// dropped instead of being returned. Movable, not copyable; used by one thread.
class SessionLease {
 public:
  SessionLease(SessionLease&& other) noexcept;
  SessionLease& operator=(SessionLease&&) = delete;
  SessionLease(const SessionLease&) = delete;
  ~SessionLease();

  CK_SESSION_HANDLE handle() const { return handle_; }
  // Returns `rv` unchanged, remembering whether it killed the session.
  CK_RV Check(CK_RV rv) {
    if (IsDeadSessionRv(rv)) dead_ = true;
    return rv;
  }

 private:
  friend class SessionPool;
  SessionLease(SessionPool* pool, CK_SESSION_HANDLE handle) : pool_(pool), handle_(handle) {}

  SessionPool* pool_;
  CK_SESSION_HANDLE handle_;
  bool dead_ = false;
};

// Thread-safe. Sessions are opened lazily (read-only, serial) up to `max_sessions`;
// Acquire blocks while all are lent out. The pool must outlive its leases.
class SessionPool {
 public:
  SessionPool(std::shared_ptr<Pkcs11Module> module, CK_SLOT_ID slot, int max_sessions);
  ~SessionPool();  // closes the idle sessions

  // UNAVAILABLE when no session frees up within kAcquireTimeout.
  absl::StatusOr<SessionLease> Acquire();
  static constexpr std::chrono::milliseconds kAcquireTimeout{5000};

  // For tests and metrics.
  int open_sessions() const;
  int lent_sessions() const;  // open and lent to an operation (or being opened for one)
  int max_sessions() const { return max_sessions_; }

 private:
  friend class SessionLease;
  void Return(CK_SESSION_HANDLE handle, bool dead);
  bool CanLend() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !idle_.empty() || open_ < max_sessions_;
  }

  const std::shared_ptr<Pkcs11Module> module_;
  const CK_SLOT_ID slot_;
  const int max_sessions_;

  mutable Mutex mu_;
  std::condition_variable cv_;  // signalled when a session is returned or dropped
  std::vector<CK_SESSION_HANDLE> idle_ ABSL_GUARDED_BY(mu_);
  int open_ ABSL_GUARDED_BY(mu_) = 0;  // idle + lent + being opened
};

}  // namespace kms::hsm
