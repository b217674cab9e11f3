// The HTTPS door: an event-driven HTTP/1.1 server over TLS 1.3 (Boost.Beast/Asio, all of
// it inside https_server.cc), bounded in everything a peer can hold before it
// authenticates (config::HttpConfig: connections in total and per peer address, TLS
// handshake, request header and per-request deadlines, idle keep-alive, header and body
// sizes, queued blocking work). docs/architecture.md ("The HTTPS door") says why Beast
// and how each bound is enforced.
//
// Threads: one event-loop thread runs every socket, timer and parser, and the handlers
// registered as kNonBlocking; handlers registered as kBlocking run on a small pool of
// worker threads (config http.worker_threads) so they never stall the loop. No thread
// is ever held by a slow peer.
//
// TLS: TLS 1.3 only; every response carries HSTS. A client certificate is asked for but
// not required: when one is sent it must chain to tls.client_ca_file or the handshake
// fails; when it verifies, the handler sees its names in Request::client_certificate.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "kms/common/status.h"
#include "src/config/config.h"

namespace kms::server::http {

// The names of a client certificate that verified against the client CA. The edge turns
// them into an identity with the same rule as the gRPC door (src/server/gate/identity.h).
struct ClientCertificate {
  std::vector<std::string> uri_sans;
  std::vector<std::string> dns_sans;
  std::string common_name;  // empty when the subject has none
  // SHA-256 of the certificate's DER encoding (32 bytes): what a credential bound to
  // this certificate records (RFC 8705 "x5t#S256").
  std::string sha256;
};

struct Request {
  std::string method;  // as sent, e.g. "GET", "POST"
  std::string path;    // the request target before '?', not percent-decoded
  std::string query;   // after '?', raw; empty when none
  // Header fields in arrival order, names as sent. Header() looks one up.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;          // at most http.max_body_bytes
  std::string peer_address;  // IP literal of the TCP peer
  // Set only when the peer presented a certificate that verified.
  std::optional<ClientCertificate> client_certificate;

  bool authenticated() const { return client_certificate.has_value(); }
  // The first field named `name` (ASCII case-insensitive), or nullopt.
  std::optional<std::string_view> Header(std::string_view name) const;
};

struct Response {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // added as given
};

// Called once per request. Must not throw (an exception becomes a 500).
using Handler = std::function<Response(const Request&)>;

enum class HandlerKind {
  // Runs on the event loop: must return in microseconds and never block (health,
  // readiness, a snapshot such as the JWKS).
  kNonBlocking,
  // Runs on the worker pool (anything that may wait on the HSM, the store or a lock held
  // across I/O). When http.max_queued_requests are already waiting or running the
  // request gets 503 with Retry-After at once. A handler still running at the request
  // deadline gets its response dropped: the client has had a 503 by then.
  kBlocking,
};

struct Route {
  // Methods served; GET also serves HEAD. Other methods on the path get 405 with Allow.
  std::vector<std::string> methods = {"GET"};
  HandlerKind kind = HandlerKind::kNonBlocking;
  // kBlocking only. When > 0, a request whose handler has not answered this many
  // milliseconds after it was queued gets `deadline_response` at once (the connection
  // stays open; the handler's late answer is dropped): a door with a latency budget
  // answers its protocol's own error rather than late.
  int64_t handler_deadline_ms = 0;
  Response deadline_response;
  // kBlocking only: the answer when http.max_queued_requests are already waiting or
  // running; unset: 503 with Retry-After.
  std::optional<Response> busy_response;
  // The largest request body this route takes (413 beyond); 0: http.max_body_bytes.
  // Applied once the header has named the route, before the body is read.
  int64_t max_body_bytes = 0;
  // The listener's own refusals on this route (413, 405, 503 busy/timed out) as
  // {"errors":["..."]} in application/json (Vault's error shape) instead of plain text.
  bool json_errors = false;
};

// Per-listener TLS choices beyond config::TlsConfig.
struct ListenerOptions {
  // A client certificate (chaining to tls.client_ca_file) is required, not only asked for.
  bool require_client_certificate = false;
  // When set, a client certificate whose subject CN differs is refused: the connection
  // is closed right after the handshake, before any request is read.
  std::string client_common_name;
};

// The listener's request parsing as a pure function, for the fuzz target and tests: the
// bytes a peer sent on one connection, parsed with the listener's parser and limits (fed
// in the pieces it reads) into the Request its handlers see (no peer fields).
struct ParsedBytes {
  bool complete = false;  // a whole request parsed; false with status 0: needs more bytes
  int status = 0;         // the error the listener answers instead (400, 413, 431), or 0
  size_t consumed = 0;    // bytes of the request (a pipelined next one may follow)
  bool keep_alive = false;
  Request request;
};
ParsedBytes ParseRequestBytes(std::string_view bytes, const config::HttpConfig& limits);

class HttpsServer {
 public:
  // Binds `listen` (HOST:PORT, port 0 picks one) and loads the TLS certificate, key and
  // client CA of `tls` (an empty tls.client_ca_file: client certificates are not asked for). INVALID_ARGUMENT for a bad address, FAILED_PRECONDITION for TLS
  // files that do not load, UNAVAILABLE when the address cannot be bound. `limits` must
  // have passed config::ValidateConfig. Serves nothing until Start().
  static absl::StatusOr<std::unique_ptr<HttpsServer>> Bind(const std::string& listen,
                                                          const config::TlsConfig& tls,
                                                          const config::HttpConfig& limits,
                                                          ListenerOptions options = {});
  ~HttpsServer();  // Stop()s

  // Registers `handler` for exactly `path` (no prefix match); call before Start(). Unknown
  // paths get 404.
  void Handle(const std::string& path, Handler handler, Route route = {});
  // Registers `handler` for every path that starts with `prefix` and has no exact route
  // (the longest prefix wins); the handler reads Request::path. Call before Start().
  void HandlePrefix(const std::string& prefix, Handler handler, Route route = {});

  // Start the event loop and workers; Stop closes the listener and every connection,
  // waits for the threads, and may be called more than once, from any thread but a
  // handler's.
  void Start();
  void Stop();
  int port() const;

  // Connections open now (for tests and metrics); thread-safe.
  int open_connections() const;

  class Impl;

 private:
  explicit HttpsServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kms::server::http
