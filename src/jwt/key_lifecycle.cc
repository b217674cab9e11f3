#include "src/jwt/key_lifecycle.h"

#include <iterator>

namespace kms::jwt {
namespace {

using S = KeyLifecycleState;
using E = KeyLifecycleEvent;

constexpr KeyLifecycleTransition kTable[] = {
    {S::kLoading, E::kKeysLoaded, S::kActive},
    {S::kActive, E::kNextKeyActivated, S::kDualActive},
    {S::kActive, E::kRotationSucceeded, S::kActive},
    {S::kActive, E::kBackendDown, S::kDegraded},
    {S::kDualActive, E::kOverlapEnded, S::kActive},
    {S::kDualActive, E::kRotationSucceeded, S::kDualActive},
    {S::kDualActive, E::kBackendDown, S::kDegraded},
    {S::kDegraded, E::kBackendUp, S::kActive},
    {S::kDegraded, E::kMaxAgeExceeded, S::kCritical},
    {S::kCritical, E::kOperatorAck, S::kActive},
    {S::kCritical, E::kRotationSucceeded, S::kActive},
};

}  // namespace

std::string_view KeyLifecycleStateName(KeyLifecycleState state) {
  switch (state) {
    case S::kLoading:
      return "loading";
    case S::kActive:
      return "active";
    case S::kDualActive:
      return "dual_active";
    case S::kDegraded:
      return "degraded";
    case S::kCritical:
      return "critical";
  }
  return "unknown";
}

std::string_view KeyLifecycleEventName(KeyLifecycleEvent event) {
  switch (event) {
    case E::kKeysLoaded:
      return "keys_loaded";
    case E::kNextKeyActivated:
      return "next_key_activated";
    case E::kOverlapEnded:
      return "overlap_ended";
    case E::kBackendDown:
      return "backend_down";
    case E::kBackendUp:
      return "backend_up";
    case E::kMaxAgeExceeded:
      return "max_age_exceeded";
    case E::kOperatorAck:
      return "operator_ack";
    case E::kRotationSucceeded:
      return "rotation_succeeded";
  }
  return "unknown";
}

std::span<const KeyLifecycleTransition> KeyLifecycleTable() { return kTable; }

std::optional<KeyLifecycleState> Next(KeyLifecycleState state, KeyLifecycleEvent event) {
  for (const KeyLifecycleTransition& t : kTable) {
    if (t.from == state && t.event == event) return t.to;
  }
  return std::nullopt;
}

bool MaySign(KeyLifecycleState state, bool fail_closed_when_critical) {
  switch (state) {
    case S::kLoading:
      return false;
    case S::kCritical:
      return !fail_closed_when_critical;
    default:
      return true;
  }
}

}  // namespace kms::jwt
