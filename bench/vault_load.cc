// vault_load: Encrypt requests per second through kmsd's Vault door (HTTPS, keep-alive,
// JSON, X-Vault-Token) and through gRPC, against one running kmsd, at the same
// concurrency, in interleaved rounds (gRPC, Vault, gRPC, Vault, ...) so that the noise of
// a shared machine falls on both alike. Prints each round and the ratio Vault ÷ gRPC.
// Each thread has its own connection (a gRPC channel with its own subchannel; one TLS
// connection kept alive for the Vault door), sends one request and waits for its answer.
//
// Usage: vault_load --ca CA --cert CERT --key KEY --grpc HOST:PORT --https HOST:PORT
//                   [--threads N] [--seconds S] [--rounds R] [--bytes B]
// The certificate's identity needs create_tenant and encrypt on tenant "bench-vault".
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include "grpcpp/grpcpp.h"
#include "kms/v1/admin_service.grpc.pb.h"
#include "kms/v1/key_service.grpc.pb.h"

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
namespace ssl = boost::asio::ssl;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct Totals {
  double requests = 0;
  double seconds = 0;
  uint64_t errors = 0;
};

// One keep-alive HTTPS connection to the Vault door.
class VaultConnection {
 public:
  VaultConnection(asio::io_context& io, ssl::context& tls, const std::string& host,
                  const std::string& port)
      : stream_(io, tls) {
    asio::ip::tcp::resolver resolver(io);
    beast::get_lowest_layer(stream_).connect(resolver.resolve(host, port));
    stream_.handshake(ssl::stream_base::client);
  }
  // POST `target` with `body`; the status, the answer in `out`.
  int Post(const std::string& target, const std::string& token, const std::string& body,
           std::string* out) {
    http::request<http::string_body> req{http::verb::post, target, 11};
    req.set(http::field::host, "kmsd");
    req.set(http::field::content_type, "application/json");
    if (!token.empty()) req.set("X-Vault-Token", token);
    req.keep_alive(true);
    req.body() = body;
    req.prepare_payload();
    http::write(stream_, req);
    http::response<http::string_body> res;
    http::read(stream_, buffer_, res);
    if (out != nullptr) *out = std::move(res.body());
    return res.result_int();
  }

 private:
  beast::ssl_stream<beast::tcp_stream> stream_;
  beast::flat_buffer buffer_;
};

std::string JsonString(const std::string& json, const std::string& name) {
  const std::string key = "\"" + name + "\":\"";
  size_t at = json.find(key);
  if (at == std::string::npos) return "";
  at += key.size();
  return json.substr(at, json.find('"', at) - at);
}

}  // namespace

