#include "src/sched/key_jobs.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace kms::sched {

std::unique_ptr<Job> MakeJwtTickJob(jwt::JwtService& jwt, std::chrono::milliseconds interval) {
  return MakeJob(
      "jwt", interval, /*leader_only=*/false, [&jwt](const JobContext& context) -> absl::Status {
        absl::Status ticked = jwt.Tick(/*may_rotate=*/context.leader);
        if (ticked.ok()) return ticked;
        return absl::Status(ticked.code(), absl::StrCat("JWT keys: ", ticked.message(), " (state ",
                                                        jwt.Status().state_name, ")"));
      });
}

std::unique_ptr<Job> MakeDekUsageFlushJob(keys::KeyManager& keys,
                                          std::chrono::milliseconds interval) {
  return MakeJob(
      "dek-usage", interval, /*leader_only=*/false, [&keys](const JobContext&) -> absl::Status {
        absl::StatusOr<int> rotated = keys.FlushEncryptionCounts();
        if (!rotated.ok()) {
          return absl::Status(
              rotated.status().code(),
              absl::StrCat("DEK usage counts not flushed: ", rotated.status().message()));
        }
        return absl::OkStatus();
      });
}

}  // namespace kms::sched
