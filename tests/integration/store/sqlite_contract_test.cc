// The KeyStore contract for SQLite, plus what only SQLite has: a file, its mode, its
// journal, its schema version, and other processes' locks.
#include <sqlite3.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "src/store/sqlite/sqlite_key_store.h"
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

// A fresh directory under $TMPDIR (or /tmp), removed with its contents.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = absl::StrCat(base != nullptr && *base != '\0' ? base : "/tmp",
                                       "/kms_store_test.XXXXXX");
    if (::mkdtemp(pattern.data()) != nullptr) path_ = pattern;
  }
  ~TempDir() {
    if (path_.empty()) return;
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  bool ok() const { return !path_.empty(); }
  std::string File(absl::string_view name) const { return absl::StrCat(path_, "/", name); }

 private:
  std::string path_;
};

// Every store made for the contract suite lives in its own directory; all of them are
// removed when the test program ends (the suite has no hook per store).
class ContractDirs : public ::testing::Environment {
 public:
  static std::vector<std::unique_ptr<TempDir>>& dirs() {
    static auto* d = new std::vector<std::unique_ptr<TempDir>>();
    return *d;
  }
  void TearDown() override { dirs().clear(); }
};
const auto* const kContractDirs = ::testing::AddGlobalTestEnvironment(new ContractDirs);

absl::StatusOr<std::unique_ptr<KeyStore>> MakeSqliteStore() {
  auto dir = std::make_unique<TempDir>();
  if (!dir->ok()) return absl::InternalError("mkdtemp failed");
  std::string path = dir->File("kms.db");
  ContractDirs::dirs().push_back(std::move(dir));
  KMS_ASSIGN_OR_RETURN(std::unique_ptr<SqliteKeyStore> store, SqliteKeyStore::Open(path));
  return std::unique_ptr<KeyStore>(std::move(store));
}

absl::StatusOr<std::unique_ptr<KeyStore>> MakeInMemoryStore() {
  KMS_ASSIGN_OR_RETURN(std::unique_ptr<SqliteKeyStore> store, SqliteKeyStore::Open(":memory:"));
  return std::unique_ptr<KeyStore>(std::move(store));
}

KMS_INSTANTIATE_STORE_CONTRACT(Sqlite, KeyStoreBackend{"sqlite_file", &MakeSqliteStore},
                               KeyStoreBackend{"sqlite_memory", &MakeInMemoryStore});

// --- SQLite only

// RAII for a second, raw connection: another process's view of the file.
struct RawDb {
  explicit RawDb(const std::string& path) {
    EXPECT_EQ(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
  }
  ~RawDb() { sqlite3_close_v2(db); }
  int Exec(const std::string& sql) { return sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr); }
  std::string QueryText(const std::string& sql) {
    sqlite3_stmt* stmt = nullptr;
    std::string out;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW) {
      const unsigned char* text = sqlite3_column_text(stmt, 0);
      if (text != nullptr) out = reinterpret_cast<const char*>(text);
    }
    sqlite3_finalize(stmt);
    return out;
  }
  sqlite3* db = nullptr;
};

std::vector<uint8_t> ReadFileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

bool Contains(const std::vector<uint8_t>& haystack, const std::vector<uint8_t>& needle) {
  return std::search(haystack.begin(), haystack.end(), needle.begin(), needle.end()) !=
         haystack.end();
}

// Whether any 16-byte piece of `needle` is in `haystack`: an overwritten cell can keep
// a fragment of what it held.
bool ContainsAPiece(const std::vector<uint8_t>& haystack, const std::vector<uint8_t>& needle) {
  constexpr size_t kPiece = 16;
  for (size_t i = 0; i + kPiece <= needle.size(); i += 4) {
    std::vector<uint8_t> piece(needle.begin() + i, needle.begin() + i + kPiece);
    if (Contains(haystack, piece)) return true;
  }
  return false;
}

class SqliteKeyStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(dir_.ok()); }

  std::unique_ptr<SqliteKeyStore> OpenStore() {
    auto store = SqliteKeyStore::Open(path_);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? std::move(*store) : nullptr;
  }

  TempDir dir_;
  std::string path_ = dir_.File("kms.db");
};

TEST_F(SqliteKeyStoreTest, DataPersistsAcrossReopening) {
  int64_t epoch = 0;
  {
    auto store = OpenStore();
    ASSERT_NE(store, nullptr);
    ASSERT_NO_FATAL_FAILURE(WriteReopenSample(*store, &epoch));
  }
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  ExpectReopenSample(*store, epoch);
}

TEST_F(SqliteKeyStoreTest, DatabaseFilesAreReadableOnlyByTheOwner) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->InsertKek(TestKek(1)).ok());
  for (const std::string& file : {path_, path_ + "-wal", path_ + "-shm"}) {
    struct stat st {};
    ASSERT_EQ(::stat(file.c_str(), &st), 0) << file;
    EXPECT_EQ(st.st_mode & 0777, 0600u) << file;
  }
}

TEST_F(SqliteKeyStoreTest, OpenUsesWalAndRecordsTheSchemaVersion) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  RawDb raw(path_);
  EXPECT_EQ(raw.QueryText("PRAGMA journal_mode"), "wal");
  EXPECT_EQ(raw.QueryText("SELECT MAX(version) FROM schema_migrations"),
            std::to_string(SqliteKeyStore::LatestSchemaVersion()));
  // Tables for later work exist from migration 1.
  EXPECT_EQ(raw.QueryText("SELECT COUNT(*) FROM jwt_keys"), "0");
  EXPECT_EQ(raw.QueryText("SELECT COUNT(*) FROM audit_log"), "0");
  EXPECT_EQ(raw.QueryText("SELECT COUNT(*) FROM rotation_jobs"), "0");  // migration 2
}

// A database at schema version 1 (written by the kmsd before rotation jobs) is migrated
// in place at the next Open, its keys kept.
TEST_F(SqliteKeyStoreTest, ADatabaseAtSchemaVersionOneMigratesKeepingItsKeys) {
  int64_t epoch = 0;
  {
    auto store = OpenStore();
    ASSERT_NE(store, nullptr);
    ASSERT_NO_FATAL_FAILURE(WriteReopenSample(*store, &epoch));
  }
  {
    // Undo migrations 5, 3 and 2 by hand: what version 1 left behind.
    RawDb raw(path_);
    ASSERT_EQ(raw.Exec("BEGIN; DROP INDEX tenants_active_by_primary_dek_age; "
                       "ALTER TABLE tenants DROP COLUMN primary_dek_created_at; "
                       "ALTER TABLE kek_versions DROP COLUMN retired_at; "
                       "ALTER TABLE tenants DROP COLUMN rotation_period_seconds; "
                       "DROP TABLE rotation_jobs; DROP INDEX tenant_deks_by_kek; "
                       "CREATE INDEX tenant_deks_by_kek ON tenant_deks (kek_version); "
                       "DELETE FROM schema_migrations WHERE version >= 2; COMMIT"),
              SQLITE_OK);
    ASSERT_EQ(raw.QueryText("SELECT MAX(version) FROM schema_migrations"), "1");
  }
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  ExpectReopenSample(*store, epoch);
  auto job = store->CreateRotationJob(contract::TestRotationJob(1, 2, 1700000000));
  EXPECT_TRUE(job.ok()) << job.status();
  auto page = store->ListDeksWrappedUnder(1, DekKey{}, 10);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_EQ(page->deks.size(), 2u);
  RawDb raw(path_);
  EXPECT_EQ(raw.QueryText("SELECT MAX(version) FROM schema_migrations"),
            std::to_string(SqliteKeyStore::LatestSchemaVersion()));
}

