#include "src/audit/audit_log.h"

#include <algorithm>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "spdlog/spdlog.h"

namespace kms::audit {
namespace {

constexpr size_t kMaxKeyVersions = 8;
constexpr size_t kMaxTenantsCounted = 1 << 20;  // per aggregate; beyond: a lower bound

size_t ShardOfThisThread() {
  static std::atomic<size_t> next{0};
  thread_local const size_t shard = next.fetch_add(1, std::memory_order_relaxed);
  return shard;
}

int64_t SystemNowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string CodeName(absl::StatusCode code) { return absl::StatusCodeToString(code); }

}  // namespace

absl::StatusOr<std::unique_ptr<AuditLog>> AuditLog::Create(store::AuditStore& store,
                                                            AuditLogOptions options) {
  if (options.node.empty()) return absl::InvalidArgumentError("audit: the node id is empty");
  if (options.max_backlog == 0 || options.max_batch == 0) {
    return absl::InvalidArgumentError("audit: max_backlog and max_batch must be positive");
  }
  ChainHead head;
  absl::StatusOr<store::AuditRecord> last = store.LastAudit(options.node);
  if (last.ok()) {
    head.seq = last->seq;
    head.hash = last->hash;
  } else if (!absl::IsNotFound(last.status())) {
    return last.status();
  }
  return std::unique_ptr<AuditLog>(new AuditLog(store, std::move(options), std::move(head)));
}

AuditLog::AuditLog(store::AuditStore& store, AuditLogOptions options, ChainHead head)
    : store_(store), options_(std::move(options)), head_(std::move(head)) {}

AuditLog::~AuditLog() { Stop(); }

int64_t AuditLog::NowMs() const { return options_.now_ms ? options_.now_ms() : SystemNowMs(); }

bool AuditLog::Full() const {
  return pending_.load(std::memory_order_relaxed) >= options_.max_backlog;
}

void AuditLog::Start() {
  MutexLock lock(&mu_);
  if (writer_.joinable()) return;
  stop_ = false;
  writer_ = std::thread([this] { WriterLoop(); });
}

void AuditLog::Stop() {
  {
    MutexLock lock(&mu_);
    if (!writer_.joinable()) return;
    stop_ = true;
  }
  cv_.notify_all();
  writer_.join();
}

absl::Status AuditLog::AdmitAdmin() {
  if (options_.refuse_admin_when_full && Full()) {
    return absl::UnavailableError(
        "the audit log is full (its store is not keeping up); admin operations are refused "
        "until it drains: check the store, then retry");
  }
  return absl::OkStatus();
}

void AuditLog::RecordData(const AuditEvent& event) {
  const int64_t second = NowMs() / 1000;
  Shard& shard = shards_[ShardOfThisThread() % std::size(shards_)];
  // The key is built on the caller's thread; the lock covers only the map update.
  AggKey key{second, std::string(event.identity), std::string(event.operation), event.outcome};
  MutexLock lock(&shard.mu);
  auto it = shard.aggs.find(key);
  if (it == shard.aggs.end()) {
    if (Full()) {
      dropped_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    pending_.fetch_add(1, std::memory_order_relaxed);
    it = shard.aggs.emplace(std::move(key), Agg{}).first;
    it->second.first_request_id = std::string(event.request_id);
  }
  Agg& agg = it->second;
  ++agg.calls;
  if (!event.tenant.empty()) {
    if (agg.first_tenant.empty()) agg.first_tenant = std::string(event.tenant);
    if (agg.tenants.size() < kMaxTenantsCounted) agg.tenants.insert(absl::HashOf(event.tenant));
  }
  if (!event.key_versions.empty() && agg.key_versions.size() < kMaxKeyVersions &&
      std::find(agg.key_versions.begin(), agg.key_versions.end(), event.key_versions) ==
          agg.key_versions.end()) {
    agg.key_versions.emplace_back(event.key_versions);
  }
}

absl::Status AuditLog::RecordAdmin(const AuditEvent& event) {
  store::AuditRecord r;
  r.node = options_.node;
  r.at_ms = NowMs();
  r.kind = "admin";
  r.identity = std::string(event.identity);
  r.operation = std::string(event.operation);
  r.tenant = std::string(event.tenant);
  r.tenants = event.tenant.empty() ? 0 : 1;
  r.calls = 1;
  r.key_versions = std::string(event.key_versions);
  r.outcome = CodeName(event.outcome);
  r.request_id = std::string(event.request_id);
  auto waiter = std::make_shared<AdminWaiter>();
  const auto deadline = std::chrono::steady_clock::now() + options_.admin_timeout;
  MutexLock lock(&mu_);
  // An admin record is never dropped: the call already ran (AdmitAdmin let it in).
  pending_.fetch_add(1, std::memory_order_relaxed);
  queue_.push_back(Pending{std::move(r), waiter});
  admin_waiting_ = true;
  cv_.notify_all();
  if (!mu_.AwaitUntil(admin_cv_, deadline, [&] { return waiter->done; })) {
    return absl::UnavailableError(
        "the operation was applied, but its audit record is not stored yet (the audit store "
        "is not answering; kmsd keeps retrying): check the store");
  }
  return absl::OkStatus();
}

void AuditLog::DrainAggregates() {
  struct Entry {
    AggKey key;
    Agg agg;
  };
  std::vector<Entry> entries;
  for (Shard& shard : shards_) {
    absl::flat_hash_map<AggKey, Agg> taken;
    {
      MutexLock lock(&shard.mu);
      taken.swap(shard.aggs);
    }
    for (auto& [k, a] : taken) entries.push_back(Entry{k, std::move(a)});
  }
  // The same key from two shards becomes one record; records come out in time order.
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return std::tie(a.key.second, a.key.identity, a.key.operation, a.key.outcome) <
           std::tie(b.key.second, b.key.identity, b.key.operation, b.key.outcome);
  });
  size_t i = 0;
  while (i < entries.size()) {
    Entry& first = entries[i];
    absl::flat_hash_set<uint64_t> tenants = std::move(first.agg.tenants);
    uint64_t calls = first.agg.calls;
    std::vector<std::string> versions = std::move(first.agg.key_versions);
    size_t j = i + 1;
    for (; j < entries.size() && entries[j].key == first.key; ++j) {
      calls += entries[j].agg.calls;
      tenants.insert(entries[j].agg.tenants.begin(), entries[j].agg.tenants.end());
      for (std::string& v : entries[j].agg.key_versions) {
        if (versions.size() < kMaxKeyVersions &&
            std::find(versions.begin(), versions.end(), v) == versions.end()) {
          versions.push_back(std::move(v));
        }
      }
    }
    std::sort(versions.begin(), versions.end());
    store::AuditRecord r;
    r.node = options_.node;
    r.at_ms = first.key.second * 1000;
    r.kind = "data";
    r.identity = first.key.identity;
    r.operation = first.key.operation;
    r.tenants = tenants.size();
    r.tenant = tenants.size() == 1 ? first.agg.first_tenant : "";
    r.calls = calls;
    r.key_versions = absl::StrJoin(versions, ",");
    r.outcome = CodeName(first.key.outcome);
    r.request_id = first.agg.first_request_id;
    queue_.push_back(Pending{std::move(r), nullptr});
    // Each shard's aggregate was counted once in pending_; merged ones leave.
    pending_.fetch_sub(j - i - 1, std::memory_order_relaxed);
    i = j;
  }
}

