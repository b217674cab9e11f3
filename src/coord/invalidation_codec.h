// The wire format of an InvalidationEvent on the Redis channel (one PUBLISH payload).
//
//   payload := "kmsd-inv1" SP kind SP field SP field      (origin, then tenant_id)
//   kind    := "tenant" | "kek" | "jwt" | "all"
//   field   := <decimal byte length> ":" <bytes>          (any bytes, length-prefixed)
//
// Example: kTenant for tenant "acme" from node "node-a" is "kmsd-inv1 tenant 6:node-a 4:acme".
// Length prefixes make any origin or tenant id round-trip without escaping. A reader that
// cannot decode a payload (another version, garbage) should treat it as kAll: dropping
// every cache is always safe.
#pragma once

#include <string>
#include <string_view>

#include "kms/common/status.h"
#include "kms/coord/coordination.h"

namespace kms::coord {

inline constexpr std::string_view kInvalidationChannel = "kmsd:invalidate";
inline constexpr size_t kMaxInvalidationPayload = 64 * 1024;

std::string EncodeInvalidationEvent(const InvalidationEvent& event);

// INVALID_ARGUMENT when `payload` is not exactly one well-formed event.
absl::StatusOr<InvalidationEvent> DecodeInvalidationEvent(std::string_view payload);

std::string_view InvalidationKindName(InvalidationEvent::Kind kind);

}  // namespace kms::coord
