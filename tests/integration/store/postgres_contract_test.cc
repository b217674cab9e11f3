// The KeyStore contract for PostgreSQL, plus what only PostgreSQL has: migrations raced
// by several replicas, credentials, the connection pool (bounds, timeouts, sessions the
// server ends), pipelined re-wraps, and the advisory-lock leader election.
//
// Needs the server tools/test.sh starts (tools/test-services.sh): KMS_TEST_PG_CONNINFO
// and KMS_TEST_PG_PASSWORD_FILE. Without them every test FAILS (never skips). Each test
// works in its own schema "t_<random>" with its own application_name, so tests run in
// parallel against one server; schemas are dropped at the end. Sessions are ended with
// pg_terminate_backend, not by restarting the server, except in the one restart test,
// which its own RUN_SERIAL ctest entry runs alone.
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <latch>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "src/common/sync.h"
#include "src/store/postgres/pg_connection.h"
#include "src/store/postgres/postgres_key_store.h"
#include "src/store/postgres/postgres_leader_election.h"
#include "tests/integration/store/store_contract.h"

namespace kms::store {
namespace {

using ::absl::StatusCode;
using contract::ExpectReopenSample;
using contract::JwtKeyStoreContractTest;
using contract::KekStoreContractTest;
using contract::KeyStoreBackend;
using contract::RotationJobStoreContractTest;
using contract::StoreHealthContractTest;
using contract::AuditStoreContractTest;
using contract::TenantKeyStoreContractTest;
using contract::TestBlob;
using contract::TestDek;
using contract::TestKek;
using contract::TestTenant;
using contract::WriteReopenSample;

constexpr char kEnvHelp[] =
    "KMS_TEST_PG_CONNINFO and KMS_TEST_PG_PASSWORD_FILE must point at a PostgreSQL "
    "server: run the tests with tools/test.sh, which starts one (tools/test-services.sh)";

bool HaveServer() {
  const char* conninfo = std::getenv("KMS_TEST_PG_CONNINFO");
  const char* pwfile = std::getenv("KMS_TEST_PG_PASSWORD_FILE");
  return conninfo != nullptr && *conninfo != '\0' && pwfile != nullptr && *pwfile != '\0';
}

std::string RandomSuffix() {
  static std::atomic<uint64_t> counter{0};
  std::random_device rd;
  std::mt19937_64 rng((static_cast<uint64_t>(rd()) << 32) ^ rd() ^ ::getpid() ^ counter++);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s;
  for (int i = 0; i < 16; ++i) s.push_back(kHex[rng() % 16]);
  return s;
}

PostgresOptions Options(const std::string& schema) {
  PostgresOptions o;
  o.conninfo = std::getenv("KMS_TEST_PG_CONNINFO");
  o.password_file = std::getenv("KMS_TEST_PG_PASSWORD_FILE");
  o.schema = schema;
  o.application_name = absl::StrCat("kms-test-", schema);
  o.pool_size = 8;
  return o;
}

// A plain session for the test's own look at the server (as an operator would).
class Admin {
 public:
  Admin() {
    auto config = pg::ConnectConfig::FromOptions(Options("public"));
    if (!config.ok()) {
      ADD_FAILURE() << config.status();
      return;
    }
    auto conn = pg::Connection::Open(*config, "admin");
    if (!conn.ok()) {
      ADD_FAILURE() << conn.status();
      return;
    }
    conn_ = std::move(*conn);
  }
  bool ok() const { return conn_ != nullptr; }

