// End to end for KEK rotation: a real kmsd over mTLS (config-file mode on a dev state
// dir's token and certificates) re-wraps 10,000 DEKs while it is SIGKILLed at random
// points of the job and restarted; on PostgreSQL the leader of two replicas is killed
// mid-job and the other finishes it.
//
// The DEKs are loaded in bulk before kmsd starts, by this process through the same
// parts kmsd uses (Pkcs11Hsm on the dev token, HsmKekRing, KeyManager, the store), into
// a database of the test's own: tens of thousands of RPCs would make the test slow
// without testing more. Each tenant gets one ciphertext made then; all of them must
// decrypt through kmsd once the job is done.
#include <signal.h>

#include <atomic>
#include <fstream>
#include <mutex>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kms/v1/admin_service.grpc.pb.h"
#include "kms/v1/key_service.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "src/hsm/pkcs11_hsm.h"
#include "src/keys/kek_ring.h"
#include "src/keys/key_manager.h"
#include "src/keys/wrapped_dek.h"
#include "src/store/postgres/postgres_key_store.h"
#include "src/store/sqlite/sqlite_key_store.h"
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

struct Corpus {
  std::vector<std::string> tenants;
  std::vector<std::string> ciphertexts;  // one per tenant, made before the rotation
};

// The shared dev state dir (token with its master key, CA, client certificates, policy).
class RotationE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir("kmsd-rotation-e2e-");
    state_ = dir_->Join("state");
    auto dev = test::KmsdProcess::Start(
        KMSD_BINARY, {"--dev", "--state-dir", state_, "--grpc-listen", "127.0.0.1:0", "--http-listen", ""},
        dir_->Join("setup.log"));
    ASSERT_TRUE(dev.ok()) << dev.status();
    ASSERT_EQ((*dev)->Stop(), 0);
    setenv("SOFTHSM2_CONF", (state_ + "/softhsm2.conf").c_str(), 1);
  }
  static void TearDownTestSuite() { delete dir_; }

  // This process's view of the dev token, as kmsd opens it.
  static absl::StatusOr<std::unique_ptr<hsm::Pkcs11Hsm>> OpenHsm() {
    return hsm::Pkcs11Hsm::Open(hsm::Pkcs11Options{.module_path = "/usr/lib/softhsm/libsofthsm2.so",
                                                   .token_label = "kmsd-dev",
                                                   .pin_file = state_ + "/secrets/hsm-user.pin",
                                                   .create_master_key = false});
  }

  // Creates `n` tenants (KEK 1, DEK 1 each) and one ciphertext per tenant in `store`.
  static void BulkLoad(store::KeyStore& store, int n, Corpus* corpus) {
    auto hsm = OpenHsm();
    ASSERT_TRUE(hsm.ok()) << hsm.status();
    auto ring = keys::HsmKekRing::Create(hsm->get(), &store, &RealClock::Instance());
    ASSERT_TRUE(ring.ok()) << ring.status();
    auto keys = keys::KeyManager::Create(ring->get(), &store, &RealClock::Instance(), {});
    ASSERT_TRUE(keys.ok()) << keys.status();
    for (int i = 0; i < n; ++i) {
      const std::string id = absl::StrCat("t", 100000 + i);
      auto tenant = keys::TenantId::Parse(id);
      ASSERT_TRUE(tenant.ok());
      auto created = (*keys)->CreateTenant(*tenant);
      ASSERT_TRUE(created.ok()) << created.status();
      const std::string plaintext = "pii of " + id;
      auto ct = (*keys)->Encrypt(
          *tenant, {}, {reinterpret_cast<const uint8_t*>(plaintext.data()), plaintext.size()});
      ASSERT_TRUE(ct.ok()) << ct.status();
      corpus->tenants.push_back(id);
      corpus->ciphertexts.push_back(ct->ciphertext);
    }
  }
  static nlohmann::json Config(const std::string& node_id, const nlohmann::json& store) {
    nlohmann::json c = e2e::DevStateConfig(state_, "");
    c["node_id"] = node_id;
    c["store"] = store;
    c["cluster"] = {{"poll_interval_seconds", 1}};
    // A pace that keeps the job running long enough for the kill points; batches small
    // enough for many checkpoints.
    c["rotation"] = {{"check_interval_seconds", 3600},
                     {"rewrap_rate_per_second", 4000},
                     {"rewrap_batch_size", 50}};
    return c;
  }

  static absl::StatusOr<std::unique_ptr<test::KmsdProcess>> StartKmsd(const nlohmann::json& config,
                                                                     const std::string& name) {
    const std::string path = dir_->Write(name + ".json", config.dump(2));
    return test::KmsdProcess::Start(KMSD_BINARY, {"--config", path},
                                    dir_->Join(absl::StrCat(name, "-", ++starts_, ".log")));
  }

  static std::unique_ptr<v1::AdminService::Stub> Admin(const test::KmsdProcess& p) {
    return v1::AdminService::NewStub(e2e::DevChannel(state_, p.grpc_addr(), "operator"));
  }
  static std::unique_ptr<v1::KeyService::Stub> Keys(const test::KmsdProcess& p) {
    return v1::KeyService::NewStub(e2e::DevChannel(state_, p.grpc_addr(), "billing"));
  }

  static grpc::Status RotateKek(const test::KmsdProcess& p, v1::RotateKekResponse* resp) {
    grpc::ClientContext ctx;
    e2e::Deadline(ctx);
    return Admin(p)->RotateKek(&ctx, {}, resp);
  }
  static grpc::Status GetJob(const test::KmsdProcess& p, const std::string& id, v1::RotationJob* job) {
    grpc::ClientContext ctx;
    e2e::Deadline(ctx, seconds(5));
    v1::GetRotationJobRequest req;
    req.set_job_id(id);
    v1::GetRotationJobResponse resp;
    grpc::Status s = Admin(p)->GetRotationJob(&ctx, req, &resp);
    *job = resp.job();
    return s;
  }
  static v1::GetStatusResponse Status(const test::KmsdProcess& p) {
    grpc::ClientContext ctx;
    e2e::Deadline(ctx, seconds(5));
    v1::GetStatusResponse resp;
    EXPECT_TRUE(Admin(p)->GetStatus(&ctx, {}, &resp).ok());
    return resp;
  }

  // Waits until the job is done (or failed, or `limit` passed) and returns it.
  static v1::RotationJob WaitForJob(const test::KmsdProcess& p, const std::string& id, seconds limit) {
    v1::RotationJob job;
    const auto start = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - start < limit) {
      if (GetJob(p, id, &job).ok() && job.state() != "running") break;
      std::this_thread::sleep_for(milliseconds(100));
    }
    return job;
  }

  // Whether KEK `version` is retired, waiting up to `limit`.
  static bool WaitRetired(const test::KmsdProcess& p, uint32_t version, seconds limit) {
    const auto start = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - start < limit) {
      const v1::GetStatusResponse status = Status(p);
      for (const auto& k : status.kek_versions()) {
        if (k.version() == version && k.state() == "retired") return true;
      }
      std::this_thread::sleep_for(milliseconds(200));
    }
    return false;
  }

  // Decrypts the whole corpus through kmsd, 8 calls at a time; returns the failures.
  static int DecryptAll(const test::KmsdProcess& p, const Corpus& corpus) {
    std::atomic<size_t> next{0};
    std::atomic<int> failures{0};
    std::vector<std::thread> workers;
    for (int w = 0; w < 8; ++w) {
      workers.emplace_back([&] {
        auto keys = Keys(p);
        for (size_t i = next++; i < corpus.tenants.size(); i = next++) {
          grpc::ClientContext ctx;
          e2e::Deadline(ctx, seconds(10));
          v1::DecryptRequest req;
          req.set_tenant_id(corpus.tenants[i]);
          req.set_ciphertext(corpus.ciphertexts[i]);
          v1::DecryptResponse resp;
          grpc::Status s = keys->Decrypt(&ctx, req, &resp);
          if (!s.ok() || resp.plaintext() != "pii of " + corpus.tenants[i]) {
            if (failures++ < 3) ADD_FAILURE() << corpus.tenants[i] << ": " << s.error_message();
          }
        }
      });
    }
    for (auto& t : workers) t.join();
    return failures;
  }

  // Every DEK row and JWT key under KEK `to` (none under an older version), each DEK
  // blob naming `to` and opening under it in the HSM.
  static void ExpectEverythingUnder(store::KeyStore& store, uint32_t to, size_t deks) {
    auto usage = store.ListKekUsage();
    ASSERT_TRUE(usage.ok()) << usage.status();
    for (const auto& u : *usage) {
      if (u.kek_version < to) {
        EXPECT_EQ(u.deks, 0u) << "KEK " << u.kek_version;
        EXPECT_EQ(u.jwt_keys, 0u) << "KEK " << u.kek_version;
      } else if (u.kek_version == to) {
        EXPECT_EQ(u.deks, deks);
        EXPECT_GE(u.jwt_keys, 1u);
      }
    }
    auto hsm = OpenHsm();
    ASSERT_TRUE(hsm.ok()) << hsm.status();
    auto ring = keys::HsmKekRing::Create(hsm->get(), &store, &RealClock::Instance());
    ASSERT_TRUE(ring.ok()) << ring.status();
    size_t seen = 0;
    store::DekKey after;
    while (true) {
      auto page = store.ListDeksWrappedUnder(to, after, 1000);
      ASSERT_TRUE(page.ok()) << page.status();
      for (const auto& d : page->deks) {
        auto named = keys::WrappedDekKekVersion(d.wrapped);
        ASSERT_TRUE(named.ok());
        EXPECT_EQ(*named, to);
        EXPECT_TRUE(keys::UnwrapDek(**ring, d.tenant_id, d.version, d.wrapped).ok()) << d.tenant_id;
        ++seen;
      }
      if (!page->more) break;
      after = store::DekKey{page->deks.back().tenant_id, page->deks.back().version};
    }
    EXPECT_EQ(seen, deks);
  }

  static test::TempDir* dir_;
  static std::string state_;
  static int starts_;
};

