#include "src/sched/rotation.h"

#include <algorithm>
#include <optional>
#include <span>
#include <thread>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"
#include "src/keys/key_ref.h"
#include "src/keys/tenant_id.h"
#include "src/keys/wrapped_dek.h"

namespace kms::sched {

namespace {

using store::RotationJobKind;
using store::RotationJobRecord;
using store::RotationJobState;

constexpr std::string_view kFinalPhase = "final";

absl::Status Annotate(const absl::Status& st, std::string_view what) {
  return absl::Status(st.code(), absl::StrCat(std::string(what), ": ", st.message()));
}

// Sums what is sealed under versions below `to` (read without the keys under `to`).
absl::StatusOr<uint64_t> UsageBelow(store::KekStore& keks, uint32_t to, bool deks) {
  KMS_ASSIGN_OR_RETURN(std::vector<store::KekUsage> usage, keks.ListKekUsageExcept(to));
  uint64_t n = 0;
  for (const store::KekUsage& u : usage) {
    if (u.kek_version < to) n += deks ? u.deks : u.jwt_keys;
  }
  return n;
}

// The newest active KEK (the primary as the store sees it); NOT_FOUND when none.
absl::StatusOr<store::KekRecord> NewestKek(const std::vector<store::KekRecord>& keks) {
  const store::KekRecord* newest = nullptr;
  for (const store::KekRecord& k : keks) {
    if (k.state == store::KekState::kActive && (newest == nullptr || k.version > newest->version)) {
      newest = &k;
    }
  }
  if (newest == nullptr) return absl::NotFoundError("the store holds no active KEK");
  return *newest;
}

}  // namespace

// --- DekRewrapTarget

DekRewrapTarget::DekRewrapTarget(keys::KekRing* ring, store::KekStore* keks,
                                 store::TenantKeyStore* tenants, int parallelism)
    : ring_(ring), keks_(keks), tenants_(tenants), parallelism_(std::max(1, parallelism)) {}

absl::StatusOr<uint64_t> DekRewrapTarget::CountBelow(uint32_t to_kek_version) {
  return UsageBelow(*keks_, to_kek_version, /*deks=*/true);
}

absl::StatusOr<RewrapBatchResult> DekRewrapTarget::RewrapBatch(uint32_t to, const RewrapCursor& after,
                                                               int limit) {
  limit = std::clamp<int>(limit, 1, static_cast<int>(store::kMaxDekRewrapBatch));
  // Cursor "<kek_version>:<tenant_id>" + the DEK version; empty: from the start.
  uint32_t cursor_kek = 0;
  store::DekKey cursor_key;
  if (!after.key.empty()) {
    const size_t colon = after.key.find(':');
    if (colon == std::string::npos ||
        !absl::SimpleAtoi(absl::string_view(after.key).substr(0, colon), &cursor_kek)) {
      return absl::InvalidArgumentError("re-wrap: malformed DEK cursor in the job checkpoint");
    }
    cursor_key = store::DekKey{after.key.substr(colon + 1), after.version};
  }
  KMS_ASSIGN_OR_RETURN(std::vector<store::KekRecord> keks, keks_->ListKeks());
  std::vector<uint32_t> versions;
  for (const store::KekRecord& k : keks) {
    if (k.version < to && k.version >= cursor_kek) versions.push_back(k.version);
  }
  std::sort(versions.begin(), versions.end());

  RewrapBatchResult result;
  result.next = after;
  for (size_t vi = 0; vi < versions.size(); ++vi) {
    const uint32_t v = versions[vi];
    const store::DekKey from = v == cursor_kek ? cursor_key : store::DekKey{};
    KMS_ASSIGN_OR_RETURN(store::DekPage page, tenants_->ListDeksWrappedUnder(v, from, limit));
    if (page.deks.empty()) continue;

    // Reseal in the HSM (the DEK exists only inside RewrapDek), `parallelism_` at once.
    const size_t n = page.deks.size();
    std::vector<std::optional<absl::StatusOr<std::vector<uint8_t>>>> sealed(n);
    auto work = [&](size_t first) {
      for (size_t i = first; i < n; i += static_cast<size_t>(parallelism_)) {
        const store::DekRecord& d = page.deks[i];
        sealed[i] = keys::RewrapDek(*ring_, to, d.tenant_id, d.version, d.wrapped);
      }
    };
    std::vector<std::thread> helpers;
    const size_t threads = std::min<size_t>(static_cast<size_t>(parallelism_), n);
    for (size_t t = 1; t < threads; ++t) helpers.emplace_back(work, t);
    work(0);
    for (std::thread& t : helpers) t.join();

    std::vector<store::DekRewrap> rewraps;
    rewraps.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      const store::DekRecord& d = page.deks[i];
      const absl::StatusOr<std::vector<uint8_t>>& s = *sealed[i];
      if (!s.ok()) {
        if (absl::IsUnavailable(s.status())) return Annotate(s.status(), "re-wrap: HSM");
        ++result.failed;
        spdlog::error("re-wrap: tenant {} DEK version {} under KEK version {} does not open ({}); "
                      "left under that KEK",
                      d.tenant_id, d.version, d.kek_version,
                      absl::StatusCodeToString(s.status().code()));
        continue;
      }
      rewraps.push_back(store::DekRewrap{.tenant_id = d.tenant_id,
                                         .version = d.version,
                                         .from_kek_version = d.kek_version,
                                         .to_kek_version = to,
                                         .wrapped = *s});
    }
    if (!rewraps.empty()) {
      KMS_ASSIGN_OR_RETURN(std::vector<store::DekRewrapResult> written,
                           tenants_->UpdateDekWrappings(rewraps));
      for (store::DekRewrapResult r : written) {
        if (r == store::DekRewrapResult::kUpdated) {
          ++result.done;
        } else {
          ++result.skipped;
        }
      }
    }
    const store::DekRecord& last = page.deks.back();
    result.next = RewrapCursor{absl::StrCat(v, ":", last.tenant_id), last.version};
    result.finished = !page.more && vi + 1 == versions.size();
    return result;
  }
  result.finished = true;
  return result;
}

