// kmsd's log lines (spdlog, to stderr), in one of two formats:
//
//   json  one JSON object per line (JSON Lines), for collectors:
//         {"time":"2026-01-02T03:04:05.678Z","level":"info","node":"kmsd-0",
//          "request_id":"9f2c...","event":"tenant_created","fields":{"tenant":"acme",...}}
//         "request_id" is the call being served ("" outside a call: src/common/
//         request_context.h); a plain message has "event":"message" and
//         "fields":{"message":"..."}.
//   text  one line for people: "2026-01-02T03:04:05.678Z info [9f2c...] tenant_created
//         tenant=acme by=spiffe://..." (the request id only inside a call).
//
// Default: json when stderr is not a terminal, text when it is (kmsd --log-format
// forces either). Nothing secret is ever logged: no key bytes, plaintext, PIN, password,
// nor a hash of them (tests/e2e checks the log for a plaintext marker and the PIN in
// both formats). Thread-safe after SetUpLogging.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

#include "spdlog/spdlog.h"

namespace kms {

enum class LogFormat { kJson, kText };

// "json"/"text"/"" ("": by whether stderr is a terminal). Anything else: false.
bool ParseLogFormat(std::string_view name, LogFormat* out);
LogFormat DefaultLogFormat();

// Installs the stderr logger as spdlog's default, in `format`.
void SetUpLogging(LogFormat format);
// The node id every line carries from now on (known once the config is read).
void SetLogNode(std::string_view node);

// A structured event: a name (snake_case) and fields. Values are strings; callers pass
// ids and numbers, never secrets.
void LogEvent(spdlog::level::level_enum level, std::string_view event,
              std::initializer_list<std::pair<std::string_view, std::string>> fields);

}  // namespace kms
