// The one translation unit that includes Boost.Asio/Beast (they are header-only and
// template-heavy: kept here so the rest of the build does not pay for them).
#include "src/server/http/https_server.h"

#include <openssl/crypto.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <array>
#include <atomic>
#include <chrono>
#include <map>
#include <optional>
#include <thread>
#include <unordered_map>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "spdlog/spdlog.h"
#include "src/common/secret_file.h"
#include "src/common/sync.h"
#include "src/common/text_file.h"

namespace kms::server::http {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = boost::asio::ip::tcp;
using SteadyClock = std::chrono::steady_clock;
using ErrorCode = boost::system::error_code;

namespace {

// A PEM private key (RSA-4096 with headers is about 3.3 KiB).
constexpr size_t kMaxTlsKeyBytes = 64 * 1024;


constexpr char kHsts[] = "max-age=63072000; includeSubDomains; preload";
constexpr size_t kFirstReadBytes = 4096;
// After an error response the peer may still be sending: read and drop at most this
// much, for at most kLingerTime, so it reads our answer instead of a reset.
constexpr size_t kLingerBytes = 1 << 20;
constexpr auto kLingerTime = std::chrono::seconds(1);
// The least time a response gets to be written, even when the request deadline is near.
constexpr auto kMinWriteTime = std::chrono::seconds(1);
// Pause before accepting again after accept() failed (EMFILE, ENFILE, ENOBUFS...).
constexpr auto kAcceptRetry = std::chrono::milliseconds(100);

absl::Status SplitHostPort(const std::string& listen, std::string* host, std::string* port) {
  size_t colon = listen.rfind(':');
  int number = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(listen.substr(colon + 1), &number) ||
      number < 0 || number > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("listen address '", listen, "' is not HOST:PORT"));
  }
  *host = listen.substr(0, colon);
  *port = listen.substr(colon + 1);
  if (host->size() > 2 && host->front() == '[' && host->back() == ']') {
    *host = host->substr(1, host->size() - 2);
  }
  return absl::OkStatus();
}

std::string Asn1Text(const ASN1_STRING* s) {
  return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                     static_cast<size_t>(ASN1_STRING_length(s)));
}

// The names of the peer's certificate when it sent one and it verified.
std::optional<ClientCertificate> VerifiedClientCertificate(SSL* ssl) {
  X509* peer = SSL_get0_peer_certificate(ssl);
  if (peer == nullptr || SSL_get_verify_result(ssl) != X509_V_OK) return std::nullopt;
  ClientCertificate cert;
  auto* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(peer, NID_subject_alt_name, nullptr, nullptr));
  if (names != nullptr) {
    for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
      const GENERAL_NAME* name = sk_GENERAL_NAME_value(names, i);
      if (name->type == GEN_URI) cert.uri_sans.push_back(Asn1Text(name->d.uniformResourceIdentifier));
      if (name->type == GEN_DNS) cert.dns_sans.push_back(Asn1Text(name->d.dNSName));
    }
    GENERAL_NAMES_free(names);
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_len = 0;
  if (X509_digest(peer, EVP_sha256(), digest, &digest_len) == 1) {
    cert.sha256.assign(reinterpret_cast<const char*>(digest), digest_len);
  }
  X509_NAME* subject = X509_get_subject_name(peer);
  int at = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
  if (at >= 0) {
    unsigned char* utf8 = nullptr;
    int n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, at)));
    if (n >= 0) cert.common_name.assign(reinterpret_cast<char*>(utf8), static_cast<size_t>(n));
    OPENSSL_free(utf8);
  }
  return cert;
}

std::string Str(beast::string_view v) { return std::string(v.data(), v.size()); }

Response Call(const Handler& handler, const Request& request) {
  try {
    return handler(request);
  } catch (const std::exception& e) {
    spdlog::error("HTTPS handler for {} threw: {}", request.path, e.what());
  } catch (...) {
    spdlog::error("HTTPS handler for {} threw", request.path);
  }
  return Response{.status = 500, .body = "internal error\n"};
}

bool IsParseError(const ErrorCode& ec) {
  return ec.category() == bhttp::make_error_code(bhttp::error::bad_method).category() &&
         ec != bhttp::error::end_of_stream && ec != bhttp::error::partial_message;
}

