// The JWT signing-key lifecycle (DESIGN §5) as a transition table.
//
//   from        event               to          why
//   Loading     KeysLoaded          Active      keys read and unwrapped at start
//   Active      NextKeyActivated    DualActive  a rotated-in key signs; the old verifies
//   Active      RotationSucceeded   Active      next key pre-published, old still signs
//   Active      BackendDown         Degraded    store or HSM unreachable
//   DualActive  OverlapEnded        Active      the old key's retire_at passed
//   DualActive  RotationSucceeded   DualActive
//   DualActive  BackendDown         Degraded
//   Degraded    BackendUp           Active      (the service then re-derives DualActive)
//   Degraded    MaxAgeExceeded      Critical    degraded longer than KEY_MAX_AGE
//   Critical    OperatorAck         Active      only once the backends are back
//   Critical    RotationSucceeded   Active      a manual rotation, backends back
//
// Every other (state, event) pair is rejected: Next() returns nullopt and nothing
// changes. Guards that need facts outside the state (the backends are back, for
// OperatorAck) are checked by the caller before it applies the event.
//
// Active vs DualActive follows from the key timestamps and Degraded/Critical from the
// backend health history; JwtService derives the events from those facts and applies
// them through this table only.
#pragma once

#include <optional>
#include <span>
#include <string_view>

namespace kms::jwt {

enum class KeyLifecycleState { kLoading, kActive, kDualActive, kDegraded, kCritical };
enum class KeyLifecycleEvent {
  kKeysLoaded,
  kNextKeyActivated,
  kOverlapEnded,
  kBackendDown,
  kBackendUp,
  kMaxAgeExceeded,
  kOperatorAck,
  kRotationSucceeded,
};

inline constexpr KeyLifecycleState kAllKeyLifecycleStates[] = {
    KeyLifecycleState::kLoading, KeyLifecycleState::kActive, KeyLifecycleState::kDualActive,
    KeyLifecycleState::kDegraded, KeyLifecycleState::kCritical};
inline constexpr KeyLifecycleEvent kAllKeyLifecycleEvents[] = {
    KeyLifecycleEvent::kKeysLoaded,     KeyLifecycleEvent::kNextKeyActivated,
    KeyLifecycleEvent::kOverlapEnded,   KeyLifecycleEvent::kBackendDown,
    KeyLifecycleEvent::kBackendUp,      KeyLifecycleEvent::kMaxAgeExceeded,
    KeyLifecycleEvent::kOperatorAck,    KeyLifecycleEvent::kRotationSucceeded};

// "loading", "active", "dual_active", "degraded", "critical".
std::string_view KeyLifecycleStateName(KeyLifecycleState state);
// "keys_loaded", "next_key_activated", ...
std::string_view KeyLifecycleEventName(KeyLifecycleEvent event);

struct KeyLifecycleTransition {
  KeyLifecycleState from;
  KeyLifecycleEvent event;
  KeyLifecycleState to;
};

// The table above, in that order.
std::span<const KeyLifecycleTransition> KeyLifecycleTable();

// The state after `event` in `state`, or nullopt when the table has no such pair.
std::optional<KeyLifecycleState> Next(KeyLifecycleState state, KeyLifecycleEvent event);

// Whether a key may sign in this state (every state but Loading; Critical only when
// not configured to fail closed).
bool MaySign(KeyLifecycleState state, bool fail_closed_when_critical);

}  // namespace kms::jwt