// --- JwtRewrapTarget

absl::StatusOr<uint64_t> JwtRewrapTarget::CountBelow(uint32_t to_kek_version) {
  return UsageBelow(*keks_, to_kek_version, /*deks=*/false);
}

absl::StatusOr<RewrapBatchResult> JwtRewrapTarget::RewrapBatch(uint32_t to, const RewrapCursor&,
                                                               int) {
  KMS_ASSIGN_OR_RETURN(int n, jwt_->RewrapKeys(to));
  RewrapBatchResult result;
  result.done = static_cast<uint64_t>(n);
  result.finished = true;
  return result;
}

// --- RotationService

RotationService::RotationService(const Clock& clock, store::KeyStore& store,
                                 keys::HsmKekRing& ring, keys::KeyManager& keys,
                                 jwt::JwtService* jwt,
                                 std::vector<std::unique_ptr<RewrapTarget>> targets,
                                 RotationOptions options)
    : clock_(clock),
      store_(store),
      ring_(ring),
      keys_(keys),
      jwt_(jwt),
      targets_(std::move(targets)),
      options_(std::move(options)) {}

void RotationService::Sleep(std::chrono::milliseconds d) const {
  if (d <= std::chrono::milliseconds::zero()) return;
  if (options_.sleep) {
    options_.sleep(d);
  } else {
    std::this_thread::sleep_for(d);
  }
}

absl::Status RotationService::Degraded() const {
  absl::Status hsm = ring_.Ping();
  if (!hsm.ok()) {
    return absl::FailedPreconditionError(
        "rotation refused while degraded: the HSM is unavailable; retry once it is back");
  }
  absl::Status store = store_.Ping();
  if (!store.ok()) {
    return absl::FailedPreconditionError(
        "rotation refused while degraded: the key store is unavailable; retry once it is back");
  }
  return absl::OkStatus();
}

absl::StatusOr<RotationJobRecord> RotationService::CreateJob(uint32_t from, uint32_t to) {
  RotationJobRecord job;
  job.kind = RotationJobKind::kKekRewrap;
  job.from_kek_version = from;
  job.to_kek_version = to;
  job.created_at = clock_.UnixSeconds();
  for (const auto& t : targets_) {
    KMS_ASSIGN_OR_RETURN(uint64_t n, t->CountBelow(to));
    job.progress.total += n;
  }
  if (!targets_.empty()) job.progress.phase = std::string(targets_.front()->name());
  absl::StatusOr<RotationJobRecord> created = store_.CreateRotationJob(job);
  if (absl::IsAlreadyExists(created.status())) {
    return absl::AbortedError(
        "a KEK re-wrap job is already running: one rotation at a time (kmsctl rotation status)");
  }
  KMS_RETURN_IF_ERROR(created.status());
  spdlog::info("KEK re-wrap job {} created: {} keys under KEK versions {}..{} move to version {}",
               created->id, job.progress.total, from, to - 1, to);
  {
    MutexLock lock(&status_mu_);
    running_job_ = created->id;
  }
  if (on_job_created_) on_job_created_();
  return created;
}

