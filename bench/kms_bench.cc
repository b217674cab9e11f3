// kms-bench: a closed-loop load client for kmsd over gRPC + mTLS (issue 12).
//
// N requests stay in flight over C connections for a fixed time (gRPC callback API,
// requests serialized once and sent as raw byte buffers so the client spends as little
// of a shared machine's CPU as possible). Reports requests/s, latency p50/p99/p99.9,
// errors and, given the server's pid, kmsd's CPU per request from /proc/<pid>/stat.
//
// Workloads: health (grpc.health.v1.Health/Check: the null RPC), encrypt, decrypt,
// encrypt-batch, sign-jwt, verify-jwt, mix (encrypt 50%, decrypt 40%, sign-jwt 5%,
// verify-jwt 5%).
//
// --compare BASE runs the baseline workload BASE and the workload in alternating
// windows (BASE, W, BASE, W, ...) in one run, so that the noise of a shared machine
// falls on both alike, and prints the ratio W/BASE of requests/s per window pair with
// its spread (min, max, standard deviation) and the ratio of p99.
//
// Connection settings come from a kmsctl.json-style file (--config, else
// $KMSCTL_CONFIG): {"addr": "host:port", "ca": PEM, "cert": PEM, "key": PEM}.
// Run with --help for the options. Benchmarks, not tests: nothing here asserts a time.
#include <unistd.h>

#include <algorithm>
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

struct Options {
  std::string config, addr, ca, cert, key;
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
  bool create_tenants = true;
  int server_pid = 0;
  std::string format = "table";
  uint64_t seed = 1;
};