  absl::Status Exec(const std::string& sql) { return conn_->ExecScript(sql.c_str(), "admin"); }
  // The first column of the first row as an integer, or -1.
  int64_t QueryInt(const std::string& sql, const std::string& text_param = "") {
    pg::Params p;
    if (!text_param.empty()) p.Text(text_param);
    auto r = conn_->Exec(sql.c_str(), p, "admin");
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok() || r->rows() == 0) return -1;
    return r->Int(0, 0);
  }
  // Ends every session of `application_name` and waits until they are gone.
  void TerminateSessions(const std::string& application_name) {
    QueryInt(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE application_name = $1",
        application_name);
    for (int i = 0; i < 200; ++i) {
      if (QueryInt("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                   application_name) == 0) {
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ADD_FAILURE() << "sessions of " << application_name << " still there";
  }
  int64_t Sessions(const std::string& application_name) {
    return QueryInt("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                    application_name);
  }
  void DropSchema(const std::string& schema) {
    absl::Status st = Exec(absl::StrCat("DROP SCHEMA IF EXISTS \"", schema, "\" CASCADE"));
    EXPECT_TRUE(st.ok()) << st;
  }

 private:
  std::unique_ptr<pg::Connection> conn_;
};

// Schemas made for the contract suite, dropped when the test program ends (the suite
// has no hook per store).
class ContractSchemas : public ::testing::Environment {
 public:
  static std::vector<std::string>& schemas() {
    static auto* s = new std::vector<std::string>();
    return *s;
  }
  void TearDown() override {
    if (schemas().empty() || !HaveServer()) return;
    Admin admin;
    if (!admin.ok()) return;
    for (const auto& schema : schemas()) admin.DropSchema(schema);
    schemas().clear();
  }
};
const auto* const kContractSchemas = ::testing::AddGlobalTestEnvironment(new ContractSchemas);

absl::StatusOr<std::unique_ptr<KeyStore>> MakePostgresStore() {
  if (!HaveServer()) return absl::FailedPreconditionError(kEnvHelp);
  const std::string schema = absl::StrCat("t_", RandomSuffix());
  ContractSchemas::schemas().push_back(schema);
  KMS_ASSIGN_OR_RETURN(std::unique_ptr<PostgresKeyStore> store,
                       PostgresKeyStore::Open(Options(schema)));
  return std::unique_ptr<KeyStore>(std::move(store));
}

KMS_INSTANTIATE_STORE_CONTRACT(Postgres, KeyStoreBackend{"postgres", &MakePostgresStore});

// --- PostgreSQL only

class PostgresKeyStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(HaveServer()) << kEnvHelp;
    admin_ = std::make_unique<Admin>();
    ASSERT_TRUE(admin_->ok());
  }
  void TearDown() override {
    if (admin_ != nullptr && admin_->ok()) {
      for (const auto& schema : {schema_, other_schema_}) admin_->DropSchema(schema);
    }
  }

  std::unique_ptr<PostgresKeyStore> OpenStore(const PostgresOptions& options) {
    auto store = PostgresKeyStore::Open(options);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? std::move(*store) : nullptr;
  }
  std::unique_ptr<PostgresKeyStore> OpenStore() { return OpenStore(Options(schema_)); }

  // Opens a transaction on `locker` that holds a lock every statement on the tenants
  // table waits for, until `locker` commits or rolls back.
  void LockTenantsTable(Admin& locker) {
    ASSERT_TRUE(locker.ok());
    ASSERT_TRUE(locker
                    .Exec(absl::StrCat("BEGIN; LOCK TABLE \"", schema_,
                                       "\".tenants IN ACCESS EXCLUSIVE MODE"))
                    .ok());
  }

  int64_t MigrationsApplied() {
    return admin_->QueryInt(
        absl::StrCat("SELECT count(*) FROM \"", schema_, "\".schema_migrations"));
  }

  // A TCP port on 127.0.0.1 where nothing listens.
  static int ClosedPort() {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    ::close(fd);
    return ntohs(addr.sin_port);
  }

  std::string PasswordFileWith(const std::string& content) {
    std::string path = absl::StrCat(::testing::TempDir(), "/pw-", RandomSuffix());
    std::ofstream(path) << content;
    files_.push_back(path);
    return path;
  }
  ~PostgresKeyStoreTest() override {
    for (const auto& f : files_) std::filesystem::remove(f);
  }

  std::unique_ptr<Admin> admin_;
  const std::string schema_ = absl::StrCat("t_", RandomSuffix());
  const std::string other_schema_ = absl::StrCat("t_", RandomSuffix());
  std::vector<std::string> files_;
};

TEST_F(PostgresKeyStoreTest, OpenCreatesTheSchemaAndRecordsItsVersion) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->backend_name(), "postgres");
  EXPECT_EQ(admin_->QueryInt(
                absl::StrCat("SELECT max(version) FROM \"", schema_, "\".schema_migrations")),
            PostgresKeyStore::LatestSchemaVersion());
  // Tables for later work exist from migration 1; nothing lands in public.
  EXPECT_EQ(admin_->QueryInt(absl::StrCat("SELECT count(*) FROM \"", schema_, "\".jwt_keys")), 0);
  EXPECT_EQ(admin_->QueryInt(absl::StrCat("SELECT count(*) FROM \"", schema_, "\".audit_log")), 0);
  EXPECT_EQ(
      admin_->QueryInt(absl::StrCat("SELECT count(*) FROM \"", schema_, "\".rotation_jobs")), 0);
  EXPECT_EQ(admin_->QueryInt("SELECT count(*) FROM pg_tables WHERE schemaname = 'public' "
                             "AND tablename IN ('tenants', 'schema_migrations')"),
            0);
}

TEST_F(PostgresKeyStoreTest, ConcurrentOpensOnAFreshSchemaAllSucceedAndMigrateOnce) {
  constexpr int kReplicas = 8;
  std::latch start(kReplicas);
  std::vector<absl::StatusOr<std::unique_ptr<PostgresKeyStore>>> opened(kReplicas);
  std::vector<std::thread> threads;
  for (int i = 0; i < kReplicas; ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      opened[i] = PostgresKeyStore::Open(Options(schema_));
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kReplicas; ++i) {
    ASSERT_TRUE(opened[i].ok()) << "replica " << i << ": " << opened[i].status();
  }
  EXPECT_EQ(MigrationsApplied(), PostgresKeyStore::LatestSchemaVersion());
  // One store_epoch row, not one per migration run.
  EXPECT_EQ(admin_->QueryInt(absl::StrCat("SELECT count(*) FROM \"", schema_, "\".store_epoch")),
            1);
  // They share one truth.
  ASSERT_TRUE((*opened[0])->CreateTenant(TestTenant("acme"), TestDek("acme", 1)).ok());
  auto seen = (*opened[kReplicas - 1])->GetTenant("acme");
  ASSERT_TRUE(seen.ok()) << seen.status();
  EXPECT_EQ(*(*opened[0])->GetEpoch(), *(*opened[kReplicas - 1])->GetEpoch());
}

TEST_F(PostgresKeyStoreTest, DataPersistsAcrossReopeningWithoutReapplyingMigrations) {
  int64_t epoch = 0;
  {
    auto store = OpenStore();
    ASSERT_NE(store, nullptr);
    ASSERT_NO_FATAL_FAILURE(WriteReopenSample(*store, &epoch));
  }
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(MigrationsApplied(), PostgresKeyStore::LatestSchemaVersion());
  ExpectReopenSample(*store, epoch);
}

// A schema at version 1 (written by the kmsd before rotation jobs) is migrated in place
// at the next Open, its keys kept.
TEST_F(PostgresKeyStoreTest, ASchemaAtVersionOneMigratesKeepingItsKeys) {
  int64_t epoch = 0;
  {
    auto store = OpenStore();
    ASSERT_NE(store, nullptr);
    ASSERT_NO_FATAL_FAILURE(WriteReopenSample(*store, &epoch));
  }
  // Undo migrations 5, 3 and 2 by hand: what version 1 left behind.
  ASSERT_TRUE(admin_
                  ->Exec(absl::StrCat("BEGIN; SET LOCAL search_path = \"", schema_,
                                      "\"; DROP INDEX tenants_active_by_primary_dek_age; "
                                      "ALTER TABLE tenants DROP COLUMN primary_dek_created_at; "
                                      "ALTER TABLE kek_versions DROP COLUMN retired_at; "
                                      "ALTER TABLE tenants DROP COLUMN rotation_period_seconds; "
                                      "DROP TABLE rotation_jobs; DROP INDEX tenant_deks_by_kek; "
                                      "CREATE INDEX tenant_deks_by_kek ON tenant_deks (kek_version); "
                                      "DELETE FROM schema_migrations WHERE version >= 2; COMMIT"))
                  .ok());
  ASSERT_EQ(MigrationsApplied(), 1);
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(MigrationsApplied(), PostgresKeyStore::LatestSchemaVersion());
  ExpectReopenSample(*store, epoch);
  auto job = store->CreateRotationJob(contract::TestRotationJob(1, 2, 1700000000));
  EXPECT_TRUE(job.ok()) << job.status();
  auto page = store->ListDeksWrappedUnder(1, DekKey{}, 10);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_EQ(page->deks.size(), 2u);
}

TEST_F(PostgresKeyStoreTest, SchemaFromANewerKmsdIsFailedPrecondition) {
  OpenStore().reset();
  const int newer = PostgresKeyStore::LatestSchemaVersion() + 1;
  ASSERT_TRUE(
      admin_
          ->Exec(absl::StrCat("INSERT INTO \"", schema_,
                              "\".schema_migrations (version, applied_at) VALUES (", newer, ", 0)"))
          .ok());
  auto store = PostgresKeyStore::Open(Options(schema_));
  ASSERT_EQ(store.status().code(), StatusCode::kFailedPrecondition) << store.status();
  EXPECT_EQ(store.status().message(),
            absl::StrCat("database schema version ", newer, " is newer than this kmsd (",
                         PostgresKeyStore::LatestSchemaVersion(), ")"));
}

TEST_F(PostgresKeyStoreTest, WrongPasswordIsUnauthenticatedAndTheMessageHasNoPassword) {
  const std::string wrong = absl::StrCat("wrong-", RandomSuffix());
  PostgresOptions options = Options(schema_);
  std::ifstream real_file(options.password_file);
  std::string real((std::istreambuf_iterator<char>(real_file)), {});
  options.password_file = PasswordFileWith(wrong + "\n");
  auto store = PostgresKeyStore::Open(options);
  ASSERT_EQ(store.status().code(), StatusCode::kUnauthenticated) << store.status();
  EXPECT_TRUE(absl::StrContains(store.status().message(), "authentication failed"))
      << store.status();
  EXPECT_FALSE(absl::StrContains(store.status().message(), wrong));
  ASSERT_FALSE(real.empty());
  EXPECT_FALSE(absl::StrContains(store.status().message(), real));

  // Same for the leader election, which reports it as an outage at run time.
  auto election = PostgresLeaderElection::Create(options);
  ASSERT_TRUE(election.ok()) << election.status();
  auto led = (*election)->TryLead();
  EXPECT_EQ(led.status().code(), StatusCode::kUnavailable) << led.status();
  EXPECT_FALSE(absl::StrContains(led.status().message(), wrong));
}

TEST_F(PostgresKeyStoreTest, PasswordFileIsTrimmed) {
  std::ifstream real_file(Options(schema_).password_file);
  std::string real((std::istreambuf_iterator<char>(real_file)), {});
  PostgresOptions options = Options(schema_);
  options.password_file = PasswordFileWith(absl::StrCat("  ", real, "\r\n\n"));
  EXPECT_NE(OpenStore(options), nullptr);
}

TEST_F(PostgresKeyStoreTest, BadOptionsAreRefusedBeforeConnecting) {
  PostgresOptions with_password = Options(schema_);
  with_password.conninfo += " password=secret";
  auto st = PostgresKeyStore::Open(with_password).status();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st;
  EXPECT_FALSE(absl::StrContains(st.message(), "secret"));

  PostgresOptions uri = Options(schema_);
  uri.conninfo = "postgresql://kmsd:secret@127.0.0.1/postgres";
  EXPECT_EQ(PostgresKeyStore::Open(uri).status().code(), StatusCode::kInvalidArgument);

  for (const char* schema : {"", "Upper", "1abc", "a-b", "a\"b", "x; DROP TABLE y"}) {
    PostgresOptions o = Options(schema_);
    o.schema = schema;
    EXPECT_EQ(PostgresKeyStore::Open(o).status().code(), StatusCode::kInvalidArgument) << schema;
  }
  PostgresOptions no_pool = Options(schema_);
  no_pool.pool_size = 0;
  EXPECT_EQ(PostgresKeyStore::Open(no_pool).status().code(), StatusCode::kInvalidArgument);

  PostgresOptions missing = Options(schema_);
  missing.password_file = "/nonexistent/pg.pw";
  EXPECT_EQ(PostgresKeyStore::Open(missing).status().code(), StatusCode::kFailedPrecondition);
  PostgresOptions empty = Options(schema_);
  empty.password_file = PasswordFileWith(" \n");
  EXPECT_EQ(PostgresKeyStore::Open(empty).status().code(), StatusCode::kFailedPrecondition);
}

TEST_F(PostgresKeyStoreTest, UnreachableServerIsUnavailable) {
  PostgresOptions options = Options(schema_);
  options.conninfo =
      absl::StrCat("host=127.0.0.1 port=", ClosedPort(), " dbname=postgres user=kmsd");
  auto st = PostgresKeyStore::Open(options).status();
  EXPECT_EQ(st.code(), StatusCode::kUnavailable) << st;
}

// The server ends every session of the store (as a restart or failover would); the
// next calls reconnect instead of failing.
TEST_F(PostgresKeyStoreTest, PoolReconnectsAfterTheServerEndsItsSessions) {
  PostgresOptions options = Options(schema_);
  options.pool_size = 4;
  auto store = OpenStore(options);
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->CreateTenant(TestTenant("acme"), TestDek("acme", 1)).ok());
  // Open several sessions.
  {
    std::vector<std::thread> threads;
    for (int i = 0; i < 4; ++i) {
      threads.emplace_back([&] {
        for (int j = 0; j < 20; ++j) EXPECT_TRUE(store->GetTenant("acme").ok());
      });
    }
    for (auto& t : threads) t.join();
  }
  ASSERT_GE(admin_->Sessions(options.application_name), 1);