absl::StatusOr<RotationJobRecord> RotationService::StartKekRotation() {
  MutexLock lock(&start_mu_);
  KMS_RETURN_IF_ERROR(Degraded());
  absl::StatusOr<RotationJobRecord> running =
      store_.GetRunningRotationJob(RotationJobKind::kKekRewrap);
  if (running.ok()) {
    return absl::AbortedError(absl::StrCat(
        "KEK re-wrap job ", running->id, " (KEK version ", running->from_kek_version, " -> ",
        running->to_kek_version, ") is still running: one rotation at a time; follow it with "
        "kmsctl rotation status"));
  }
  if (!absl::IsNotFound(running.status())) return running.status();
  const uint32_t before = ring_.primary_version();
  KMS_ASSIGN_OR_RETURN(uint32_t to, ring_.Rotate());
  {
    MutexLock lock(&status_mu_);
    kek_known_ = true;
    kek_primary_created_at_ = clock_.UnixSeconds();
  }
  // The job covers every version below the new one; `from` is the oldest still in use.
  uint32_t from = before == 0 ? to - 1 : before;
  absl::StatusOr<std::vector<store::KekUsage>> usage = store_.ListKekUsage();
  if (usage.ok()) {
    for (const store::KekUsage& u : *usage) {
      if (u.kek_version < to && u.deks + u.jwt_keys > 0) from = std::min(from, u.kek_version);
    }
  }
  if (from == 0) from = 1;
  // Should this fail (the store went away), the next rotation check creates the job.
  return CreateJob(from, to);
}

absl::StatusOr<RotationJobRecord> RotationService::GetJob(int64_t id) {
  if (id < 0) return absl::InvalidArgumentError("a rotation job id is a positive number");
  if (id > 0) return store_.GetRotationJob(id);
  KMS_ASSIGN_OR_RETURN(std::vector<RotationJobRecord> jobs, store_.ListRotationJobs(0, 1));
  if (jobs.empty()) return absl::NotFoundError("no rotation job has run yet");
  return jobs.front();
}

