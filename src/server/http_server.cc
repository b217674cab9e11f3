#include "src/server/http_server.h"

#include <openssl/ssl.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "httplib.h"
#include "spdlog/spdlog.h"

namespace kms::server {

namespace {
constexpr char kHsts[] = "max-age=63072000; includeSubDomains; preload";

absl::Status SplitHostPort(const std::string& listen, std::string* host, int* port) {
  size_t colon = listen.rfind(':');
  if (colon == std::string::npos || !absl::SimpleAtoi(listen.substr(colon + 1), port)) {
    return absl::InvalidArgumentError(absl::StrCat("listen address '", listen, "' is not HOST:PORT"));
  }
  *host = listen.substr(0, colon);
  if (host->size() > 2 && host->front() == '[' && host->back() == ']') {
    *host = host->substr(1, host->size() - 2);
  }
  return absl::OkStatus();
}
}  // namespace

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Bind(const std::string& listen,
                                                           const config::TlsConfig& tls) {
  std::string host;
  int port = 0;
  KMS_RETURN_IF_ERROR(SplitHostPort(listen, &host, &port));
  std::unique_ptr<HttpServer> http(new HttpServer());
  http->server_ = std::make_unique<httplib::SSLServer>(tls.cert_file.c_str(), tls.key_file.c_str());
  if (!http->server_->is_valid()) {
    return absl::FailedPreconditionError("HTTPS listener: cannot load tls.cert_file / tls.key_file");
  }
  SSL_CTX_set_min_proto_version(http->server_->ssl_context(), TLS1_3_VERSION);
  http->server_->set_default_headers({{"Strict-Transport-Security", kHsts}});
  if (port == 0) {
    port = http->server_->bind_to_any_port(host.c_str());
    if (port <= 0) return absl::UnavailableError(absl::StrCat("HTTPS listener: cannot bind ", listen));
  } else if (!http->server_->bind_to_port(host.c_str(), port)) {
    return absl::UnavailableError(absl::StrCat("HTTPS listener: cannot bind ", listen));
  }
  http->port_ = port;
  return http;
}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::Handle(const std::string& path, Handler handler) {
  server_->Get(path, [handler = std::move(handler)](const httplib::Request&, httplib::Response& res) {
    Response r = handler();
    res.status = r.status;
    for (auto& [k, v] : r.headers) res.set_header(k, v);
    res.set_content(r.body, r.content_type);
  });
}

void HttpServer::Start() {
  thread_ = std::thread([this] {
    if (!server_->listen_after_bind()) spdlog::error("HTTPS listener stopped with an error");
  });
}

void HttpServer::Stop() {
  if (server_ && thread_.joinable()) {
    // cpp-httplib's stop() is a no-op until the listener thread is running: wait for it.
    for (int i = 0; i < 500 && !server_->is_running(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    server_->stop();
  }
  if (thread_.joinable()) thread_.join();
}

}  // namespace kms::server
