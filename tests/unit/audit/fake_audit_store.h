// An in-memory AuditStore with a failure switch, for the audit unit tests.
#pragma once

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kms/store/audit_store.h"
#include "src/common/sync.h"

namespace kms::audit::testing {

class FakeAuditStore final : public store::AuditStore {
 public:
  void set_unavailable(bool down) {
    MutexLock lock(&mu_);
    down_ = down;
  }
  std::vector<store::AuditRecord> records() const {
    MutexLock lock(&mu_);
    return records_;
  }
  int appends() const {
    MutexLock lock(&mu_);
    return appends_;
  }

  absl::Status AppendAudit(std::span<const store::AuditRecord> records) override {
    MutexLock lock(&mu_);
    if (down_) return absl::UnavailableError("fake store down");
    for (const store::AuditRecord& r : records) {
      for (const store::AuditRecord& e : records_) {
        if (e.node == r.node && e.seq == r.seq) return absl::AlreadyExistsError("exists");
      }
    }
    ++appends_;
    for (store::AuditRecord r : records) {
      r.id = ++last_id_;
      records_.push_back(std::move(r));
    }
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<store::AuditRecord>> ReadAudit(int64_t after_id, int limit,
                                                            const std::string& node) override {
    MutexLock lock(&mu_);
    std::vector<store::AuditRecord> out;
    for (const store::AuditRecord& r : records_) {
      if (r.id > after_id && (node.empty() || r.node == node) &&
          out.size() < static_cast<size_t>(limit)) {
        out.push_back(r);
      }
    }
    return out;
  }
  absl::StatusOr<std::vector<store::AuditRecord>> TailAudit(int, const std::string&) override {
    return absl::UnimplementedError("not in the fake");
  }
  absl::StatusOr<store::AuditRecord> LastAudit(const std::string& node) override {
    MutexLock lock(&mu_);
    if (down_) return absl::UnavailableError("fake store down");
    const store::AuditRecord* last = nullptr;
    for (const store::AuditRecord& r : records_) {
      if (r.node == node && (last == nullptr || r.seq > last->seq)) last = &r;
    }
    if (last == nullptr) return absl::NotFoundError("none");
    return *last;
  }
  absl::StatusOr<int64_t> DeleteAuditBefore(int64_t before_ms) override {
    MutexLock lock(&mu_);
    const size_t before = records_.size();
    std::erase_if(records_, [&](const store::AuditRecord& r) { return r.at_ms < before_ms; });
    return static_cast<int64_t>(before - records_.size());
  }

 private:
  mutable Mutex mu_;
  std::vector<store::AuditRecord> records_ ABSL_GUARDED_BY(mu_);
  int64_t last_id_ ABSL_GUARDED_BY(mu_) = 0;
  int appends_ ABSL_GUARDED_BY(mu_) = 0;
  bool down_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace kms::audit::testing
