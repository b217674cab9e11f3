// The gRPC door's request decoding and per-method limits (src/server/grpc/unary.h):
// every request that cannot be decoded gets INVALID_ARGUMENT naming its message type
// and no input byte, and a request over its method's limit is refused before decoding.
#include "gmock/gmock.h"
#include "grpcpp/support/byte_buffer.h"
#include "gtest/gtest.h"
#include "kms/v1/key_service.pb.h"
#include "src/server/grpc/key_service.h"
#include "src/server/grpc/unary.h"

namespace kms::server {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

grpc::ByteBuffer Buffer(const std::string& bytes) {
  grpc::Slice slice(bytes.data(), bytes.size());
  return grpc::ByteBuffer(&slice, 1);
}

TEST(DecodeRequestTest, AWellFormedRequestDecodes) {
  v1::EncryptRequest sent;
  sent.set_tenant_id("acme");
  sent.set_plaintext("alice@example.com");
  (*sent.mutable_context())["column"] = "email";
  v1::EncryptRequest got;
  ASSERT_TRUE(DecodeRequest(Buffer(sent.SerializeAsString()), 1024, got).ok());
  EXPECT_EQ(got.tenant_id(), "acme");
  EXPECT_EQ(got.plaintext(), "alice@example.com");
  EXPECT_EQ(got.context().at("column"), "email");
}

TEST(DecodeRequestTest, UndecodableBytesAreInvalidArgumentAndEchoNothing) {
  const std::string not_utf8("\x0a\x05" "acme\xff", 7);  // tenant_id: a proto3 string
  const std::string garbage("\xff\xff\xff\xff", 4);
  const std::string truncated("\x0a\x20" "acme", 6);
  for (const std::string& bytes : {not_utf8, garbage, truncated}) {
    v1::EncryptRequest req;
    absl::Status s = DecodeRequest(Buffer(bytes), 1024, req);
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
    EXPECT_EQ(s.message(), "request is not a valid kms.v1.EncryptRequest message");
    EXPECT_THAT(std::string(s.message()), Not(HasSubstr("acme")));
  }
}

TEST(DecodeRequestTest, ARequestOverItsLimitIsRefusedBeforeDecoding) {
  v1::EncryptRequest sent;
  sent.set_plaintext(std::string(100, 'x'));
  v1::EncryptRequest got;
  const std::string bytes = sent.SerializeAsString();
  EXPECT_TRUE(DecodeRequest(Buffer(bytes), bytes.size(), got).ok());
  absl::Status s = DecodeRequest(Buffer(bytes), bytes.size() - 1, got);
  EXPECT_TRUE(absl::IsInvalidArgument(s));
  EXPECT_THAT(std::string(s.message()), HasSubstr("bytes this method accepts"));
}

TEST(EncodeResponseTest, AResponseRoundTripsThroughTheRawBuffer) {
  v1::EncryptResponse sent;
  sent.set_ciphertext(std::string(70000, 'c'));  // spans several slices
  sent.set_dek_version(7);
  grpc::ByteBuffer buffer;
  ASSERT_TRUE(EncodeResponse(sent, &buffer).ok());
  v1::EncryptResponse got;
  ASSERT_TRUE(DecodeRequest(buffer, buffer.Length(), got).ok());
  EXPECT_EQ(got.ciphertext(), sent.ciphertext());
  EXPECT_EQ(got.dek_version(), 7u);
}

TEST(KeyServiceRequestLimitsTest, ABatchAcceptsItsItemsAndAnItemOneMaximalPlaintext) {
  config::LimitsConfig limits;
  limits.max_plaintext_bytes = 64 * 1024;
  limits.max_batch_items = 1000;
  const KeyServiceRequestLimits l = KeyServiceRequestLimits::From(limits);
  // One maximal item with a maximal context fits Encrypt, two do not.
  v1::EncryptRequest req;
  req.set_tenant_id(std::string(64, 't'));
  req.set_plaintext(std::string(limits.max_plaintext_bytes, 'p'));
  for (int i = 0; i < limits.max_context_pairs; ++i) {
    (*req.mutable_context())[std::string(1, static_cast<char>('a' + i % 26)) + std::to_string(i)] =
        std::string(limits.max_context_bytes / limits.max_context_pairs - 3, 'v');
  }
  EXPECT_LE(req.ByteSizeLong(), l.item);
  EXPECT_LT(l.item, 2 * static_cast<size_t>(limits.max_plaintext_bytes));
  EXPECT_GE(l.batch, 1000 * l.item);
  EXPECT_LT(l.jwt, l.item * 2);
}

}  // namespace
}  // namespace kms::server
