// What kmsctl shows of keys (`keys list`, `tenant min-version`, `reencrypt`,
// `tenant shred`) and how it writes a shred receipt, apart from main.cc so that it is
// unit-tested without a server (tests/unit/cli).
//
// Times are shown as RFC 3339 UTC ("2024-05-01T12:00:00Z") with the age beside them
// ("3d 4h"); JSON output carries both the Unix seconds the server sent and the RFC 3339
// text. Pure functions except WriteNewFile. Thread-safe.
#pragma once

#include <cstdint>
#include <string>

#include "kms/common/status.h"
#include "kms/v1/admin_service.pb.h"
#include "nlohmann/json.hpp"

namespace kms::cli {

// RFC 3339 UTC with seconds, e.g. "2024-05-01T12:00:00Z"; "-" for 0 (not set).
std::string Rfc3339(int64_t unix_seconds);
// A short age: "42s", "5m 3s", "4h 12m", "3d 4h"; negative ages (a clock ahead) as "0s".
std::string Age(int64_t seconds);

// `keys list` as JSON (one object: keks, tenants, next_page_token,
// kek_rotation_due_in_seconds) and as text (the KEK versions unless !with_keks, then
// per tenant its DEK versions, then the next page token if any).
nlohmann::json ListKeysJson(const v1::ListKeysResponse& resp);
std::string ListKeysText(const v1::ListKeysResponse& resp, bool with_keks = true);

// The default receipt file of `tenant shred`: "shred-receipt-<tenant>.jws".
std::string DefaultReceiptPath(const std::string& tenant_id);

// Creates `path` with `contents` (mode 0644), refusing to replace anything:
// ALREADY_EXISTS when the path exists (file, link or directory), INTERNAL with the
// system's reason when it cannot be written (a partial file is removed).
absl::Status WriteNewFile(const std::string& path, const std::string& contents);

}  // namespace kms::cli