using RequestParser = bhttp::request_parser<bhttp::string_body>;

// The parser every request is read with: the header and body limits of http.*.
void ConfigureParser(RequestParser& parser, const config::HttpConfig& limits) {
  parser.header_limit(static_cast<uint32_t>(limits.max_header_bytes));
  parser.body_limit(static_cast<uint64_t>(limits.max_body_bytes));
}

// The status a read error is answered with: 431, 413, 400; 0 when the connection just
// ends (end of stream, reset).
int StatusForReadError(const ErrorCode& ec) {
  if (ec == bhttp::error::header_limit || ec == bhttp::error::buffer_overflow) return 431;
  if (ec == bhttp::error::body_limit) return 413;
  if (IsParseError(ec)) return 400;
  return 0;
}

// A parsed message as the handlers see it (no peer fields).
// Overwrites a body's bytes, then empties it: request and response bodies carry
// plaintext (the Vault and XKS doors), and freed memory is not wiped by the allocator.
void Cleanse(std::string& body) {
  if (!body.empty()) OPENSSL_cleanse(body.data(), body.size());
  body.clear();
}

Request ToRequest(RequestParser& parser) {
  auto& req = parser.get();
  Request request;
  request.method = Str(req.method_string());
  std::string_view target(req.target().data(), req.target().size());
  size_t q = target.find('?');
  request.path = std::string(target.substr(0, q));
  if (q != std::string_view::npos) request.query = std::string(target.substr(q + 1));
  for (const auto& field : req) {
    request.headers.emplace_back(Str(field.name_string()), Str(field.value()));
  }
  request.body = std::move(req.body());
  return request;
}

}  // namespace

ParsedBytes ParseRequestBytes(std::string_view bytes, const config::HttpConfig& limits) {
  RequestParser parser;
  ConfigureParser(parser, limits);
  ParsedBytes out;
  // Given everything received so far, as the listener's buffer holds it.
  size_t offset = 0;
  while (!parser.is_done()) {
    ErrorCode ec;
    const size_t used =
        parser.put(asio::buffer(bytes.data() + offset, bytes.size() - offset), ec);
    offset += used;
    if (ec == bhttp::error::need_more || (!ec && used == 0)) {
      // Needs more bytes (Beast may also say so by consuming nothing, e.g. inside a
      // chunk whose data has not all arrived).
      if (used == 0 || offset == bytes.size()) return out;
      continue;
    }
    if (ec) {
      const int status = StatusForReadError(ec);
      out.status = status == 0 ? 400 : status;
      return out;
    }
  }
  out.complete = true;
  out.consumed = offset;
  out.keep_alive = parser.get().keep_alive();
  out.request = ToRequest(parser);
  return out;
}

std::optional<std::string_view> Request::Header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (absl::EqualsIgnoreCase(absl::string_view(k.data(), k.size()),
                               absl::string_view(name.data(), name.size()))) {
      return std::string_view(v);
    }
  }
  return std::nullopt;
}

class Connection;

struct RouteEntry {
  Handler handler;
  Route route;
};

class HttpsServer::Impl {
 public:
  Impl(const config::HttpConfig& limits, ListenerOptions options)
      : limits_(limits), options_(std::move(options)), ssl_(ssl::context::tls_server) {}

  absl::Status Configure(const std::string& listen, const config::TlsConfig& tls);
  void Start();
  void Stop();

  // Event-loop thread only, from here down (Connection calls them).
  void Unregister(Connection* conn);
  const RouteEntry* Find(const std::string& path) const {
    auto it = routes_.find(path);
    if (it != routes_.end()) return &it->second;
    const RouteEntry* best = nullptr;
    size_t best_size = 0;
    for (const auto& [prefix, entry] : prefix_routes_) {
      if (path.starts_with(prefix) && (best == nullptr || prefix.size() > best_size)) {
        best = &entry;
        best_size = prefix.size();
      }
    }
    return best;
  }

