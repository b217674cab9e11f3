// End to end for operations: a real Prometheus (the Debian package), started by this test
// on 127.0.0.1 with a port and a configuration chosen at run time, scrapes a running kmsd
// (SoftHSM2, the test runner's PostgreSQL) over TLS 1.3 with the dev CA and a client
// certificate (metrics.require_client_cert); `promtool check metrics` judges a real
// scrape; and with the PostgreSQL server stopped under the running kmsd, /readyz,
// grpc.health.v1, GetStatus and the metrics all say degraded, then ready again once it
// is back.
//
// Stops and restarts the shared PostgreSQL: ctest runs this suite alone (RUN_SERIAL).
#include <signal.h>

#include <chrono>
#include <condition_variable>
#include <fstream>
#include <functional>
#include <mutex>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"
#include "kms/v1/admin_service.grpc.pb.h"
#include "kms/v1/key_service.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "tests/e2e/e2e_support.h"
#include "tests/test_common/kmsd_process.h"
#include "tests/test_common/temp_dir.h"

namespace kms {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using test::RunCommand;

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

int FreePort() {
  auto r = RunCommand(
      "python3 -c 'import socket; s=socket.socket(); s.bind((\"127.0.0.1\",0)); print(s.getsockname()[1])'");
  return std::stoi(r.out);
}

// Polls `done` every 200 ms until it holds or `timeout` passes.
bool WaitFor(const std::function<bool()>& done, seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(milliseconds(200));
  }
  return done();
}

// grpc.health.v1.Health/Check for `service` through the generic stub (kmsd's health
// protos are gRPC's own; the message is one string field): the status and the serving
// status (1 SERVING, 2 NOT_SERVING, 3 SERVICE_UNKNOWN; 0 on error).
std::pair<grpc::Status, int> HealthCheck(const std::shared_ptr<grpc::Channel>& channel,
                                         const std::string& service) {
  std::string request;
  if (!service.empty()) {
    request.push_back('\x0a');
    request.push_back(static_cast<char>(service.size()));
    request += service;
  }
  auto [status, bytes] = e2e::RawCall(channel, "/grpc.health.v1.Health/Check", request, seconds(5));
  // HealthCheckResponse: field 1 varint; absent means UNKNOWN (0).
  const int serving = bytes.size() == 2 && bytes[0] == '\x08' ? bytes[1] : 0;
  return {status, serving};
}

