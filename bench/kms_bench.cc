// kms-bench: a closed-loop load client for kmsd over mTLS (issue 12): its gRPC door and
// its Vault-compatible HTTPS door (docs/vault.md).
//
// N requests stay in flight for a fixed time. gRPC: over C HTTP/2 connections (callback
// API, requests serialized once and sent as raw byte buffers so the client spends as
// little of a shared machine's CPU as possible). The Vault door: HTTP/1.1 has one
// request in flight per connection (no pipelining, as Vault clients send), so each of
// the N in-flight requests has its own keep-alive TLS connection, all driven by one
// Boost.Beast event-loop thread; requests are built once (head and JSON body) and sent
// with the X-Vault-Token line as one write. Reports requests/s, latency p50/p99/p99.9,
// errors and, given the server's pid, kmsd's CPU per request from /proc/<pid>/stat.
//
// Workloads: health (grpc.health.v1.Health/Check: the null RPC), encrypt, decrypt,
// encrypt-batch, sign-jwt, verify-jwt, mix (encrypt 50%, decrypt 40%, sign-jwt 5%,
// verify-jwt 5%); vault-encrypt and vault-decrypt (POST /v1/transit/encrypt/:name and
// /v1/transit/decrypt/:name with a token from POST /v1/auth/cert/login on the same
// client certificate; the transit key is the tenant).
//
// --compare BASE runs the baseline workload BASE and the workload in alternating
// windows (BASE, W, BASE, W, ...) in one run, so that the noise of a shared machine
// falls on both alike, and prints the ratio W/BASE of requests/s per window pair with
// its spread (min, max, standard deviation) and the ratio of p99. BASE may be of the
// other door (--workload vault-encrypt --compare encrypt: what the Vault door costs
// over gRPC) or run against another kmsd (--baseline-config: e.g. audit on vs off).
//
// Connection settings come from a kmsctl.json-style file (--config, else
// $KMSCTL_CONFIG): {"addr": "host:port", "ca": PEM, "cert": PEM, "key": PEM,
// "https": "host:port" (the Vault door; optional)}.
// Run with --help for the options. Benchmarks, not tests: nothing here asserts a time.
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/connect.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "kms/v1/admin_service.grpc.pb.h"
#include "kms/v1/key_service.grpc.pb.h"
#include "nlohmann/json.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

