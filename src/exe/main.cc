// kmsd: parses the command line, hardens the process, gets a config (a file, or from
// src/dev in dev mode), and hands it to KmsServer. Everything else lives in the libraries.
#include <signal.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <thread>

#include "CLI/CLI.hpp"
#include "kms/common/secret.h"
#include "spdlog/spdlog.h"
#include "src/common/log.h"
#include "src/common/sync.h"
#include "src/config/config.h"
#include "src/dev/dev_mode.h"
#include "src/server/server.h"

namespace {

constexpr int kExitRuntime = 1;
constexpr int kExitConfig = 2;

}  // namespace

int main(int argc, char** argv) {
  kms::server::RestrictGrpcToTls13();

  CLI::App app{"kmsd: the key-management daemon (HSM -> KEK -> DEK, field encryption over mTLS)"};
  bool dev = false;
  std::string config_path, issue_cert, log_level, log_format;
  kms::dev::DevOptions dev_options;
  app.add_flag("--dev", dev, "Run a self-contained dev node (SQLite, SoftHSM2, dev CA) in --state-dir");
  app.add_option("--state-dir", dev_options.state_dir, "Dev mode state directory (created on first run)");
  app.add_option("--grpc-listen", dev_options.grpc_listen, "Dev mode gRPC address HOST:PORT (port 0: any)")
      ->capture_default_str();
  app.add_option("--http-listen", dev_options.http_listen, "Dev mode HTTPS address HOST:PORT (port 0: any)")
      ->capture_default_str();
  app.add_option("--postgres", dev_options.postgres_conninfo,
                 "Dev mode: a libpq connection string (no password) to share one PostgreSQL between replicas");
  app.add_option("--postgres-password-file", dev_options.postgres_password_file,
                 "Dev mode: file holding the PostgreSQL password");
  app.add_option("--redis", dev_options.redis_addr,
                 "Dev mode: Redis for invalidation events and global rate limits (host:port or unix:/path)");
  app.add_option("--poll-interval", dev_options.poll_interval_seconds,
                 "Dev mode: seconds between polls of the store's change epoch")
      ->capture_default_str();
  app.add_option("--config", config_path, "Config file (JSON; see config/kmsd.example.json)");
  app.add_option("--issue-client-cert", issue_cert,
                 "Dev mode: issue a client certificate spiffe://kmsd.dev/NAME from the dev CA, then exit");
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error (overrides the config)");
  app.add_option("--log-format", log_format,
                 "json (JSON lines) or text; default: text on a terminal, json otherwise")
      ->check(CLI::IsMember({"json", "text"}));
  CLI11_PARSE(app, argc, argv);

  kms::LogFormat format = kms::DefaultLogFormat();
  kms::ParseLogFormat(log_format, &format);  // checked by CLI11 above
  kms::SetUpLogging(format);
  kms::server::RouteGrpcLogsToSpdlog();

  if (!kms::HardenProcess()) spdlog::warn("could not disable core dumps for this process");

  if (dev == !config_path.empty()) {
    std::cerr << "kmsd: give exactly one of --dev (with --state-dir) or --config FILE\n";
    return kExitConfig;
  }
  if (!issue_cert.empty()) {
    if (!dev || dev_options.state_dir.empty()) {
      std::cerr << "kmsd: --issue-client-cert needs --dev --state-dir DIR\n";
      return kExitConfig;
    }
    absl::StatusOr<std::string> issued =
        kms::dev::RunIssueClientCert(dev_options.state_dir, issue_cert);
    if (!issued.ok()) {
      std::cerr << "kmsd: " << issued.status().message() << "\n";
      return kExitConfig;
    }
    std::cout << *issued;
    return 0;
  }

  // A peer that goes away mid-write (a network HSM's proxy, a database or Redis
  // connection, a client) must cost an EPIPE on that call, never the process: some
  // PKCS#11 modules and client libraries write to sockets without MSG_NOSIGNAL.
  signal(SIGPIPE, SIG_IGN);

  // Signals go to one thread, which asks the server to stop.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::atomic<bool> stop{false};
  kms::Mutex mu;
  std::condition_variable cv;
  std::thread([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    kms::MutexLock lock(&mu);
    stop = true;
    cv.notify_all();
  }).detach();

  absl::StatusOr<kms::config::Config> config =
      dev ? kms::dev::PrepareDevState(dev_options) : kms::config::LoadConfigFile(config_path);
  if (!config.ok()) {
    std::cerr << "kmsd: configuration: " << config.status().message() << "\n";
    return kExitConfig;
  }
  kms::SetLogNode(config->node_id);
  const std::string level = log_level.empty() ? config->log_level : log_level;
  spdlog::set_level(spdlog::level::from_str(level));

  absl::StatusOr<std::unique_ptr<kms::server::KmsServer>> server =
      kms::server::KmsServer::Start(*config, &stop);
  if (!server.ok()) {
    std::cerr << "kmsd: cannot start: " << server.status().message() << "\n";
    return absl::IsUnavailable(server.status()) || absl::IsCancelled(server.status()) ? kExitRuntime
                                                                                       : kExitConfig;
  }
  const std::string grpc_addr =
      kms::dev::HostOf(config->grpc_listen) + ":" + std::to_string((*server)->grpc_port());
  std::string ready_line = "kmsd ready: grpc=" + grpc_addr;
  if ((*server)->http_port() != 0) {
    ready_line += " https=" + kms::dev::HostOf(config->http_listen) + ":" +
                  std::to_string((*server)->http_port());
  }
  if ((*server)->xks_port() != 0) {
    ready_line += " xks=" + kms::dev::HostOf(config->xks.listen) + ":" +
                  std::to_string((*server)->xks_port());
  }
  // In dev mode kmsctl.json is written before the ready line, which scripts wait for.
  const std::string dev_hint =
      dev ? kms::dev::OnDevNodeListening(dev_options.state_dir, grpc_addr) : "";
  std::cout << ready_line << "\n" << dev_hint;
  std::cout.flush();

  {
    kms::MutexLock lock(&mu);
    mu.Await(cv, [&] { return stop.load(); });
  }
  spdlog::info("stopping");
  (*server)->Shutdown();
  // What was acknowledged is written (the audit flushed in Shutdown). A call stuck in a
  // hung backend would hold the teardown forever: end the process without it.
  if (std::string stuck; !(*server)->AwaitBackendCalls(std::chrono::seconds(3), &stuck)) {
    spdlog::warn("stopped; backend calls have not returned ({}): exiting without closing the "
                 "backends",
                 stuck);
    spdlog::shutdown();
    std::_Exit(0);
  }
  return 0;
}