class MetricsE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string conninfo = Env("KMS_TEST_PG_CONNINFO");
    const std::string password_file = Env("KMS_TEST_PG_PASSWORD_FILE");
    pg_ctl_ = Env("KMS_TEST_PG_CTL");
    ASSERT_FALSE(conninfo.empty() || password_file.empty() || pg_ctl_.empty())
        << "KMS_TEST_PG_CONNINFO / KMS_TEST_PG_PASSWORD_FILE / KMS_TEST_PG_CTL are not set: run "
           "through tools/test.sh, which starts a private PostgreSQL";
    ASSERT_EQ(RunCommand("command -v prometheus promtool >/dev/null").exit_code, 0)
        << "prometheus is not installed: tools/install-deps.sh --test";
    dir_ = new test::TempDir("kmsd-metrics-e2e-");
    state_ = dir_->Join("state");

    // A database of this run's own.
    std::mt19937_64 rng(std::random_device{}());
    const std::string database = absl::StrCat("kmsd_metrics_", rng() % 1000000000);
    const std::string pgpass = dir_->Write(
        "pgpass", absl::StrCat("*:*:*:*:", test::ReadFileOrEmpty(password_file), "\n"), 0600);
    auto created = RunCommand(absl::StrCat("PGPASSFILE=", pgpass, " psql -q \"", conninfo,
                                           "\" -c 'CREATE DATABASE ", database, "' 2>&1"));
    ASSERT_EQ(created.exit_code, 0) << created.out;
    std::string db_conninfo = conninfo;
    if (const size_t db = db_conninfo.find("dbname="); db != std::string::npos) {
      const size_t end = db_conninfo.find(' ', db);
      db_conninfo.erase(db, end == std::string::npos ? std::string::npos : end - db);
    }
    db_conninfo += " dbname=" + database;

    // The dev state dir (token, CA, certificates, policy), then config-file mode on it.
    {
      auto dev = test::KmsdProcess::Start(
          KMSD_BINARY, {"--dev", "--state-dir", state_, "--grpc-listen", "127.0.0.1:0", "--http-listen", ""},
          dir_->Join("setup.log"));
      ASSERT_TRUE(dev.ok()) << dev.status();
      ASSERT_EQ((*dev)->Stop(), 0);
    }
    nlohmann::json config = e2e::DevStateConfig(state_, "");
    config["http"] = {{"listen", "127.0.0.1:0"}};
    config["store"] = {{"backend", "postgres"},
                       {"postgres", {{"conninfo", db_conninfo}, {"password_file", password_file}}}};
    config["health"] = {{"probe_interval_seconds", 1}};
    config["metrics"] = {{"require_client_cert", true}};
    config_ = config;
    const std::string config_path = dir_->Write("kmsd.json", config.dump(2), 0600);
    auto p = test::KmsdProcess::Start(KMSD_BINARY, {"--config", config_path}, dir_->Join("kmsd.log"));
    ASSERT_TRUE(p.ok()) << p.status();
    kmsd_ = p->release();
    ASSERT_NE(kmsd_->http_port(), 0);

    // Prometheus, scraping kmsd every second over TLS 1.3 with the operator's certificate,
    // and loading the alert rules of deploy/ (a rule file it refused would stop it).
    prom_port_ = FreePort();
    const std::string prom_config = dir_->Write(
        "prometheus.yml",
        absl::StrCat("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n",
                     "rule_files:\n  - ", KMS_ALERT_RULES, "\n",
                     "scrape_configs:\n  - job_name: kmsd\n    scheme: https\n",
                     "    tls_config:\n      ca_file: ", Pki("ca.pem"), "\n      cert_file: ",
                     Pki("clients/operator.pem"), "\n      key_file: ", Pki("clients/operator.key"),
                     "\n      server_name: localhost\n      min_version: TLS13\n",
                     "    static_configs:\n      - targets: ['127.0.0.1:", kmsd_->http_port(), "']\n"),
        0600);
    auto checked = RunCommand(absl::StrCat("promtool check config ", prom_config, " 2>&1"));
    ASSERT_EQ(checked.exit_code, 0) << checked.out;
    auto started = RunCommand(absl::StrCat(
        "prometheus --config.file=", prom_config, " --storage.tsdb.path=", dir_->Join("tsdb"),
        " --web.listen-address=127.0.0.1:", prom_port_, " >", dir_->Join("prometheus.log"),
        " 2>&1 & echo $!"));
    ASSERT_EQ(started.exit_code, 0);
    prom_pid_ = std::stoi(started.out);
    ASSERT_TRUE(WaitFor([] { return RunCommand(absl::StrCat("curl -sf http://127.0.0.1:", prom_port_,
                                                            "/-/ready >/dev/null")).exit_code == 0; },
                        seconds(30)))
        << test::ReadFileOrEmpty(dir_->Join("prometheus.log"));
  }

  static void TearDownTestSuite() {
    if (prom_pid_ > 0) {
      kill(prom_pid_, SIGTERM);
      for (int i = 0; i < 100 && kill(prom_pid_, 0) == 0; ++i) std::this_thread::sleep_for(milliseconds(50));
      kill(prom_pid_, SIGKILL);
    }
    delete kmsd_;
    kmsd_ = nullptr;
    delete dir_;
  }

  static std::string Pki(const std::string& name) { return state_ + "/pki/" + name; }
  static std::shared_ptr<grpc::Channel> Channel(const std::string& client) {
    return e2e::DevChannel(state_, kmsd_->grpc_addr(), client);
  }

  // GET https://localhost:<http port><path>; `client` "" sends no certificate. Returns the
  // HTTP status line's code and the body.
  static std::pair<int, std::string> Https(const std::string& path, const std::string& client = "",
                                           int port = 0) {
    std::string cert;
    if (!client.empty()) {
      cert = absl::StrCat(" --cert ", Pki("clients/" + client + ".pem"), " --key ",
                          Pki("clients/" + client + ".key"));
    }
    auto r = RunCommand(absl::StrCat("curl -sS --max-time 10 --tlsv1.3 --cacert ", Pki("ca.pem"), cert,
                                     " -w '\\n%{http_code}' https://localhost:",
                                     port != 0 ? port : kmsd_->http_port(), path));
    const size_t nl = r.out.rfind('\n');
    if (r.exit_code != 0 || nl == std::string::npos) return {0, r.out};
    return {std::atoi(r.out.c_str() + nl + 1), r.out.substr(0, nl)};
  }

  // The value of the first sample of `series` (exact name and labels as written) in a
  // scrape, or NaN when absent.
  static double Sample(const std::string& scrape, const std::string& series) {
    const std::string key = series + " ";
    for (size_t pos = 0; (pos = scrape.find(key, pos)) != std::string::npos; pos += key.size()) {
      if (pos == 0 || scrape[pos - 1] == '\n') return std::stod(scrape.substr(pos + key.size()));
    }
    return std::nan("");
  }

  // Prometheus's answer to an instant query: the result vector.
  static nlohmann::json Query(const std::string& promql) {
    auto r = RunCommand(absl::StrCat("curl -sS --max-time 10 -G http://127.0.0.1:", prom_port_,
                                     "/api/v1/query --data-urlencode 'query=", promql, "'"));
    if (r.exit_code != 0) return nlohmann::json::array();
    nlohmann::json j = nlohmann::json::parse(r.out, nullptr, false);
    if (j.is_discarded() || j.value("status", "") != "success") return nlohmann::json::array();
    return j["data"]["result"];
  }

  static void CreateTenantAndEncrypt(const std::string& tenant) {
    {
      grpc::ClientContext ctx;
      e2e::Deadline(ctx);
      v1::CreateTenantRequest req;
      req.set_tenant_id(tenant);
      v1::CreateTenantResponse resp;
      grpc::Status s = v1::AdminService::NewStub(Channel("operator"))->CreateTenant(&ctx, req, &resp);
      ASSERT_TRUE(s.ok() || s.error_code() == grpc::StatusCode::ALREADY_EXISTS) << s.error_message();
    }
    ASSERT_TRUE(Encrypt(tenant).ok());
  }

  static grpc::Status Encrypt(const std::string& tenant) {
    grpc::ClientContext ctx;
    e2e::Deadline(ctx);
    v1::EncryptRequest req;
    req.set_tenant_id(tenant);
    req.set_plaintext("dave@example.com");
    v1::EncryptResponse resp;
    return v1::KeyService::NewStub(Channel("billing"))->Encrypt(&ctx, req, &resp);
  }

  static absl::StatusOr<v1::GetStatusResponse> GetStatus() {
    grpc::ClientContext ctx;
    e2e::Deadline(ctx, seconds(5));
    v1::GetStatusResponse resp;
    grpc::Status s = v1::AdminService::NewStub(Channel("operator"))->GetStatus(&ctx, {}, &resp);
    if (!s.ok()) return absl::UnavailableError(s.error_message());
    return resp;
  }

  static inline test::TempDir* dir_ = nullptr;
  static inline std::string state_;
  static inline std::string pg_ctl_;
  static inline nlohmann::json config_;
  static inline test::KmsdProcess* kmsd_ = nullptr;
  static inline int prom_port_ = 0;
  static inline pid_t prom_pid_ = -1;
};