[[noreturn]] void Die(const std::string& msg) {
  std::fprintf(stderr, "kms-bench: %s\n", msg.c_str());
  std::exit(2);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) Die("cannot read " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// One kmsd: where its doors listen, the client's credentials, its pid.
struct Endpoint {
  std::string addr, https, ca, cert, key;
  int server_pid = 0;  // > 0: report its CPU per request
};

struct Options {
  std::string config, baseline_config;
  Endpoint target, baseline;  // baseline: with --baseline-config, else the target
  std::string baseline_label = "baseline";
  std::string label;  // names the workload's rows W@label (empty: W)
  std::string workload = "encrypt";
  std::string compare;  // baseline workload, empty = none
  int baseline_tenants = 0;  // with --compare: the baseline's hot tenants (0: --tenants)
  double seconds = 10;
  double warmup = 1;
  uint64_t requests = 0;  // > 0: exactly this many requests instead of --seconds
  int windows = 6;  // with --compare: window pairs
  int inflight = 16;
  int connections = 4;
  int payload = 32;
  int batch = 100;
  int tenants = 1;
  int cold_tenants = 0;         // a second tenant set, drawn with probability cold_fraction
  double cold_fraction = 0;
  std::string tenant_prefix = "bench-";
  std::string vault_mount = "transit";
  bool create_tenants = true;
  std::string format = "table";
  uint64_t seed = 1;
};

bool IsVault(const std::string& workload) { return workload.rfind("vault-", 0) == 0; }

void Usage() {
  std::printf(
      "usage: kms-bench [--config kmsctl.json] [--addr H:P --ca F --cert F --key F] [--https H:P]\n"
      "  --workload W         health|encrypt|decrypt|encrypt-batch|sign-jwt|verify-jwt|mix|\n"
      "                       vault-encrypt|vault-decrypt                     [encrypt]\n"
      "  --https H:P          the Vault door (HTTPS listener); else \"https\" in the config\n"
      "  --compare BASE       alternate windows of BASE and W; print W/BASE with its spread\n"
      "  --baseline-config F  with --compare: run BASE against the kmsd of this\n"
      "                       kmsctl.json (e.g. audit off) instead of the target\n"
      "  --baseline-server-pid PID  that kmsd's pid (CPU per request)\n"
      "  --baseline-label L   names the other kmsd's rows: BASE@L          [baseline]\n"
      "  --label L            names the workload's rows: W@L\n"
      "  --seconds S          measured time (per window with --compare)       [10]\n"
      "  --windows K          with --compare: window pairs                     [6]\n"
      "  --baseline-tenants T with --compare: the baseline draws from the first T\n"
      "                       tenants only (e.g. encrypt on 100000 vs encrypt on 1)\n"
      "  --warmup S           unmeasured warm-up per workload (0: none)        [1]\n"
      "  --requests K         send exactly K requests, not for --seconds (e.g. to\n"
      "                       divide a profiler's instruction count by them)\n"
      "  --inflight N         requests in flight (closed loop); the Vault door\n"
      "                       gets one keep-alive connection per request       [16]\n"
      "  --connections C      gRPC HTTP/2 connections                          [4]\n"
      "  --payload B          plaintext bytes per item                         [32]\n"
      "  --batch K            items per encrypt-batch request                  [100]\n"
      "  --tenants T          hot tenants, drawn uniformly                     [1]\n"
      "  --cold-tenants U     a second tenant set (e.g. beyond the DEK cache)  [0]\n"
      "  --cold-fraction F    share of requests to the cold set                [0]\n"
      "  --tenant-prefix P    tenant ids (transit key names) are P<i>          [bench-]\n"
      "  --no-create          do not create the tenants first\n"
      "  --vault-mount M      the Vault door's transit mount (vault.mount)    [transit]\n"
      "  --server-pid PID     kmsd's pid: report its CPU per request (/proc)\n"
      "  --format table|json  output                                           [table]\n"
      "  --seed S             random seed                                      [1]\n");
}

// Fills what `e` lacks from the kmsctl.json-style file at `path` (none: nothing).
void ReadEndpointConfig(const std::string& path, Endpoint* e) {
  if (path.empty()) return;
  json j;
  try {
    j = json::parse(ReadFile(path));
  } catch (const json::exception& ex) {
    Die("config " + path + " is not valid JSON: " + ex.what());
  }
  if (e->addr.empty()) e->addr = j.value("addr", "");
  if (e->https.empty()) e->https = j.value("https", "");
  if (e->ca.empty()) e->ca = j.value("ca", "");
  if (e->cert.empty()) e->cert = j.value("cert", "");
  if (e->key.empty()) e->key = j.value("key", "");
  if (e->addr.empty() || e->ca.empty() || e->cert.empty() || e->key.empty()) {
    Die("no connection settings in " + path + ": addr, ca, cert, key");
  }
}

Options Parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) Die(a + " needs a value");
      return argv[++i];
    };
    if (a == "--help" || a == "-h") { Usage(); std::exit(0); }
    else if (a == "--config") o.config = next();
    else if (a == "--addr") o.target.addr = next();
    else if (a == "--https") o.target.https = next();
    else if (a == "--ca") o.target.ca = next();
    else if (a == "--cert") o.target.cert = next();
    else if (a == "--key") o.target.key = next();
    else if (a == "--workload") o.workload = next();
    else if (a == "--compare") o.compare = next();
    else if (a == "--baseline-config") o.baseline_config = next();
    else if (a == "--baseline-server-pid") o.baseline.server_pid = std::stoi(next());
    else if (a == "--baseline-label") o.baseline_label = next();
    else if (a == "--label") o.label = next();
    else if (a == "--seconds") o.seconds = std::stod(next());
    else if (a == "--windows") o.windows = std::stoi(next());
    else if (a == "--baseline-tenants") o.baseline_tenants = std::stoi(next());
    else if (a == "--warmup") o.warmup = std::stod(next());
    else if (a == "--requests") o.requests = std::stoull(next());
    else if (a == "--inflight") o.inflight = std::stoi(next());
    else if (a == "--connections") o.connections = std::stoi(next());
    else if (a == "--payload") o.payload = std::stoi(next());
    else if (a == "--batch") o.batch = std::stoi(next());
    else if (a == "--tenants") o.tenants = std::stoi(next());
    else if (a == "--cold-tenants") o.cold_tenants = std::stoi(next());
    else if (a == "--cold-fraction") o.cold_fraction = std::stod(next());
    else if (a == "--tenant-prefix") o.tenant_prefix = next();
    else if (a == "--no-create") o.create_tenants = false;
    else if (a == "--vault-mount") o.vault_mount = next();
    else if (a == "--server-pid") o.target.server_pid = std::stoi(next());
    else if (a == "--format") o.format = next();
    else if (a == "--seed") o.seed = std::stoull(next());
    else { Usage(); Die("unknown option " + a); }
  }
  std::string path = o.config;
  if (path.empty()) {
    if (const char* env = std::getenv("KMSCTL_CONFIG")) path = env;
  }
  Endpoint& t = o.target;
  if (!path.empty()) ReadEndpointConfig(path, &t);
  if (t.addr.empty() || t.ca.empty() || t.cert.empty() || t.key.empty()) {
    Die("no connection settings: --config FILE (kmsctl.json) or --addr, --ca, --cert, --key");
  }
  if (o.baseline_config.empty()) {
    const int pid = o.baseline.server_pid;
    o.baseline = t;
    if (pid > 0) o.baseline.server_pid = pid;
  } else {
    if (o.compare.empty()) Die("--baseline-config needs --compare");
    ReadEndpointConfig(o.baseline_config, &o.baseline);
  }
  if ((IsVault(o.workload) && t.https.empty()) ||
      (IsVault(o.compare) && o.baseline.https.empty())) {
    Die("a vault-* workload needs the Vault door's address: --https H:P or \"https\" in the "
        "config");
  }
  if (o.inflight < 1 || o.connections < 1 || o.tenants < 1 || o.seconds <= 0 || o.batch < 1 ||
      o.payload < 0 || o.windows < 1 || o.cold_tenants < 0 || o.cold_fraction < 0 ||
      o.cold_fraction > 1) {
    Die("option out of range");
  }
  if (o.format != "table" && o.format != "json") Die("--format is table or json");
  return o;
}

// ---------------------------------------------------------------------------------------
// Requests: serialized once, sent as byte buffers.

grpc::ByteBuffer ToBuffer(const google::protobuf::Message& m) {
  const std::string s = m.SerializeAsString();
  grpc::Slice slice(s);
  return grpc::ByteBuffer(&slice, 1);
}

