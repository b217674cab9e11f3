#include "src/coord/invalidation_codec.h"

#include <string>

#include "gtest/gtest.h"

namespace kms::coord {
namespace {

using Kind = InvalidationEvent::Kind;

InvalidationEvent Event(Kind kind, std::string tenant, std::string origin) {
  InvalidationEvent event;
  event.kind = kind;
  event.tenant_id = std::move(tenant);
  event.origin = std::move(origin);
  return event;
}

void ExpectRoundTrip(const InvalidationEvent& event) {
  const std::string payload = EncodeInvalidationEvent(event);
  absl::StatusOr<InvalidationEvent> decoded = DecodeInvalidationEvent(payload);
  ASSERT_TRUE(decoded.ok()) << decoded.status() << " for payload " << payload;
  EXPECT_EQ(decoded->kind, event.kind);
  EXPECT_EQ(decoded->tenant_id, event.tenant_id);
  EXPECT_EQ(decoded->origin, event.origin);
}

TEST(InvalidationCodecTest, EveryKindRoundTrips) {
  ExpectRoundTrip(Event(Kind::kTenant, "acme", "node-a"));
  ExpectRoundTrip(Event(Kind::kKek, "", "node-b"));
  ExpectRoundTrip(Event(Kind::kJwt, "", "node-c"));
  ExpectRoundTrip(Event(Kind::kAll, "", ""));
}

TEST(InvalidationCodecTest, AwkwardBytesRoundTrip) {
  ExpectRoundTrip(Event(Kind::kTenant, "a b:c 12:x\n\0z", "node 7:y"));
  ExpectRoundTrip(Event(Kind::kTenant, std::string(1000, ':'), std::string("\0\0", 2)));
}

TEST(InvalidationCodecTest, EncodingIsTheDocumentedOne) {
  EXPECT_EQ(EncodeInvalidationEvent(Event(Kind::kTenant, "acme", "node-a")),
            "kmsd-inv1 tenant 6:node-a 4:acme");
  EXPECT_EQ(EncodeInvalidationEvent(Event(Kind::kAll, "", "n")), "kmsd-inv1 all 1:n 0:");
}

TEST(InvalidationCodecTest, MalformedPayloadsAreRejected) {
  for (const char* payload : {
           "",
           "kmsd-inv2 all 1:n 0:",         // another version
           "kmsd-inv1 everything 1:n 0:",  // unknown kind
           "kmsd-inv1 all 1:n",            // missing tenant field
           "kmsd-inv1 all 5:n 0:",         // length beyond the data
           "kmsd-inv1 all 1:n 0:x",        // trailing bytes
           "kmsd-inv1 all -1:n 0:",        // negative length
           "kmsd-inv1 all x:n 0:",         // no length
           "kmsd-inv1 tenant 1:n 0:",      // a tenant event needs a tenant
       }) {
    EXPECT_EQ(DecodeInvalidationEvent(payload).status().code(), absl::StatusCode::kInvalidArgument)
        << payload;
  }
}

TEST(InvalidationCodecTest, OversizedPayloadIsRejected) {
  const std::string payload =
      EncodeInvalidationEvent(Event(Kind::kTenant, std::string(kMaxInvalidationPayload, 't'), "n"));
  EXPECT_EQ(DecodeInvalidationEvent(payload).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kms::coord
