// Coordinator: the background thread that keeps one replica coherent with the others
// and runs the periodic jobs.
//
// - Store epoch poll (every cluster.poll_interval_seconds): when the epoch moved, every
//   cached DEK is dropped and KEKs are re-read. This alone keeps replicas correct.
// - Invalidation bus (Redis, optional): another replica's change reaches this one in
//   well under a second; a targeted invalidation (one tenant) where possible.
// - Leadership: TryLead every few seconds; periodic jobs marked leader-only run only
//   on the leader (PostgreSQL advisory lock; with SQLite the node always leads).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "kms/coord/coordination.h"
#include "kms/store/key_store.h"
#include "src/keys/key_manager.h"

namespace kms::server {

// The single node of an embedded store always leads.
class AlwaysLeader final : public coord::LeaderElection {
 public:
  absl::StatusOr<bool> TryLead() override { return true; }
  bool is_leader() const override { return true; }
  void Resign() override {}
};

class Coordinator {
 public:
  struct Options {
    std::chrono::milliseconds poll_interval{10000};
    std::chrono::milliseconds leader_interval{2000};
  };
  // A job run every `interval` on this thread; `leader` says whether this replica leads.
  using Job = std::function<void(bool leader)>;

  // `bus` may be null (no Redis). References must outlive the Coordinator.
  Coordinator(store::KeyStore& store, keys::KeyManager& keys, coord::InvalidationBus* bus,
              coord::LeaderElection& leader, Options options);
  ~Coordinator();

  void AddJob(std::string name, std::chrono::milliseconds interval, Job job);
  // Called with every event applied (bus or epoch), after the key manager's own handling.
  void OnInvalidation(std::function<void(const coord::InvalidationEvent&)> listener);
  void Start();
  void Stop();

  // Tells the other replicas about a change this node made (best effort).
  void Publish(const coord::InvalidationEvent& event);
  bool is_leader() const { return leader_.is_leader(); }
  bool bus_healthy() const { return bus_ != nullptr && bus_->healthy(); }
  bool has_bus() const { return bus_ != nullptr; }

 private:
  struct ScheduledJob {
    std::string name;
    std::chrono::milliseconds interval;
    Job job;
    std::chrono::steady_clock::time_point next;
  };
  void Run();
  void Apply(const coord::InvalidationEvent& event);
  void PollEpoch();

  store::KeyStore& store_;
  keys::KeyManager& keys_;
  coord::InvalidationBus* const bus_;
  coord::LeaderElection& leader_;
  const Options options_;
  std::vector<ScheduledJob> jobs_;  // fixed after Start()
  std::function<void(const coord::InvalidationEvent&)> listener_;
  int64_t last_epoch_ = -1;  // Run() thread only

  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // guarded by mu_
  std::thread thread_;
};

}  // namespace kms::server
