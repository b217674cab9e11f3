// Reading a whole operator-supplied file (config, policy, certificates, the TLS key) into
// memory, in one buffer (no stale copies left behind for a key file's bytes).
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace kms {

// The bytes of the file at `path`. `what` names the file in messages:
// "<what> file <path>: cannot read: <strerror>". NOT_FOUND when the file does not
// exist, INVALID_ARGUMENT for any other failure. Thread-safe.
absl::StatusOr<std::string> ReadTextFile(const std::string& path, std::string_view what);

}  // namespace kms
