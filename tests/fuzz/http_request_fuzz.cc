// The bytes a peer sends to the HTTPS listener: http::ParseRequestBytes, the listener's
// own parser with its header and body limits (small ones here, so the fuzzer reaches
// them), and the Request its handlers would see.
// Invariants: the answer to a request that does not parse is 400, 413 or 431; a parsed
// request never holds more body than the limit, consumed no more bytes than were sent,
// and its path has no '?'.
#include "src/server/http/https_server.h"
#include "tests/fuzz/fuzz_targets.h"
#include "tests/fuzz/fuzz_util.h"

namespace kms::fuzz {

int FuzzHttpRequest(const uint8_t* data, size_t size) {
  config::HttpConfig limits;
  limits.max_header_bytes = 1024;
  limits.max_body_bytes = 2048;
  const server::http::ParsedBytes parsed =
      server::http::ParseRequestBytes(AsText({data, size}), limits);
  if (!parsed.complete) {
    FUZZ_CHECK(parsed.status == 0 || parsed.status == 400 || parsed.status == 413 ||
               parsed.status == 431);
    return 0;
  }
  FUZZ_CHECK(parsed.status == 0);
  FUZZ_CHECK(parsed.consumed <= size);
  FUZZ_CHECK(static_cast<int64_t>(parsed.request.body.size()) <= limits.max_body_bytes);
  FUZZ_CHECK(parsed.request.path.find('?') == std::string::npos);
  FUZZ_CHECK(!parsed.request.method.empty());
  return 0;
}

}  // namespace kms::fuzz