  for (int round = 0; round < 2; ++round) {
    SCOPED_TRACE(absl::StrCat("round ", round));
    admin_->TerminateSessions(options.application_name);
    auto tenant = store->GetTenant("acme");
    ASSERT_TRUE(tenant.ok()) << tenant.status();
    EXPECT_TRUE(store->AddEncryptions("acme", 1, 1).ok());
    auto rotated = store->RotateDek("acme", tenant->row_version, TestDek("acme", 2 + round));
    EXPECT_TRUE(rotated.ok()) << rotated;
    EXPECT_GE(admin_->Sessions(options.application_name), 1);
  }
  auto td = store->GetTenantDek("acme", 1);
  ASSERT_TRUE(td.ok()) << td.status();
  EXPECT_EQ(td->dek.encryptions, 2u);  // each increment applied exactly once
}

TEST_F(PostgresKeyStoreTest, PoolIsBoundedAndABusyPoolIsUnavailableAfterTheAcquireTimeout) {
  PostgresOptions options = Options(schema_);
  options.pool_size = 2;
  options.acquire_timeout = std::chrono::milliseconds(300);
  auto store = OpenStore(options);
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->CreateTenant(TestTenant("acme"), TestDek("acme", 1)).ok());

  // Another session holds a lock every read waits for: both pooled sessions get stuck.
  Admin locker;
  ASSERT_NO_FATAL_FAILURE(LockTenantsTable(locker));
  std::vector<absl::Status> stuck(2);
  std::vector<std::thread> threads;
  for (int i = 0; i < 2; ++i) {
    threads.emplace_back([&, i] { stuck[i] = store->GetTenant("acme").status(); });
  }
  for (int i = 0; i < 200 && admin_->QueryInt("SELECT count(*) FROM pg_stat_activity WHERE "
                                              "application_name = $1 AND wait_event_type = 'Lock'",
                                              options.application_name) < 2;
       ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(admin_->Sessions(options.application_name), 2);
  const auto before = std::chrono::steady_clock::now();
  auto third = store->GetEpoch();
  const auto waited = std::chrono::steady_clock::now() - before;
  EXPECT_EQ(third.status().code(), StatusCode::kUnavailable) << third.status();
  EXPECT_GE(waited, std::chrono::milliseconds(250));
  EXPECT_EQ(admin_->Sessions(options.application_name), 2);

  ASSERT_TRUE(locker.Exec("COMMIT").ok());
  for (auto& t : threads) t.join();
  for (const auto& st : stuck) EXPECT_TRUE(st.ok()) << st;
  EXPECT_TRUE(store->GetEpoch().ok());
}

