// encrypt_load: Encrypt throughput over gRPC + mTLS against one or more running kmsd,
// measured in interleaved rounds (A, B, A, B, ...) so that the noise of a shared machine
// falls on every target alike. Prints requests per second per target and each target's
// ratio to the first. tools/bench-metrics.sh runs it against kmsd with metrics on and off
// (docs/benchmarks.md).
//
// Usage: encrypt_load --ca CA --cert CERT --key KEY [--threads N] [--seconds S]
//                     [--rounds R] [--bytes B] NAME=HOST:PORT...
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "grpcpp/grpcpp.h"
#include "kms/v1/admin_service.grpc.pb.h"
#include "kms/v1/key_service.grpc.pb.h"

namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct Target {
  std::string name;
  std::string addr;
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  double total_requests = 0;
  double total_seconds = 0;
  uint64_t errors = 0;
};

}  // namespace

int main(int argc, char** argv) {
  std::string ca, cert, key;
  int threads = 8, seconds = 5, rounds = 3, bytes = 32;
  std::vector<Target> targets;
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
    else if (a == "--threads") threads = std::atoi(next().c_str());
    else if (a == "--seconds") seconds = std::atoi(next().c_str());
    else if (a == "--rounds") rounds = std::atoi(next().c_str());
    else if (a == "--bytes") bytes = std::atoi(next().c_str());
    else if (auto eq = a.find('='); eq != std::string::npos) targets.push_back({a.substr(0, eq), a.substr(eq + 1)});
    else {
      std::fprintf(stderr, "usage: %s --ca CA --cert CERT --key KEY [--threads N] [--seconds S] "
                           "[--rounds R] [--bytes B] NAME=HOST:PORT...\n", argv[0]);
      return 2;
    }
  }
  if (targets.empty() || ca.empty() || cert.empty() || key.empty() || threads < 1) {
    std::fprintf(stderr, "need --ca, --cert, --key and at least one NAME=HOST:PORT\n");
    return 2;
  }
  grpc::SslCredentialsOptions tls{ReadFile(ca), ReadFile(key), ReadFile(cert)};
  const std::string tenant = "bench-tenant";
  const std::string plaintext(static_cast<size_t>(bytes), 'x');

  for (Target& t : targets) {
    // One connection per thread, so no single HTTP/2 connection is the bottleneck.
    for (int i = 0; i < threads; ++i) {
      grpc::ChannelArguments args;
      args.SetInt("kms.bench.channel", i);  // distinct args: distinct subchannels
      args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
      t.channels.push_back(grpc::CreateCustomChannel(t.addr, grpc::SslCredentials(tls), args));
    }
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    kms::v1::CreateTenantRequest req;
    req.set_tenant_id(tenant);
    kms::v1::CreateTenantResponse resp;
    grpc::Status s = kms::v1::AdminService::NewStub(t.channels[0])->CreateTenant(&ctx, req, &resp);
    if (!s.ok() && s.error_code() != grpc::StatusCode::ALREADY_EXISTS) {
      std::fprintf(stderr, "%s: CreateTenant: %s\n", t.name.c_str(), s.error_message().c_str());
      return 1;
    }
  }

  auto run = [&](Target& t, double secs, bool count) {
    std::atomic<bool> stop{false};
    std::atomic<uint64_t> done{0}, failed{0};
    std::vector<std::thread> workers;
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < threads; ++i) {
      workers.emplace_back([&, i] {
        auto stub = kms::v1::KeyService::NewStub(t.channels[static_cast<size_t>(i)]);
        kms::v1::EncryptRequest req;
        req.set_tenant_id(tenant);
        req.set_plaintext(plaintext);
        kms::v1::EncryptResponse resp;
        uint64_t n = 0, f = 0;
        while (!stop.load(std::memory_order_relaxed)) {
          grpc::ClientContext ctx;
          ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
          if (stub->Encrypt(&ctx, req, &resp).ok()) ++n; else ++f;
        }
        done += n;
        failed += f;
      });
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(secs));
    stop = true;
    for (auto& w : workers) w.join();
    const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
    if (count) {
      t.total_requests += static_cast<double>(done.load());
      t.total_seconds += took.count();
      t.errors += failed.load();
      std::printf("round: %-12s %10.0f req/s\n", t.name.c_str(), static_cast<double>(done.load()) / took.count());
      std::fflush(stdout);
    }
  };

  for (Target& t : targets) run(t, 1.0, /*count=*/false);  // warm-up: connections, DEK cache
  for (int r = 0; r < rounds; ++r) {
    for (Target& t : targets) run(t, seconds, /*count=*/true);
  }
  const double base = targets[0].total_requests / targets[0].total_seconds;
  std::printf("\n%-12s %12s %8s %8s\n", "target", "req/s", "ratio", "errors");
  for (const Target& t : targets) {
    const double rps = t.total_requests / t.total_seconds;
    std::printf("%-12s %12.0f %8.3f %8llu\n", t.name.c_str(), rps, rps / base,
                static_cast<unsigned long long>(t.errors));
  }
  return 0;
}