absl::Status RotationService::RunRewrap() {
  absl::StatusOr<RotationJobRecord> found = store_.GetRunningRotationJob(RotationJobKind::kKekRewrap);
  if (absl::IsNotFound(found.status())) {
    {
      MutexLock lock(&status_mu_);
      running_job_ = 0;
    }
    // A job finished before the retirement grace had passed: retire once it has,
    // rather than at the next check.
    if (retire_due_at_ != 0 && clock_.UnixSeconds() >= retire_due_at_) {
      retire_due_at_ = 0;
      return RetireAndDestroy();
    }
    return absl::OkStatus();
  }
  KMS_RETURN_IF_ERROR(found.status());
  RotationJobRecord job = *std::move(found);
  {
    MutexLock lock(&status_mu_);
    running_job_ = job.id;
  }
  const uint32_t to = job.to_kek_version;
  KMS_RETURN_IF_ERROR(ring_.EnsureLoaded(to));

  auto phase_index = [&](std::string_view phase) -> size_t {
    if (phase == kFinalPhase) return targets_.size();
    for (size_t i = 0; i < targets_.size(); ++i) {
      if (targets_[i]->name() == phase) return i;
    }
    return 0;
  };
  size_t ti = phase_index(job.progress.phase);
  RewrapCursor cursor{job.progress.cursor_key, job.progress.cursor_version};
  if (pass_job_ != job.id) {
    pass_job_ = job.id;
    // A pass that starts here from the very beginning can decide that nothing more moves.
    pass_from_start_ = ti == 0 && cursor.key.empty() && cursor.version == 0;
    pass_done_ = 0;
    pass_failed_ = 0;
  }

  auto checkpoint = [&]() -> absl::Status {
    absl::Status st = store_.UpdateRotationJobProgress(job.id, job.row_version, job.progress,
                                                       clock_.UnixSeconds());
    if (st.ok()) ++job.row_version;
    return st;
  };
  auto lost = [&](const absl::Status& st) {
    // ABORTED: another replica checkpointed the job (it leads now); FAILED_PRECONDITION:
    // the job ended elsewhere. Either way this replica stops.
    spdlog::info("KEK re-wrap job {}: {}; this replica stops working on it", job.id,
                 std::string(st.message()));
    pass_job_ = 0;
    return absl::OkStatus();
  };
  auto finish = [&](RotationJobState state, const std::string& error) -> absl::Status {
    absl::Status st = store_.FinishRotationJob(job.id, job.row_version, state, job.progress, error,
                                               clock_.UnixSeconds());
    if (absl::IsAborted(st) || absl::IsFailedPrecondition(st)) return lost(st);
    KMS_RETURN_IF_ERROR(st);
    pass_job_ = 0;
    {
      MutexLock lock(&status_mu_);
      running_job_ = 0;
    }
    if (state == RotationJobState::kDone) {
      spdlog::info("KEK re-wrap job {} done: {} keys moved to KEK version {}, {} skipped", job.id,
                   job.progress.done, to, job.progress.skipped);
      return RetireAndDestroy();
    }
    spdlog::error("KEK re-wrap job {} failed: {}", job.id, error);
    return absl::OkStatus();
  };

  const auto started = clock_.Now();
  int batches = 0;
  while (true) {
    if (ti >= targets_.size()) {
      // The final check: anything still below the new version (written meanwhile by a
      // replica that had not seen the rotation yet) gets another pass.
      uint64_t remaining = 0;
      for (const auto& t : targets_) {
        KMS_ASSIGN_OR_RETURN(uint64_t n, t->CountBelow(to));
        remaining += n;
      }
      if (remaining == 0) return finish(RotationJobState::kDone, "");
      if (pass_from_start_ && pass_done_ == 0) {
        return finish(RotationJobState::kFailed,
                      absl::StrCat(remaining, " keys under KEK versions below ", to,
                                   " could not be re-wrapped (", pass_failed_,
                                   " did not open; see the log)"));
      }
      spdlog::info("KEK re-wrap job {}: {} keys still under older KEK versions; another pass",
                   job.id, remaining);
      ti = 0;
      cursor = RewrapCursor{};
      pass_from_start_ = true;
      pass_done_ = 0;
      pass_failed_ = 0;
      job.progress.phase = targets_.empty() ? std::string(kFinalPhase)
                                            : std::string(targets_.front()->name());
      job.progress.cursor_key.clear();
      job.progress.cursor_version = 0;
      job.progress.total = std::max(job.progress.total, job.progress.done + remaining);
      absl::Status st = checkpoint();
      if (absl::IsAborted(st) || absl::IsFailedPrecondition(st)) return lost(st);
      KMS_RETURN_IF_ERROR(st);
      if (targets_.empty()) return absl::OkStatus();
      continue;
    }
    if (batches > 0) {
      if (options_.rewrap_max_batches_per_run > 0 &&
          batches >= options_.rewrap_max_batches_per_run) {
        return absl::OkStatus();
      }
      if (clock_.Now() - started >= options_.rewrap_slice) return absl::OkStatus();
    }
    const auto batch_started = clock_.Now();
    absl::StatusOr<RewrapBatchResult> r =
        targets_[ti]->RewrapBatch(to, cursor, options_.rewrap_batch_size);
    if (!r.ok()) {
      if (absl::IsUnavailable(r.status())) {
        return Annotate(r.status(), absl::StrCat("KEK re-wrap job ", job.id, " paused"));
      }
      return finish(RotationJobState::kFailed,
                    absl::StrCat(std::string(targets_[ti]->name()), ": ", r.status().message()));
    }
    ++batches;
    job.progress.done += r->done;
    if (rewrapped_ != nullptr) rewrapped_->Increment(r->done);
    job.progress.skipped += r->skipped;
    pass_done_ += static_cast<int64_t>(r->done);
    pass_failed_ += r->failed;
    if (r->finished) {
      ++ti;
      cursor = RewrapCursor{};
    } else {
      cursor = r->next;
    }
    job.progress.phase =
        ti < targets_.size() ? std::string(targets_[ti]->name()) : std::string(kFinalPhase);
    job.progress.cursor_key = cursor.key;
    job.progress.cursor_version = cursor.version;
    job.progress.total = std::max(job.progress.total, job.progress.done + job.progress.skipped);
    absl::Status st = checkpoint();
    if (absl::IsAborted(st) || absl::IsFailedPrecondition(st)) return lost(st);
    KMS_RETURN_IF_ERROR(st);

    if (options_.rewrap_rate_per_second > 0) {
      const uint64_t keys = r->done + r->skipped + r->failed;
      const auto budget = std::chrono::milliseconds(
          static_cast<int64_t>(keys * 1000 / static_cast<uint64_t>(options_.rewrap_rate_per_second)));
      Sleep(std::chrono::duration_cast<std::chrono::milliseconds>(
          budget - (clock_.Now() - batch_started)));
    }
  }
}