TEST_F(PostgresKeyStoreTest, StatementTimeoutIsUnavailable) {
  PostgresOptions options = Options(schema_);
  options.statement_timeout = std::chrono::milliseconds(200);
  auto store = OpenStore(options);
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->CreateTenant(TestTenant("acme"), TestDek("acme", 1)).ok());
  Admin locker;
  ASSERT_NO_FATAL_FAILURE(LockTenantsTable(locker));
  auto st = store->RotateDek("acme", 1, TestDek("acme", 2));
  EXPECT_EQ(st.code(), StatusCode::kUnavailable) << st;
  ASSERT_TRUE(locker.Exec("ROLLBACK").ok());
  EXPECT_TRUE(store->RotateDek("acme", 1, TestDek("acme", 2)).ok());
}

TEST_F(PostgresKeyStoreTest, TenantIdsOrderBytewiseLikeSqlite) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  std::vector<std::string> ids = {"b", "B",  "a", "Z", "_x", "a-1", "a.1", "\xc3\xa9t\xc3\xa9",
                                  "e", "10", "9"};
  for (const auto& id : ids) {
    ASSERT_TRUE(store->CreateTenant(TestTenant(id), TestDek(id, 1)).ok()) << id;
  }
  std::sort(ids.begin(), ids.end());  // std::string: bytewise
  auto page = store->ListTenants("", 100);
  ASSERT_TRUE(page.ok()) << page.status();
  std::vector<std::string> listed;
  for (const auto& t : page->tenants) listed.push_back(t.id);
  EXPECT_EQ(listed, ids);
  auto after = store->ListTenants("Z", 100);
  ASSERT_TRUE(after.ok()) << after.status();
  ASSERT_FALSE(after->tenants.empty());
  EXPECT_EQ(after->tenants.front().id, "_x");
}