int main(int argc, char** argv) {
  std::string ca, cert, key, grpc_addr, https_addr;
  int threads = 8, seconds = 5, rounds = 3, bytes = 32;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--ca") ca = next();
    else if (a == "--cert") cert = next();
    else if (a == "--key") key = next();
    else if (a == "--grpc") grpc_addr = next();
    else if (a == "--https") https_addr = next();
    else if (a == "--threads") threads = std::atoi(next().c_str());
    else if (a == "--seconds") seconds = std::atoi(next().c_str());
    else if (a == "--rounds") rounds = std::atoi(next().c_str());
    else if (a == "--bytes") bytes = std::atoi(next().c_str());
    else {
      std::fprintf(stderr, "usage: %s --ca CA --cert CERT --key KEY --grpc HOST:PORT --https HOST:PORT "
                           "[--threads N] [--seconds S] [--rounds R] [--bytes B]\n", argv[0]);
      return 2;
    }
  }
  const size_t colon = https_addr.rfind(':');
  if (ca.empty() || cert.empty() || key.empty() || grpc_addr.empty() || colon == std::string::npos ||
      threads < 1 || bytes < 1) {
    std::fprintf(stderr, "need --ca, --cert, --key, --grpc and --https HOST:PORT\n");
    return 2;
  }
  const std::string host = https_addr.substr(0, colon), port = https_addr.substr(colon + 1);
  const std::string tenant = "bench-vault";
  const std::string plaintext(static_cast<size_t>(bytes), 'x');

  // gRPC: one channel per thread; the tenant.
  grpc::SslCredentialsOptions creds{ReadFile(ca), ReadFile(key), ReadFile(cert)};
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (int i = 0; i < threads; ++i) {
    grpc::ChannelArguments args;
    args.SetInt("kms.bench.channel", i);
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    channels.push_back(grpc::CreateCustomChannel(grpc_addr, grpc::SslCredentials(creds), args));
  }
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    kms::v1::CreateTenantRequest req;
    req.set_tenant_id(tenant);
    kms::v1::CreateTenantResponse resp;
    grpc::Status s = kms::v1::AdminService::NewStub(channels[0])->CreateTenant(&ctx, req, &resp);
    if (!s.ok() && s.error_code() != grpc::StatusCode::ALREADY_EXISTS) {
      std::fprintf(stderr, "CreateTenant: %s\n", s.error_message().c_str());
      return 1;
    }
  }

  // Vault: TLS with the client certificate; one login, its token shared by every thread.
  asio::io_context io;
  ssl::context tls(ssl::context::tls_client);
  tls.load_verify_file(ca);
  tls.use_certificate_chain_file(cert);
  tls.use_private_key_file(key, ssl::context::pem);
  tls.set_verify_mode(ssl::verify_peer);
  std::string token;
  try {
    VaultConnection login(io, tls, host, port);
    std::string answer;
    if (login.Post("/v1/auth/cert/login", "", "{}", &answer) != 200) {
      std::fprintf(stderr, "cert login failed: %s\n", answer.c_str());
      return 1;
    }
    token = JsonString(answer, "client_token");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cannot reach the Vault door: %s\n", e.what());
    return 1;
  }
  std::string b64;
  {
    static const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < plaintext.size(); i += 3) {
      uint32_t n = static_cast<uint8_t>(plaintext[i]) << 16;
      if (i + 1 < plaintext.size()) n |= static_cast<uint8_t>(plaintext[i + 1]) << 8;
      if (i + 2 < plaintext.size()) n |= static_cast<uint8_t>(plaintext[i + 2]);
      b64 += kAlphabet[(n >> 18) & 63];
      b64 += kAlphabet[(n >> 12) & 63];
      b64 += i + 1 < plaintext.size() ? kAlphabet[(n >> 6) & 63] : '=';
      b64 += i + 2 < plaintext.size() ? kAlphabet[n & 63] : '=';
    }
  }
  const std::string vault_body = "{\"plaintext\":\"" + b64 + "\"}";
  const std::string vault_target = "/v1/transit/encrypt/" + tenant;

  Totals grpc_totals, vault_totals;
  auto run = [&](bool vault, double secs, Totals* totals) {
    std::atomic<bool> stop{false};
    std::atomic<uint64_t> done{0}, failed{0};
    std::vector<std::thread> workers;
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < threads; ++i) {
      workers.emplace_back([&, i] {
        uint64_t n = 0, f = 0;
        if (vault) {
          try {
            asio::io_context thread_io;
            VaultConnection conn(thread_io, tls, host, port);
            while (!stop.load(std::memory_order_relaxed)) {
              if (conn.Post(vault_target, token, vault_body, nullptr) == 200) ++n; else ++f;
            }
          } catch (const std::exception& e) {
            ++f;
          }
        } else {
          auto stub = kms::v1::KeyService::NewStub(channels[static_cast<size_t>(i)]);
          kms::v1::EncryptRequest req;
          req.set_tenant_id(tenant);
          req.set_plaintext(plaintext);
          kms::v1::EncryptResponse resp;
          while (!stop.load(std::memory_order_relaxed)) {
            grpc::ClientContext ctx;
            ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
            if (stub->Encrypt(&ctx, req, &resp).ok()) ++n; else ++f;
          }
        }
        done += n;
        failed += f;
      });
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(secs));
    stop = true;
    for (auto& w : workers) w.join();
    const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
    if (totals != nullptr) {
      totals->requests += static_cast<double>(done.load());
      totals->seconds += took.count();
      totals->errors += failed.load();
      std::printf("round: %-6s %10.0f req/s\n", vault ? "vault" : "grpc",
                  static_cast<double>(done.load()) / took.count());
      std::fflush(stdout);
    }
  };

  run(false, 1.0, nullptr);  // warm-up: connections, the DEK cache, the token cache
  run(true, 1.0, nullptr);
  for (int r = 0; r < rounds; ++r) {
    run(false, seconds, &grpc_totals);
    run(true, seconds, &vault_totals);
  }
  const double grpc_rps = grpc_totals.requests / grpc_totals.seconds;
  const double vault_rps = vault_totals.requests / vault_totals.seconds;
  std::printf("\n%-8s %12s %8s\n", "door", "req/s", "errors");
  std::printf("%-8s %12.0f %8llu\n", "grpc", grpc_rps, static_cast<unsigned long long>(grpc_totals.errors));
  std::printf("%-8s %12.0f %8llu\n", "vault", vault_rps, static_cast<unsigned long long>(vault_totals.errors));
  std::printf("vault / grpc = %.3f (threads %d, %d-byte plaintext)\n", vault_rps / grpc_rps, threads, bytes);
  return 0;
}
