// What a caller may read of an error, for every door: messages of the codes our own
// validation produces (invalid argument, not found, permission denied, ...) are written
// for callers and pass through; messages of backend failures (UNAVAILABLE, INTERNAL,
// DATA_LOSS, ...) may carry HSM or database internals, so callers get a generic
// sentence and the detail goes to the log, tagged with `operation`.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace kms::server {

std::string PublicMessage(const absl::Status& status, std::string_view operation);

// The code a caller sees: DATA_LOSS (a stored blob that does not authenticate) is
// INTERNAL to them; every other code passes through.
absl::StatusCode PublicCode(const absl::Status& status);

}  // namespace kms::server
