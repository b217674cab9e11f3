// Strict parsing of JSON documents written by operators (config, policy).
//
// nlohmann_json silently keeps the last of duplicate object keys; in a security
// document a duplicate is almost always a mistake, so here it is an error. Absurd
// nesting is an error too. Thread-safe; never throws.
#pragma once

#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace kms {

// Parses `text` as one JSON value (no comments). `what` names the document in
// messages. Every error is INVALID_ARGUMENT:
//   "<what> is not valid JSON (byte N): <parser message>"
//   "<what> nests deeper than <max_depth> levels" (an object or array inside more than
//       max_depth others)
//   "<duplicate_key_prefix>duplicate key '<key>'" (the first duplicate in the text)
absl::StatusOr<nlohmann::json> ParseStrictJson(std::string_view text, std::string_view what,
                                               int max_depth,
                                               std::string_view duplicate_key_prefix = "");

}  // namespace kms
