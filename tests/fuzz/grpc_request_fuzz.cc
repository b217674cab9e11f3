// A whole gRPC request as a peer sends it: the raw-handler decode (grpc/unary.h
// DecodeRequest, with each method's size limit) of every request message of KeyService
// and AdminService, then, for what decodes, the checks the handlers run before any key
// is touched (tenant id, plaintext/ciphertext sizes, encryption context, batch size).
//
// Input layout: byte 0 picks the message (modulo the count below), the rest is the
// request's bytes.
// Invariants: decoding succeeds exactly when the bytes are within the method's limit and
// protobuf parses them, and decodes to what protobuf decodes; every refusal is
// INVALID_ARGUMENT, a decoding refusal with a fixed message.
#include <grpc/grpc.h>

#include <string>

#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "grpcpp/support/byte_buffer.h"
#include "kms/v1/admin_service.pb.h"
#include "kms/v1/key_service.pb.h"
#include "src/keys/tenant_id.h"
#include "src/server/gate/request_limits.h"
#include "src/server/grpc/key_service.h"
#include "src/server/grpc/unary.h"
#include "tests/fuzz/fuzz_targets.h"
#include "tests/fuzz/fuzz_util.h"

namespace kms::fuzz {
namespace {

const config::LimitsConfig& Limits() {
  static const config::LimitsConfig limits = [] {
    grpc_init();  // grpc::ByteBuffer needs the library; never shut down in a fuzzer
    return config::LimitsConfig{};
  }();
  return limits;
}

// A refusal is INVALID_ARGUMENT. (Whether its text echoes the input is not checked here:
// libFuzzer learns the messages' words and puts them into the fields, so any substring
// test is a false alarm; the unit and e2e tests check it on chosen inputs.)
void CheckEchoesNothing(const absl::Status& s, std::string_view) {
  FUZZ_CHECK(s.code() == absl::StatusCode::kInvalidArgument);
}

template <typename Map>
void CheckContext(const Map& context) {
  auto ctx = server::ValidateContext(context, Limits());
  if (!ctx.ok()) {
    FUZZ_CHECK(ctx.status().code() == absl::StatusCode::kInvalidArgument);
    for (const auto& [k, v] : context) {
      CheckEchoesNothing(ctx.status(), k);
      CheckEchoesNothing(ctx.status(), v);
    }
    return;
  }
  FUZZ_CHECK(static_cast<int64_t>(context.size()) <= Limits().max_context_pairs);
}

void CheckTenant(const std::string& tenant) {
  auto id = keys::TenantId::Parse(tenant);
  if (!id.ok()) CheckEchoesNothing(id.status(), tenant);
}

void Validate(const v1::EncryptRequest& r) {
  CheckTenant(r.tenant_id());
  if (absl::Status s = server::ValidatePlaintext(r.plaintext(), Limits()); !s.ok()) {
    CheckEchoesNothing(s, r.plaintext());
  }
  CheckContext(r.context());
}
void Validate(const v1::DecryptRequest& r) {
  CheckTenant(r.tenant_id());
  if (absl::Status s = server::ValidateCiphertext(r.ciphertext(), Limits()); !s.ok()) {
    CheckEchoesNothing(s, r.ciphertext());
  }
  CheckContext(r.context());
}
void Validate(const v1::EncryptBatchRequest& r) {
  CheckTenant(r.tenant_id());
  absl::Status s = server::ValidateBatchSize(r.items_size(), Limits());
  FUZZ_CHECK(s.ok() == (r.items_size() > 0 && r.items_size() <= Limits().max_batch_items));
  for (const auto& item : r.items()) {
    if (absl::Status p = server::ValidatePlaintext(item.plaintext(), Limits()); !p.ok()) {
      CheckEchoesNothing(p, item.plaintext());
    }
    CheckContext(item.context());
  }
}
void Validate(const v1::DecryptBatchRequest& r) {
  CheckTenant(r.tenant_id());
  (void)server::ValidateBatchSize(r.items_size(), Limits());
  for (const auto& item : r.items()) {
    if (absl::Status c = server::ValidateCiphertext(item.ciphertext(), Limits()); !c.ok()) {
      CheckEchoesNothing(c, item.ciphertext());
    }
    CheckContext(item.context());
  }
}
void Validate(const v1::CreateTenantRequest& r) { CheckTenant(r.tenant_id()); }
void Validate(const v1::GetTenantRequest& r) { CheckTenant(r.tenant_id()); }
void Validate(const v1::RotateTenantKeyRequest& r) { CheckTenant(r.tenant_id()); }
void Validate(const v1::ShredTenantRequest& r) { CheckTenant(r.tenant_id()); }
template <typename Other>
void Validate(const Other&) {}

// Map entries serialize in an unspecified order unless asked for a deterministic one.
std::string Deterministic(const google::protobuf::MessageLite& message) {
  std::string out;
  {
    google::protobuf::io::StringOutputStream stream(&out);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    FUZZ_CHECK(message.SerializeToCodedStream(&coded));
  }
  return out;
}

template <typename Request>
void DecodeAndValidate(const uint8_t* data, size_t size, size_t max_bytes) {
  grpc::Slice slice(data, size);
  grpc::ByteBuffer buffer(&slice, 1);
  Request request;
  absl::Status s = server::DecodeRequest(buffer, max_bytes, request);
  Request direct;
  const bool parses = direct.ParseFromArray(data, static_cast<int>(size));
  FUZZ_CHECK(s.ok() == (size <= max_bytes && parses));
  if (!s.ok()) {
    FUZZ_CHECK(s.code() == absl::StatusCode::kInvalidArgument);
    FUZZ_CHECK(s.message() == std::string("request is not a valid ") + request.GetTypeName() +
                                  " message" ||
               std::string(s.message()).find("bytes this method accepts") != std::string::npos);
    return;
  }
  FUZZ_CHECK(Deterministic(request) == Deterministic(direct));
  Validate(request);
}

}  // namespace

int FuzzGrpcRequest(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const auto limits = server::KeyServiceRequestLimits::From(Limits());
  const uint8_t which = data[0];
  ++data;
  --size;
  constexpr size_t kAdmin = 16 * 1024;  // admin_service.cc kMaxAdminRequestBytes
  switch (which % 14) {
    case 0: DecodeAndValidate<v1::EncryptRequest>(data, size, limits.item); break;
    case 1: DecodeAndValidate<v1::DecryptRequest>(data, size, limits.item); break;
    case 2: DecodeAndValidate<v1::EncryptBatchRequest>(data, size, limits.batch); break;
    case 3: DecodeAndValidate<v1::DecryptBatchRequest>(data, size, limits.batch); break;
    case 4: DecodeAndValidate<v1::SignJwtRequest>(data, size, limits.jwt); break;
    case 5: DecodeAndValidate<v1::VerifyJwtRequest>(data, size, limits.jwt); break;
    case 6: DecodeAndValidate<v1::GetJwksRequest>(data, size, limits.jwt); break;
    case 7: DecodeAndValidate<v1::CreateTenantRequest>(data, size, kAdmin); break;
    case 8: DecodeAndValidate<v1::GetTenantRequest>(data, size, kAdmin); break;
    case 9: DecodeAndValidate<v1::ListTenantsRequest>(data, size, kAdmin); break;
    case 10: DecodeAndValidate<v1::RotateTenantKeyRequest>(data, size, kAdmin); break;
    case 11: DecodeAndValidate<v1::ShredTenantRequest>(data, size, kAdmin); break;
    case 12: DecodeAndValidate<v1::RotateKekRequest>(data, size, kAdmin); break;
    default: DecodeAndValidate<v1::GetStatusRequest>(data, size, kAdmin); break;
  }
  return 0;
}

}  // namespace kms::fuzz