TEST_F(MetricsE2eTest, PrometheusScrapesKeyAgesAndBackendUpOverTls) {
  // The target is up (TLS 1.3, the client certificate accepted) ...
  ASSERT_TRUE(WaitFor([] {
    nlohmann::json up = Query("up{job=\"kmsd\"}");
    return up.size() == 1 && up[0]["value"][1] == "1";
  }, seconds(30))) << Query("up").dump();
  // ... and its key-age and backend series are in Prometheus's store.
  nlohmann::json kek = Query("kmsd_kek_primary_age_seconds");
  ASSERT_EQ(kek.size(), 1u) << kek.dump();
  EXPECT_GE(std::stod(kek[0]["value"][1].get<std::string>()), 0.0);
  EXPECT_EQ(kek[0]["metric"]["job"], "kmsd");
  ASSERT_EQ(Query("kmsd_jwt_signing_key_age_seconds").size(), 1u);
  nlohmann::json backends = Query("kmsd_backend_up");
  ASSERT_EQ(backends.size(), 2u) << backends.dump();  // hsm and store; no Redis configured
  for (const auto& b : backends) {
    EXPECT_EQ(b["value"][1], "1") << b.dump();
  }
  EXPECT_EQ(Query("kmsd_key_rotation_overdue{key=\"kek\"}").at(0)["value"][1], "0");
  // The alert rules of deploy/ loaded, and none fires on a healthy kmsd.
  auto rules = RunCommand(absl::StrCat("curl -sS http://127.0.0.1:", prom_port_, "/api/v1/rules"));
  EXPECT_NE(rules.out.find("KmsdDegradedPastKeyMaxAge"), std::string::npos) << rules.out;
  EXPECT_TRUE(Query("ALERTS{alertstate=\"firing\"}").empty());
}

