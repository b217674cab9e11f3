// The RotationJobStore seam: the checkpoints of resumable rotation work, so that a job
// (the KEK re-wrap after a KEK rotation) resumes after a crash, a restart or a leader
// change, on another replica too, from the last key it finished.
//
// Implemented by the one class per backend that implements every store seam
// (kms/store/key_store.h): src/store/sqlite, src/store/postgres. Checked by the contract
// suite in tests/integration/store (rotation_job_contract.cc).
//
// How a job uses it: CreateRotationJob (refused while a job of the same kind runs, so
// two rotations cannot run at once); then per batch: list the keys after the cursor,
// re-wrap them (compare-and-set per key, e.g. TenantKeyStore::UpdateDekWrappings), and
// UpdateRotationJobProgress with the last key done; at the end FinishRotationJob. A
// crash between a batch and its checkpoint repeats the batch, whose keys are then
// skipped by their own compare-and-set. Every change to a job is compare-and-set on the
// job's row_version: a replica whose checkpoint is ABORTED lost the job to another
// replica and stops.
//
// Thread-safe. Every change is one transaction. Job changes are not key-state changes:
// they do NOT move the store epoch (StoreHealth::GetEpoch), so checkpoints never drop
// replicas' caches. A rejected change changes nothing. Errors common to every method:
// UNAVAILABLE (backend unreachable, locked or out of resources: retry later),
// INVALID_ARGUMENT (arguments refused before anything is written), INTERNAL (anything
// else: a bug or a damaged database). Further codes are listed per method.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "kms/common/status.h"

namespace kms::store {

enum class RotationJobKind {
  kKekRewrap,  // moves every key wrapped under from_kek_version to to_kek_version
};
enum class RotationJobState { kRunning, kDone, kFailed };

// The names stored in the database: "kek_rewrap".
inline std::string_view RotationJobKindName(RotationJobKind k) {
  switch (k) {
    case RotationJobKind::kKekRewrap: return "kek_rewrap";
  }
  return "unknown";
}

// The names stored in the database: "running", "done", "failed".
inline std::string_view RotationJobStateName(RotationJobState s) {
  switch (s) {
    case RotationJobState::kRunning: return "running";
    case RotationJobState::kDone: return "done";
    case RotationJobState::kFailed: return "failed";
  }
  return "unknown";
}

// The inverses of the names above. INTERNAL for any other name (a database written by
// a newer kmsd or something else).
inline absl::StatusOr<RotationJobKind> ParseRotationJobKind(std::string_view name) {
  if (name == "kek_rewrap") return RotationJobKind::kKekRewrap;
  return absl::InternalError("store: unknown rotation job kind in database");
}
inline absl::StatusOr<RotationJobState> ParseRotationJobState(std::string_view name) {
  if (name == "running") return RotationJobState::kRunning;
  if (name == "done") return RotationJobState::kDone;
  if (name == "failed") return RotationJobState::kFailed;
  return absl::InternalError("store: unknown rotation job state in database");
}

// Where a job is. The store keeps it as given; the meaning of phase and cursor is the
// job's (for the KEK re-wrap: phase "deks" with cursor = the last DekKey done, then
// "jwt_keys" with cursor_key = the last kid done).
struct RotationJobProgress {
  std::string phase;            // which kind of key the job walks; empty: not started
  std::string cursor_key;       // the last key done in `phase`; empty: none yet
  uint32_t cursor_version = 0;  // the version part of that key, where it has one
  uint64_t done = 0;            // keys moved so far
  uint64_t skipped = 0;         // keys left because they changed meanwhile
  uint64_t total = 0;           // keys to move, as estimated by the job
};

struct RotationJobRecord {
  int64_t id = 0;  // assigned by CreateRotationJob: > 0, increasing, never reused
  RotationJobKind kind = RotationJobKind::kKekRewrap;
  RotationJobState state = RotationJobState::kRunning;
  uint32_t from_kek_version = 0;
  uint32_t to_kek_version = 0;
  RotationJobProgress progress;
  std::string error;        // why a failed job failed; empty otherwise
  int64_t created_at = 0;   // Unix seconds, like the two below (the caller's clock)
  int64_t updated_at = 0;   // the last checkpoint
  int64_t finished_at = 0;  // 0 while running
  int64_t row_version = 1;  // incremented by every change; the compare-and-set token
};

class RotationJobStore {
 public:
  virtual ~RotationJobStore() = default;

  // Stores a new running job and returns it as stored: with its id, state kRunning,
  // updated_at = created_at, finished_at 0, no error, row_version 1 (those fields of
  // `job` are ignored; kind, versions, progress and created_at are kept).
  // ALREADY_EXISTS when a job of the same kind is running. INVALID_ARGUMENT: a KEK
  // version 0, from_kek_version == to_kek_version, created_at < 0.
  virtual absl::StatusOr<RotationJobRecord> CreateRotationJob(const RotationJobRecord& job) = 0;

  // NOT_FOUND for an unknown id.
  virtual absl::StatusOr<RotationJobRecord> GetRotationJob(int64_t id) = 0;

  // The running job of `kind` (there is at most one), to resume. NOT_FOUND when none
  // runs.
  virtual absl::StatusOr<RotationJobRecord> GetRunningRotationJob(RotationJobKind kind) = 0;

  // Jobs newest first (id descending) with an id below `before_id` (0: from the
  // newest), at most `limit` (> 0, else INVALID_ARGUMENT). The next page starts before
  // the last id returned.
  virtual absl::StatusOr<std::vector<RotationJobRecord>> ListRotationJobs(int64_t before_id,
                                                                          int limit) = 0;

  // A checkpoint: stores `progress` and updated_at if the job's row_version is still
  // `expected_row_version` (else ABORTED: another replica took the job over); the
  // row_version becomes expected_row_version + 1. NOT_FOUND for an unknown id,
  // FAILED_PRECONDITION when the job is no longer running.
  virtual absl::Status UpdateRotationJobProgress(int64_t id, int64_t expected_row_version,
                                                 const RotationJobProgress& progress,
                                                 int64_t updated_at) = 0;

  // Ends a running job in `state` (kDone or kFailed, else INVALID_ARGUMENT) with its
  // final progress and, for kFailed, the reason (kept verbatim; no key material, no
  // other tenant's ids); updated_at and finished_at become `finished_at`. Compare-and-
  // set like UpdateRotationJobProgress, with the same errors. A finished job is final;
  // a new job of its kind may then be created.
  virtual absl::Status FinishRotationJob(int64_t id, int64_t expected_row_version,
                                         RotationJobState state,
                                         const RotationJobProgress& progress,
                                         const std::string& error, int64_t finished_at) = 0;
};

}  // namespace kms::store