absl::Status AuditLog::WriteBatch() {
  if (queue_.empty()) return absl::OkStatus();
  const size_t n = std::min(queue_.size(), options_.max_batch);
  ChainHead head = head_;
  std::vector<store::AuditRecord> batch;
  batch.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    batch.push_back(queue_[i].record);
    Seal(batch.back(), head);
  }
  writing_ = true;
  mu_.Unlock();
  absl::Status st = store_.AppendAudit(batch);
  if (absl::IsAlreadyExists(st)) {
    // Our append may have committed after all (an ambiguous commit retried), or another
    // process wrote under this node id: continue after what the store holds.
    absl::StatusOr<store::AuditRecord> last = store_.LastAudit(options_.node);
    if (last.ok() && last->seq == head.seq && last->hash == head.hash) {
      st = absl::OkStatus();
    } else if (last.ok()) {
      spdlog::error("audit: node {}'s chain moved on elsewhere (another kmsd with this node "
                    "id?); continuing after seq {}",
                    options_.node, last->seq);
      mu_.Lock();
      writing_ = false;
      head_ = ChainHead{.seq = last->seq, .hash = last->hash};
      return st;
    }
  }
  mu_.Lock();
  writing_ = false;
  if (!st.ok()) {
    if (!store_failing_.exchange(true)) {
      spdlog::error("audit: records not written ({} waiting): {}", queue_.size(),
                    std::string(st.message()));
    }
    return st;
  }
  if (store_failing_.exchange(false)) spdlog::info("audit: records are written again");
  head_ = std::move(head);
  bool admin = false;
  for (size_t i = 0; i < n; ++i) {
    if (queue_.front().waiter) {
      queue_.front().waiter->done = true;
      admin = true;
    }
    queue_.pop_front();
  }
  pending_.fetch_sub(n, std::memory_order_relaxed);
  written_.fetch_add(n, std::memory_order_relaxed);
  admin_waiting_ = std::any_of(queue_.begin(), queue_.end(),
                               [](const Pending& p) { return p.waiter != nullptr; });
  if (admin) admin_cv_.notify_all();
  return absl::OkStatus();
}

absl::Status AuditLog::FlushNow() {
  MutexLock lock(&mu_);
  DrainAggregates();
  absl::Status st;
  while (!queue_.empty() && st.ok()) st = WriteBatch();
  return st;
}

void AuditLog::WriterLoop() {
  MutexLock lock(&mu_);
  auto next_flush = std::chrono::steady_clock::now() + options_.flush_interval;
  while (true) {
    while (!stop_ && !admin_waiting_ && std::chrono::steady_clock::now() < next_flush) {
      mu_.WaitUntil(cv_, next_flush);
    }
    const bool stopping = stop_;
    const bool tick = std::chrono::steady_clock::now() >= next_flush;
    if (tick || stopping) {
      DrainAggregates();
      next_flush = std::chrono::steady_clock::now() + options_.flush_interval;
    }
    absl::Status st;
    // Admin records are written at once; the rest on the tick.
    while (!queue_.empty() && st.ok() && (tick || stopping || admin_waiting_)) {
      st = WriteBatch();
    }
    if (stopping) return;
    if (!st.ok()) {
      // Retry at the next tick, not in a tight loop, even for a waiting admin record.
      while (!stop_ && std::chrono::steady_clock::now() < next_flush) {
        mu_.WaitUntil(cv_, next_flush);
      }
    }
  }
}

AuditLogStats AuditLog::stats() const {
  AuditLogStats s;
  s.written = written_.load(std::memory_order_relaxed);
  s.dropped = dropped_.load(std::memory_order_relaxed);
  s.backlog = pending_.load(std::memory_order_relaxed);
  s.full = Full();
  s.store_failing = store_failing_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace kms::audit