// A Vault door request, built once: the head up to its last header line, then the
// X-Vault-Token line and the blank line (VaultClient's), then the JSON body.
struct HttpRequest {
  std::string head;
  std::string body;
};

HttpRequest VaultPost(const std::string& target, std::string body) {
  HttpRequest r;
  r.head = "POST " + target + " HTTP/1.1\r\nHost: kmsd\r\nContent-Type: application/json\r\n" +
           "Content-Length: " + std::to_string(body.size()) + "\r\n";
  r.body = std::move(body);
  return r;
}

// Standard base64 (RFC 4648 §4), as Vault's JSON carries plaintexts.
std::string Base64(const std::string& in) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  for (size_t i = 0; i < in.size(); i += 3) {
    uint32_t n = static_cast<uint32_t>(static_cast<uint8_t>(in[i])) << 16;
    if (i + 1 < in.size()) n |= static_cast<uint32_t>(static_cast<uint8_t>(in[i + 1])) << 8;
    if (i + 2 < in.size()) n |= static_cast<uint8_t>(in[i + 2]);
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += i + 1 < in.size() ? kAlphabet[(n >> 6) & 63] : '=';
    out += i + 2 < in.size() ? kAlphabet[n & 63] : '=';
  }
  return out;
}

// One request: a gRPC method and its serialized message, or a Vault door request.
struct Call {
  const char* method = nullptr;
  const grpc::ByteBuffer* request = nullptr;
  const HttpRequest* http = nullptr;
};

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace ssl = boost::asio::ssl;

// Keep-alive TLS connections to kmsd's HTTPS listener with the client certificate, one
// per in-flight slot, run by one event-loop thread; the Vault token from cert login.
// Send() may be called from any thread, but at most one request per connection at a
// time (the closed loop guarantees it); Login and PostSync only while nothing is in
// flight.
class VaultClient {
 public:
  using Done = std::function<void(bool ok, std::string error)>;

  VaultClient(const Endpoint& e, size_t connections) : tls_(ssl::context::tls_client) {
    const size_t colon = e.https.rfind(':');
    if (colon == std::string::npos) Die("--https is HOST:PORT, not " + e.https);
    host_ = e.https.substr(0, colon);
    port_ = e.https.substr(colon + 1);
    try {
      tls_.load_verify_file(e.ca);
      tls_.use_certificate_chain_file(e.cert);
      tls_.use_private_key_file(e.key, ssl::context::pem);
      tls_.set_verify_mode(ssl::verify_peer);
      conns_.resize(connections);
      for (auto& c : conns_) c = Connect();
    } catch (const std::exception& ex) {
      Die("cannot reach the Vault door at " + e.https + ": " + ex.what());
    }
    thread_ = std::thread([this] { io_.run(); });
  }
  ~VaultClient() {
    guard_.reset();
    io_.stop();
    thread_.join();
  }

  // POST /v1/auth/cert/login; every later request carries the token. Dies on failure.
  void Login() {
    std::string answer;
    const int status = PostSync("/v1/auth/cert/login", "{}", &answer);
    json j = json::parse(answer, nullptr, /*allow_exceptions=*/false);
    if (status != 200 || !j.contains("auth"))
      Die("Vault cert login: HTTP " + std::to_string(status) + " " + answer);
    token_line_ = "X-Vault-Token: " + j["auth"].value("client_token", "") + "\r\n\r\n";
    ttl_seconds_ = j["auth"].value("lease_duration", 900);
    login_at_ = Clock::now();
  }
  // Logs in again once half the token's lifetime has passed (between windows).
  void RefreshToken() {
    if (Clock::now() - login_at_ > std::chrono::seconds(ttl_seconds_ / 2)) Login();
  }

  // One request on connection 0, synchronously; the status and the body.
  int PostSync(const std::string& target, const std::string& body, std::string* out) {
    const HttpRequest r = VaultPost(target, body);
    try {
      if (!conns_[0]->open) conns_[0] = Connect();
      Conn& d = *conns_[0];
      d.wire.assign(r.head).append(token_line_.empty() ? "\r\n" : token_line_).append(r.body);
      asio::write(d.stream, asio::buffer(d.wire));
      d.res = {};
      bhttp::read(d.stream, d.buffer, d.res);
      if (out != nullptr) *out = d.res.body();
      if (!d.res.keep_alive()) d.open = false;
      return d.res.result_int();
    } catch (const std::exception& ex) {
      Die(std::string("Vault door: ") + ex.what());
    }
  }

  // Sends `r` on connection `i` (re-opened first if the server closed it); `done` runs
  // on the event-loop thread.
  void Send(size_t i, const HttpRequest& r, Done done) {
    if (!conns_[i]->open) {
      try {
        conns_[i] = Connect();
      } catch (const std::exception& ex) {
        asio::post(
            io_, [done = std::move(done), error = std::string("connect: ") + ex.what()]() mutable {
              done(false, std::move(error));
            });
        return;
      }
    }
    Conn* c = conns_[i].get();
    // One buffer, so one TLS record and one segment (as clients send a small request).
    c->wire.assign(r.head).append(token_line_).append(r.body);
    asio::async_write(c->stream, asio::buffer(c->wire),
                      [c, done = std::move(done)](beast::error_code ec, size_t) mutable {
                        if (ec) {
                          c->open = false;
                          done(false, "write: " + ec.message());
                          return;
                        }
                        c->res = {};
                        bhttp::async_read(
                            c->stream, c->buffer, c->res,
                            [c, done = std::move(done)](beast::error_code ec, size_t) mutable {
                              bool ok = false;
                              std::string error;
                              if (ec) {
                                c->open = false;
                                error = "read: " + ec.message();
                              } else {
                                ok = c->res.result_int() == 200;
                                if (!ok)
                                  error = "HTTP " + std::to_string(c->res.result_int()) + " " +
                                          c->res.body().substr(0, 200);
                                if (!c->res.keep_alive()) c->open = false;
                              }
                              done(ok,
                                   std::move(error));  // last: it may send the slot's next request
                            });
                      });
  }