TEST_F(PostgresKeyStoreTest, AFailureInsideAPipelineBatchChangesNothingAndTheStoreGoesOn) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  std::vector<DekRewrap> rewraps;
  for (int i = 0; i < 5; ++i) {
    const std::string id = absl::StrCat("t", i);
    ASSERT_TRUE(store->CreateTenant(TestTenant(id), TestDek(id, 1)).ok());
    rewraps.push_back(contract::TestRewrap(id, 1, 1, 2, 9));
  }
  // A NUL byte is never valid in PostgreSQL text: this statement fails in mid-batch.
  rewraps[2].tenant_id = std::string("t\0x", 3);
  auto updated = store->UpdateDekWrappings(rewraps);
  EXPECT_EQ(updated.status().code(), StatusCode::kInvalidArgument) << updated.status();
  for (int i = 0; i < 5; ++i) {
    auto td = store->GetTenantDek(absl::StrCat("t", i), 1);
    ASSERT_TRUE(td.ok()) << td.status();
    EXPECT_EQ(td->dek.kek_version, 1u) << "batch is one transaction";
  }
  rewraps.erase(rewraps.begin() + 2);
  updated = store->UpdateDekWrappings(rewraps);
  ASSERT_TRUE(updated.ok()) << updated.status();
  EXPECT_EQ(*updated, std::vector<DekRewrapResult>(4, DekRewrapResult::kUpdated));
}