test::TempDir* RotationE2eTest::dir_ = nullptr;
std::string RotationE2eTest::state_;
int RotationE2eTest::starts_ = 0;

TEST_F(RotationE2eTest, RewrapOf10000DeksSurvivesFiveKillsAndRetiresTheOldKek) {
  constexpr int kDeks = 10000;
  const std::string db = dir_->Join("sqlite-kms.db");
  Corpus corpus;
  {
    store::SqliteKeyStore::Options bulk;
    bulk.durable = false;  // a throw-away database: load fast
    auto store = store::SqliteKeyStore::Open(db, bulk);
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_NO_FATAL_FAILURE(BulkLoad(**store, kDeks, &corpus));
  }
  const nlohmann::json config =
      Config("sqlite-node", {{"backend", "sqlite"}, {"sqlite", {{"path", db}}}});
  auto kmsd = StartKmsd(config, "sqlite");
  ASSERT_TRUE(kmsd.ok()) << kmsd.status();

  v1::RotateKekResponse rotated;
  grpc::Status s = RotateKek(**kmsd, &rotated);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(rotated.primary_kek_version(), 2u);
  ASSERT_FALSE(rotated.job_id().empty());
  // A second rotation while the job runs: refused, nothing changed.
  v1::RotateKekResponse twice;
  EXPECT_EQ(RotateKek(**kmsd, &twice).error_code(), grpc::StatusCode::ABORTED);

  // Five kills at random points of the job, each followed by a restart.
  std::mt19937 rng(std::random_device{}());
  const uint64_t total = kDeks + 1;  // + the JWT key
  int kills = 0;
  uint64_t threshold = 0;
  for (int k = 0; k < 5; ++k) {
    threshold += std::uniform_int_distribution<uint64_t>(total / 10, total / 7)(rng);
    v1::RotationJob job;
    const auto start = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - start < seconds(60)) {
      if (GetJob(**kmsd, rotated.job_id(), &job).ok() &&
          (job.state() != "running" || job.done() + job.skipped() >= threshold)) {
        break;
      }
      std::this_thread::sleep_for(milliseconds(5));
    }
    ASSERT_EQ(job.state(), "running") << "the job ended before kill " << k + 1;
    (*kmsd)->Kill();
    ++kills;
    kmsd = StartKmsd(config, "sqlite");
    ASSERT_TRUE(kmsd.ok()) << kmsd.status();
  }
  EXPECT_EQ(kills, 5);

  v1::RotationJob job = WaitForJob(**kmsd, rotated.job_id(), seconds(90));
  ASSERT_EQ(job.state(), "done") << job.last_error();
  EXPECT_EQ(job.to_kek_version(), 2u);
  // A batch written but not checkpointed before a kill is not listed again (its keys are
  // under the new KEK already): it is missing from the count, never counted twice.
  EXPECT_LE(job.done(), total);
  EXPECT_GE(job.done() + 5 * 50, total);
  ASSERT_TRUE(WaitRetired(**kmsd, 1, seconds(30)));
  EXPECT_EQ(DecryptAll(**kmsd, corpus), 0);

  // kmsctl reads the finished job (one JSON line), and a second rotation with --wait
  // returns once it is done and version 2 is retired.
  auto shown = RunCommand(absl::StrCat(KMSCTL_BINARY, " --addr ", (*kmsd)->grpc_addr(), " --ca ", state_,
                                       "/pki/ca.pem --cert ", state_, "/pki/clients/operator.pem --client-key ",
                                       state_, "/pki/clients/operator.key rotation status -o json"));
  ASSERT_EQ(shown.exit_code, 0) << shown.out;
  const nlohmann::json line = nlohmann::json::parse(shown.out);
  EXPECT_EQ(line["job_id"], rotated.job_id());
  EXPECT_EQ(line["state"], "done");
  auto waited = RunCommand(absl::StrCat(KMSCTL_BINARY, " --addr ", (*kmsd)->grpc_addr(), " --ca ", state_,
                                        "/pki/ca.pem --cert ", state_, "/pki/clients/operator.pem --client-key ",
                                        state_, "/pki/clients/operator.key kek rotate --wait --poll 0.2"));
  EXPECT_EQ(waited.exit_code, 0) << waited.out;
  EXPECT_NE(waited.out.find("older versions are retired"), std::string::npos) << waited.out;
  EXPECT_TRUE(WaitRetired(**kmsd, 2, seconds(1)));
  ASSERT_EQ((*kmsd)->Stop(), 0);

  auto store = store::SqliteKeyStore::Open(db);
  ASSERT_TRUE(store.ok()) << store.status();
  ExpectEverythingUnder(**store, 3, kDeks);
}

