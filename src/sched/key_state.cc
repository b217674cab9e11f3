#include "src/sched/key_state.h"

#include "absl/strings/str_cat.h"

namespace kms::sched {

std::string_view RotatingKeyName(RotatingKey key) {
  switch (key) {
    case RotatingKey::kKek: return "kek";
    case RotatingKey::kDek: return "dek";
    case RotatingKey::kJwt: return "jwt";
  }
  return "unknown";
}

KeyStateCache::KeyStateCache(store::KekStore& keks, store::TenantKeyStore& tenants,
                             std::function<uint32_t()> primary_kek_version)
    : keks_(keks), tenants_(tenants), primary_kek_version_(std::move(primary_kek_version)) {}

absl::Status KeyStateCache::Refresh() {
  const uint32_t primary = primary_kek_version_();
  KMS_ASSIGN_OR_RETURN(std::vector<store::KekRecord> keks, keks_.ListKeks());
  for (const store::KekRecord& k : keks) {
    if (k.version == primary) kek_created_.store(k.created_at);
  }
  KMS_ASSIGN_OR_RETURN(int64_t dek_created, tenants_.OldestPrimaryDekCreatedAt());
  dek_created_.store(dek_created);
  // Both reads cost the same at 1,000,000 tenants as at one (an index lookup, and an
  // index range that is empty once a re-wrap is done): this runs at start-up and on
  // every replica every minute.
  KMS_ASSIGN_OR_RETURN(std::vector<store::KekUsage> usage, keks_.ListKekUsageExcept(primary));
  uint64_t backlog = 0;
  for (const store::KekUsage& u : usage) {
    if (u.kek_version != primary) backlog += u.deks;
  }
  rewrap_backlog_.store(backlog);
  if (now_) refreshed_.store(now_());
  return absl::OkStatus();
}

std::unique_ptr<Job> MakeKeyStateRefreshJob(KeyStateCache& cache, std::chrono::milliseconds interval) {
  return MakeJob("key-state", interval, /*leader_only=*/false, [&cache](const JobContext&) {
    absl::Status s = cache.Refresh();
    if (s.ok()) return s;
    return absl::Status(s.code(), absl::StrCat("key ages not refreshed: ", s.message()));
  });
}

}  // namespace kms::sched
