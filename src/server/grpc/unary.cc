#include "src/server/grpc/unary.h"

#include <algorithm>
#include <atomic>
#include <random>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_format.h"

#include "absl/strings/str_cat.h"
#include "grpcpp/support/proto_buffer_reader.h"
#include "grpcpp/support/proto_buffer_writer.h"
#include "src/server/gate/identity.h"

namespace kms::server {

namespace {
std::atomic<InflightBudget*> door_budget{nullptr};

// Holds a share of the door's budget until gRPC is done with the call.
class HoldingReactor final : public grpc::ServerUnaryReactor {
 public:
  explicit HoldingReactor(InflightBudget::Ticket ticket) : ticket_(std::move(ticket)) {}
  void OnDone() override { delete this; }

 private:
  InflightBudget::Ticket ticket_;
};
}  // namespace

void SetDoorBudget(InflightBudget* budget) { door_budget.store(budget); }

absl::StatusOr<InflightBudget::Ticket> AdmitToDoor(size_t bytes) {
  InflightBudget* budget = door_budget.load();
  if (budget == nullptr) return InflightBudget::Ticket();
  return budget->Admit(static_cast<int64_t>(bytes));
}

grpc::ServerUnaryReactor* FinishUnaryHolding(grpc::CallbackServerContext* ctx,
                                             const absl::Status& status,
                                             std::string_view operation,
                                             InflightBudget::Ticket ticket) {
  if (ticket.bytes() == 0) return FinishUnary(ctx, status, operation);
  auto* reactor = new HoldingReactor(std::move(ticket));
  reactor->Finish(ToGrpcStatus(status, operation));
  return reactor;
}

absl::Status RequestTooLarge(size_t max_bytes) {
  return absl::InvalidArgumentError(
      absl::StrCat("request is larger than the ", max_bytes, " bytes this method accepts"));
}

absl::Status DecodeRequest(const grpc::ByteBuffer& bytes, size_t max_bytes,
                           google::protobuf::MessageLite& request) {
  if (bytes.Length() > max_bytes) return RequestTooLarge(max_bytes);
  grpc::ByteBuffer copy(bytes);  // shares the slices; the reader needs a mutable buffer
  grpc::ProtoBufferReader reader(&copy);
  if (!reader.status().ok() || !request.ParseFromZeroCopyStream(&reader)) {
    return absl::InvalidArgumentError(
        absl::StrCat("request is not a valid ", request.GetTypeName(), " message"));
  }
  return absl::OkStatus();
}

absl::Status EncodeResponse(const google::protobuf::MessageLite& response, grpc::ByteBuffer* bytes) {
  const size_t size = response.ByteSizeLong();
  grpc::ProtoBufferWriter writer(bytes, grpc::kProtoBufferWriterMaxBufferLength,
                                 static_cast<int>(size));
  if (!response.SerializeToZeroCopyStream(&writer)) {
    return absl::InternalError("response does not serialize");
  }
  return absl::OkStatus();
}

std::string TakeRequestId(grpc::CallbackServerContext& ctx) {
  std::string id;
  const auto& metadata = ctx.client_metadata();
  if (auto it = metadata.find("x-request-id"); it != metadata.end()) {
    const grpc::string_ref v = it->second;
    const bool well_formed =
        !v.empty() && v.size() <= 64 && std::all_of(v.begin(), v.end(), [](char c) {
          return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' ||
                 c == '-';
        });
    if (well_formed) id.assign(v.data(), v.size());
  }
  if (id.empty()) {
    // Not a secret: unique enough to find a call in logs and the audit log.
    thread_local std::mt19937_64 rng{std::random_device{}()};
    id = absl::StrFormat("%016x", rng());
  }
  ctx.AddInitialMetadata("x-request-id", id);
  return id;
}

std::string CallerIdentity(const grpc::CallbackServerContext& ctx) {
  std::shared_ptr<const grpc::AuthContext> auth = ctx.auth_context();
  if (!auth || !auth->IsPeerAuthenticated()) return "";
  CertificateNames names;
  for (const grpc::string_ref& v : auth->FindPropertyValues("peer_spiffe_id")) {
    names.spiffe_id.assign(v.data(), v.size());
    break;
  }
  for (const grpc::string_ref& v : auth->FindPropertyValues("x509_subject_alternative_name")) {
    std::string san(v.data(), v.size());
    switch (ClassifySan(san)) {
      case SanKind::kUri:
        names.uri_sans.push_back(std::move(san));
        break;
      case SanKind::kDns:
        names.dns_sans.push_back(std::move(san));
        break;
      case SanKind::kIp:
      case SanKind::kEmail:
        break;
    }
  }
  for (const grpc::string_ref& v : auth->FindPropertyValues("x509_common_name")) {
    names.common_name.assign(v.data(), v.size());
    break;
  }
  return IdentityOf(names);
}

}  // namespace kms::server
