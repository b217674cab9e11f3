#include "src/server/coordinator.h"

#include "spdlog/spdlog.h"

namespace kms::server {

Coordinator::Coordinator(store::KeyStore& store, keys::KeyManager& keys,
                         coord::InvalidationBus* bus, coord::LeaderElection& leader,
                         Options options)
    : store_(store), keys_(keys), bus_(bus), leader_(leader), options_(options) {}

Coordinator::~Coordinator() { Stop(); }

void Coordinator::AddJob(std::string name, std::chrono::milliseconds interval, Job job) {
  jobs_.push_back(ScheduledJob{std::move(name), interval, std::move(job), {}});
}

void Coordinator::OnInvalidation(std::function<void(const coord::InvalidationEvent&)> listener) {
  listener_ = std::move(listener);
}

void Coordinator::Start() {
  if (auto epoch = store_.GetEpoch(); epoch.ok()) last_epoch_ = *epoch;
  if (bus_ != nullptr) {
    bus_->OnEvent([this](const coord::InvalidationEvent& event) { Apply(event); });
    bus_->Start();
  }
  thread_ = std::thread([this] { Run(); });
}

void Coordinator::Stop() {
  {
    std::lock_guard lock(mu_);
    if (stop_ && !thread_.joinable()) return;
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (bus_ != nullptr) bus_->Stop();
  leader_.Resign();
}

void Coordinator::Publish(const coord::InvalidationEvent& event) {
  if (bus_ == nullptr) return;
  absl::Status published = bus_->Publish(event);
  if (!published.ok()) {
    // The other replicas still see the change at their next epoch poll.
    spdlog::warn("invalidation not published ({}); replicas catch up within the poll interval",
                 std::string(published.message()));
  }
}

void Coordinator::Apply(const coord::InvalidationEvent& event) {
  keys_.ApplyInvalidation(event);
  if (listener_) listener_(event);
}

void Coordinator::PollEpoch() {
  absl::StatusOr<int64_t> epoch = store_.GetEpoch();
  if (!epoch.ok()) return;  // the store is down: keep serving from cache (degraded mode)
  // -1: no baseline yet (the store was down at start): anything cached may be stale.
  if (*epoch != last_epoch_) {
    spdlog::debug("store epoch moved {} -> {}: dropping cached keys", last_epoch_, *epoch);
    Apply(coord::InvalidationEvent{.kind = coord::InvalidationEvent::Kind::kAll});
  }
  last_epoch_ = *epoch;
}

void Coordinator::Run() {
  using Clock = std::chrono::steady_clock;
  auto next_poll = Clock::now() + options_.poll_interval;
  auto next_lead = Clock::now();
  for (ScheduledJob& job : jobs_) job.next = Clock::now() + job.interval;
  while (true) {
    const auto now = Clock::now();
    if (now >= next_lead) {
      absl::StatusOr<bool> lead = leader_.TryLead();
      if (!lead.ok()) spdlog::debug("leadership check failed: {}", std::string(lead.status().message()));
      next_lead = now + options_.leader_interval;
    }
    if (now >= next_poll) {
      PollEpoch();
      next_poll = now + options_.poll_interval;
    }
    auto wake = std::min(next_poll, next_lead);
    for (ScheduledJob& job : jobs_) {
      if (now >= job.next) {
        job.job(leader_.is_leader());
        job.next = Clock::now() + job.interval;
      }
      wake = std::min(wake, job.next);
    }
    std::unique_lock lock(mu_);
    if (cv_.wait_until(lock, wake, [this] { return stop_; })) return;
  }
}

}  // namespace kms::server
