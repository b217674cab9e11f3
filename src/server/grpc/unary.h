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
//   - the call runs inside a CallScope (gate/call_record.h): its request id (the
//     client's `x-request-id` metadata when well-formed, else a new one; sent back as
//     initial metadata) is in every log line and its audit record; the gate notes its
//     decision; the key versions of the answer are read from the response
//     (AuditKeyVersions) and the final status is reported to the gate once;
//   - the response is serialized into the raw buffer and the status mapped once
//     (grpc_status.h);
//   - the request's method, final code and latency are recorded (rpc_metrics.h).
// Handlers run on gRPC's callback threads.
#pragma once

#include <chrono>
#include <algorithm>
#include <cstddef>
#include <vector>
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "google/protobuf/arena.h"
#include "google/protobuf/message_lite.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/byte_buffer.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kms/common/status.h"
#include "src/server/gate/call_gate.h"
#include "src/server/gate/call_record.h"
#include "src/server/gate/inflight_budget.h"
#include "src/server/grpc/grpc_status.h"
#include "src/server/grpc/rpc_metrics.h"
#include "src/server/grpc/rpc_pool.h"
#include <memory>

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

// Overwrites a string's bytes (OPENSSL_cleanse), then empties it.
void CleanseString(std::string* s);

// Wipes the secret fields of a request or a response once the call no longer needs them
// (the response has been serialized): every `plaintext` (Encrypt's and Decrypt's PII, a
// data key) and every blind-index `value` (PII), also inside batch `items`, batch
// `results` and a result's `ok`. Messages without such fields are left alone. The
// serialized copy in the gRPC buffer is gRPC's (docs/architecture.md, "Known limits").
template <typename Message>
void WipeSecrets(Message& m) {
  if constexpr (requires { CleanseString(m.mutable_plaintext()); }) {
    CleanseString(m.mutable_plaintext());
  }
  if constexpr (requires { CleanseString(m.mutable_value()); }) {
    CleanseString(m.mutable_value());
  }
  if constexpr (requires { m.has_ok(); m.mutable_ok(); }) {
    if (m.has_ok()) WipeSecrets(*m.mutable_ok());
  }
  if constexpr (requires { m.mutable_items()->begin(); }) {
    for (auto& item : *m.mutable_items()) WipeSecrets(item);
  }
  if constexpr (requires { m.mutable_results()->begin(); }) {
    for (auto& result : *m.mutable_results()) WipeSecrets(result);
  }
}

// The call's request id: the client's `x-request-id` metadata when it is 1-64 characters
// of [A-Za-z0-9._-], else 16 new hex digits. Also sent back as initial metadata.
std::string TakeRequestId(grpc::CallbackServerContext& ctx);

// The key versions an answer names, for its audit record: "dek:N" (Encrypt, Decrypt,
// a tenant's primary DEK), "kek:N" (a KEK rotation), "dek:1,2" (a batch); "" when none.
template <typename Response>
std::string AuditKeyVersions(const Response& r) {
  if constexpr (requires { r.dek_version(); }) {
    return absl::StrCat("dek:", r.dek_version());
  } else if constexpr (requires { r.primary_kek_version(); }) {
    return absl::StrCat("kek:", r.primary_kek_version());
  } else if constexpr (requires { r.tenant().primary_dek_version(); }) {
    return absl::StrCat("dek:", r.tenant().primary_dek_version());
  } else if constexpr (requires { r.results(0).ok().dek_version(); }) {
    std::vector<uint32_t> versions;
    for (const auto& result : r.results()) {
      if (!result.has_ok()) continue;
      const uint32_t v = result.ok().dek_version();
      if (std::find(versions.begin(), versions.end(), v) == versions.end() && versions.size() < 8) {
        versions.push_back(v);
      }
    }
    if (versions.empty()) return "";
    std::sort(versions.begin(), versions.end());
    return absl::StrCat("dek:", absl::StrJoin(versions, ","));
  } else {
    return "";
  }
}
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

// The reactor of a call that ServeUnary finishes later, from any thread (FinishUnary
// with the reactor): gRPC's default one, or one that holds `ticket` until gRPC is done
// with the call (as FinishUnaryHolding).
grpc::ServerUnaryReactor* StartUnaryHolding(grpc::CallbackServerContext* ctx,
                                            InflightBudget::Ticket ticket);