TEST_F(PostgresKeyStoreTest, ConcurrentFirstJwtKeysFromManyReplicasHaveOneWinner) {
  constexpr int kReplicas = 6;
  std::vector<std::unique_ptr<PostgresKeyStore>> stores;
  for (int i = 0; i < kReplicas; ++i) {
    stores.push_back(OpenStore());
    ASSERT_NE(stores.back(), nullptr);
  }
  std::latch start(kReplicas);
  std::vector<absl::Status> results(kReplicas);
  std::vector<std::thread> threads;
  for (int i = 0; i < kReplicas; ++i) {
    threads.emplace_back([&, i] {
      JwtKeyRecord key;
      key.kid = absl::StrCat("kid-", i);
      key.public_jwk = "{}";
      key.wrapped_private = TestBlob(static_cast<uint8_t>(i));
      key.kek_version = 1;
      start.arrive_and_wait();
      results[i] = stores[i]->InsertFirstJwtKey(key);
    });
  }
  for (auto& t : threads) t.join();
  int ok = 0;
  for (const auto& st : results) {
    if (st.ok()) {
      ++ok;
    } else {
      EXPECT_EQ(st.code(), StatusCode::kAlreadyExists) << st;
    }
  }
  EXPECT_EQ(ok, 1);
  auto keys = stores[0]->ListJwtKeys();
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_EQ(keys->size(), 1u);
}

