// Small string helpers shared by modules that build messages with absl::StrCat.
#pragma once

#include <string_view>

#include "absl/strings/string_view.h"

namespace kms {

// Debian's abseil has its own absl::string_view, not an alias of std::string_view, so
// absl::StrCat does not take a std::string_view directly.
inline absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

}  // namespace kms
