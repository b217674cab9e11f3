// CallRecord: what the gate and a door know about one call, for its audit record.
//
// The door opens a CallScope around the call (grpc/unary.h ServeUnary does for every
// RPC); CallGate::Admit, when it decides, fills in who asked what about which tenant
// (and whether the call is a change that must be recorded durably); the door adds the
// key versions from its answer and reports the final status once, through
// CallGate::Report. A call the gate never decided (a request that did not decode, an
// invalid tenant id) reached no operation and leaves no audit record.
//
// The current record is per thread: gRPC callback handlers and the HTTPS workers run a
// call on one thread from gate to answer.
#pragma once

#include <string>
#include <string_view>

#include "src/common/request_context.h"

namespace kms::server {

class CallGate;

struct CallRecord {
  std::string request_id;
  std::string_view method;  // "Encrypt", "CreateTenant", ...: the audit operation
  // Filled by CallGate::Admit:
  const CallGate* gate = nullptr;  // null: no decision was made
  std::string identity;
  std::string tenant;
  bool durable = false;  // a change: its record is written before the call returns
  // Filled by the door from its answer:
  std::string key_versions;
};

class CallScope {
 public:
  explicit CallScope(CallRecord* record)
      : previous_(current_), request_id_(record->request_id) {
    current_ = record;
  }
  ~CallScope() { current_ = previous_; }
  CallScope(const CallScope&) = delete;
  CallScope& operator=(const CallScope&) = delete;

  // The record of the call this thread serves; null outside a scope.
  static CallRecord* Current() { return current_; }

 private:
  CallRecord* previous_;
  RequestIdScope request_id_;
  static inline thread_local CallRecord* current_ = nullptr;
};

}  // namespace kms::server
