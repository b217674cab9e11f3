// AuditLog: the node's audit writer (DESIGN §3; the record is kms/store/audit_store.h,
// the chain src/audit/audit_chain.h). Implements the gate's AuditSink seam.
//
// - Data-plane calls are aggregated per (second, identity, operation, outcome) in
//   memory: one record per key and flush with the calls and distinct tenants counted, so
//   100,000 active tenants do not mean a row per request. RecordData takes one short
//   lock of one of 16 shards (chosen per thread) and never waits for the store.
// - Admin calls are one record each; RecordAdmin returns once the record is committed
//   (SQLite synchronous=FULL, PostgreSQL commit), so an acknowledged admin call survives
//   a crash right after it returns.
// - One writer thread owns the chain head: every flush interval (and at once for an
//   admin record) it seals the waiting records in order and appends them in one
//   transaction. A failed append is retried at the next flush; nothing is sealed until
//   it is written, so a failure never leaves a hole in the chain. The head is read back
//   from the store at Create, so a restarted node continues its chain.
// - Bounded backlog: at most `max_backlog` records wait (aggregates being counted plus
//   sealed-to-be records). Beyond it a data-plane call that would need a new record is
//   dropped and counted; the log reports itself degraded; and, when
//   refuse_admin_when_full, admin calls are refused (AdmitAdmin: UNAVAILABLE) until the
//   backlog drains, so no admin call runs without its record.
//
// Thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "kms/audit/audit_sink.h"
#include "kms/store/audit_store.h"
#include "src/audit/audit_chain.h"
#include "src/common/sync.h"

namespace kms::audit {

struct AuditLogOptions {
  std::string node;  // this replica's node id: its chain
  std::chrono::milliseconds flush_interval{1000};
  size_t max_backlog = 100000;
  bool refuse_admin_when_full = true;
  // How long RecordAdmin waits for its record to be committed.
  std::chrono::milliseconds admin_timeout{5000};
  size_t max_batch = 1000;  // records per append transaction
  // Unix milliseconds; default: the system clock. Tests inject their own.
  std::function<int64_t()> now_ms;
};

struct AuditLogStats {
  uint64_t written = 0;  // records committed by this process
  uint64_t dropped = 0;  // data-plane calls not recorded because the backlog was full
  uint64_t backlog = 0;  // records waiting (aggregates and queued)
  bool full = false;     // the backlog is at its bound
  bool store_failing = false;  // the last append failed
  bool degraded() const { return full || store_failing; }
};

class AuditLog final : public AuditSink {
 public:
  // Reads the node's chain head from `store` (UNAVAILABLE when the store is down: the
  // caller retries). INVALID_ARGUMENT for an empty node or a zero bound.
  static absl::StatusOr<std::unique_ptr<AuditLog>> Create(store::AuditStore& store,
                                                          AuditLogOptions options);
  ~AuditLog() override;

  // Starts the writer thread. Stop() flushes what it can (one attempt) and joins it.
  void Start();
  void Stop();

  absl::Status AdmitAdmin() override;
  void RecordData(const AuditEvent& event) override;
  absl::Status RecordAdmin(const AuditEvent& event) override;

  AuditLogStats stats() const;
  const std::string& node() const { return options_.node; }

  // One writer step without the thread (tests): moves every aggregate to the queue and
  // appends what is queued. The store's error, if the append failed.
  absl::Status FlushNow();

 private:
  struct AggKey {
    int64_t second;
    std::string identity;
    std::string operation;
    absl::StatusCode outcome;
    bool operator==(const AggKey&) const = default;
    template <typename H>
    friend H AbslHashValue(H h, const AggKey& k) {
      return H::combine(std::move(h), k.second, k.identity, k.operation, k.outcome);
    }
  };
  struct Agg {
    uint64_t calls = 0;
    absl::flat_hash_set<uint64_t> tenants;  // in-memory hashes only, never stored
    std::string first_tenant;
    std::string first_request_id;
    std::vector<std::string> key_versions;  // distinct, at most kMaxKeyVersions
  };
  struct Shard {
    Mutex mu;
    absl::flat_hash_map<AggKey, Agg> aggs ABSL_GUARDED_BY(mu);
  };
  struct AdminWaiter {
    bool done = false;  // guarded by AuditLog::mu_
  };
  struct Pending {
    store::AuditRecord record;
    std::shared_ptr<AdminWaiter> waiter;  // admin records only
  };

  AuditLog(store::AuditStore& store, AuditLogOptions options, ChainHead head);
  int64_t NowMs() const;
  void WriterLoop();
  // Moves the shards' aggregates into queue_, as records.
  void DrainAggregates() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Seals and appends up to max_batch queued records (releasing mu_ during the append).
  absl::Status WriteBatch() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool Full() const;

  store::AuditStore& store_;
  const AuditLogOptions options_;
  Shard shards_[16];
  std::atomic<uint64_t> pending_{0};  // aggregates in shards + records in queue_
  std::atomic<uint64_t> written_{0};
  std::atomic<uint64_t> dropped_{0};
  std::atomic<bool> store_failing_{false};

  mutable Mutex mu_;
  std::condition_variable cv_;        // the writer waits here
  std::condition_variable admin_cv_;  // admin callers wait here
  std::deque<Pending> queue_ ABSL_GUARDED_BY(mu_);
  ChainHead head_ ABSL_GUARDED_BY(mu_);
  bool admin_waiting_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;  // an append is in flight (mu_ released)
  std::thread writer_;
};

}  // namespace kms::audit
