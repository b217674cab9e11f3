// The free functions of kms/hsm/hsm.h that do not need a token.
#include <string>

#include "absl/strings/str_cat.h"
#include "kms/hsm/hsm.h"

namespace kms::hsm {

std::string_view MasterKeyKindName(MasterKeyKind kind) {
  switch (kind) {
    case MasterKeyKind::kRsa4096:
      return "rsa-4096";
    case MasterKeyKind::kAes256:
      return "aes-256";
  }
  return "unknown";
}

absl::StatusOr<MasterKeyKind> ParseMasterKeyKind(std::string_view name) {
  if (name == "rsa-4096") return MasterKeyKind::kRsa4096;
  if (name == "aes-256") return MasterKeyKind::kAes256;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown master key kind '", absl::string_view(name.data(), name.size()), "' (expected rsa-4096 or aes-256)"));
}

}  // namespace kms::hsm