  asio::io_context io_;  // first: destroyed last, after everything that uses it
  const config::HttpConfig limits_;
  const ListenerOptions options_;
  ssl::context ssl_;
  tcp::acceptor acceptor_{io_};
  asio::steady_timer accept_retry_{io_};
  // Fixed before Start(); read by the loop and the workers.
  std::map<std::string, RouteEntry> routes_;
  std::map<std::string, RouteEntry> prefix_routes_;
  int64_t max_route_body_ = 0;  // the largest body limit of the listener and its routes
  std::atomic<int> queued_{0};
  std::atomic<int> open_{0};
  int port_ = 0;
  std::optional<asio::thread_pool> workers_;

 private:
  void Accept();
  void OnAccept(const ErrorCode& ec, tcp::socket socket);
  bool MakeRoom();
  void CloseAll();

  bool stopping_ = false;
  // Event-loop thread only.
  std::unordered_map<Connection*, std::shared_ptr<Connection>> conns_;
  std::unordered_map<std::string, int> per_ip_;
  std::thread loop_;
  std::atomic<bool> started_{false};
  Mutex stop_mu_;
  std::atomic<bool> stopped_{false};
};

// One TLS connection: handshake, then requests one at a time (no pipelining in
// parallel), every phase under a deadline. Lives on the event-loop thread; the
// connection table and the pending operations hold it.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  enum class State { kHandshake, kIdle, kHeader, kBody, kHandling, kWriting, kLinger, kClosed };

  Connection(HttpsServer::Impl& server, tcp::socket socket, std::string peer)
      : server_(server),
        stream_(std::move(socket), server.ssl_),
        buffer_(static_cast<size_t>(server.limits_.max_header_bytes) + 64 * 1024),
        timer_(server.io_),
        peer_(std::move(peer)) {}

  const std::string& peer() const { return peer_; }
  State state() const { return state_; }
  SteadyClock::time_point idle_since() const { return idle_since_; }

  void Start() {
    state_ = State::kHandshake;
    Arm(SteadyClock::now() + Ms(server_.limits_.handshake_timeout_ms));
    stream_.async_handshake(ssl::stream_base::server, [self = shared_from_this()](const ErrorCode& ec) {
      if (self->Gone()) return;
      if (ec) return self->Close();
      self->cert_ = VerifiedClientCertificate(self->stream_.native_handle());
      const ListenerOptions& o = self->server_.options_;
      if ((o.require_client_certificate && !self->cert_) ||
          (!o.client_common_name.empty() &&
           (!self->cert_ || self->cert_->common_name != o.client_common_name))) {
        return self->Close();
      }
      self->WaitForRequest();
    });
  }

  void Close() {
    if (state_ == State::kClosed) return;
    state_ = State::kClosed;
    ++timer_gen_;
    timer_.cancel();
    ErrorCode ignored;
    stream_.next_layer().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.next_layer().close(ignored);
    server_.Unregister(this);  // may drop the table's reference: touch nothing after
  }

 private:
  static std::chrono::milliseconds Ms(int64_t ms) { return std::chrono::milliseconds(ms); }
  bool Gone() const { return state_ == State::kClosed; }

  // One deadline at a time; a new one replaces the old.
  void Arm(SteadyClock::time_point at) {
    uint64_t gen = ++timer_gen_;
    timer_.expires_at(at);
    timer_.async_wait([self = shared_from_this(), gen](const ErrorCode& ec) {
      if (ec || gen != self->timer_gen_ || self->Gone()) return;
      self->OnDeadline();
    });
  }

  void OnDeadline() {
    if (state_ == State::kHandling) {
      // The handler runs on; its answer will be dropped (request_gen_ moves on).
      ++request_gen_;
      if (handling_ != nullptr && handling_->route.handler_deadline_ms > 0 &&
          SteadyClock::now() < RequestDeadline()) {
        return Respond(handling_->route.deadline_response);
      }
      return SendError(503, "request timed out\n");
    }
    Close();
  }

  void WaitForRequest() {
    route_ = nullptr;
    parser_.emplace();
    ConfigureParser(*parser_, server_.limits_);
    // The header is read under the largest body limit of any route; once it names its
    // route, that route's own applies (ApplyRouteBodyLimit).
    parser_->body_limit(static_cast<uint64_t>(server_.max_route_body_));
    if (buffer_.size() > 0) return ReadHeader();  // a pipelined request is waiting
    state_ = State::kIdle;
    idle_since_ = SteadyClock::now();
    Arm(idle_since_ + Ms(server_.limits_.idle_timeout_ms));
    stream_.async_read_some(buffer_.prepare(kFirstReadBytes),
                            [self = shared_from_this()](const ErrorCode& ec, size_t n) {
                              if (self->Gone()) return;
                              if (ec) return self->Close();
                              self->buffer_.commit(n);
                              self->ReadHeader();
                            });
  }

  void ReadHeader() {
    state_ = State::kHeader;
    request_start_ = SteadyClock::now();
    // The whole header within header_timeout of its first byte, however it trickles in.
    Arm(request_start_ + Ms(server_.limits_.header_timeout_ms));
    bhttp::async_read_header(stream_, buffer_, *parser_,
                             [self = shared_from_this()](const ErrorCode& ec, size_t) {
                               if (self->Gone()) return;
                               if (ec) return self->OnReadError(ec);
                               if (self->parser_->is_done()) return self->Dispatch();
                               if (self->ApplyRouteBodyLimit()) self->ReadBody();
                             });
  }

  const RouteEntry* RouteOf(beast::string_view target) const {
    std::string path(target.data(), std::min(target.size(), target.find('?')));
    return server_.Find(path);
  }

  // A route may take more or less body than the listener's default. The parser read the
  // header under the largest limit of any route; now the route's own applies (false:
  // the declared Content-Length is over it, and a 413 is on its way).
  bool ApplyRouteBodyLimit() {
    const RouteEntry* entry = RouteOf(parser_->get().target());
    route_ = entry;
    int64_t limit = server_.limits_.max_body_bytes;
    if (entry != nullptr && entry->route.max_body_bytes > 0) limit = entry->route.max_body_bytes;
    if (auto length = parser_->content_length(); length && *length > static_cast<uint64_t>(limit)) {
      SendError(413, "request body too large");
      return false;
    }
    parser_->body_limit(static_cast<uint64_t>(limit));
    return true;
  }

  void ReadBody() {
    state_ = State::kBody;
    Arm(RequestDeadline());
    bhttp::async_read(stream_, buffer_, *parser_, [self = shared_from_this()](const ErrorCode& ec, size_t) {
      if (self->Gone()) return;
      if (ec) return self->OnReadError(ec);
      self->Dispatch();
    });
  }

  SteadyClock::time_point RequestDeadline() const {
    return request_start_ + Ms(server_.limits_.request_timeout_ms);
  }

  void OnReadError(const ErrorCode& ec) {
    switch (StatusForReadError(ec)) {
      case 431:
        return SendError(431, "request header too large\n");
      case 413:
        // A Content-Length over every route's limit is refused with the header: answer
        // in the shape of the route it named.
        if (route_ == nullptr) route_ = RouteOf(parser_->get().target());
        return SendError(413, "request body too large\n");
      case 400:
        return SendError(400, "malformed request\n");
      default:
        Close();  // end of stream, reset, or a closed socket
    }
  }

  void Dispatch() {
    state_ = State::kHandling;
    auto& req = parser_->get();
    keep_alive_ = req.keep_alive();
    head_ = req.method() == bhttp::verb::head;
    Request request = ToRequest(*parser_);
    request.peer_address = peer_;
    request.client_certificate = cert_;

    const RouteEntry* entry = server_.Find(request.path);
    route_ = entry;
    if (entry == nullptr) return Respond(Response{.status = 404, .body = "not found\n"});
    bool allowed = false;
    for (const std::string& m : entry->route.methods) {
      allowed = allowed || m == request.method || (head_ && m == "GET");
    }
    if (!allowed) {
      Response r = Refusal(405, "method not allowed");
      r.headers.emplace_back("Allow", absl::StrJoin(entry->route.methods, ", "));
      return Respond(std::move(r));
    }
    if (entry->route.kind == HandlerKind::kNonBlocking) {
      Response r = Call(entry->handler, request);
      Cleanse(request.body);
      return Respond(std::move(r));
    }

    if (server_.queued_.fetch_add(1) >= server_.limits_.max_queued_requests) {
      server_.queued_.fetch_sub(1);
      if (entry->route.busy_response) return Respond(*entry->route.busy_response);
      Response busy = Refusal(503, "busy");
      busy.headers.emplace_back("Retry-After", "1");
      return Respond(std::move(busy));
    }
    handling_ = entry;
    SteadyClock::time_point deadline = RequestDeadline();
    if (entry->route.handler_deadline_ms > 0) {
      deadline = std::min(deadline, SteadyClock::now() + Ms(entry->route.handler_deadline_ms));
    }
    Arm(deadline);
    asio::post(*server_.workers_, [self = shared_from_this(), gen = request_gen_, entry,
                                   request = std::move(request)]() mutable {
      Response r = Call(entry->handler, request);
      Cleanse(request.body);
      self->server_.queued_.fetch_sub(1);
      asio::post(self->server_.io_, [self, gen, r = std::move(r)]() mutable {
        if (self->Gone() || gen != self->request_gen_ || self->state_ != State::kHandling) {
          Cleanse(r.body);  // a late answer, dropped
          return;
        }
        self->Respond(std::move(r));
      });
    });
  }

  // A refusal of the listener's own, in the route's error shape.
  Response Refusal(int status, const std::string& text) const {
    if (route_ != nullptr && route_->route.json_errors) {
      return Response{.status = status,
                      .content_type = "application/json",
                      .body = absl::StrCat("{\"errors\":[\"", text, "\"]}")};
    }
    return Response{.status = status, .body = absl::StrCat(text, "\n")};
  }

  void SendError(int status, std::string body) {
    keep_alive_ = false;
    linger_ = true;
    while (!body.empty() && body.back() == '\n') body.pop_back();
    Respond(Refusal(status, body));
  }

  void Respond(Response r) {
    handling_ = nullptr;
    res_ = {};
    res_.version(11);
    res_.result(static_cast<unsigned>(r.status));
    res_.set(bhttp::field::strict_transport_security, kHsts);
    res_.set(bhttp::field::content_type, r.content_type);
    for (auto& [name, value] : r.headers) res_.insert(name, value);
    res_.body() = std::move(r.body);
    res_.keep_alive(keep_alive_);
    res_.prepare_payload();
    if (head_) res_.body().clear();  // Content-Length stays that of the GET answer
    state_ = State::kWriting;
    ++request_gen_;
    Arm(std::max(RequestDeadline(), SteadyClock::now() + kMinWriteTime));
    bhttp::async_write(stream_, res_, [self = shared_from_this()](const ErrorCode& ec, size_t) {
      Cleanse(self->res_.body());  // written or failed: the answer's bytes are done with
      if (self->Gone()) return;
      if (ec) return self->Close();
      if (self->linger_) return self->Linger();
      if (!self->keep_alive_) return self->Close();
      self->WaitForRequest();
    });
  }

  // After an error answer: stop sending, drop what the peer still sends for a moment,
  // then close, so the peer reads the answer rather than a reset.
  void Linger() {
    state_ = State::kLinger;
    ErrorCode ignored;
    stream_.next_layer().shutdown(tcp::socket::shutdown_send, ignored);
    Arm(SteadyClock::now() + kLingerTime);
    Drain(0);
  }

  void Drain(size_t drained) {
    if (drained >= kLingerBytes) return Close();
    stream_.next_layer().async_read_some(
        asio::buffer(discard_), [self = shared_from_this(), drained](const ErrorCode& ec, size_t n) {
          if (self->Gone()) return;
          if (ec) return self->Close();
          self->Drain(drained + n);
        });
  }

  HttpsServer::Impl& server_;
  ssl::stream<tcp::socket> stream_;
  beast::flat_buffer buffer_;
  std::optional<RequestParser> parser_;
  bhttp::response<bhttp::string_body> res_;
  asio::steady_timer timer_;
  uint64_t timer_gen_ = 0;
  uint64_t request_gen_ = 0;  // moves on per answer: a late worker result is dropped
  State state_ = State::kHandshake;
  SteadyClock::time_point idle_since_{};
  SteadyClock::time_point request_start_{};
  std::optional<ClientCertificate> cert_;
  const RouteEntry* handling_ = nullptr;  // the blocking route now running, if any
  const RouteEntry* route_ = nullptr;  // of the request being read or served, once known
  std::string peer_;
  bool keep_alive_ = false;
  bool head_ = false;
  bool linger_ = false;
  std::array<char, 4096> discard_{};
};

