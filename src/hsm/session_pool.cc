#include "src/hsm/session_pool.h"

#include <utility>

namespace kms::hsm {

SessionLease::SessionLease(SessionLease&& other) noexcept
    : pool_(std::exchange(other.pool_, nullptr)),
      handle_(other.handle_),
      dead_(other.dead_) {}

SessionLease::~SessionLease() {
  if (pool_ != nullptr) pool_->Return(handle_, dead_);
}

SessionPool::SessionPool(std::shared_ptr<Pkcs11Module> module, CK_SLOT_ID slot,
                         int max_sessions)
    : module_(std::move(module)), slot_(slot), max_sessions_(max_sessions < 1 ? 1 : max_sessions) {}

SessionPool::~SessionPool() {
  std::vector<CK_SESSION_HANDLE> idle;
  {
    MutexLock lock(&mu_);
    idle.swap(idle_);
  }
  for (CK_SESSION_HANDLE h : idle) module_->fn()->C_CloseSession(h);
}

absl::StatusOr<SessionLease> SessionPool::Acquire() {
  {
    MutexLock lock(&mu_);
    // A hung token must not hold requests forever: past the wait, fail fast (DESIGN §7).
    if (!mu_.AwaitUntil(cv_, std::chrono::steady_clock::now() + kAcquireTimeout,
                        [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return CanLend(); })) {
      return absl::UnavailableError("HSM: every session is busy (the token is not answering)");
    }
    if (!idle_.empty()) {
      CK_SESSION_HANDLE h = idle_.back();
      idle_.pop_back();
      return SessionLease(this, h);
    }
    ++open_;  // reserve a slot; open the session outside the lock
  }
  CK_SESSION_HANDLE h = CK_INVALID_HANDLE;
  CK_RV rv = module_->fn()->C_OpenSession(slot_, CKF_SERIAL_SESSION, nullptr, nullptr, &h);
  if (rv != CKR_OK) {
    {
      MutexLock lock(&mu_);
      --open_;
    }
    cv_.notify_one();
    return RvToStatus(rv, "C_OpenSession");
  }
  return SessionLease(this, h);
}

void SessionPool::Return(CK_SESSION_HANDLE handle, bool dead) {
  if (dead) {
    module_->fn()->C_CloseSession(handle);  // most likely already gone; ignore the result
    MutexLock lock(&mu_);
    --open_;
  } else {
    MutexLock lock(&mu_);
    idle_.push_back(handle);
  }
  cv_.notify_one();
}

int SessionPool::open_sessions() const {
  MutexLock lock(&mu_);
  return open_;
}

int SessionPool::lent_sessions() const {
  MutexLock lock(&mu_);
  return open_ - static_cast<int>(idle_.size());
}

}  // namespace kms::hsm
