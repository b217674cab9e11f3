#include "src/sched/scheduler.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace kms::sched {

namespace {

class FunctionJob final : public Job {
 public:
  FunctionJob(std::string name, std::chrono::milliseconds interval, bool leader_only,
              std::function<absl::Status(const JobContext&)> body)
      : name_(std::move(name)),
        interval_(interval),
        leader_only_(leader_only),
        body_(std::move(body)) {}
  std::string_view name() const override { return name_; }
  std::chrono::milliseconds interval() const override { return interval_; }
  bool leader_only() const override { return leader_only_; }
  absl::Status Run(const JobContext& context) override { return body_(context); }

 private:
  const std::string name_;
  const std::chrono::milliseconds interval_;
  const bool leader_only_;
  const std::function<absl::Status(const JobContext&)> body_;
};

}  // namespace

std::unique_ptr<Job> MakeJob(std::string name, std::chrono::milliseconds interval, bool leader_only,
                             std::function<absl::Status(const JobContext&)> body) {
  return std::make_unique<FunctionJob>(std::move(name), interval, leader_only, std::move(body));
}

Scheduler::Scheduler(const Clock& clock, EpochSource& epoch, InvalidationSink& sink,
                     coord::InvalidationBus* bus, coord::LeaderElection& leader, Options options)
    : clock_(clock), epoch_(epoch), sink_(sink), bus_(bus), leader_(leader), options_(options) {}

Scheduler::~Scheduler() { Stop(); }

absl::Status Scheduler::AddJob(std::unique_ptr<Job> job) {
  if (job == nullptr || job->name().empty())
    return absl::InvalidArgumentError("a job needs a name");
  if (job->interval() <= std::chrono::milliseconds::zero()) {
    return absl::InvalidArgumentError(
        absl::StrCat("job '", std::string(job->name()), "': interval must be positive"));
  }
  MutexLock lock(&mu_);
  if (started_) return absl::FailedPreconditionError("jobs are added before the scheduler starts");
  for (const Entry& e : entries_) {
    if (e.status.name == job->name()) {
      return absl::InvalidArgumentError(
          absl::StrCat("job '", std::string(job->name()), "' added twice"));
    }
  }
  Entry entry;
  entry.status.name = std::string(job->name());
  entry.status.interval = job->interval();
  entry.status.leader_only = job->leader_only();
  entry.job = std::move(job);
  entries_.push_back(std::move(entry));
  return absl::OkStatus();
}

bool Scheduler::Begin() {
  {
    MutexLock lock(&mu_);
    if (started_ || stop_) return false;
    started_ = true;  // AddJob refuses from here on
  }
  // The baseline: -1 if the store is down now, so its first answer invalidates everything.
  absl::StatusOr<int64_t> epoch = epoch_.GetEpoch();
  const TimePoint now = clock_.Now();
  {
    MutexLock lock(&run_mu_);
    next_lead_ = now;
    next_poll_ = now + options_.poll_interval;
  }
  {
    MutexLock lock(&mu_);
    if (epoch.ok()) last_epoch_ = *epoch;
    for (Entry& e : entries_) e.status.next_due = now + e.status.interval;
  }
  if (bus_ != nullptr) {
    bus_->OnEvent(
        [this](const coord::InvalidationEvent& event) { sink_.ApplyInvalidation(event); });
    bus_->Start();
  }
  return true;
}

void Scheduler::Start() {
  if (Begin()) thread_ = std::thread([this] { Loop(); });
}

void Scheduler::StartWithoutThread() { Begin(); }