// Start-up (KeyStateCache::Refresh) must not grow with the store: its two reads search
// an index. A scan of tenants or tenant_deks made a start with 1,000,000 tenants take
// ten times an empty store's.
TEST_F(SqliteKeyStoreTest, TheKeyStateReadsSearchIndexesInsteadOfScanningTheKeys) {
  OpenStore().reset();
  RawDb raw(path_);
  auto plan = [&raw](const char* sql) {
    sqlite3_stmt* stmt = nullptr;
    std::string out;
    EXPECT_EQ(sqlite3_prepare_v2(raw.db, absl::StrCat("EXPLAIN QUERY PLAN ", sql).c_str(), -1,
                                 &stmt, nullptr),
              SQLITE_OK);
    while (stmt != nullptr && sqlite3_step(stmt) == SQLITE_ROW) {
      absl::StrAppend(&out, reinterpret_cast<const char*>(sqlite3_column_text(stmt, 3)), "\n");
    }
    sqlite3_finalize(stmt);
    return out;
  };
  auto has = [](const std::string& text, std::string_view part) {
    return text.find(part) != std::string::npos;
  };
  const std::string oldest = plan(SqliteKeyStore::kOldestPrimaryDekSql);
  EXPECT_TRUE(has(oldest, "SEARCH tenants USING")) << oldest;
  EXPECT_TRUE(has(oldest, "tenants_active_by_primary_dek_age")) << oldest;
  EXPECT_FALSE(has(oldest, "SCAN")) << oldest;
  const std::string usage = plan(SqliteKeyStore::kKekUsageExceptSql);
  EXPECT_TRUE(has(usage, "SEARCH tenant_deks USING INDEX tenant_deks_by_kek (kek_version<?)"))
      << usage;
  EXPECT_TRUE(has(usage, "SEARCH tenant_deks USING INDEX tenant_deks_by_kek (kek_version>?)"))
      << usage;
  EXPECT_FALSE(has(usage, "SCAN tenant_deks")) << usage;
}

TEST_F(SqliteKeyStoreTest, ReopeningDoesNotReapplyMigrations) {
  OpenStore().reset();
  OpenStore().reset();
  RawDb raw(path_);
  EXPECT_EQ(raw.QueryText("SELECT COUNT(*) FROM schema_migrations"),
            std::to_string(SqliteKeyStore::LatestSchemaVersion()));
}

TEST_F(SqliteKeyStoreTest, DatabaseFromANewerKmsdIsFailedPrecondition) {
  OpenStore().reset();
  const int newer = SqliteKeyStore::LatestSchemaVersion() + 1;
  {
    RawDb raw(path_);
    ASSERT_EQ(raw.Exec(absl::StrCat("INSERT INTO schema_migrations (version, applied_at) "
                                    "VALUES (", newer, ", 0)")),
              SQLITE_OK);
  }
  auto store = SqliteKeyStore::Open(path_);
  ASSERT_EQ(store.status().code(), StatusCode::kFailedPrecondition) << store.status();
  EXPECT_EQ(store.status().message(),
            absl::StrCat("database schema version ", newer, " is newer than this kmsd (",
                         SqliteKeyStore::LatestSchemaVersion(), ")"));
}

TEST_F(SqliteKeyStoreTest, OpenInAMissingDirectoryIsUnavailable) {
  auto store = SqliteKeyStore::Open(dir_.File("no/such/dir/kms.db"));
  EXPECT_EQ(store.status().code(), StatusCode::kUnavailable) << store.status();
}

TEST_F(SqliteKeyStoreTest, OpenWithAnEmptyPathIsInvalidArgument) {
  EXPECT_EQ(SqliteKeyStore::Open("").status().code(), StatusCode::kInvalidArgument);
}

TEST_F(SqliteKeyStoreTest, OpenOfAFileThatIsNotADatabaseFails) {
  { std::ofstream(path_) << "this is not an SQLite database, just some text......"; }
  auto store = SqliteKeyStore::Open(path_);
  EXPECT_FALSE(store.ok());
}

