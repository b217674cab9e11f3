#include "src/server/grpc/rpc_pool.h"

#include <algorithm>
#include <atomic>

namespace kms::server {
namespace {
std::atomic<RpcPool*> installed{nullptr};
}  // namespace

RpcPool::RpcPool(int threads, size_t max_queue) : max_queue_(max_queue) {
  const int n = std::max(1, threads);
  threads_.reserve(n);
  for (int i = 0; i < n; ++i) threads_.emplace_back([this] { Worker(); });
}

RpcPool::~RpcPool() {
  RpcPool* self = this;
  installed.compare_exchange_strong(self, nullptr);
  {
    MutexLock lock(&mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (std::thread& t : threads_) t.join();
}

bool RpcPool::Submit(std::function<void()> task) {
  {
    MutexLock lock(&mu_);
    if (queue_.size() >= max_queue_) return false;
    queue_.push_back(std::move(task));
  }
  cv_.notify_one();
  return true;
}

void RpcPool::Worker() {
  MutexLock lock(&mu_);
  for (;;) {
    mu_.Await(cv_, [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return stopping_ || !queue_.empty();
    });
    if (queue_.empty()) return;
    std::function<void()> task = std::move(queue_.front());
    queue_.pop_front();
    lock.Unlock();
    task();
    task = nullptr;
    lock.Lock();
  }
}

void RpcPool::Install(RpcPool* pool) { installed.store(pool, std::memory_order_release); }

RpcPool* RpcPool::Installed() { return installed.load(std::memory_order_acquire); }

}  // namespace kms::server
