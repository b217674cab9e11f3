#include "kms/store/key_store.h"

namespace kms::store {

std::string_view KekStateName(KekState s) {
  switch (s) {
    case KekState::kActive: return "active";
    case KekState::kRetired: return "retired";
  }
  return "unknown";
}

std::string_view TenantStateName(TenantState s) {
  switch (s) {
    case TenantState::kActive: return "active";
    case TenantState::kShredded: return "shredded";
  }
  return "unknown";
}

std::string_view DekStateName(DekState s) {
  switch (s) {
    case DekState::kActive: return "active";
    case DekState::kRetired: return "retired";
    case DekState::kDestroyed: return "destroyed";
  }
  return "unknown";
}

}  // namespace kms::store