TEST_F(MetricsE2eTest, ARealScrapePassesPromtoolAndNeedsAClientCertificate) {
  ASSERT_NO_FATAL_FAILURE(CreateTenantAndEncrypt("promtool-co"));
  auto [code, scrape] = Https("/metrics", "operator");
  ASSERT_EQ(code, 200) << scrape;
  const std::string file = dir_->Write("scrape.txt", scrape, 0600);
  auto lint = RunCommand(absl::StrCat("promtool check metrics < ", file, " 2>&1"));
  EXPECT_EQ(lint.exit_code, 0) << lint.out;
  EXPECT_EQ(lint.out, "") << lint.out;  // not one lint warning
  // The RPCs just made are counted with their code; histograms are complete.
  EXPECT_GE(Sample(scrape, "kmsd_rpc_requests_total{code=\"OK\",method=\"Encrypt\",service=\"KeyService\"}"), 1);
  EXPECT_GE(Sample(scrape, "kmsd_rpc_duration_seconds_bucket{method=\"Encrypt\",service=\"KeyService\",le=\"+Inf\"}"), 1);
  EXPECT_GE(Sample(scrape, "kmsd_dek_cache_entries"), 1);
  EXPECT_GE(Sample(scrape, "kmsd_hsm_operations_total{operation=\"seal\"}"), 1);
  EXPECT_EQ(scrape.find("promtool-co"), std::string::npos);  // no tenant id in any label

  // metrics.require_client_cert: no certificate, no metrics; health stays public.
  auto [anonymous, body] = Https("/metrics");
  EXPECT_EQ(anonymous, 403) << body;
  EXPECT_EQ(Https("/healthz").first, 200);
}

