// The request id of the call the current thread is serving, for log lines (src/common/
// log.h) and audit records. Set for the duration of a call by the door (through the
// gate's CallScope, src/server/gate/call_record.h); empty outside a call. Header-only.
#pragma once

#include <string_view>

namespace kms {

class RequestIdScope {
 public:
  explicit RequestIdScope(std::string_view id) : previous_(current_) { current_ = id; }
  ~RequestIdScope() { current_ = previous_; }
  RequestIdScope(const RequestIdScope&) = delete;
  RequestIdScope& operator=(const RequestIdScope&) = delete;

  // The id of the call this thread serves ("" when none); valid while its scope lives.
  static std::string_view Current() { return current_; }

 private:
  std::string_view previous_;
  static inline thread_local std::string_view current_;
};

}  // namespace kms
