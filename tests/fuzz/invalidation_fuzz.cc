// An invalidation event as it arrives from Redis (any peer that can PUBLISH on the
// channel): coord::DecodeInvalidationEvent on arbitrary bytes.
// Invariants: a decoded event encodes back into a payload that decodes to the same
// event; a refusal is INVALID_ARGUMENT; and any event (kind from byte 0, origin and
// tenant from the rest) survives encode + decode unchanged (a tenant event without a
// tenant id is refused).
#include <string>

#include "src/coord/invalidation_codec.h"
#include "tests/fuzz/fuzz_targets.h"
#include "tests/fuzz/fuzz_util.h"

namespace kms::fuzz {
namespace {

bool Same(const coord::InvalidationEvent& a, const coord::InvalidationEvent& b) {
  return a.kind == b.kind && a.tenant_id == b.tenant_id && a.origin == b.origin;
}

}  // namespace

int FuzzInvalidationEvent(const uint8_t* data, size_t size) {
  const std::string_view payload = AsText({data, size});
  auto event = coord::DecodeInvalidationEvent(payload);
  if (event.ok()) {
    auto again = coord::DecodeInvalidationEvent(coord::EncodeInvalidationEvent(*event));
    FUZZ_CHECK(again.ok() && Same(*again, *event));
  } else {
    FUZZ_CHECK(event.status().code() == absl::StatusCode::kInvalidArgument);
  }

  ByteReader in(data, size);
  coord::InvalidationEvent made;
  made.kind = static_cast<coord::InvalidationEvent::Kind>(in.U8() % 4);
  made.origin = std::string(in.Field(256));
  if (made.kind == coord::InvalidationEvent::Kind::kTenant) made.tenant_id = std::string(in.Field(256));
  auto round = coord::DecodeInvalidationEvent(coord::EncodeInvalidationEvent(made));
  if (made.kind == coord::InvalidationEvent::Kind::kTenant && made.tenant_id.empty()) {
    FUZZ_CHECK(!round.ok());  // a tenant event names its tenant
  } else {
    FUZZ_CHECK(round.ok() && Same(*round, made));
  }
  return 0;
}

}  // namespace kms::fuzz