// Stops the test runner's PostgreSQL server, and starts it again on every path out of
// the test. `pg_ctl restart` (not `start`) brings it back with the options it was
// started with (postmaster.opts: port, socket directory). The server's output must not
// reach this process (ctest would wait for the pipe), and its log goes to /tmp, which
// the postgres user can write.
class PostgresStopped {
 public:
  explicit PostgresStopped(std::string pg_ctl) : pg_ctl_(std::move(pg_ctl)) {
    std::mt19937_64 rng(std::random_device{}());
    log_ = absl::StrCat("/tmp/kms-pg-metrics-e2e-", rng() % 1000000000, ".log");
    stopped_ = std::system((pg_ctl_ + " -m fast -w stop >/dev/null 2>&1").c_str()) == 0;
  }
  ~PostgresStopped() {
    Start();
    std::remove(log_.c_str());
  }
  bool stopped() const { return stopped_; }
  bool Start() {
    if (!stopped_) return true;
    const std::string cmd = absl::StrCat(pg_ctl_, " -w -l ", log_, " restart >/dev/null 2>&1");
    stopped_ = std::system(cmd.c_str()) != 0;
    return !stopped_;
  }
  const std::string& log() const { return log_; }

 private:
  std::string pg_ctl_;
  std::string log_;
  bool stopped_ = false;
};

TEST_F(MetricsE2eTest, WithTheStoreStoppedEverySignalSaysDegradedThenReadyWhenItReturns) {
  ASSERT_NO_FATAL_FAILURE(CreateTenantAndEncrypt("outage-co"));
  ASSERT_EQ(Https("/readyz").second, "ready\n");

  PostgresStopped pg(pg_ctl_);
  ASSERT_TRUE(pg.stopped());

  // /readyz: still 200 (serving from memory), says degraded and names the store.
  ASSERT_TRUE(WaitFor([] { return Https("/readyz").second.rfind("degraded:", 0) == 0; }, seconds(30)))
      << Https("/readyz").second;
  auto [code, body] = Https("/readyz");
  EXPECT_EQ(code, 200);
  EXPECT_NE(body.find("store down since "), std::string::npos) << body;
  EXPECT_EQ(body.find("hsm down"), std::string::npos) << body;

  // gRPC health: the service as a whole still serves; the store's own service does not.
  EXPECT_EQ(HealthCheck(Channel("billing"), "").second, 1);
  EXPECT_EQ(HealthCheck(Channel("billing"), "kmsd.store").second, 2);
  EXPECT_EQ(HealthCheck(Channel("billing"), "kmsd.hsm").second, 1);

  // GetStatus: ready and degraded, the store unhealthy.
  auto status = GetStatus();
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_TRUE(status->ready());
  EXPECT_TRUE(status->degraded());
  EXPECT_GT(status->degraded_since_unix(), 0);
  for (const v1::BackendState& b : status->backends()) {
    // The audit log is written to the store, so it may be failing too; the store's
    // return must heal it (checked below).
    if (b.name() == "audit") continue;
    EXPECT_EQ(b.healthy(), b.name() != "store") << b.name();
  }

  // The metrics, scraped directly and as Prometheus stored them.
  auto [mcode, scrape] = Https("/metrics", "operator");
  ASSERT_EQ(mcode, 200);
  EXPECT_EQ(Sample(scrape, "kmsd_backend_up{backend=\"store\"}"), 0);
  EXPECT_EQ(Sample(scrape, "kmsd_backend_up{backend=\"hsm\"}"), 1);
  EXPECT_EQ(Sample(scrape, "kmsd_degraded"), 1);
  EXPECT_TRUE(WaitFor([] {
    nlohmann::json r = Query("kmsd_backend_up{backend=\"store\"}");
    return r.size() == 1 && r[0]["value"][1] == "0";
  }, seconds(15)));

  // The cached tenant is still served.
  EXPECT_TRUE(Encrypt("outage-co").ok());

  // Back: ready everywhere, without a restart of kmsd.
  ASSERT_TRUE(pg.Start()) << test::ReadFileOrEmpty(pg.log());
  ASSERT_TRUE(WaitFor([] { return Https("/readyz").second == "ready\n"; }, seconds(60)))
      << Https("/readyz").second;
  EXPECT_EQ(HealthCheck(Channel("billing"), "kmsd.store").second, 1);
  status = GetStatus();
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_FALSE(status->degraded());
  EXPECT_EQ(status->degraded_since_unix(), 0);
  // Every backend, the audit log included, is healthy again.
  EXPECT_TRUE(WaitFor([] {
    auto s = GetStatus();
    if (!s.ok()) return false;
    for (const v1::BackendState& b : s->backends()) {
      if (!b.healthy()) return false;
    }
    return true;
  }, seconds(30)));
  auto [rcode, recovered] = Https("/metrics", "operator");
  ASSERT_EQ(rcode, 200);
  EXPECT_EQ(Sample(recovered, "kmsd_backend_up{backend=\"store\"}"), 1);
  EXPECT_EQ(Sample(recovered, "kmsd_degraded"), 0);
  EXPECT_EQ(Sample(recovered, "kmsd_degraded_seconds"), 0);
}

