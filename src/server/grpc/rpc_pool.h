// RpcPool: the threads that run the gRPC door's RPC bodies (issue 9). gRPC's callback
// threads (as few as two) only decode nothing and hand each call over: a body that waits
// on a backend (a DEK cache miss, an admin call) then holds one of these threads, at
// most for the backend's call deadline (keys::BackendExecutor), never a thread the gRPC
// server needs to accept calls, answer health checks or serve cached tenants.
//
// Installed once by the server before it serves (Install); without one, ServeUnary runs
// bodies inline (unit tests). Thread-safe.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "src/common/sync.h"

namespace kms::server {

class RpcPool {
 public:
  RpcPool(int threads, size_t max_queue);
  ~RpcPool();  // runs what is queued, then joins
  RpcPool(const RpcPool&) = delete;
  RpcPool& operator=(const RpcPool&) = delete;

  // Queues `task`; false when `max_queue` tasks are already waiting.
  bool Submit(std::function<void()> task);

  static void Install(RpcPool* pool);
  static RpcPool* Installed();

 private:
  void Worker();

  const size_t max_queue_;
  Mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace kms::server
