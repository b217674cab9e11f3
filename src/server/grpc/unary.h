// The one pattern for every unary RPC of the gRPC door. Methods are registered as raw
// callback methods (WithRawCallbackMethod_*, byte buffers in and out), so the door
// decodes each request itself:
//   - a request over the method's size limit is refused before it is decoded;
//   - bytes that do not decode as the method's request message (truncated, garbage, a
//     proto3 string that is not UTF-8) get INVALID_ARGUMENT naming the message type and
//     no input byte. (gRPC 1.51 answers such requests itself with UNIMPLEMENTED and an
//     empty message when it decodes them: grpc/grpc#30454.)
//   - the body gets the caller's identity (gate/identity.h), the decoded request and the
//     response to fill; it asks the CallGate and calls the domain;
//   - the response is serialized into the raw buffer and the status mapped once
//     (grpc_status.h);
//   - the request's method, final code and latency are recorded (rpc_metrics.h).
// Handlers run on gRPC's callback threads.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>

#include "google/protobuf/message_lite.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/byte_buffer.h"
#include "kms/common/status.h"
#include "src/server/grpc/grpc_status.h"
#include "src/server/grpc/rpc_metrics.h"

namespace kms::server {

// INVALID_ARGUMENT when `bytes` is longer than `max_bytes` or does not decode into
// `request`.
absl::Status DecodeRequest(const grpc::ByteBuffer& bytes, size_t max_bytes,
                           google::protobuf::MessageLite& request);
// INTERNAL when serialization fails.
absl::Status EncodeResponse(const google::protobuf::MessageLite& response, grpc::ByteBuffer* bytes);

// The identity of the verified client certificate; empty when it names none.
std::string CallerIdentity(const grpc::CallbackServerContext& ctx);

// Wipes a response's `plaintext` field (Decrypt's PII, a data key) as soon as it has
// been serialized; responses without one are left alone. The serialized copy in the
// gRPC buffer is gRPC's (docs/architecture.md, "Known limits").
void CleanseString(std::string* s);
template <typename Response>
void WipePlaintext(Response& response) {
  if constexpr (requires { response.mutable_plaintext(); }) {
    CleanseString(response.mutable_plaintext());
  }
}

// Body: absl::Status(const std::string& identity, const Request&, Response*).
template <typename Request, typename Response, typename Body>
grpc::ServerUnaryReactor* ServeUnary(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                     grpc::ByteBuffer* out, size_t max_request_bytes,
                                     std::string_view method, Body&& body) {
  const auto started = std::chrono::steady_clock::now();
  Request request;
  Response response;
  absl::Status status = DecodeRequest(*in, max_request_bytes, request);
  if (status.ok()) status = body(CallerIdentity(*ctx), request, &response);
  if (status.ok()) status = EncodeResponse(response, out);
  WipePlaintext(response);
  RecordRpc(method, status, started);
  return FinishUnary(ctx, status, method);
}

}  // namespace kms::server