absl::Status HttpsServer::Impl::Configure(const std::string& listen, const config::TlsConfig& tls) {
  SSL_CTX* ctx = ssl_.native_handle();
  SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
  ErrorCode ec;
  KMS_ASSIGN_OR_RETURN(std::string chain, ReadTextFile(tls.cert_file, "tls.cert_file"));
  ssl_.use_certificate_chain(asio::buffer(chain), ec);
  if (ec) return absl::FailedPreconditionError("HTTPS listener: tls.cert_file does not load");
  {
    // The key stays in locked, wiped memory: Asio takes any buffer.
    KMS_ASSIGN_OR_RETURN(SecretBytes key, ReadSecretFile(tls.key_file, "tls.key_file",
                                                         kMaxTlsKeyBytes, SecretFileTrim::kNone));
    ssl_.use_private_key(asio::buffer(key.data(), key.size()), ssl::context::pem, ec);
  }
  if (ec || SSL_CTX_check_private_key(ctx) != 1) {
    return absl::FailedPreconditionError("HTTPS listener: tls.key_file does not load or match tls.cert_file");
  }
  // Client certificates: asked for (with the CA names), verified when sent, not required
  // (unless the listener requires them). Without a client CA none is asked for.
  if (tls.client_ca_file.empty()) {
    if (options_.require_client_certificate || !options_.client_common_name.empty()) {
      return absl::FailedPreconditionError("HTTPS listener: client certificates need tls.client_ca_file");
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  } else if (SSL_CTX_load_verify_locations(ctx, tls.client_ca_file.c_str(), nullptr) != 1) {
    return absl::FailedPreconditionError("HTTPS listener: tls.client_ca_file does not load");
  } else {
    if (STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(tls.client_ca_file.c_str())) {
      SSL_CTX_set_client_CA_list(ctx, names);
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | (options_.require_client_certificate
                                                   ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT
                                                   : 0),
                       nullptr);
  }
  static const unsigned char kSessionContext[] = "kmsd-https";
  SSL_CTX_set_session_id_context(ctx, kSessionContext, sizeof(kSessionContext) - 1);

  std::string host, port;
  KMS_RETURN_IF_ERROR(SplitHostPort(listen, &host, &port));
  tcp::resolver resolver(io_);
  auto endpoints = resolver.resolve(host, port, tcp::resolver::numeric_service, ec);
  if (ec || endpoints.empty()) {
    return absl::UnavailableError(absl::StrCat("HTTPS listener: cannot resolve ", listen));
  }
  tcp::endpoint endpoint = endpoints.begin()->endpoint();
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat("HTTPS listener: cannot bind ", listen, ": ", ec.message()));
  }
  port_ = acceptor_.local_endpoint().port();
  return absl::OkStatus();
}