absl::Status RotationService::RetireAndDestroy() {
  const int64_t now = clock_.UnixSeconds();
  KMS_ASSIGN_OR_RETURN(std::vector<store::KekRecord> keks, store_.ListKeks());
  KMS_ASSIGN_OR_RETURN(store::KekRecord newest, NewestKek(keks));
  bool retired_any = false;
  const int64_t retire_from = newest.created_at + options_.retire_grace.count();
  if (now < retire_from) {
    retire_due_at_ = retire_from;
  } else {
    for (const store::KekRecord& k : keks) {
      if (k.state != store::KekState::kActive || k.version >= newest.version) continue;
      absl::Status st = store_.RetireKek(k.version, now);
      if (st.ok()) {
        retired_any = true;
        spdlog::info("KEK version {} retired: nothing is wrapped under it any more", k.version);
      } else if (absl::IsFailedPrecondition(st)) {
        spdlog::info("KEK version {} not retired yet: {}", k.version, std::string(st.message()));
      } else if (!absl::IsAborted(st)) {
        return st;
      }
    }
  }
  if (retired_any) {
    // Unloads the retired versions here; other replicas follow on the epoch or the bus.
    absl::Status refreshed = ring_.Refresh();
    if (!refreshed.ok()) spdlog::warn("KEK ring refresh after retirement: {}", refreshed.ToString());
    if (publish_) publish_(coord::InvalidationEvent{.kind = coord::InvalidationEvent::Kind::kKek});
  }
  const int64_t keep = options_.retired_kek_keep_days * 86400;
  KMS_ASSIGN_OR_RETURN(std::vector<uint32_t> destroyed, store_.DestroyRetiredKeks(now - keep));
  for (uint32_t v : destroyed) {
    spdlog::warn("KEK version {} destroyed: retired for more than {} days, its blob is deleted", v,
                 options_.retired_kek_keep_days);
  }
  return absl::OkStatus();
}

absl::Status RotationService::RotateDueTenants(int64_t now) {
  KMS_ASSIGN_OR_RETURN(store::DueTenantPage page,
                       store_.ListTenantsDueForRotation(now, options_.dek_period_seconds,
                                                        dek_cursor_, options_.dek_rotations_per_check));
  int64_t most_overdue = 0;
  uint64_t rotated = 0;
  for (const store::DueTenant& t : page.tenants) {
    most_overdue = std::min(most_overdue, t.dek_created_at + t.period_seconds - now);
    // Tenants and named keys rotate by age; blind-index keys only by an operator
    // (FromStorageId refuses their ids), and an id this kmsd cannot serve was never
    // encrypted under.
    absl::StatusOr<keys::KeyRef> ref = keys::KeyRef::FromStorageId(t.tenant_id);
    if (!ref.ok()) continue;
    absl::StatusOr<keys::TenantInfo> info = keys_.RotateTenantDek(ref->storage_id());
    if (info.ok()) {
      ++rotated;
      spdlog::info("tenant {}: DEK version {} is {} s old (period {} s); rotated to version {}",
                   t.tenant_id, t.primary_dek_version, now - t.dek_created_at, t.period_seconds,
                   info->tenant.primary_dek_version);
    } else if (absl::IsUnavailable(info.status())) {
      return Annotate(info.status(), "scheduled DEK rotation paused");
    } else if (!absl::IsAborted(info.status())) {
      spdlog::warn("tenant {}: scheduled DEK rotation failed: {}", t.tenant_id,
                   std::string(info.status().message()));
    }
  }
  // Resume after the last tenant looked at; from the start once the walk is through.
  dek_cursor_ = page.more ? page.tenants.back().tenant_id : std::string();
  MutexLock lock(&status_mu_);
  dek_known_ = true;
  dek_pending_ = page.tenants.size();
  dek_most_overdue_ = most_overdue;
  return absl::OkStatus();
}