TEST_F(SqliteKeyStoreTest, WriteLockedByAnotherProcessIsUnavailableAfterTheBusyTimeout) {
  SqliteKeyStore::Options options;
  options.busy_timeout = std::chrono::milliseconds(100);
  auto opened = SqliteKeyStore::Open(path_, options);
  ASSERT_TRUE(opened.ok()) << opened.status();
  auto& store = **opened;
  ASSERT_TRUE(store.CreateTenant(TestTenant("acme"), TestDek("acme", 1)).ok());

  RawDb other(path_);
  ASSERT_EQ(other.Exec("BEGIN EXCLUSIVE"), SQLITE_OK);
  EXPECT_EQ(store.InsertKek(TestKek(1)).code(), StatusCode::kUnavailable);
  EXPECT_EQ(store.RotateDek("acme", 1, TestDek("acme", 2)).code(), StatusCode::kUnavailable);
  // WAL: readers are not blocked by the writer.
  EXPECT_TRUE(store.GetTenant("acme").ok());
  ASSERT_EQ(other.Exec("ROLLBACK"), SQLITE_OK);

  EXPECT_TRUE(store.InsertKek(TestKek(1)).ok());
  EXPECT_TRUE(store.RotateDek("acme", 1, TestDek("acme", 2)).ok());
}

// Two stores on one file (two kmsd processes): compare-and-set holds across
// connections, and each sees the other's changes.
TEST_F(SqliteKeyStoreTest, CompareAndSetHoldsAcrossConnections) {
  auto a = OpenStore();
  auto b = OpenStore();
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  ASSERT_TRUE(a->CreateTenant(TestTenant("acme"), TestDek("acme", 1)).ok());
  auto seen_by_b = b->GetTenant("acme");
  ASSERT_TRUE(seen_by_b.ok()) << seen_by_b.status();

  EXPECT_TRUE(a->RotateDek("acme", 1, TestDek("acme", 2)).ok());
  EXPECT_EQ(b->RotateDek("acme", seen_by_b->row_version, TestDek("acme", 3)).code(),
            StatusCode::kAborted);
  EXPECT_EQ(*a->GetEpoch(), *b->GetEpoch());
  auto primary = b->GetTenantDek("acme", 0);
  ASSERT_TRUE(primary.ok()) << primary.status();
  EXPECT_EQ(primary->dek.version, 2u);
}

// Shredding must not leave the wrapped DEK in the database file or its WAL.
TEST_F(SqliteKeyStoreTest, ShreddedKeyBytesAreGoneFromTheFiles) {
  DekRecord dek = TestDek("acme", 1);
  dek.wrapped = TestBlob(0x5a, 48);
  for (size_t i = 0; i < dek.wrapped.size(); ++i) dek.wrapped[i] ^= 0xa5;  // distinctive
  DekRecord kept = TestDek("other", 1);
  kept.wrapped = TestBlob(0x33, 48);
  {
    auto store = OpenStore();
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store->CreateTenant(TestTenant("acme"), dek).ok());
    ASSERT_TRUE(store->CreateTenant(TestTenant("other"), kept).ok());
    EXPECT_TRUE(Contains(ReadFileBytes(path_ + "-wal"), dek.wrapped) ||
                Contains(ReadFileBytes(path_), dek.wrapped))
        << "the test cannot see the blob it means to shred";
    ASSERT_TRUE(store->SetTenantState("acme", 1, TenantState::kShredded).ok());

    EXPECT_FALSE(ContainsAPiece(ReadFileBytes(path_), dek.wrapped));
    EXPECT_FALSE(ContainsAPiece(ReadFileBytes(path_ + "-wal"), dek.wrapped));
  }
  EXPECT_FALSE(ContainsAPiece(ReadFileBytes(path_), dek.wrapped));
  EXPECT_TRUE(Contains(ReadFileBytes(path_), kept.wrapped));
}

}  // namespace
}  // namespace kms::store