// How a method answers a request over its size limit: INVALID_ARGUMENT for every method
// but VerifyJwt, whose request is nothing but the token: a token too long to verify is a
// rejected token, UNAUTHENTICATED ("token rejected: ...") as key_service.proto promises.
// A request that does not decode is INVALID_ARGUMENT on every method.
enum class TooLarge { kInvalidArgument, kRejectedToken };

// Body: absl::Status(const std::string& identity, const Request&, Response*).
//
// With an RpcPool installed (the server does), the body runs on the pool, not on the
// gRPC callback thread, and may run after the handler has returned: a body captures
// only `this` (the service) and reads the call through its arguments — never a handler
// local, `ctx`, `in` or `out`. When the pool's queue is full the call ends UNAVAILABLE
// at once.
template <typename Request, typename Response, typename Body>
grpc::ServerUnaryReactor* ServeUnary(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* in,
                                     grpc::ByteBuffer* out, size_t max_request_bytes,
                                     std::string_view method, Body&& body,
                                     TooLarge too_large = TooLarge::kInvalidArgument) {
  const auto started = std::chrono::steady_clock::now();
  // On the callback thread: the request id's metadata goes out with the initial metadata.
  auto call = std::make_shared<CallRecord>(
      CallRecord{.request_id = TakeRequestId(*ctx), .method = method});
  absl::Status status;
  // Size first (no memory spent), then the budget, then decoding. Neither rejection
  // reaches the gate (no identity is read), so neither is audited; both are counted.
  if (in->Length() > max_request_bytes) {
    status = RequestTooLarge(max_request_bytes);
    if (too_large == TooLarge::kRejectedToken) {
      status = absl::UnauthenticatedError(absl::StrCat("token rejected: ", status.message()));
    }
    RecordRpc(method, status, started);
    return FinishUnary(ctx, status, method);
  }
  absl::StatusOr<InflightBudget::Ticket> ticket = AdmitToDoor(in->Length());
  if (!ticket.ok()) {
    RecordRpc(method, ticket.status(), started);
    return FinishUnary(ctx, ticket.status(), method);
  }
  // The reactor holds the budget's ticket until gRPC is done with the call.
  grpc::ServerUnaryReactor* reactor = StartUnaryHolding(ctx, std::move(*ticket));
  auto run = [ctx, in, out, max_request_bytes, method, started, reactor, call,
              body = std::forward<Body>(body)]() mutable {
    absl::Status status;
    {
      // Request and response on a protobuf arena whose first block is on this stack: a
      // batch's items, results and their strings are bump-allocated and freed at once
      // (issue 12: per-item malloc/free was a third of EncryptBatch's CPU).
      alignas(16) char first_block[4096];
      google::protobuf::ArenaOptions arena_options;
      arena_options.initial_block = first_block;
      arena_options.initial_block_size = sizeof(first_block);
      google::protobuf::Arena arena(arena_options);
      Request& request = *google::protobuf::Arena::CreateMessage<Request>(&arena);
      Response& response = *google::protobuf::Arena::CreateMessage<Response>(&arena);
      CallScope scope(call.get());
      status = DecodeRequest(*in, max_request_bytes, request);
      if (status.ok()) status = body(CallerIdentity(*ctx), request, &response);
      if (status.ok()) call->key_versions = AuditKeyVersions(response);
      if (call->gate != nullptr) status = call->gate->Report(*call, status);
      if (status.ok()) status = EncodeResponse(response, out);
      WipeSecrets(response);
      WipeSecrets(request);
    }
    RecordRpc(method, status, started);
    FinishUnary(ctx, reactor, status, method);
  };
  RpcPool* pool = RpcPool::Installed();
  if (pool == nullptr) {
    run();
  } else if (!pool->Submit(std::move(run))) {
    const absl::Status busy = absl::UnavailableError("every request thread is busy");
    RecordRpc(method, busy, started);
    FinishUnary(ctx, reactor, busy, method);
  }
  return reactor;
}

}  // namespace kms::server