absl::Status RotationService::Check() {
  const int64_t now = clock_.UnixSeconds();
  absl::Status degraded = Degraded();
  if (!degraded.ok()) {
    MutexLock lock(&status_mu_);
    if (skipped_since_ == 0) skipped_since_ = now;
    last_error_ = std::string(degraded.message());
    return absl::UnavailableError(absl::StrCat("rotation check skipped: ", degraded.message()));
  }
  KMS_ASSIGN_OR_RETURN(std::vector<store::KekRecord> keks, store_.ListKeks());
  KMS_ASSIGN_OR_RETURN(store::KekRecord primary, NewestKek(keks));
  {
    MutexLock lock(&status_mu_);
    skipped_since_ = 0;
    last_error_.clear();
    kek_known_ = true;
    kek_primary_created_at_ = primary.created_at;
  }
  absl::StatusOr<RotationJobRecord> running = store_.GetRunningRotationJob(RotationJobKind::kKekRewrap);
  if (!running.ok() && !absl::IsNotFound(running.status())) return running.status();
  const bool job_running = running.ok();

  if (!job_running && now >= primary.created_at + options_.kek_period_seconds) {
    absl::StatusOr<RotationJobRecord> started = StartKekRotation();
    if (started.ok()) {
      spdlog::info("KEK version {} is {} s old (period {} s): rotated to version {}, job {}",
                   primary.version, now - primary.created_at, options_.kek_period_seconds,
                   started->to_kek_version, started->id);
    } else if (!absl::IsAborted(started.status())) {
      return Annotate(started.status(), "scheduled KEK rotation");
    }
  } else if (!job_running) {
    // Keys below the primary and no job (a crash between the rotation and its job, or a
    // straggler written after a job ended): a job for them. Reads only the keys outside
    // the primary (this runs every check: a count of every DEK would scan the store).
    KMS_ASSIGN_OR_RETURN(std::vector<store::KekUsage> usage,
                         store_.ListKekUsageExcept(primary.version));
    uint32_t from = 0;
    for (const store::KekUsage& u : usage) {
      if (u.kek_version < primary.version && u.deks + u.jwt_keys > 0) {
        from = from == 0 ? u.kek_version : std::min(from, u.kek_version);
      }
    }
    if (from != 0) {
      absl::StatusOr<RotationJobRecord> created = CreateJob(from, primary.version);
      if (!created.ok() && !absl::IsAborted(created.status())) return created.status();
    } else {
      KMS_RETURN_IF_ERROR(RetireAndDestroy());
    }
  }
  return RotateDueTenants(now);
}

RotationStatus RotationService::Status() const {
  const int64_t now = clock_.UnixSeconds();
  RotationStatus out;
  MutexLock lock(&status_mu_);
  out.running_job_id = running_job_;
  RotationKindStatus kek{.kind = "kek", .known = kek_known_};
  if (kek_known_) kek.due_in_seconds = kek_primary_created_at_ + options_.kek_period_seconds - now;
  RotationKindStatus dek{.kind = "dek", .known = dek_known_};
  dek.pending = dek_pending_;
  dek.due_in_seconds = dek_pending_ > 0 ? dek_most_overdue_ : 0;
  RotationKindStatus jwt{.kind = "jwt"};
  if (jwt_ != nullptr) {
    jwt::JwtServiceStatus s = jwt_->Status();
    if (s.next_rotation_at > 0) {
      jwt.known = true;
      jwt.due_in_seconds = s.next_rotation_at - now;
    }
  }
  for (RotationKindStatus* k : {&kek, &dek, &jwt}) {
    k->skipped_since_unix = skipped_since_;
    k->last_error = last_error_;
    out.kinds.push_back(std::move(*k));
  }
  return out;
}

std::unique_ptr<Job> MakeRotationCheckJob(RotationService& rotation) {
  return MakeJob("rotation-check",
                 std::chrono::duration_cast<std::chrono::milliseconds>(
                     rotation.options().check_interval),
                 /*leader_only=*/true, [&rotation](const JobContext&) { return rotation.Check(); });
}

std::unique_ptr<Job> MakeKekRewrapJob(RotationService& rotation, std::chrono::milliseconds interval) {
  return MakeJob(std::string(kKekRewrapJobName), interval, /*leader_only=*/true,
                 [&rotation](const JobContext&) { return rotation.RunRewrap(); });
}

}  // namespace kms::sched