void Scheduler::Stop() {
  {
    MutexLock lock(&mu_);
    if (stop_) return;
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (bus_ != nullptr) bus_->Stop();
  leader_.Resign();
}

absl::Status Scheduler::Trigger(std::string_view name) {
  {
    MutexLock lock(&mu_);
    auto it = std::find_if(entries_.begin(), entries_.end(),
                           [&](const Entry& e) { return e.status.name == name; });
    if (it == entries_.end())
      return absl::NotFoundError(absl::StrCat("no job '", std::string(name), "'"));
    it->status.next_due = std::min(it->status.next_due, clock_.Now());
    it->triggered = true;  // also when a run is under way: it runs again right after
    woken_ = true;
  }
  cv_.notify_all();
  return absl::OkStatus();
}

void Scheduler::Publish(const coord::InvalidationEvent& event) {
  if (bus_ == nullptr) return;
  absl::Status published = bus_->Publish(event);
  if (!published.ok()) {
    spdlog::warn("invalidation not published ({}); replicas catch up within the poll interval",
                 std::string(published.message()));
  }
}

int64_t Scheduler::last_epoch() const {
  MutexLock lock(&mu_);
  return last_epoch_;
}

std::vector<JobStatus> Scheduler::Jobs() const {
  const bool leader = leader_.is_leader();
  const TimePoint now = clock_.Now();
  MutexLock lock(&mu_);
  std::vector<JobStatus> out;
  out.reserve(entries_.size());
  for (const Entry& e : entries_) {
    out.push_back(e.status);
    out.back().waiting_for_leadership = e.status.leader_only && !leader && now >= e.status.next_due;
  }
  return out;
}

void Scheduler::PollEpoch() {
  absl::StatusOr<int64_t> epoch = epoch_.GetEpoch();
  if (!epoch.ok()) return;  // the store is down: keep serving from cache (degraded mode)
  int64_t before;
  {
    MutexLock lock(&mu_);
    before = last_epoch_;
    last_epoch_ = *epoch;
  }
  // -1: no baseline yet (the store was down at start): anything cached may be stale.
  if (*epoch != before) {
    spdlog::debug("store epoch moved {} -> {}: dropping cached keys", before, *epoch);
    sink_.ApplyInvalidation(coord::InvalidationEvent{.kind = coord::InvalidationEvent::Kind::kAll});
  }
}

Scheduler::TimePoint Scheduler::NextDueLocked(bool leader) const {
  TimePoint next = TimePoint::max();
  for (const Entry& e : entries_) {
    if (e.status.leader_only && !leader) continue;  // held until a leadership check says so
    next = std::min(next, e.status.next_due);
  }
  return next;
}

Scheduler::TimePoint Scheduler::RunDue() {
  MutexLock run(&run_mu_);
  TimePoint now = clock_.Now();
  if (now >= next_lead_) {
    absl::StatusOr<bool> lead = leader_.TryLead();
    if (!lead.ok())
      spdlog::debug("leadership check failed: {}", std::string(lead.status().message()));
    next_lead_ = now + options_.leader_interval;
  }
  if (now >= next_poll_) {
    PollEpoch();
    next_poll_ = now + options_.poll_interval;
  }

  size_t count;
  {
    MutexLock lock(&mu_);
    count = entries_.size();
  }
  for (size_t i = 0; i < count; ++i) {
    Job* job;
    {
      MutexLock lock(&mu_);
      const JobStatus& s = entries_[i].status;
      if (now < s.next_due) continue;
      job = entries_[i].job.get();
      entries_[i].triggered = false;  // this run covers triggers made before it began
    }
    const bool leader = leader_.is_leader();
    if (job->leader_only() && !leader) continue;  // stays due: runs once this node leads

    absl::Status result = job->Run(JobContext{.leader = leader});

    const TimePoint end = clock_.Now();
    const int64_t end_unix = clock_.UnixSeconds();
    int64_t failures;
    {
      MutexLock lock(&mu_);
      JobStatus& s = entries_[i].status;
      ++s.runs;
      s.last_run_unix = end_unix;
      s.last_result = result;
      if (result.ok()) {
        s.last_success_unix = end_unix;
        s.consecutive_failures = 0;
        s.failing_since_unix = 0;
      } else {
        if (s.consecutive_failures++ == 0) s.failing_since_unix = end_unix;
      }
      failures = s.consecutive_failures;
      s.next_due = entries_[i].triggered ? end : end + s.interval;
    }
    if (!result.ok()) {
      spdlog::warn("job {} failed ({} in a row): {}", job->name(), failures, result.ToString());
    }
  }

  const bool leader = leader_.is_leader();
  MutexLock lock(&mu_);
  return std::min({next_lead_, next_poll_, NextDueLocked(leader)});
}

void Scheduler::Loop() {
  while (true) {
    const TimePoint due = RunDue();
    MutexLock lock(&mu_);
    // The one real-time wait: the Clock's distance to the next due work, as a timeout.
    const auto wait = std::max(due - clock_.Now(), TimePoint::duration::zero());
    mu_.AwaitUntil(cv_, std::chrono::steady_clock::now() + wait,
                   [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_ || woken_; });
    if (stop_) return;
    woken_ = false;
  }
}

}  // namespace kms::sched
