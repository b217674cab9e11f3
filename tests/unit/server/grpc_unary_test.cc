// The gRPC door's request decoding and per-method limits (src/server/grpc/unary.h):
// every request that cannot be decoded gets INVALID_ARGUMENT naming its message type
// and no input byte, and a request over its method's limit is refused before decoding.
#include "absl/strings/str_cat.h"
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
  sent.set_ciphertext(std::string(3 * 1024 * 1024, 'c'));  // over the writer's 1 MiB block
  sent.set_dek_version(7);
  grpc::ByteBuffer buffer;
  ASSERT_TRUE(EncodeResponse(sent, &buffer).ok());
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(buffer.Dump(&slices).ok());
  EXPECT_GT(slices.size(), 1u);
  v1::EncryptResponse got;
  ASSERT_TRUE(DecodeRequest(buffer, buffer.Length(), got).ok());
  EXPECT_EQ(got.ciphertext(), sent.ciphertext());
  EXPECT_EQ(got.dek_version(), 7u);
}

TEST(DecodeRequestTest, ARequestSplitAcrossSlicesDecodes) {
  v1::EncryptRequest sent;
  sent.set_tenant_id("acme");
  sent.set_plaintext(std::string(1000, 'p'));
  const std::string bytes = sent.SerializeAsString();
  std::vector<grpc::Slice> parts = {grpc::Slice(bytes.data(), 3),
                                    grpc::Slice(bytes.data() + 3, 500),
                                    grpc::Slice(bytes.data() + 503, bytes.size() - 503)};
  grpc::ByteBuffer buffer(parts.data(), parts.size());
  v1::EncryptRequest got;
  ASSERT_TRUE(DecodeRequest(buffer, bytes.size(), got).ok());
  EXPECT_EQ(got.plaintext(), sent.plaintext());
}

// Maximal requests of each kind (every limit of the config at its bound) fit their
// method's limit; a request twice the item's plaintext does not.
class KeyServiceRequestLimitsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    limits_.max_plaintext_bytes = 64 * 1024;
    limits_.max_batch_items = 100;
    limits_.max_context_pairs = 16;
    limits_.max_context_bytes = 4096;
    l_ = KeyServiceRequestLimits::From(limits_);
  }
  void FillContext(google::protobuf::Map<std::string, std::string>* context) const {
    const int value_bytes = limits_.max_context_bytes / limits_.max_context_pairs - 4;
    for (int i = 0; i < limits_.max_context_pairs; ++i) {
      (*context)[absl::StrCat("k", 100 + i)] = std::string(value_bytes, 'v');
    }
  }
  config::LimitsConfig limits_;
  KeyServiceRequestLimits l_;
};

TEST_F(KeyServiceRequestLimitsTest, LargestCoversEveryMethodReEncryptBatchIncluded) {
  // gRPC's message limit and the in-flight budget are set from Largest(): a
  // ReEncryptBatch within its own limit must fit both.
  EXPECT_GT(l_.reencrypt_batch, l_.batch);
  EXPECT_EQ(l_.Largest(), l_.reencrypt_batch);
  for (size_t limit : {l_.item, l_.batch, l_.jwt, l_.reencrypt}) EXPECT_GE(l_.Largest(), limit);
}

TEST_F(KeyServiceRequestLimitsTest, MaximalSingleRequestsFitTheItemLimit) {
  v1::EncryptRequest enc;
  enc.set_tenant_id(std::string(64, 't'));
  enc.set_plaintext(std::string(limits_.max_plaintext_bytes, 'p'));
  FillContext(enc.mutable_context());
  EXPECT_LE(enc.ByteSizeLong(), l_.item);
  v1::DecryptRequest dec;
  dec.set_tenant_id(std::string(64, 't'));
  dec.set_ciphertext(std::string(limits_.max_plaintext_bytes + keys::kCiphertextOverhead, 'c'));
  FillContext(dec.mutable_context());
  EXPECT_LE(dec.ByteSizeLong(), l_.item);
  enc.set_plaintext(std::string(2 * limits_.max_plaintext_bytes, 'p'));
  EXPECT_GT(enc.ByteSizeLong(), l_.item);
}