void Usage() {
  std::printf(
      "usage: kms-bench [--config kmsctl.json] [--addr H:P --ca F --cert F --key F]\n"
      "  --workload W         health|encrypt|decrypt|encrypt-batch|sign-jwt|verify-jwt|mix\n"
      "  --compare BASE       alternate windows of BASE and W; print W/BASE with its spread\n"
      "  --seconds S          measured time (per window with --compare)       [10]\n"
      "  --windows K          with --compare: window pairs                     [6]\n"
      "  --baseline-tenants T with --compare: the baseline draws from the first T\n"
      "                       tenants only (e.g. encrypt on 100000 vs encrypt on 1)\n"
      "  --warmup S           unmeasured warm-up per workload (0: none)        [1]\n"
      "  --requests K         send exactly K requests, not for --seconds (e.g. to\n"
      "                       divide a profiler's instruction count by them)\n"
      "  --inflight N         requests in flight (closed loop)                 [16]\n"
      "  --connections C      HTTP/2 connections                               [4]\n"
      "  --payload B          plaintext bytes per item                         [32]\n"
      "  --batch K            items per encrypt-batch request                  [100]\n"
      "  --tenants T          hot tenants, drawn uniformly                     [1]\n"
      "  --cold-tenants U     a second tenant set (e.g. beyond the DEK cache)  [0]\n"
      "  --cold-fraction F    share of requests to the cold set                [0]\n"
      "  --tenant-prefix P    tenant ids are P<i>                              [bench-]\n"
      "  --no-create          do not create the tenants first\n"
      "  --server-pid PID     kmsd's pid: report its CPU per request (/proc)\n"
      "  --format table|json  output                                           [table]\n"
      "  --seed S             random seed                                      [1]\n");
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
    else if (a == "--addr") o.addr = next();
    else if (a == "--ca") o.ca = next();
    else if (a == "--cert") o.cert = next();
    else if (a == "--key") o.key = next();
    else if (a == "--workload") o.workload = next();
    else if (a == "--compare") o.compare = next();
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
    else if (a == "--server-pid") o.server_pid = std::stoi(next());
    else if (a == "--format") o.format = next();
    else if (a == "--seed") o.seed = std::stoull(next());
    else { Usage(); Die("unknown option " + a); }
  }
  std::string path = o.config;
  if (path.empty()) {
    if (const char* env = std::getenv("KMSCTL_CONFIG")) path = env;
  }
  if (!path.empty()) {
    json j;
    try {
      j = json::parse(ReadFile(path));
    } catch (const json::exception& e) {
      Die("config " + path + " is not valid JSON: " + e.what());
    }
    if (o.addr.empty()) o.addr = j.value("addr", "");
    if (o.ca.empty()) o.ca = j.value("ca", "");
    if (o.cert.empty()) o.cert = j.value("cert", "");
    if (o.key.empty()) o.key = j.value("key", "");
  }
  if (o.addr.empty() || o.ca.empty() || o.cert.empty() || o.key.empty()) {
    Die("no connection settings: --config FILE (kmsctl.json) or --addr, --ca, --cert, --key");
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

struct Call {
  const char* method;
  const grpc::ByteBuffer* request;
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

  explicit Runner(const Options& o) : o_(o) {
    grpc::SslCredentialsOptions tls{ReadFile(o.ca), ReadFile(o.key), ReadFile(o.cert)};
    for (int i = 0; i < o.connections; ++i) {
      grpc::ChannelArguments args;
      args.SetInt("kms.bench.channel", i);  // distinct args: distinct connections
      args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
      auto ch = grpc::CreateCustomChannel(o.addr, grpc::SslCredentials(tls), args);
      stubs_.push_back(std::make_unique<grpc::GenericStub>(ch));
    }
    slots_.resize(static_cast<size_t>(o.inflight));
    for (size_t i = 0; i < slots_.size(); ++i) slots_[i].rng.seed(o.seed * 7919 + i);
  }

  // Runs the closed loop for `seconds` (or until `pick` runs dry) and reports it.
  WindowResult Run(const std::string& name, double seconds, const Picker& pick) {
    for (Slot& s : slots_) {
      s.latencies_us.clear();
      s.errors = 0;
      s.first_error.clear();
    }
    stop_ = false;
    const double cpu0 = ProcessCpuSeconds(o_.server_pid);
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
    const double cpu1 = ProcessCpuSeconds(o_.server_pid);
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
    Clock::time_point sent;
  };

  void Issue(size_t i, const Picker& pick) {
    Slot& slot = slots_[i];
    Call call{};
    if (stop_.load(std::memory_order_relaxed) || !pick(slot, &call)) {
      std::lock_guard<std::mutex> lock(mu_);
      if (--active_ == 0) cv_.notify_all();
      return;
    }
    auto f = std::make_shared<InFlight>();
    f->ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    f->request = *call.request;  // shares the slices
    f->sent = Clock::now();
    grpc::GenericStub& stub = *stubs_[i % stubs_.size()];
    stub.UnaryCall(&f->ctx, call.method, grpc::StubOptions(), &f->request, &f->response,
                   [this, i, f, &pick](grpc::Status s) {
                     Slot& sl = slots_[i];
                     if (!stop_.load(std::memory_order_relaxed)) {
                       if (s.ok()) {
                         const auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                             Clock::now() - f->sent);
                         sl.latencies_us.push_back(static_cast<uint32_t>(us.count()));
                       } else {
                         ++sl.errors;
                         if (sl.first_error.empty()) {
                           sl.first_error = std::to_string(s.error_code()) + " " + s.error_message();
                         }
                       }
                     }
                     Issue(i, pick);
                   });
  }

  const Options& o_;
  std::vector<std::unique_ptr<grpc::GenericStub>> stubs_;
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
    const bool tenant_work = mix || needs("encrypt") || needs("decrypt") || needs("encrypt-batch");
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
    if (tenant_work && TotalTenants() > 1 && !needs("decrypt") && !mix) {
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
  std::printf("%-14s %8s %10s %9s %9s %9s %8s %12s\n", "workload", "seconds", "req/s", "p50 us",
              "p99 us", "p99.9 us", "errors", "cpu us/req");
}

void PrintRow(const WindowResult& r) {
  char cpu[32] = "-";
  if (r.server_cpu_us_per_req >= 0) std::snprintf(cpu, sizeof(cpu), "%.1f", r.server_cpu_us_per_req);
  std::printf("%-14s %8.1f %10.0f %9.0f %9.0f %9.0f %8llu %12s\n", r.workload.c_str(), r.seconds,
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
  Runner runner(o);
  Workloads work(o, runner);
  std::vector<std::string> names = {o.workload};
  if (!o.compare.empty()) names.push_back(o.compare);
  work.Prepare(names);
  for (const std::string& w : names) (void)work.PickerFor(w);  // unknown names fail first

  const bool table = o.format == "table";
  json out = {{"addr", o.addr},         {"workload", o.workload},       {"inflight", o.inflight},
              {"connections", o.connections}, {"payload", o.payload},   {"tenants", o.tenants},
              {"cold_tenants", o.cold_tenants}, {"cold_fraction", o.cold_fraction}};
  if (o.workload == "encrypt-batch") out["batch"] = o.batch;
  uint64_t total_errors = 0;

  const int base_hot = o.baseline_tenants > 0 ? o.baseline_tenants : o.tenants;
  if (base_hot > o.tenants + o.cold_tenants) Die("--baseline-tenants exceeds the tenants made");
  if (o.warmup > 0) {
    runner.Run(o.workload + "/warmup", o.warmup, work.PickerFor(o.workload));
    if (!o.compare.empty()) runner.Run(o.compare + "/warmup", o.warmup, work.PickerFor(o.compare, base_hot));
  }

  if (o.compare.empty()) {
    Runner::Picker pick = work.PickerFor(o.workload);
    std::atomic<uint64_t> sent{0};
    Runner::Picker counted = [&](Slot& s, Call* c) {
      return sent.fetch_add(1) < o.requests && pick(s, c);
    };
    WindowResult r = o.requests > 0 ? runner.Run(o.workload, 1e9, counted)
                                    : runner.Run(o.workload, o.seconds, pick);
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
      WindowResult b = runner.Run(o.compare, o.seconds, work.PickerFor(o.compare, base_hot));
      if (o.baseline_tenants > 0) b.workload += "@" + std::to_string(base_hot);
      WindowResult r = runner.Run(o.workload, o.seconds, work.PickerFor(o.workload));
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
    const Spread bs = SpreadOf(base_rps), ws = SpreadOf(work_rps);
    out["windows"] = windows;
    out["ratio"] = {{"rps_mean", rr.mean}, {"rps_min", rr.min},   {"rps_max", rr.max},
                    {"rps_stdev", rr.stdev}, {"p99_mean", pr.mean}, {"p99_min", pr.min},
                    {"p99_max", pr.max},   {"baseline_rps_mean", bs.mean},
                    {"workload_rps_mean", ws.mean}};
    if (table) {
      std::printf("\n%s / %s: req/s ratio %.3f (min %.3f, max %.3f, stdev %.3f, %zu window pairs); "
                  "p99 ratio %.2f (min %.2f, max %.2f)\n",
                  o.workload.c_str(), o.compare.c_str(), rr.mean, rr.min, rr.max, rr.stdev,
                  rps_ratio.size(), pr.mean, pr.min, pr.max);
    }
  }
  out["errors"] = total_errors;
  if (!table) std::printf("%s\n", out.dump(2).c_str());
  return total_errors == 0 ? 0 : 1;
}