// Restarts the shared server, so it is compiled only into its own executable, which
// ctest runs alone (store_postgres_server_restart, RUN_SERIAL): see CMakeLists.txt.
#ifdef KMS_PG_SERVER_RESTART_TEST
TEST_F(PostgresKeyStoreTest, StoreAndLeaderSurviveAServerRestart) {
  const char* ctl = std::getenv("KMS_TEST_PG_CTL");
  ASSERT_TRUE(ctl != nullptr && *ctl != '\0') << "KMS_TEST_PG_CTL: " << kEnvHelp;
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->CreateTenant(TestTenant("acme"), TestDek("acme", 1)).ok());
  auto leader = PostgresLeaderElection::Create(Options(schema_));
  ASSERT_TRUE(leader.ok()) << leader.status();
  ASSERT_TRUE(*(*leader)->TryLead());

  // Calls keep coming while the server goes down and up: each either works or is
  // UNAVAILABLE, never anything else.
  std::atomic<bool> stop{false};
  std::vector<absl::Status> seen;
  std::thread caller([&] {
    while (!stop.load()) {
      seen.push_back(store->GetTenant("acme").status());
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  // The server's output must not go to this process (ctest would wait for the pipe).
  // In /tmp: the server runs as the postgres user, which must be able to create it.
  const std::string log = absl::StrCat("/tmp/kms-pg-restart-", RandomSuffix(), ".log");
  const std::string cmd = absl::StrCat(ctl, " -m fast -w -l ", log, " restart >/dev/null 2>&1");
  const int rc = std::system(cmd.c_str());
  stop.store(true);
  caller.join();
  ASSERT_EQ(rc, 0) << cmd;
  std::filesystem::remove(log);
  admin_ = std::make_unique<Admin>();  // the old session died with the server
  int unavailable = 0;
  for (const auto& st : seen) {
    EXPECT_TRUE(st.ok() || st.code() == StatusCode::kUnavailable) << st;
    if (!st.ok()) ++unavailable;
  }
  std::cout << "calls during the restart: " << seen.size() << ", unavailable: " << unavailable
            << "\n";

  // Back within the longest reconnect backoff.
  absl::Status last;
  for (int i = 0; i < 100; ++i) {
    last = store->GetTenant("acme").status();
    if (last.ok()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(last.ok()) << last;
  EXPECT_TRUE(store->RotateDek("acme", 1, TestDek("acme", 2)).ok());

  auto led = (*leader)->TryLead();
  EXPECT_TRUE(led.ok() && !*led) << "the session (and the lock) died with the restart";
  EXPECT_FALSE((*leader)->is_leader());
  bool leads = false;
  for (int i = 0; i < 100 && !leads; ++i) {
    led = (*leader)->TryLead();
    leads = led.ok() && *led;
    if (!leads) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(leads);
}
#endif  // KMS_PG_SERVER_RESTART_TEST

// --- Leader election

class PostgresLeaderElectionTest : public PostgresKeyStoreTest {
 protected:
  std::unique_ptr<PostgresLeaderElection> Make(const std::string& schema,
                                               const std::string& application_name) {
    PostgresOptions options = Options(schema);
    options.application_name = application_name;
    auto made = PostgresLeaderElection::Create(options);
    EXPECT_TRUE(made.ok()) << made.status();
    return made.ok() ? std::move(*made) : nullptr;
  }
  static bool Leads(PostgresLeaderElection& e) {
    auto led = e.TryLead();
    EXPECT_TRUE(led.ok()) << led.status();
    return led.ok() && *led;
  }
  // Whether `e` leads within `limit`, trying every 10 ms (a released lock is free once
  // the server has processed the end of its session).
  static bool LeadsWithin(PostgresLeaderElection& e, std::chrono::milliseconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!Leads(e)) {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return true;
  }

  const std::string app_a_ = absl::StrCat("kms-test-lead-a-", RandomSuffix());
  const std::string app_b_ = absl::StrCat("kms-test-lead-b-", RandomSuffix());
};

TEST_F(PostgresLeaderElectionTest, ExactlyOneOfTwoLeads) {
  auto a = Make(schema_, app_a_);
  auto b = Make(schema_, app_b_);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_FALSE(a->is_leader());
  EXPECT_TRUE(Leads(*a));
  EXPECT_FALSE(Leads(*b));
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(Leads(*a));
    EXPECT_FALSE(Leads(*b));
  }
  EXPECT_TRUE(a->is_leader());
  EXPECT_FALSE(b->is_leader());
}

TEST_F(PostgresLeaderElectionTest, LosingTheSessionLosesLeadershipAndTheOtherTakesOver) {
  auto a = Make(schema_, app_a_);
  auto b = Make(schema_, app_b_);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  ASSERT_TRUE(Leads(*a));
  ASSERT_FALSE(Leads(*b));

  admin_->TerminateSessions(app_a_);
  EXPECT_TRUE(a->is_leader()) << "it cannot know before it looks";
  EXPECT_FALSE(Leads(*a));
  EXPECT_FALSE(a->is_leader());
  EXPECT_TRUE(Leads(*b));
  EXPECT_TRUE(b->is_leader());
  // A reconnects and finds the lock taken.
  EXPECT_FALSE(Leads(*a));
  EXPECT_FALSE(a->is_leader());
  EXPECT_TRUE(Leads(*b));
}

TEST_F(PostgresLeaderElectionTest, ResignHandsOver) {
  auto a = Make(schema_, app_a_);
  auto b = Make(schema_, app_b_);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  ASSERT_TRUE(Leads(*a));
  a->Resign();
  EXPECT_FALSE(a->is_leader());
  EXPECT_TRUE(Leads(*b));
  EXPECT_FALSE(Leads(*a));
  b->Resign();
  b->Resign();  // idempotent
  EXPECT_TRUE(Leads(*a));
}

TEST_F(PostgresLeaderElectionTest, DestroyingTheLeaderReleasesTheLock) {
  auto a = Make(schema_, app_a_);
  auto b = Make(schema_, app_b_);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  ASSERT_TRUE(Leads(*a));
  a.reset();
  // The server releases the lock when it has processed the session's end.
  EXPECT_TRUE(LeadsWithin(*b, std::chrono::seconds(2)));
}

TEST_F(PostgresLeaderElectionTest, DeploymentsInDifferentSchemasElectIndependently) {
  auto a = Make(schema_, app_a_);
  auto b = Make(other_schema_, app_b_);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_TRUE(Leads(*a));
  EXPECT_TRUE(Leads(*b));
}

// SIGSTOPs one server process (a backend: what a partition or a frozen server looks
// like to its client) and SIGCONTs it when destroyed, or after `limit` at the latest
// so that a client that waits forever fails the test instead of hanging it.
class FrozenBackend {
 public:
  FrozenBackend(pid_t pid, std::chrono::milliseconds limit) : pid_(pid) {
    kill(pid_, SIGSTOP);
    thaw_ = std::thread([this, limit] {
      const auto deadline = std::chrono::steady_clock::now() + limit;
      {
        MutexLock lock(&mu_);
        mu_.AwaitUntil(done_cv_, deadline, [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return done_; });
      }
      kill(pid_, SIGCONT);
    });
  }
  ~FrozenBackend() {
    {
      MutexLock lock(&mu_);
      done_ = true;
    }
    done_cv_.notify_all();
    thaw_.join();
  }

 private:
  const pid_t pid_;
  Mutex mu_;
  std::condition_variable done_cv_;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thaw_;
};

// A session with a 200 ms statement timeout (so a 1,200 ms answer deadline) and the pid
// of its server backend.
void OpenShortTimeoutSession(const std::string& schema, std::unique_ptr<pg::Connection>& conn,
                             pid_t& pid) {
  PostgresOptions options = Options(schema);
  options.statement_timeout = std::chrono::milliseconds(200);
  auto config = pg::ConnectConfig::FromOptions(options);
  ASSERT_TRUE(config.ok()) << config.status();
  auto opened = pg::Connection::Open(*config, "test");
  ASSERT_TRUE(opened.ok()) << opened.status();
  conn = std::move(*opened);
  auto backend = conn->Exec("SELECT pg_backend_pid()::bigint", "test");
  ASSERT_TRUE(backend.ok()) << backend.status();
  pid = static_cast<pid_t>(backend->Int(0, 0));
}

TEST_F(PostgresKeyStoreTest, AStatementToAFrozenServerFailsAfterItsAnswerTimeout) {
  std::unique_ptr<pg::Connection> conn;
  pid_t pid = 0;
  ASSERT_NO_FATAL_FAILURE(OpenShortTimeoutSession(schema_, conn, pid));

  FrozenBackend frozen(pid, std::chrono::seconds(20));
  const auto before = std::chrono::steady_clock::now();
  auto r = conn->Exec("SELECT 1", "test");
  const auto waited = std::chrono::steady_clock::now() - before;
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "no answer within 1200 ms")) << r.status();
  EXPECT_GE(waited, std::chrono::milliseconds(1200));
  EXPECT_LT(waited, std::chrono::seconds(10));
  EXPECT_TRUE(conn->broken()) << "a session with a statement in flight is unusable";
}

// The deadline covers sending too: a statement larger than the socket buffers to a
// server that stopped reading fails at the deadline instead of blocking in send().
TEST_F(PostgresKeyStoreTest, ALargeStatementToAFrozenServerFailsAfterItsAnswerTimeout) {
  std::unique_ptr<pg::Connection> conn;
  pid_t pid = 0;
  ASSERT_NO_FATAL_FAILURE(OpenShortTimeoutSession(schema_, conn, pid));
  const std::vector<uint8_t> large(32 << 20, 0x5a);  // beyond loopback's socket buffers

  FrozenBackend frozen(pid, std::chrono::seconds(20));
  const auto before = std::chrono::steady_clock::now();
  pg::Params p;
  p.Bytes(large);
  auto r = conn->Exec("SELECT length($1)", p, "test");
  const auto waited = std::chrono::steady_clock::now() - before;
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "no answer within 1200 ms")) << r.status();
  EXPECT_LT(waited, std::chrono::seconds(10));
  EXPECT_TRUE(conn->broken());
}