 private:
  struct Conn {
    Conn(asio::io_context& io, ssl::context& tls) : stream(io, tls) {}
    beast::ssl_stream<beast::tcp_stream> stream;
    beast::flat_buffer buffer;
    bhttp::response<bhttp::string_body> res;
    std::string wire;  // the request being sent
    bool open = true;
  };

  std::unique_ptr<Conn> Connect() {
    auto c = std::make_unique<Conn>(io_, tls_);
    asio::ip::tcp::resolver resolver(io_);
    beast::get_lowest_layer(c->stream).connect(resolver.resolve(host_, port_));
    beast::get_lowest_layer(c->stream).socket().set_option(asio::ip::tcp::no_delay(true));
    c->stream.handshake(ssl::stream_base::client);
    return c;
  }

  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> guard_{io_.get_executor()};
  ssl::context tls_;
  std::string host_, port_;
  std::vector<std::unique_ptr<Conn>> conns_;
  std::string token_line_;
  int64_t ttl_seconds_ = 900;
  Clock::time_point login_at_;
  std::thread thread_;
};

constexpr const char* kHealth = "/grpc.health.v1.Health/Check";
constexpr const char* kEncrypt = "/kms.v1.KeyService/Encrypt";
constexpr const char* kDecrypt = "/kms.v1.KeyService/Decrypt";
constexpr const char* kEncryptBatch = "/kms.v1.KeyService/EncryptBatch";
constexpr const char* kSignJwt = "/kms.v1.KeyService/SignJwt";
constexpr const char* kVerifyJwt = "/kms.v1.KeyService/VerifyJwt";
constexpr const char* kCreateTenant = "/kms.v1.AdminService/CreateTenant";

// Latencies in microseconds, one vector per in-flight slot (no sharing on the hot path).
struct Slot {
  std::mt19937_64 rng;
  std::vector<uint32_t> latencies_us;
  uint64_t errors = 0;
  std::string first_error;
};

struct WindowResult {
  std::string workload;
  double seconds = 0;
  uint64_t requests = 0;
  uint64_t errors = 0;
  double rps = 0;
  double p50_us = 0, p99_us = 0, p999_us = 0, max_us = 0;
  double server_cpu_us_per_req = -1;  // -1: no --server-pid
  std::string first_error;
};