TEST_F(KeyServiceRequestLimitsTest, MaximalBatchesFitTheBatchLimit) {
  v1::EncryptBatchRequest enc;
  v1::DecryptBatchRequest dec;
  enc.set_tenant_id(std::string(64, 't'));
  dec.set_tenant_id(std::string(64, 't'));
  for (int i = 0; i < limits_.max_batch_items; ++i) {
    v1::EncryptBatchItem* e = enc.add_items();
    e->set_plaintext(std::string(limits_.max_plaintext_bytes, 'p'));
    FillContext(e->mutable_context());
    v1::DecryptBatchItem* d = dec.add_items();
    d->set_ciphertext(std::string(limits_.max_plaintext_bytes + keys::kCiphertextOverhead, 'c'));
    FillContext(d->mutable_context());
  }
  EXPECT_LE(enc.ByteSizeLong(), l_.batch);
  EXPECT_LE(dec.ByteSizeLong(), l_.batch);
  EXPECT_GT(enc.ByteSizeLong(), l_.item);  // a batch is refused by the single-item methods
}

// A field WipeSecrets must wipe: its bytes are overwritten in place (read through the
// old buffer, which clear() keeps allocated), then the field is empty.
class WipedField {
 public:
  explicit WipedField(std::string* field) : field_(field), bytes_(field->data()), size_(field->size()) {}
  void ExpectWiped() const {
    EXPECT_TRUE(field_->empty());
    ASSERT_EQ(field_->data(), bytes_) << "the buffer moved: the check would read freed memory";
    EXPECT_EQ(std::string(bytes_, size_), std::string(size_, '\0'));
  }

 private:
  std::string* field_;
  const char* bytes_;
  size_t size_;
};

std::string Secret(char c) { return std::string(64, c); }  // past the small-string buffer

TEST(WipeSecretsTest, WipesPlaintextsInResponsesBatchResultsAndRequests) {
  v1::DecryptResponse decrypted;
  decrypted.set_plaintext(Secret('p'));
  WipedField plaintext(decrypted.mutable_plaintext());
  WipeSecrets(decrypted);
  plaintext.ExpectWiped();

  v1::DecryptBatchResponse batch;
  batch.add_results()->mutable_ok()->set_plaintext(Secret('a'));
  batch.add_results()->mutable_error()->set_message("not this one");
  batch.add_results()->mutable_ok()->set_plaintext(Secret('b'));
  WipedField first(batch.mutable_results(0)->mutable_ok()->mutable_plaintext());
  WipedField third(batch.mutable_results(2)->mutable_ok()->mutable_plaintext());
  WipeSecrets(batch);
  first.ExpectWiped();
  third.ExpectWiped();
  EXPECT_FALSE(batch.results(1).has_ok()) << "an error result stays an error";
  EXPECT_EQ(batch.results(1).error().message(), "not this one");

  v1::EncryptBatchRequest request;
  request.set_tenant_id("acme");
  request.add_items()->set_plaintext(Secret('c'));
  WipedField item(request.mutable_items(0)->mutable_plaintext());
  WipeSecrets(request);
  item.ExpectWiped();
  EXPECT_EQ(request.tenant_id(), "acme");

  v1::GenerateDataKeyResponse data_key;
  data_key.set_plaintext(Secret('k'));
  data_key.set_wrapped_key("wrapped");
  WipedField key(data_key.mutable_plaintext());
  WipeSecrets(data_key);
  key.ExpectWiped();
  EXPECT_EQ(data_key.wrapped_key(), "wrapped");

  v1::ComputeBlindIndexBatchRequest index;
  index.add_items()->set_value(Secret('e'));
  WipedField value(index.mutable_items(0)->mutable_value());
  WipeSecrets(index);
  value.ExpectWiped();
}

}  // namespace
}  // namespace kms::server