void HttpsServer::Impl::Start() {
  if (started_.exchange(true)) return;
  max_route_body_ = limits_.max_body_bytes;
  for (const auto* table : {&routes_, &prefix_routes_}) {
    for (const auto& [path, entry] : *table) {
      max_route_body_ = std::max(max_route_body_, entry.route.max_body_bytes);
    }
  }
  workers_.emplace(static_cast<size_t>(limits_.worker_threads));
  Accept();
  loop_ = std::thread([this] { io_.run(); });
}

void HttpsServer::Impl::Stop() {
  // Serialized: a second caller (the destructor after an explicit Stop, or two threads)
  // returns only once the first has joined everything.
  MutexLock lock(&stop_mu_);
  if (stopped_.exchange(true)) return;
  if (loop_.joinable()) {
    asio::post(io_, [this] {
      CloseAll();
      io_.stop();
    });
    loop_.join();
  } else {
    CloseAll();
  }
  if (workers_) {
    workers_->stop();
    workers_->join();  // a blocking handler still running is waited for
  }
}

void HttpsServer::Impl::CloseAll() {
  stopping_ = true;
  ErrorCode ignored;
  acceptor_.close(ignored);
  accept_retry_.cancel();
  std::vector<std::shared_ptr<Connection>> all;
  for (auto& [raw, conn] : conns_) all.push_back(conn);
  for (auto& conn : all) conn->Close();
}