// kmsd's user + system CPU in seconds (fields 14 and 15 of /proc/<pid>/stat).
double ProcessCpuSeconds(int pid) {
  if (pid <= 0) return -1;
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), {});
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream rest(stat.substr(close + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

class Runner {
 public:
  // `pick` chooses the next call for a slot; it returns false when there is nothing left
  // to send (the set-up phases run a fixed list once).
  using Picker = std::function<bool(Slot&, Call*)>;

  // `vault`: also open the Vault door's connections (one per in-flight slot) and log in.
  Runner(const Options& o, const Endpoint& e, bool vault) : o_(o), e_(e) {
    grpc::SslCredentialsOptions tls{ReadFile(e.ca), ReadFile(e.key), ReadFile(e.cert)};
    for (int i = 0; i < o.connections; ++i) {
      grpc::ChannelArguments args;
      args.SetInt("kms.bench.channel", i);  // distinct args: distinct connections
      args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
      auto ch = grpc::CreateCustomChannel(e.addr, grpc::SslCredentials(tls), args);
      stubs_.push_back(std::make_unique<grpc::GenericStub>(ch));
    }
    slots_.resize(static_cast<size_t>(o.inflight));
    for (size_t i = 0; i < slots_.size(); ++i) slots_[i].rng.seed(o.seed * 7919 + i);
    if (vault) {
      vault_ = std::make_unique<VaultClient>(e, slots_.size());
      vault_->Login();
    }
  }

  // The Vault door's client (set-up requests); null without a vault-* workload.
  VaultClient* vault() { return vault_.get(); }

  // Runs the closed loop for `seconds` (or until `pick` runs dry) and reports it.
  WindowResult Run(const std::string& name, double seconds, const Picker& pick) {
    for (Slot& s : slots_) {
      s.latencies_us.clear();
      s.errors = 0;
      s.first_error.clear();
    }
    stop_ = false;
    if (vault_ != nullptr) vault_->RefreshToken();
    const double cpu0 = ProcessCpuSeconds(e_.server_pid);
    const Clock::time_point start = Clock::now();
    {
      std::lock_guard<std::mutex> lock(mu_);
      active_ = static_cast<int>(slots_.size());
    }
    for (size_t i = 0; i < slots_.size(); ++i) Issue(i, pick);
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, std::chrono::duration<double>(seconds), [&] { return active_ == 0; });
      stop_ = true;
    }
    const Clock::time_point end = Clock::now();
    const double cpu1 = ProcessCpuSeconds(e_.server_pid);
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return active_ == 0; });
    }
    WindowResult r;
    r.workload = name;
    r.seconds = std::chrono::duration<double>(end - start).count();
    std::vector<uint32_t> all;
    for (Slot& s : slots_) {
      all.insert(all.end(), s.latencies_us.begin(), s.latencies_us.end());
      r.errors += s.errors;
      if (r.first_error.empty()) r.first_error = s.first_error;
    }
    r.requests = all.size();
    r.rps = static_cast<double>(r.requests) / r.seconds;
    if (!all.empty()) {
      std::sort(all.begin(), all.end());
      auto q = [&](double p) {
        return static_cast<double>(all[std::min(all.size() - 1, static_cast<size_t>(p * all.size()))]);
      };
      r.p50_us = q(0.50);
      r.p99_us = q(0.99);
      r.p999_us = q(0.999);
      r.max_us = all.back();
    }
    if (cpu0 >= 0 && cpu1 >= 0 && r.requests > 0) {
      r.server_cpu_us_per_req = (cpu1 - cpu0) * 1e6 / static_cast<double>(r.requests);
    }
    return r;
  }

  // One synchronous call (set-up), through the same channels.
  grpc::Status CallOnce(const char* method, const google::protobuf::Message& req,
                        google::protobuf::Message* resp) {
    grpc::ByteBuffer in = ToBuffer(req), out;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    std::mutex m;
    std::condition_variable cv;
    bool done = false;
    grpc::Status status;
    stubs_[0]->UnaryCall(&ctx, method, grpc::StubOptions(), &in, &out, [&](grpc::Status s) {
      std::lock_guard<std::mutex> lock(m);
      status = std::move(s);
      done = true;
      cv.notify_one();
    });
    std::unique_lock<std::mutex> lock(m);
    cv.wait(lock, [&] { return done; });
    if (status.ok() && resp != nullptr) {
      std::vector<grpc::Slice> slices;
      (void)out.Dump(&slices);
      std::string bytes;
      for (const grpc::Slice& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
      if (!resp->ParseFromString(bytes)) return grpc::Status(grpc::StatusCode::INTERNAL, "bad response");
    }
    return status;
  }

 private:
  struct InFlight {
    grpc::ClientContext ctx;
    grpc::ByteBuffer request;
    grpc::ByteBuffer response;
  };

  void Issue(size_t i, const Picker& pick) {
    Slot& slot = slots_[i];
    Call call{};
    if (stop_.load(std::memory_order_relaxed) || !pick(slot, &call)) {
      std::lock_guard<std::mutex> lock(mu_);
      if (--active_ == 0) cv_.notify_all();
      return;
    }
    const Clock::time_point sent = Clock::now();
    if (call.http != nullptr) {
      vault_->Send(i, *call.http, [this, i, sent, &pick](bool ok, std::string error) {
        Finish(i, sent, ok, std::move(error), pick);
      });
      return;
    }
    auto f = std::make_shared<InFlight>();
    f->ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    f->request = *call.request;  // shares the slices
    grpc::GenericStub& stub = *stubs_[i % stubs_.size()];
    stub.UnaryCall(
        &f->ctx, call.method, grpc::StubOptions(), &f->request, &f->response,
        [this, i, f, sent, &pick](grpc::Status s) {
          Finish(i, sent, s.ok(),
                 s.ok() ? std::string() : std::to_string(s.error_code()) + " " + s.error_message(),
                 pick);
        });
  }

  // A slot's request is answered: counts it (unless the window has ended) and sends the
  // slot's next one.
  void Finish(size_t i, Clock::time_point sent, bool ok, std::string error, const Picker& pick) {
    Slot& sl = slots_[i];
    if (!stop_.load(std::memory_order_relaxed)) {
      if (ok) {
        const auto us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - sent);
        sl.latencies_us.push_back(static_cast<uint32_t>(us.count()));
      } else {
        ++sl.errors;
        if (sl.first_error.empty()) sl.first_error = std::move(error);
      }
    }
    Issue(i, pick);
  }

  const Options& o_;
  const Endpoint& e_;
  std::vector<std::unique_ptr<grpc::GenericStub>> stubs_;
  std::unique_ptr<VaultClient> vault_;
  std::vector<Slot> slots_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  int active_ = 0;
};

// ---------------------------------------------------------------------------------------
// Workloads.

class Workloads {
 public:
  Workloads(const Options& o, Runner& runner) : o_(o), runner_(runner) {}

  std::string Tenant(int i) const { return o_.tenant_prefix + std::to_string(i); }
  int TotalTenants() const { return o_.tenants + o_.cold_tenants; }