TEST_F(MetricsE2eTest, AStoreDownAtStartIsNotReadyAndSaysSoUntilItReturns) {
  PostgresStopped pg(pg_ctl_);
  ASSERT_TRUE(pg.stopped());
  // A second kmsd on the same database, started while PostgreSQL is down.
  nlohmann::json config = config_;
  const int http_port = FreePort();
  config["node_id"] = "starting";
  config["http"] = {{"listen", absl::StrCat("127.0.0.1:", http_port)}};
  const std::string path = dir_->Write("starting.json", config.dump(2), 0600);
  auto started = RunCommand(absl::StrCat(KMSD_BINARY, " --config ", path, " >", dir_->Join("starting.out"),
                                         " 2>", dir_->Join("starting.log"), " & echo $!"));
  ASSERT_EQ(started.exit_code, 0);
  const pid_t pid = std::stoi(started.out);
  struct Killer {
    pid_t pid;
    ~Killer() {
      kill(pid, SIGTERM);
      for (int i = 0; i < 100 && kill(pid, 0) == 0; ++i) std::this_thread::sleep_for(milliseconds(50));
      kill(pid, SIGKILL);
    }
  } killer{pid};

  // 503 with what it waits for; the metrics say not ready and name the store.
  ASSERT_TRUE(WaitFor([&] { return Https("/readyz", "", http_port).first == 503; }, seconds(30)))
      << test::ReadFileOrEmpty(dir_->Join("starting.log"));
  EXPECT_TRUE(WaitFor([&] {
    return Https("/readyz", "", http_port).second == "loading: key store unavailable at start; retrying with backoff\n";
  }, seconds(10))) << Https("/readyz", "", http_port).second;
  auto [code, scrape] = Https("/metrics", "operator", http_port);
  ASSERT_EQ(code, 200) << scrape;
  EXPECT_EQ(Sample(scrape, "kmsd_ready"), 0);
  EXPECT_EQ(Sample(scrape, "kmsd_backend_up{backend=\"store\"}"), 0);
  EXPECT_EQ(Sample(scrape, "kmsd_backend_up{backend=\"hsm\"}"), 1);
  EXPECT_EQ(Https("/healthz", "", http_port).first, 200);  // alive all the same

  // The store returns: ready within the backoff (at most 30 s), no restart.
  ASSERT_TRUE(pg.Start()) << test::ReadFileOrEmpty(pg.log());
  ASSERT_TRUE(WaitFor([&] { return Https("/readyz", "", http_port).second == "ready\n"; }, seconds(60)))
      << Https("/readyz", "", http_port).second;
  auto [rcode, ready_scrape] = Https("/metrics", "operator", http_port);
  ASSERT_EQ(rcode, 200);
  EXPECT_EQ(Sample(ready_scrape, "kmsd_ready"), 1);
  EXPECT_EQ(Sample(ready_scrape, "kmsd_backend_up{backend=\"store\"}"), 1);
  EXPECT_GE(Sample(ready_scrape, "kmsd_kek_primary_age_seconds"), 0);
}

}  // namespace
}  // namespace kms