TEST_F(PostgresLeaderElectionTest, AFrozenServerDemotesTheLeaderInBoundedTime) {
  auto a = Make(schema_, app_a_);
  auto b = Make(schema_, app_b_);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  ASSERT_TRUE(Leads(*a));
  const int64_t pid = admin_->QueryInt(
      "SELECT pid::bigint FROM pg_stat_activity WHERE application_name = $1", app_a_);
  ASSERT_GT(pid, 0);
  {
    FrozenBackend frozen(static_cast<pid_t>(pid), std::chrono::seconds(20));
    const auto before = std::chrono::steady_clock::now();
    auto led = a->TryLead();  // the scheduler's thread: must come back
    const auto waited = std::chrono::steady_clock::now() - before;
    ASSERT_TRUE(led.ok()) << led.status();
    EXPECT_FALSE(*led);
    EXPECT_FALSE(a->is_leader());
    EXPECT_LT(waited, std::chrono::seconds(10));
  }
  // The dropped session's lock is freed once the server sees the session end.
  EXPECT_TRUE(LeadsWithin(*b, std::chrono::seconds(3)));
}

TEST_F(PostgresLeaderElectionTest, UnreachableServerIsUnavailableAndNotLeader) {
  PostgresOptions options = Options(schema_);
  options.conninfo =
      absl::StrCat("host=127.0.0.1 port=", ClosedPort(), " dbname=postgres user=kmsd");
  auto made = PostgresLeaderElection::Create(options);
  ASSERT_TRUE(made.ok()) << made.status();
  auto led = (*made)->TryLead();
  EXPECT_EQ(led.status().code(), StatusCode::kUnavailable) << led.status();
  EXPECT_FALSE((*made)->is_leader());
  // During the backoff it does not even try: fast.
  const auto before = std::chrono::steady_clock::now();
  led = (*made)->TryLead();
  EXPECT_EQ(led.status().code(), StatusCode::kUnavailable) << led.status();
  EXPECT_LT(std::chrono::steady_clock::now() - before, std::chrono::milliseconds(50));
  (*made)->Resign();  // harmless when not leading
}

}  // namespace
}  // namespace kms::store