  // Creates the tenants (ALREADY_EXISTS is fine) and whatever `workloads` need.
  void Prepare(const std::vector<std::string>& workloads) {
    auto needs = [&](const char* w) {
      return std::find(workloads.begin(), workloads.end(), w) != workloads.end();
    };
    const bool mix = needs("mix");
    const bool vault_encrypt = needs("vault-encrypt"), vault_decrypt = needs("vault-decrypt");
    const bool tenant_work = mix || needs("encrypt") || needs("decrypt") ||
                             needs("encrypt-batch") || vault_encrypt || vault_decrypt;
    const std::string plaintext(static_cast<size_t>(o_.payload), 'x');
    if (tenant_work && o_.create_tenants) {
      std::vector<grpc::ByteBuffer> creates;
      for (int i = 0; i < TotalTenants(); ++i) {
        kms::v1::CreateTenantRequest r;
        r.set_tenant_id(Tenant(i));
        creates.push_back(ToBuffer(r));
      }
      RunList("create-tenants", kCreateTenant, creates, /*ok_codes_already_exists=*/true);
    }
    if (tenant_work) {
      for (int i = 0; i < TotalTenants(); ++i) {
        kms::v1::EncryptRequest r;
        r.set_tenant_id(Tenant(i));
        r.set_plaintext(plaintext);
        encrypt_.push_back(ToBuffer(r));
      }
    }
    if (tenant_work && TotalTenants() > 1 && !needs("decrypt") && !vault_decrypt && !mix) {
      // One Encrypt per tenant first, so measured windows see a warm DEK cache (as far
      // as its bound allows) instead of the first pass's misses.
      RunList("warm-every-tenant", kEncrypt, encrypt_, /*already_exists_ok=*/false);
    }
    if (needs("encrypt-batch")) {
      for (int i = 0; i < TotalTenants(); ++i) {
        kms::v1::EncryptBatchRequest r;
        r.set_tenant_id(Tenant(i));
        for (int k = 0; k < o_.batch; ++k) r.add_items()->set_plaintext(plaintext);
        batch_.push_back(ToBuffer(r));
      }
    }
    if (needs("decrypt") || mix) {
      // One ciphertext per tenant, made now (this also loads every DEK once).
      for (int i = 0; i < TotalTenants(); ++i) {
        kms::v1::EncryptRequest r;
        r.set_tenant_id(Tenant(i));
        r.set_plaintext(plaintext);
        kms::v1::EncryptResponse resp;
        grpc::Status s = runner_.CallOnce(kEncrypt, r, &resp);
        if (!s.ok()) Die("set-up Encrypt for " + Tenant(i) + ": " + s.error_message());
        kms::v1::DecryptRequest d;
        d.set_tenant_id(Tenant(i));
        d.set_ciphertext(resp.ciphertext());
        decrypt_.push_back(ToBuffer(d));
      }
    }
    const std::string transit = "/v1/" + o_.vault_mount + "/";
    if (vault_encrypt) {
      const std::string body = json{{"plaintext", Base64(plaintext)}}.dump();
      for (int i = 0; i < TotalTenants(); ++i) {
        vault_encrypt_.push_back(VaultPost(transit + "encrypt/" + Tenant(i), body));
      }
    }
    if (vault_decrypt) {
      // One Vault ciphertext per tenant, made now through the door itself.
      const std::string body = json{{"plaintext", Base64(plaintext)}}.dump();
      for (int i = 0; i < TotalTenants(); ++i) {
        std::string answer;
        const int status =
            runner_.vault()->PostSync(transit + "encrypt/" + Tenant(i), body, &answer);
        const json j = json::parse(answer, nullptr, /*allow_exceptions=*/false);
        if (status != 200 || !j.contains("data")) {
          Die("set-up Vault encrypt for " + Tenant(i) + ": HTTP " + std::to_string(status) + " " +
              answer);
        }
        const std::string ciphertext = j["data"].value("ciphertext", "");
        vault_decrypt_.push_back(
            VaultPost(transit + "decrypt/" + Tenant(i), json{{"ciphertext", ciphertext}}.dump()));
      }
    }
    kms::v1::SignJwtRequest sign;
    sign.set_claims_json(R"({"sub":"kms-bench","aud":"bench","scope":"read write"})");
    sign_ = ToBuffer(sign);
    if (needs("verify-jwt") || mix) {
      kms::v1::SignJwtResponse resp;
      grpc::Status s = runner_.CallOnce(kSignJwt, sign, &resp);
      if (!s.ok()) Die("set-up SignJwt: " + s.error_message());
      kms::v1::VerifyJwtRequest v;
      v.set_jwt(resp.jwt());
      verify_ = ToBuffer(v);
    }
    // An empty HealthCheckRequest (service "": the server as a whole) is zero bytes.
    grpc::Slice empty("");
    health_ = grpc::ByteBuffer(&empty, 1);
  }

  Runner::Picker PickerFor(const std::string& w) { return PickerFor(w, o_.tenants); }
  // `hot` tenants (the first ones) instead of --tenants, and no cold set when it differs.
  Runner::Picker PickerFor(const std::string& w, int hot) {
    const bool own = hot != o_.tenants;
    auto pick_tenant = [this, own, hot](Slot& s) -> size_t {
      return own ? s.rng() % static_cast<uint64_t>(hot) : this->TenantIndex(s);
    };
    if (w == "health") return [this](Slot&, Call* c) { *c = {kHealth, &health_}; return true; };
    if (w == "encrypt") return [this, pick_tenant](Slot& s, Call* c) { *c = {kEncrypt, &encrypt_[pick_tenant(s)]}; return true; };
    if (w == "decrypt") return [this, pick_tenant](Slot& s, Call* c) { *c = {kDecrypt, &decrypt_[pick_tenant(s)]}; return true; };
    if (w == "encrypt-batch") return [this, pick_tenant](Slot& s, Call* c) { *c = {kEncryptBatch, &batch_[pick_tenant(s)]}; return true; };
    if (w == "sign-jwt") return [this](Slot&, Call* c) { *c = {kSignJwt, &sign_}; return true; };
    if (w == "verify-jwt") return [this](Slot&, Call* c) { *c = {kVerifyJwt, &verify_}; return true; };
    if (w == "vault-encrypt")
      return [this, pick_tenant](Slot& s, Call* c) {
        c->http = &vault_encrypt_[pick_tenant(s)];
        return true;
      };
    if (w == "vault-decrypt")
      return [this, pick_tenant](Slot& s, Call* c) {
        c->http = &vault_decrypt_[pick_tenant(s)];
        return true;
      };
    if (w == "mix") {
      return [this, pick_tenant](Slot& s, Call* c) {
        const uint64_t r = s.rng() % 100;
        if (r < 50) *c = {kEncrypt, &encrypt_[pick_tenant(s)]};
        else if (r < 90) *c = {kDecrypt, &decrypt_[pick_tenant(s)]};
        else if (r < 95) *c = {kSignJwt, &sign_};
        else *c = {kVerifyJwt, &verify_};
        return true;
      };
    }
    Die("unknown workload " + w);
  }

