// The one pattern for every unary RPC of the gRPC door. Methods are registered as raw
// callback methods (WithRawCallbackMethod_*, byte buffers in and out), so the door
// decodes each request itself:
//   - a request over the method's size limit is refused before it is decoded;
//   - bytes that do not decode as the method's request message (truncated, garbage, a
//     proto3 string that is not UTF-8) get INVALID_ARGUMENT naming the message type and
//     no input byte. (gRPC 1.51 answers such requests itself with UNIMPLEMENTED and an
//     empty message when it decodes them: grpc/grpc#30454.)
//   - within its size limit, a request is admitted by the door's in-flight budget
//     (gate/inflight_budget.h, SetDoorBudget) before it is decoded: RESOURCE_EXHAUSTED
//     with a retry hint beyond it; the call holds its share until its response is sent;
//   - the body gets the caller's identity (gate/identity.h), the decoded request and the
//     response to fill; it asks the CallGate and calls the domain;
//   - the response is serialized into the raw buffer and the status mapped once
//     (grpc_status.h).
// Handlers run on gRPC's callback threads.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "google/protobuf/message_lite.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/byte_buffer.h"
#include "kms/common/status.h"
#include "src/server/gate/inflight_budget.h"
#include "src/server/grpc/grpc_status.h"

namespace kms::server {

// INVALID_ARGUMENT when `bytes` is longer than `max_bytes` or does not decode into
// `request`.
absl::Status DecodeRequest(const grpc::ByteBuffer& bytes, size_t max_bytes,
                           google::protobuf::MessageLite& request);
// INVALID_ARGUMENT: the request is larger than `max_bytes`.
absl::Status RequestTooLarge(size_t max_bytes);
// INTERNAL when serialization fails.
absl::Status EncodeResponse(const google::protobuf::MessageLite& response, grpc::ByteBuffer* bytes);

// The identity of the verified client certificate; empty when it names none.
std::string CallerIdentity(const grpc::CallbackServerContext& ctx);

// The in-flight budget of the gRPC door: one per process, installed by the server
// before its listener starts and removed (nullptr) after it stopped. Null: no budget.
// Thread-safe.
void SetDoorBudget(InflightBudget* budget);

// The door's admission of a request of `bytes` (OK with an empty ticket when no budget
// is installed), RESOURCE_EXHAUSTED beyond the budget.
absl::StatusOr<InflightBudget::Ticket> AdmitToDoor(size_t bytes);

// Finishes like FinishUnary, holding `ticket` until gRPC is done with the call (the
// response sent or the call cancelled).
grpc::ServerUnaryReactor* FinishUnaryHolding(grpc::CallbackServerContext* ctx,
                                             const absl::Status& status,
                                             std::string_view operation,
                                             InflightBudget::Ticket ticket);

// How a method answers a request over its size limit: INVALID_ARGUMENT for every method
// but VerifyJwt, whose request is nothing but the token: a token too long to verify is a
// rejected token, UNAUTHENTICATED ("token rejected: ...") as key_service.proto promises.
// A request that does not decode is INVALID_ARGUMENT on every method.
enum class TooLarge { kInvalidArgument, kRejectedToken };

// Body: absl::Status(const std::string& identity, const Request&, Response*).
template <typename Request, typename Response, typename Body>
grpc::ServerUnaryReactor* ServeUnary(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                     grpc::ByteBuffer* out, size_t max_request_bytes,
                                     std::string_view method, Body&& body,
                                     TooLarge too_large = TooLarge::kInvalidArgument) {
  // Size first (no memory spent), then the budget, then decoding.
  if (in->Length() > max_request_bytes) {
    const absl::Status status = RequestTooLarge(max_request_bytes);
    return FinishUnary(
        ctx,
        too_large == TooLarge::kRejectedToken
            ? absl::UnauthenticatedError(absl::StrCat("token rejected: ", status.message()))
            : status,
        method);
  }
  absl::StatusOr<InflightBudget::Ticket> ticket = AdmitToDoor(in->Length());
  if (!ticket.ok()) return FinishUnary(ctx, ticket.status(), method);
  absl::Status status;
  {
    Request request;
    Response response;
    status = DecodeRequest(*in, max_request_bytes, request);
    if (!status.ok()) return FinishUnary(ctx, status, method);
    status = body(CallerIdentity(*ctx), request, &response);
    if (status.ok()) status = EncodeResponse(response, out);
  }
  return FinishUnaryHolding(ctx, status, method, std::move(*ticket));
}

}  // namespace kms::server