void HttpsServer::Impl::Accept() {
  acceptor_.async_accept([this](const ErrorCode& ec, tcp::socket socket) { OnAccept(ec, std::move(socket)); });
}

void HttpsServer::Impl::OnAccept(const ErrorCode& ec, tcp::socket socket) {
  if (stopping_ || ec == asio::error::operation_aborted) return;
  if (ec) {
    // Out of descriptors or buffers: the listener pauses and tries again, never stops.
    spdlog::warn("HTTPS listener: accept failed: {}", ec.message());
    accept_retry_.expires_after(kAcceptRetry);
    accept_retry_.async_wait([this](const ErrorCode& wait_ec) {
      if (!wait_ec && !stopping_) Accept();
    });
    return;
  }
  Accept();
  ErrorCode peer_ec;
  tcp::endpoint remote = socket.remote_endpoint(peer_ec);
  if (peer_ec) return;  // gone already; the socket closes here
  std::string peer = remote.address().to_string();
  int& from_peer = per_ip_[peer];
  if (from_peer >= limits_.max_connections_per_ip) {
    if (from_peer == 0) per_ip_.erase(peer);
    spdlog::debug("HTTPS listener: {} has {} connections; refused one more", peer, from_peer);
    return;
  }
  if (static_cast<int>(conns_.size()) >= limits_.max_connections && !MakeRoom()) {
    if (from_peer == 0) per_ip_.erase(peer);
    spdlog::debug("HTTPS listener: {} connections, none idle; refused {}", conns_.size(), peer);
    return;
  }
  ++per_ip_[peer];
  auto conn = std::make_shared<Connection>(*this, std::move(socket), peer);
  conns_.emplace(conn.get(), conn);
  open_.store(static_cast<int>(conns_.size()));
  conn->Start();
}