  // Items per request, for per-item figures.
  int ItemsPerRequest(const std::string& w) const { return w == "encrypt-batch" ? o_.batch : 1; }

 private:
  size_t TenantIndex(Slot& s) const {
    if (o_.cold_tenants > 0 && o_.cold_fraction > 0 &&
        std::uniform_real_distribution<double>(0, 1)(s.rng) < o_.cold_fraction) {
      return static_cast<size_t>(o_.tenants) + s.rng() % static_cast<uint64_t>(o_.cold_tenants);
    }
    return s.rng() % static_cast<uint64_t>(o_.tenants);
  }

  // Sends every request of `list` once (N in flight); ALREADY_EXISTS counts as done.
  void RunList(const char* what, const char* method, const std::vector<grpc::ByteBuffer>& list,
               bool already_exists_ok) {
    std::atomic<size_t> next{0};
    WindowResult r = runner_.Run(what, 1e9, [&](Slot&, Call* c) {
      const size_t i = next.fetch_add(1);
      if (i >= list.size()) return false;
      *c = {method, &list[i]};
      return true;
    });
    // Errors are ALREADY_EXISTS when the tenants were made by an earlier run.
    if (r.errors > 0 && !(already_exists_ok && r.first_error.rfind("6 ", 0) == 0)) {
      Die(std::string(what) + ": " + std::to_string(r.errors) + " errors, first: " + r.first_error);
    }
    std::fprintf(stderr, "kms-bench: %s: %zu requests in %.1f s\n", what, list.size(), r.seconds);
  }

  const Options& o_;
  Runner& runner_;
  std::vector<grpc::ByteBuffer> encrypt_, decrypt_, batch_;
  std::vector<HttpRequest> vault_encrypt_, vault_decrypt_;
  grpc::ByteBuffer sign_, verify_, health_;
};

json ToJson(const WindowResult& r, int items) {
  json j = {{"workload", r.workload}, {"seconds", r.seconds},  {"requests", r.requests},
            {"errors", r.errors},     {"rps", r.rps},          {"items_per_s", r.rps * items},
            {"p50_us", r.p50_us},     {"p99_us", r.p99_us},    {"p999_us", r.p999_us},
            {"max_us", r.max_us}};
  if (r.server_cpu_us_per_req >= 0) {
    j["server_cpu_us_per_request"] = r.server_cpu_us_per_req;
    j["server_cpu_us_per_item"] = r.server_cpu_us_per_req / items;
  }
  if (!r.first_error.empty()) j["first_error"] = r.first_error;
  return j;
}

void PrintHeader() {
  std::printf("%-22s %8s %10s %9s %9s %9s %8s %12s\n", "workload", "seconds", "req/s", "p50 us",
              "p99 us", "p99.9 us", "errors", "cpu us/req");
}

void PrintRow(const WindowResult& r) {
  char cpu[32] = "-";
  if (r.server_cpu_us_per_req >= 0) std::snprintf(cpu, sizeof(cpu), "%.1f", r.server_cpu_us_per_req);
  std::printf("%-22s %8.1f %10.0f %9.0f %9.0f %9.0f %8llu %12s\n", r.workload.c_str(), r.seconds,
              r.rps, r.p50_us, r.p99_us, r.p999_us, static_cast<unsigned long long>(r.errors), cpu);
  std::fflush(stdout);
}