TEST_F(RotationE2eTest, OnPostgresTheOtherReplicaFinishesTheJobWhenTheLeaderDies) {
  constexpr int kDeks = 3000;
  const std::string conninfo = Env("KMS_TEST_PG_CONNINFO");
  const std::string password_file = Env("KMS_TEST_PG_PASSWORD_FILE");
  ASSERT_FALSE(conninfo.empty() || password_file.empty())
      << "KMS_TEST_PG_CONNINFO / KMS_TEST_PG_PASSWORD_FILE are not set: run through tools/test.sh";
  std::mt19937_64 rng(std::random_device{}());
  const std::string schema = absl::StrCat("rot_e2e_", rng() % 1000000000);
  store::PostgresOptions pg{.conninfo = conninfo, .password_file = password_file, .schema = schema};
  Corpus corpus;
  {
    auto store = store::PostgresKeyStore::Open(pg);
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_NO_FATAL_FAILURE(BulkLoad(**store, kDeks, &corpus));
  }
  const nlohmann::json store_config = {
      {"backend", "postgres"},
      {"postgres", {{"conninfo", conninfo}, {"password_file", password_file}, {"schema", schema}}}};
  std::unique_ptr<test::KmsdProcess> replicas[2];
  for (int i = 0; i < 2; ++i) {
    auto p = StartKmsd(Config(absl::StrCat("replica-", i), store_config), absl::StrCat("pg", i));
    ASSERT_TRUE(p.ok()) << p.status();
    replicas[i] = std::move(*p);
  }
  int leader = -1;
  for (int wait = 0; wait < 50 && leader < 0; ++wait) {
    for (int i = 0; i < 2; ++i) {
      if (Status(*replicas[i]).leader()) leader = i;
    }
    if (leader < 0) std::this_thread::sleep_for(milliseconds(200));
  }
  ASSERT_GE(leader, 0);
  const int other = 1 - leader;

  // Rotated through the follower: the leader runs the job.
  v1::RotateKekResponse rotated;
  grpc::Status s = RotateKek(*replicas[other], &rotated);
  ASSERT_TRUE(s.ok()) << s.error_message();
  v1::RotationJob job;
  const auto start = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - start < seconds(60)) {
    if (GetJob(*replicas[other], rotated.job_id(), &job).ok() &&
        (job.state() != "running" || job.done() >= kDeks / 4)) {
      break;
    }
    std::this_thread::sleep_for(milliseconds(5));
  }
  ASSERT_EQ(job.state(), "running") << "the job ended before the leader could be killed";
  replicas[leader]->Kill();

  job = WaitForJob(*replicas[other], rotated.job_id(), seconds(90));
  ASSERT_EQ(job.state(), "done") << job.last_error();
  EXPECT_TRUE(Status(*replicas[other]).leader());
  ASSERT_TRUE(WaitRetired(*replicas[other], 1, seconds(30)));
  EXPECT_EQ(DecryptAll(*replicas[other], corpus), 0);
  ASSERT_EQ(replicas[other]->Stop(), 0);

  auto store = store::PostgresKeyStore::Open(pg);
  ASSERT_TRUE(store.ok()) << store.status();
  ExpectEverythingUnder(**store, rotated.primary_kek_version(), kDeks);
}

}  // namespace
}  // namespace kms