// Closes the connection idle the longest; false when none is idle.
bool HttpsServer::Impl::MakeRoom() {
  Connection* oldest = nullptr;
  for (auto& [raw, conn] : conns_) {
    if (conn->state() == Connection::State::kIdle &&
        (oldest == nullptr || conn->idle_since() < oldest->idle_since())) {
      oldest = raw;
    }
  }
  if (oldest == nullptr) return false;
  oldest->Close();
  return true;
}

void HttpsServer::Impl::Unregister(Connection* conn) {
  auto it = conns_.find(conn);
  if (it == conns_.end()) return;
  auto ip = per_ip_.find(conn->peer());
  if (ip != per_ip_.end() && --ip->second <= 0) per_ip_.erase(ip);
  std::shared_ptr<Connection> keep = std::move(it->second);  // released after the erase
  conns_.erase(it);
  open_.store(static_cast<int>(conns_.size()));
}

HttpsServer::HttpsServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpsServer::~HttpsServer() { Stop(); }

absl::StatusOr<std::unique_ptr<HttpsServer>> HttpsServer::Bind(const std::string& listen,
                                                             const config::TlsConfig& tls,
                                                             const config::HttpConfig& limits,
                                                             ListenerOptions options) {
  auto impl = std::make_unique<Impl>(limits, std::move(options));
  KMS_RETURN_IF_ERROR(impl->Configure(listen, tls));
  return std::unique_ptr<HttpsServer>(new HttpsServer(std::move(impl)));
}

void HttpsServer::Handle(const std::string& path, Handler handler, Route route) {
  impl_->routes_[path] = RouteEntry{std::move(handler), std::move(route)};
}

void HttpsServer::HandlePrefix(const std::string& prefix, Handler handler, Route route) {
  impl_->prefix_routes_[prefix] = RouteEntry{std::move(handler), std::move(route)};
}

void HttpsServer::Start() { impl_->Start(); }
void HttpsServer::Stop() { impl_->Stop(); }
int HttpsServer::port() const { return impl_->port_; }
int HttpsServer::open_connections() const { return impl_->open_.load(); }

}  // namespace kms::server::http
