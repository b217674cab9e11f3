// The HTTPS listener (cpp-httplib, TLS 1.3 only, HSTS): /healthz and /readyz now;
// /.well-known/jwks.json and /metrics register on it through Handle().
// No client certificate is asked for: everything served here is public or
// operational data, never key material.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "kms/common/status.h"
#include "src/config/config.h"

namespace httplib {
class SSLServer;
}

namespace kms::server {

class HttpServer {
 public:
  struct Response {
    int status = 200;
    std::string content_type = "text/plain; charset=utf-8";
    std::string body;
    std::vector<std::pair<std::string, std::string>> headers;
  };
  using Handler = std::function<Response()>;

  // Binds `listen` (HOST:PORT, port 0 picks one); serves nothing until Start().
  static absl::StatusOr<std::unique_ptr<HttpServer>> Bind(const std::string& listen,
                                                         const config::TlsConfig& tls);
  ~HttpServer();

  // Registers a GET handler; call before Start().
  void Handle(const std::string& path, Handler handler);
  void Start();
  void Stop();
  int port() const { return port_; }

 private:
  HttpServer() = default;
  std::unique_ptr<httplib::SSLServer> server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace kms::server