struct Spread {
  double mean = 0, min = 0, max = 0, stdev = 0;
};
Spread SpreadOf(const std::vector<double>& v) {
  Spread s;
  if (v.empty()) return s;
  s.min = *std::min_element(v.begin(), v.end());
  s.max = *std::max_element(v.begin(), v.end());
  for (double x : v) s.mean += x;
  s.mean /= static_cast<double>(v.size());
  for (double x : v) s.stdev += (x - s.mean) * (x - s.mean);
  s.stdev = v.size() > 1 ? std::sqrt(s.stdev / static_cast<double>(v.size() - 1)) : 0;
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = Parse(argc, argv);
  // The baseline runs on the target's connections, or with --baseline-config on its own
  // (another kmsd: its own tenants, ciphertexts and token).
  const bool other_kmsd = !o.baseline_config.empty();
  Runner runner(o, o.target, IsVault(o.workload) || (!other_kmsd && IsVault(o.compare)));
  Workloads work(o, runner);
  std::unique_ptr<Runner> other_runner;
  std::unique_ptr<Workloads> other_work;
  if (other_kmsd) {
    other_runner = std::make_unique<Runner>(o, o.baseline, IsVault(o.compare));
    other_work = std::make_unique<Workloads>(o, *other_runner);
  }
  Runner& base_runner = other_kmsd ? *other_runner : runner;
  Workloads& base_work = other_kmsd ? *other_work : work;
  (void)work.PickerFor(o.workload);  // unknown names fail first
  if (!o.compare.empty()) (void)base_work.PickerFor(o.compare);
  if (other_kmsd) {
    work.Prepare({o.workload});
    base_work.Prepare({o.compare});
  } else if (!o.compare.empty()) {
    work.Prepare({o.workload, o.compare});
  } else {
    work.Prepare({o.workload});
  }

  const bool table = o.format == "table";
  json out = {{"addr", o.target.addr},          {"workload", o.workload},
              {"inflight", o.inflight},         {"connections", o.connections},
              {"payload", o.payload},           {"tenants", o.tenants},
              {"cold_tenants", o.cold_tenants}, {"cold_fraction", o.cold_fraction}};
  if (IsVault(o.workload) || IsVault(o.compare)) out["https"] = o.target.https;
  if (other_kmsd) {
    out["baseline_addr"] = o.baseline.addr;
    out["baseline_label"] = o.baseline_label;
  }
  if (o.workload == "encrypt-batch") out["batch"] = o.batch;
  uint64_t total_errors = 0;

  const int base_hot = o.baseline_tenants > 0 ? o.baseline_tenants : o.tenants;
  if (base_hot > o.tenants + o.cold_tenants) Die("--baseline-tenants exceeds the tenants made");
  if (o.warmup > 0) {
    runner.Run(o.workload + "/warmup", o.warmup, work.PickerFor(o.workload));
    if (!o.compare.empty()) {
      base_runner.Run(o.compare + "/warmup", o.warmup, base_work.PickerFor(o.compare, base_hot));
    }
  }

  if (o.compare.empty()) {
    Runner::Picker pick = work.PickerFor(o.workload);
    std::atomic<uint64_t> sent{0};
    Runner::Picker counted = [&](Slot& s, Call* c) {
      return sent.fetch_add(1) < o.requests && pick(s, c);
    };
    WindowResult r = o.requests > 0 ? runner.Run(o.workload, 1e9, counted)
                                    : runner.Run(o.workload, o.seconds, pick);
    if (!o.label.empty()) r.workload += "@" + o.label;
    total_errors += r.errors;
    if (table) {
      PrintHeader();
      PrintRow(r);
      if (o.workload == "encrypt-batch" && r.server_cpu_us_per_req >= 0) {
        std::printf("server cpu per item: %.3f us (%d items per request)\n",
                    r.server_cpu_us_per_req / o.batch, o.batch);
      }
    }
    out["result"] = ToJson(r, work.ItemsPerRequest(o.workload));
  } else {
    out["baseline"] = o.compare;
    out["baseline_tenants"] = base_hot;
    std::vector<double> rps_ratio, p99_ratio, base_rps, work_rps;
    json windows = json::array();
    if (table) PrintHeader();
    for (int k = 0; k < o.windows; ++k) {
      WindowResult b =
          base_runner.Run(o.compare, o.seconds, base_work.PickerFor(o.compare, base_hot));
      if (o.baseline_tenants > 0) b.workload += "@" + std::to_string(base_hot);
      if (other_kmsd) b.workload += "@" + o.baseline_label;
      WindowResult r = runner.Run(o.workload, o.seconds, work.PickerFor(o.workload));
      if (!o.label.empty()) r.workload += "@" + o.label;
      total_errors += b.errors + r.errors;
      if (table) {
        PrintRow(b);
        PrintRow(r);
      }
      if (b.rps > 0) rps_ratio.push_back(r.rps / b.rps);
      if (b.p99_us > 0) p99_ratio.push_back(r.p99_us / b.p99_us);
      base_rps.push_back(b.rps);
      work_rps.push_back(r.rps);
      windows.push_back({{"baseline", ToJson(b, work.ItemsPerRequest(o.compare))},
                         {"workload", ToJson(r, work.ItemsPerRequest(o.workload))}});
    }
    const Spread rr = SpreadOf(rps_ratio), pr = SpreadOf(p99_ratio);
    const std::string base_name = o.compare + (other_kmsd ? "@" + o.baseline_label : "");
    const std::string name = o.workload + (o.label.empty() ? "" : "@" + o.label);
    const Spread bs = SpreadOf(base_rps), ws = SpreadOf(work_rps);
    out["windows"] = windows;
    out["ratio"] = {{"rps_mean", rr.mean}, {"rps_min", rr.min},   {"rps_max", rr.max},
                    {"rps_stdev", rr.stdev}, {"p99_mean", pr.mean}, {"p99_min", pr.min},
                    {"p99_max", pr.max},   {"baseline_rps_mean", bs.mean},
                    {"workload_rps_mean", ws.mean}};
    if (table) {
      std::printf(
          "\n%s / %s: req/s ratio %.3f (min %.3f, max %.3f, stdev %.3f, %zu window pairs); "
          "p99 ratio %.2f (min %.2f, max %.2f)\n",
          name.c_str(), base_name.c_str(), rr.mean, rr.min, rr.max, rr.stdev, rps_ratio.size(),
          pr.mean, pr.min, pr.max);
    }
  }
  out["errors"] = total_errors;
  if (!table) std::printf("%s\n", out.dump(2).c_str());
  return total_errors == 0 ? 0 : 1;
}
