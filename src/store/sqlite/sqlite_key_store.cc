#include "src/store/sqlite/sqlite_key_store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iterator>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kms/common/clock.h"
#include "src/store/record_checks.h"

namespace kms::store {
namespace {

// Migration N is kMigrations[N - 1]. Append only: a released migration is never edited,
// because databases in the field have already applied it.
constexpr const char* kMigrations[] = {
    // 1: the initial schema (DESIGN §3). jwt_keys and audit_log are created now, empty,
    // so the modules that fill them do not need a migration of their own to start.
    R"sql(
CREATE TABLE kek_versions (
  version    INTEGER PRIMARY KEY CHECK (version > 0),
  wrapped    BLOB    NOT NULL,
  state      TEXT    NOT NULL CHECK (state IN ('active', 'retired')),
  created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE tenants (
  id                  TEXT    NOT NULL PRIMARY KEY CHECK (length(id) > 0),
  state               TEXT    NOT NULL CHECK (state IN ('active', 'shredded')),
  primary_dek_version INTEGER NOT NULL CHECK (primary_dek_version > 0),
  min_decrypt_version INTEGER NOT NULL CHECK (min_decrypt_version >= 0),
  created_at          INTEGER NOT NULL,
  row_version         INTEGER NOT NULL CHECK (row_version > 0)
) STRICT, WITHOUT ROWID;

CREATE TABLE tenant_deks (
  tenant_id   TEXT    NOT NULL REFERENCES tenants (id),
  version     INTEGER NOT NULL CHECK (version > 0),
  kek_version INTEGER NOT NULL,
  wrapped     BLOB    NOT NULL,
  state       TEXT    NOT NULL CHECK (state IN ('active', 'retired', 'destroyed')),
  created_at  INTEGER NOT NULL,
  encryptions INTEGER NOT NULL DEFAULT 0 CHECK (encryptions >= 0),
  PRIMARY KEY (tenant_id, version),
  -- A destroyed DEK keeps no key bytes.
  CHECK (state <> 'destroyed' OR length(wrapped) = 0)
) STRICT, WITHOUT ROWID;

-- The KEK re-wrap job looks for DEKs still wrapped under an old KEK version.
CREATE INDEX tenant_deks_by_kek ON tenant_deks (kek_version);

CREATE TABLE store_epoch (
  id    INTEGER PRIMARY KEY CHECK (id = 1),
  epoch INTEGER NOT NULL
) STRICT;
INSERT INTO store_epoch (id, epoch) VALUES (1, 0);

-- JWT signing keys (DESIGN §5). No state column: the state is derived from
-- activate_at/retire_at (retire_at 0: not scheduled), so every replica computes the
-- same state from the same row.
CREATE TABLE jwt_keys (
  kid             TEXT    NOT NULL PRIMARY KEY CHECK (length(kid) > 0),
  public_jwk      TEXT    NOT NULL,
  wrapped_private BLOB    NOT NULL,
  kek_version     INTEGER NOT NULL,
  created_at      INTEGER NOT NULL,
  activate_at     INTEGER NOT NULL,
  retire_at       INTEGER NOT NULL DEFAULT 0 CHECK (retire_at >= 0),
  row_version     INTEGER NOT NULL DEFAULT 1 CHECK (row_version > 0)
) STRICT, WITHOUT ROWID;

CREATE TABLE audit_log (
  seq       INTEGER PRIMARY KEY,
  at        INTEGER NOT NULL,
  actor     TEXT    NOT NULL,
  action    TEXT    NOT NULL,
  subject   TEXT    NOT NULL,
  prev_hash BLOB    NOT NULL,
  hash      BLOB    NOT NULL
) STRICT;
)sql",
};

constexpr int kLatestSchemaVersion = static_cast<int>(std::size(kMigrations));

constexpr absl::string_view kTenantColumns =
    "id, state, primary_dek_version, min_decrypt_version, created_at, row_version";
constexpr absl::string_view kJwtKeyColumns =
    "kid, public_jwk, wrapped_private, kek_version, created_at, activate_at, retire_at, "
    "row_version";
constexpr absl::string_view kDekColumns =
    "tenant_id, version, kek_version, wrapped, state, created_at, encryptions";

// The one place SQLite result codes become absl codes. `op` names the KeyStore
// operation; SQLite's own messages name tables and columns, never bound values.
absl::Status SqliteStatus(sqlite3* db, int rc, absl::string_view op) {
  const char* detail = (db != nullptr && sqlite3_errcode(db) == rc) ? sqlite3_errmsg(db)
                                                                     : sqlite3_errstr(rc);
  std::string message = absl::StrCat(op, ": sqlite: ", detail);
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_CANTOPEN:
    case SQLITE_IOERR:
    case SQLITE_FULL:  // disk full: an outage to retry, not a bug
      return absl::UnavailableError(message);
    case SQLITE_CONSTRAINT:
      if (rc == SQLITE_CONSTRAINT_PRIMARYKEY || rc == SQLITE_CONSTRAINT_UNIQUE) {
        return absl::AlreadyExistsError(message);
      }
      return absl::InternalError(message);
    default:
      return absl::InternalError(message);
  }
}

// Creates the database file with mode 0600 before SQLite does (SQLite would use 0644
// minus umask). SQLite gives the -wal and -shm files the database file's mode.
absl::Status CreatePrivateFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd >= 0) {
    ::close(fd);
    return absl::OkStatus();
  }
  if (errno == EEXIST) return absl::OkStatus();
  return absl::UnavailableError(
      absl::StrCat("Open: cannot create ", path, ": ", std::strerror(errno)));
}

}  // namespace

void SqliteKeyStore::DbCloser::operator()(sqlite3* db) const { sqlite3_close_v2(db); }
void SqliteKeyStore::StmtFinalizer::operator()(sqlite3_stmt* stmt) const {
  sqlite3_finalize(stmt);
}

// A borrowed cached statement. Binding errors are kept and reported by the next Step,
// so call sites bind in a chain. Destruction resets the statement (ending any read it
// holds open) and clears its bindings.
class SqliteKeyStore::Stmt {
 public:
  Stmt(sqlite3* db, sqlite3_stmt* stmt, absl::string_view op) : db_(db), stmt_(stmt), op_(op) {}
  Stmt(Stmt&& other) noexcept
      : db_(other.db_),
        stmt_(std::exchange(other.stmt_, nullptr)),
        op_(other.op_),
        bind_rc_(other.bind_rc_) {}
  Stmt& operator=(Stmt&&) = delete;
  ~Stmt() {
    if (stmt_ != nullptr) {
      sqlite3_reset(stmt_);
      sqlite3_clear_bindings(stmt_);
    }
  }

  Stmt& Bind(int index, int64_t value) {
    Keep(sqlite3_bind_int64(stmt_, index, value));
    return *this;
  }
  Stmt& Bind(int index, std::string_view value) {
    if (value.size() > static_cast<size_t>(std::numeric_limits<int>::max())) {
      Keep(SQLITE_TOOBIG);
    } else {
      // A null pointer would bind SQL NULL; an empty id must stay an empty string.
      Keep(sqlite3_bind_text(stmt_, index, value.data() != nullptr ? value.data() : "",
                             static_cast<int>(value.size()), SQLITE_TRANSIENT));
    }
    return *this;
  }
  Stmt& Bind(int index, const std::vector<uint8_t>& value) {
    if (value.empty()) {
      Keep(sqlite3_bind_zeroblob(stmt_, index, 0));  // a blob, not NULL
    } else if (value.size() > static_cast<size_t>(std::numeric_limits<int>::max())) {
      Keep(SQLITE_TOOBIG);
    } else {
      Keep(sqlite3_bind_blob(stmt_, index, value.data(), static_cast<int>(value.size()),
                             SQLITE_TRANSIENT));
    }
    return *this;
  }

  // true: a row is ready; false: done.
  absl::StatusOr<bool> Step() {
    if (bind_rc_ != SQLITE_OK) return SqliteStatus(nullptr, bind_rc_, op_);
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return SqliteStatus(db_, rc, op_);
  }
  // Steps a statement that returns no rows; the number of rows it changed.
  absl::StatusOr<int64_t> Run() {
    KMS_ASSIGN_OR_RETURN(bool row, Step());
    while (row) {
      KMS_ASSIGN_OR_RETURN(row, Step());
    }
    return static_cast<int64_t>(sqlite3_changes(db_));
  }

  bool IsNull(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }
  int64_t Int(int col) const { return sqlite3_column_int64(stmt_, col); }
  std::string Text(int col) const {
    const unsigned char* p = sqlite3_column_text(stmt_, col);
    int n = sqlite3_column_bytes(stmt_, col);
    return p == nullptr ? std::string() : std::string(reinterpret_cast<const char*>(p), n);
  }
  std::vector<uint8_t> Blob(int col) const {
    const auto* p = static_cast<const uint8_t*>(sqlite3_column_blob(stmt_, col));
    int n = sqlite3_column_bytes(stmt_, col);
    return p == nullptr ? std::vector<uint8_t>() : std::vector<uint8_t>(p, p + n);
  }

  absl::StatusOr<TenantRecord> ReadTenant(int first_col) const {
    TenantRecord t;
    t.id = Text(first_col);
    KMS_ASSIGN_OR_RETURN(t.state, ParseTenantState(Text(first_col + 1)));
    t.primary_dek_version = static_cast<uint32_t>(Int(first_col + 2));
    t.min_decrypt_version = static_cast<uint32_t>(Int(first_col + 3));
    t.created_at = Int(first_col + 4);
    t.row_version = Int(first_col + 5);
    return t;
  }
  absl::StatusOr<DekRecord> ReadDek(int first_col) const {
    DekRecord d;
    d.tenant_id = Text(first_col);
    d.version = static_cast<uint32_t>(Int(first_col + 1));
    d.kek_version = static_cast<uint32_t>(Int(first_col + 2));
    d.wrapped = Blob(first_col + 3);
    KMS_ASSIGN_OR_RETURN(d.state, ParseDekState(Text(first_col + 4)));
    d.created_at = Int(first_col + 5);
    d.encryptions = static_cast<uint64_t>(Int(first_col + 6));
    return d;
  }

  JwtKeyRecord ReadJwtKey(int first_col) const {
    JwtKeyRecord k;
    k.kid = Text(first_col);
    k.public_jwk = Text(first_col + 1);
    k.wrapped_private = Blob(first_col + 2);
    k.kek_version = static_cast<uint32_t>(Int(first_col + 3));
    k.created_at = Int(first_col + 4);
    k.activate_at = Int(first_col + 5);
    k.retire_at = Int(first_col + 6);
    k.row_version = Int(first_col + 7);
    return k;
  }

 private:
  void Keep(int rc) {
    if (bind_rc_ == SQLITE_OK) bind_rc_ = rc;
  }

  sqlite3* db_;
  sqlite3_stmt* stmt_;
  absl::string_view op_;
  int bind_rc_ = SQLITE_OK;
};

// BEGIN IMMEDIATE takes the write lock up front, so a transaction never fails half-way
// on a read-to-write lock upgrade; the busy timeout applies at BEGIN. Rolls back unless
// committed.
class SqliteKeyStore::Transaction {
 public:
  Transaction(SqliteKeyStore& store, absl::string_view op) : store_(store), op_(op) {}
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    if (open_ && sqlite3_get_autocommit(store_.db_.get()) == 0) {
      // Best effort: after some errors SQLite has already rolled back.
      store_.Exec("ROLLBACK", op_).IgnoreError();
    }
  }

  absl::Status Begin() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    KMS_RETURN_IF_ERROR(store_.Exec("BEGIN IMMEDIATE", op_));
    open_ = true;
    return absl::OkStatus();
  }
  absl::Status Commit() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    KMS_RETURN_IF_ERROR(store_.Exec("COMMIT", op_));
    open_ = false;
    return absl::OkStatus();
  }

 private:
  SqliteKeyStore& store_;
  absl::string_view op_;
  bool open_ = false;
};

SqliteKeyStore::SqliteKeyStore(DbPtr db) : db_(std::move(db)) {}

SqliteKeyStore::~SqliteKeyStore() {
  MutexLock lock(&mu_);
  stmts_.clear();
  db_.reset();
}

int SqliteKeyStore::LatestSchemaVersion() { return kLatestSchemaVersion; }

absl::StatusOr<std::unique_ptr<SqliteKeyStore>> SqliteKeyStore::Open(const std::string& path) {
  return Open(path, Options());
}

absl::StatusOr<std::unique_ptr<SqliteKeyStore>> SqliteKeyStore::Open(const std::string& path,
                                                                     const Options& options) {
  if (path.empty()) return absl::InvalidArgumentError("Open: empty database path");
  const bool in_memory = path == ":memory:";
  if (!in_memory) KMS_RETURN_IF_ERROR(CreatePrivateFile(path));

  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                           nullptr);
  DbPtr db(raw);  // SQLite returns a handle to close even when opening fails
  if (rc != SQLITE_OK) return SqliteStatus(raw, rc, "Open");

  std::unique_ptr<SqliteKeyStore> store(new SqliteKeyStore(std::move(db)));
  {
    MutexLock lock(&store->mu_);
    KMS_RETURN_IF_ERROR(store->Configure(options, in_memory));
    KMS_RETURN_IF_ERROR(store->Migrate());
  }
  return store;
}

absl::Status SqliteKeyStore::Configure(const Options& options, bool in_memory) {
  constexpr absl::string_view kOp = "Open";
  sqlite3* db = db_.get();
  sqlite3_extended_result_codes(db, 1);
  const auto timeout_ms = options.busy_timeout.count();
  sqlite3_busy_timeout(
      db, static_cast<int>(std::min<int64_t>(timeout_ms, std::numeric_limits<int>::max())));

  // WAL: readers never block the writer and vice versa (kmsctl may read while kmsd
  // writes). synchronous=FULL syncs the WAL at every commit: with NORMAL a power loss
  // can undo the last commits, and an undone DEK rotation or KEK insert means data
  // already encrypted under a key the store no longer has. Key writes are rare; losing
  // one is far worse than the fsync.
  if (!in_memory) {
    KMS_ASSIGN_OR_RETURN(Stmt s, Prepare("PRAGMA journal_mode = WAL", kOp));
    KMS_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row || s.Text(0) != "wal") {
      return absl::InternalError("Open: could not switch the database to WAL mode");
    }
  }
  KMS_RETURN_IF_ERROR(Exec("PRAGMA synchronous = FULL", kOp));
  KMS_RETURN_IF_ERROR(Exec("PRAGMA foreign_keys = ON", kOp));
  // Freed space (a shredded DEK's old blob) is overwritten with zeros.
  KMS_RETURN_IF_ERROR(Exec("PRAGMA secure_delete = ON", kOp));
  KMS_RETURN_IF_ERROR(Exec("PRAGMA trusted_schema = OFF", kOp));
  return absl::OkStatus();
}

absl::Status SqliteKeyStore::Migrate() {
  constexpr absl::string_view kOp = "Open: schema migration";
  for (;;) {
    // Each step re-reads the version under the write lock: another process may be
    // migrating the same file.
    Transaction txn(*this, kOp);
    KMS_RETURN_IF_ERROR(txn.Begin());
    KMS_RETURN_IF_ERROR(
        Exec("CREATE TABLE IF NOT EXISTS schema_migrations ("
             "version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
             kOp));
    int64_t current = 0;
    {
      KMS_ASSIGN_OR_RETURN(
          Stmt s, Prepare("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", kOp));
      KMS_ASSIGN_OR_RETURN(bool row, s.Step());
      if (row) current = s.Int(0);
    }
    if (current > kLatestSchemaVersion) {
      return absl::FailedPreconditionError(
          absl::StrCat("database schema version ", current, " is newer than this kmsd (",
                       kLatestSchemaVersion, ")"));
    }
    if (current == kLatestSchemaVersion) return txn.Commit();

    char* error = nullptr;
    int rc = sqlite3_exec(db_.get(), kMigrations[current], nullptr, nullptr, &error);
    if (rc != SQLITE_OK) {
      std::string detail = error != nullptr ? error : sqlite3_errstr(rc);
      sqlite3_free(error);
      return absl::InternalError(
          absl::StrCat(kOp, ": migration ", current + 1, " failed: ", detail));
    }
    {
      KMS_ASSIGN_OR_RETURN(
          Stmt s,
          Prepare("INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)", kOp));
      KMS_RETURN_IF_ERROR(s.Bind(1, current + 1).Bind(2, RealClock::Instance().UnixSeconds()).Run().status());
    }
    KMS_RETURN_IF_ERROR(txn.Commit());
  }
}

absl::StatusOr<SqliteKeyStore::Stmt> SqliteKeyStore::Prepare(absl::string_view sql,
                                                             absl::string_view op) {
  auto it = stmts_.find(sql);
  if (it == stmts_.end()) {
    sqlite3_stmt* raw = nullptr;
    int rc = sqlite3_prepare_v3(db_.get(), sql.data(), static_cast<int>(sql.size()),
                                SQLITE_PREPARE_PERSISTENT, &raw, nullptr);
    if (rc != SQLITE_OK) return SqliteStatus(db_.get(), rc, op);
    it = stmts_.emplace(std::string(sql), StmtPtr(raw)).first;
  }
  return Stmt(db_.get(), it->second.get(), op);
}

absl::Status SqliteKeyStore::Exec(absl::string_view sql, absl::string_view op) {
  KMS_ASSIGN_OR_RETURN(Stmt s, Prepare(sql, op));
  return s.Run().status();
}

absl::Status SqliteKeyStore::BumpEpoch(absl::string_view op) {
  KMS_ASSIGN_OR_RETURN(Stmt s,
                       Prepare("UPDATE store_epoch SET epoch = epoch + 1 WHERE id = 1", op));
  KMS_ASSIGN_OR_RETURN(int64_t changed, s.Run());
  if (changed != 1) return absl::InternalError(absl::StrCat(op, ": store_epoch row missing"));
  return absl::OkStatus();
}

absl::Status SqliteKeyStore::DiagnoseTenantCas(const std::string& tenant_id,
                                               int64_t expected_row_version,
                                               absl::string_view op) {
  KMS_ASSIGN_OR_RETURN(Stmt s,
                       Prepare("SELECT state, row_version FROM tenants WHERE id = ?1", op));
  KMS_ASSIGN_OR_RETURN(bool row, s.Bind(1, tenant_id).Step());
  if (!row) return absl::NotFoundError(absl::StrCat(op, ": tenant ", tenant_id, " not found"));
  if (s.Int(1) != expected_row_version) {
    return absl::AbortedError(absl::StrCat(op, ": tenant ", tenant_id,
                                           " changed concurrently (row_version ", s.Int(1),
                                           ", expected ", expected_row_version, ")"));
  }
  if (s.Text(0) == TenantStateName(TenantState::kShredded)) {
    return absl::FailedPreconditionError(
        absl::StrCat(op, ": tenant ", tenant_id, " is shredded"));
  }
  return absl::OkStatus();
}

// --- KEKs

absl::StatusOr<std::vector<KekRecord>> SqliteKeyStore::ListKeks() {
  constexpr absl::string_view kOp = "ListKeks";
  MutexLock lock(&mu_);
  KMS_ASSIGN_OR_RETURN(
      Stmt s,
      Prepare("SELECT version, wrapped, state, created_at FROM kek_versions ORDER BY version",
              kOp));
  std::vector<KekRecord> keks;
  for (;;) {
    KMS_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    KekRecord k;
    k.version = static_cast<uint32_t>(s.Int(0));
    k.wrapped = s.Blob(1);
    KMS_ASSIGN_OR_RETURN(k.state, ParseKekState(s.Text(2)));
    k.created_at = s.Int(3);
    keks.push_back(std::move(k));
  }
  return keks;
}

absl::Status SqliteKeyStore::InsertKek(const KekRecord& kek) {
  constexpr absl::string_view kOp = "InsertKek";
  KMS_RETURN_IF_ERROR(CheckInsertKek(kek));
  MutexLock lock(&mu_);
  Transaction txn(*this, kOp);
  KMS_RETURN_IF_ERROR(txn.Begin());
  {
    KMS_ASSIGN_OR_RETURN(Stmt s, Prepare("INSERT INTO kek_versions (version, wrapped, state, "
                                         "created_at) VALUES (?1, ?2, ?3, ?4)",
                                         kOp));
    absl::Status st = s.Bind(1, kek.version)
                          .Bind(2, kek.wrapped)
                          .Bind(3, KekStateName(kek.state))
                          .Bind(4, kek.created_at)
                          .Run()
                          .status();
    if (absl::IsAlreadyExists(st)) {
      return absl::AlreadyExistsError(
          absl::StrCat(kOp, ": KEK version ", kek.version, " already exists"));
    }
    KMS_RETURN_IF_ERROR(st);
  }
  KMS_RETURN_IF_ERROR(BumpEpoch(kOp));
  return txn.Commit();
}

absl::Status SqliteKeyStore::UpdateKekState(uint32_t version, KekState from, KekState to) {
  constexpr absl::string_view kOp = "UpdateKekState";
  MutexLock lock(&mu_);
  Transaction txn(*this, kOp);
  KMS_RETURN_IF_ERROR(txn.Begin());
  int64_t changed = 0;
  {
    KMS_ASSIGN_OR_RETURN(
        Stmt s,
        Prepare("UPDATE kek_versions SET state = ?1 WHERE version = ?2 AND state = ?3", kOp));
    KMS_ASSIGN_OR_RETURN(
        changed, s.Bind(1, KekStateName(to)).Bind(2, version).Bind(3, KekStateName(from)).Run());
  }
  if (changed == 0) {
    KMS_ASSIGN_OR_RETURN(Stmt s,
                         Prepare("SELECT state FROM kek_versions WHERE version = ?1", kOp));
    KMS_ASSIGN_OR_RETURN(bool row, s.Bind(1, version).Step());
    if (!row) {
      return absl::NotFoundError(absl::StrCat(kOp, ": KEK version ", version, " not found"));
    }
    return absl::AbortedError(absl::StrCat(kOp, ": KEK version ", version, " is ", s.Text(0),
                                           ", not ", std::string(KekStateName(from))));
  }
  KMS_RETURN_IF_ERROR(BumpEpoch(kOp));
  return txn.Commit();
}

// --- Tenants

absl::Status SqliteKeyStore::CreateTenant(const TenantRecord& tenant,
                                          const DekRecord& first_dek) {
  constexpr absl::string_view kOp = "CreateTenant";
  KMS_RETURN_IF_ERROR(CheckCreateTenant(tenant, first_dek));
  MutexLock lock(&mu_);
  Transaction txn(*this, kOp);
  KMS_RETURN_IF_ERROR(txn.Begin());
  {
    KMS_ASSIGN_OR_RETURN(
        Stmt s, Prepare("INSERT INTO tenants (id, state, primary_dek_version, "
                        "min_decrypt_version, created_at, row_version) "
                        "VALUES (?1, ?2, ?3, ?4, ?5, 1)",
                        kOp));
    absl::Status st = s.Bind(1, tenant.id)
                          .Bind(2, TenantStateName(tenant.state))
                          .Bind(3, first_dek.version)
                          .Bind(4, tenant.min_decrypt_version)
                          .Bind(5, tenant.created_at)
                          .Run()
                          .status();
    if (absl::IsAlreadyExists(st)) {
      return absl::AlreadyExistsError(
          absl::StrCat(kOp, ": tenant ", tenant.id, " already exists"));
    }
    KMS_RETURN_IF_ERROR(st);
  }
  {
    KMS_ASSIGN_OR_RETURN(Stmt s, Prepare(absl::StrCat("INSERT INTO tenant_deks (", kDekColumns,
                                                      ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
                                         kOp));
    KMS_RETURN_IF_ERROR(s.Bind(1, tenant.id)
                            .Bind(2, first_dek.version)
                            .Bind(3, first_dek.kek_version)
                            .Bind(4, first_dek.wrapped)
                            .Bind(5, DekStateName(first_dek.state))
                            .Bind(6, first_dek.created_at)
                            .Bind(7, static_cast<int64_t>(first_dek.encryptions))
                            .Run()
                            .status());
  }
  KMS_RETURN_IF_ERROR(BumpEpoch(kOp));
  return txn.Commit();
}

absl::StatusOr<TenantRecord> SqliteKeyStore::GetTenant(const std::string& tenant_id) {
  constexpr absl::string_view kOp = "GetTenant";
  MutexLock lock(&mu_);
  KMS_ASSIGN_OR_RETURN(
      Stmt s, Prepare(absl::StrCat("SELECT ", kTenantColumns, " FROM tenants WHERE id = ?1"),
                      kOp));
  KMS_ASSIGN_OR_RETURN(bool row, s.Bind(1, tenant_id).Step());
  if (!row) return absl::NotFoundError(absl::StrCat(kOp, ": tenant ", tenant_id, " not found"));
  return s.ReadTenant(0);
}

absl::StatusOr<TenantPage> SqliteKeyStore::ListTenants(const std::string& after, int limit) {
  constexpr absl::string_view kOp = "ListTenants";
  KMS_RETURN_IF_ERROR(CheckListTenants(limit));
  MutexLock lock(&mu_);
  // Ids compare as bytes (BINARY collation), like std::string.
  KMS_ASSIGN_OR_RETURN(
      Stmt s, Prepare(absl::StrCat("SELECT ", kTenantColumns,
                                   " FROM tenants WHERE id > ?1 ORDER BY id LIMIT ?2"),
                      kOp));
  // One row more than asked tells whether another page follows.
  s.Bind(1, after).Bind(2, static_cast<int64_t>(limit) + 1);
  TenantPage page;
  for (;;) {
    KMS_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    if (static_cast<int>(page.tenants.size()) == limit) {
      page.next_after = page.tenants.back().id;
      break;
    }
    KMS_ASSIGN_OR_RETURN(TenantRecord t, s.ReadTenant(0));
    page.tenants.push_back(std::move(t));
  }
  return page;
}

absl::StatusOr<uint64_t> SqliteKeyStore::CountTenants() {
  MutexLock lock(&mu_);
  KMS_ASSIGN_OR_RETURN(Stmt s, Prepare("SELECT COUNT(*) FROM tenants", "CountTenants"));
  KMS_ASSIGN_OR_RETURN(bool row, s.Step());
  return row ? static_cast<uint64_t>(s.Int(0)) : 0;
}

absl::StatusOr<KeyStore::TenantDek> SqliteKeyStore::GetTenantDek(const std::string& tenant_id,
                                                                 uint32_t version) {
  constexpr absl::string_view kOp = "GetTenantDek";
  MutexLock lock(&mu_);
  // One statement, so the tenant row and the DEK row come from the same snapshot. The
  // LEFT JOIN tells an unknown tenant (no row) from an unknown version (NULL DEK).
  KMS_ASSIGN_OR_RETURN(
      Stmt s,
      Prepare("SELECT t.id, t.state, t.primary_dek_version, t.min_decrypt_version, "
              "t.created_at, t.row_version, "
              "d.tenant_id, d.version, d.kek_version, d.wrapped, d.state, d.created_at, "
              "d.encryptions "
              "FROM tenants AS t LEFT JOIN tenant_deks AS d ON d.tenant_id = t.id AND "
              "d.version = CASE WHEN ?2 = 0 THEN t.primary_dek_version ELSE ?2 END "
              "WHERE t.id = ?1",
              kOp));
  KMS_ASSIGN_OR_RETURN(bool row, s.Bind(1, tenant_id).Bind(2, version).Step());
  if (!row) return absl::NotFoundError(absl::StrCat(kOp, ": tenant ", tenant_id, " not found"));
  if (s.IsNull(7)) {
    return absl::NotFoundError(
        absl::StrCat(kOp, ": tenant ", tenant_id, " has no DEK version ", version));
  }
  TenantDek out;
  KMS_ASSIGN_OR_RETURN(out.tenant, s.ReadTenant(0));
  KMS_ASSIGN_OR_RETURN(out.dek, s.ReadDek(6));
  return out;
}

absl::StatusOr<std::vector<DekRecord>> SqliteKeyStore::ListDeks(const std::string& tenant_id) {
  constexpr absl::string_view kOp = "ListDeks";
  MutexLock lock(&mu_);
  KMS_ASSIGN_OR_RETURN(
      Stmt s, Prepare(absl::StrCat("SELECT ", kDekColumns,
                                   " FROM tenant_deks WHERE tenant_id = ?1 ORDER BY version"),
                      kOp));
  s.Bind(1, tenant_id);
  std::vector<DekRecord> deks;
  for (;;) {
    KMS_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    KMS_ASSIGN_OR_RETURN(DekRecord d, s.ReadDek(0));
    deks.push_back(std::move(d));
  }
  // Every tenant has at least its first DEK, so no rows means no tenant.
  if (deks.empty()) {
    return absl::NotFoundError(absl::StrCat(kOp, ": tenant ", tenant_id, " not found"));
  }
  return deks;
}

absl::Status SqliteKeyStore::RotateDek(const std::string& tenant_id,
                                       int64_t expected_row_version,
                                       const DekRecord& new_dek) {
  constexpr absl::string_view kOp = "RotateDek";
  KMS_RETURN_IF_ERROR(CheckRotateDek(tenant_id, new_dek));
  MutexLock lock(&mu_);
  Transaction txn(*this, kOp);
  KMS_RETURN_IF_ERROR(txn.Begin());
  int64_t changed = 0;
  {
    // The compare-and-set: only from the row_version the caller read, only forward.
    KMS_ASSIGN_OR_RETURN(
        Stmt s, Prepare("UPDATE tenants SET primary_dek_version = ?3, "
                        "row_version = row_version + 1 "
                        "WHERE id = ?1 AND row_version = ?2 AND state = 'active' "
                        "AND primary_dek_version < ?3",
                        kOp));
    KMS_ASSIGN_OR_RETURN(
        changed, s.Bind(1, tenant_id).Bind(2, expected_row_version).Bind(3, new_dek.version).Run());
  }
  if (changed == 0) {
    KMS_RETURN_IF_ERROR(DiagnoseTenantCas(tenant_id, expected_row_version, kOp));
    return absl::FailedPreconditionError(
        absl::StrCat(kOp, ": DEK version ", new_dek.version,
                     " is not above the primary version of tenant ", tenant_id));
  }
  {
    KMS_ASSIGN_OR_RETURN(Stmt s, Prepare(absl::StrCat("INSERT INTO tenant_deks (", kDekColumns,
                                                      ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
                                         kOp));
    absl::Status st = s.Bind(1, tenant_id)
                          .Bind(2, new_dek.version)
                          .Bind(3, new_dek.kek_version)
                          .Bind(4, new_dek.wrapped)
                          .Bind(5, DekStateName(new_dek.state))
                          .Bind(6, new_dek.created_at)
                          .Bind(7, static_cast<int64_t>(new_dek.encryptions))
                          .Run()
                          .status();
    if (absl::IsAlreadyExists(st)) {
      return absl::AlreadyExistsError(absl::StrCat(kOp, ": tenant ", tenant_id,
                                                   " already has DEK version ", new_dek.version));
    }
    KMS_RETURN_IF_ERROR(st);
  }
  KMS_RETURN_IF_ERROR(BumpEpoch(kOp));
  return txn.Commit();
}

absl::Status SqliteKeyStore::SetTenantState(const std::string& tenant_id,
                                            int64_t expected_row_version, TenantState state) {
  constexpr absl::string_view kOp = "SetTenantState";
  const bool shred = state == TenantState::kShredded;
  MutexLock lock(&mu_);
  {
    Transaction txn(*this, kOp);
    KMS_RETURN_IF_ERROR(txn.Begin());
    int64_t changed = 0;
    {
      // Shredding is final: a shredded tenant can only be "shredded" again.
      KMS_ASSIGN_OR_RETURN(
          Stmt s, Prepare("UPDATE tenants SET state = ?3, row_version = row_version + 1 "
                          "WHERE id = ?1 AND row_version = ?2 "
                          "AND (state = 'active' OR ?3 = 'shredded')",
                          kOp));
      KMS_ASSIGN_OR_RETURN(changed, s.Bind(1, tenant_id)
                                        .Bind(2, expected_row_version)
                                        .Bind(3, TenantStateName(state))
                                        .Run());
    }
    if (changed == 0) {
      KMS_RETURN_IF_ERROR(DiagnoseTenantCas(tenant_id, expected_row_version, kOp));
      return absl::InternalError(absl::StrCat(kOp, ": update matched no row"));
    }
    if (shred) {
      // zeroblob(0): the row stays (so reads can say "shredded"), the key bytes go;
      // secure_delete zeroes the space the old blob used.
      KMS_ASSIGN_OR_RETURN(
          Stmt s, Prepare("UPDATE tenant_deks SET state = 'destroyed', wrapped = zeroblob(0) "
                          "WHERE tenant_id = ?1",
                          kOp));
      KMS_RETURN_IF_ERROR(s.Bind(1, tenant_id).Run().status());
    }
    KMS_RETURN_IF_ERROR(BumpEpoch(kOp));
    KMS_RETURN_IF_ERROR(txn.Commit());
  }
  if (shred) {
    // The WAL still holds page images with the old blobs: copy them into the database
    // (where they are now zeros) and truncate the WAL. Best effort: a reader in another
    // process may delay it to a later checkpoint; the commit above already stands.
    sqlite3_wal_checkpoint_v2(db_.get(), nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr,
                              nullptr);
  }
  return absl::OkStatus();
}

absl::Status SqliteKeyStore::AddEncryptions(const std::string& tenant_id, uint32_t version,
                                            uint64_t count) {
  constexpr absl::string_view kOp = "AddEncryptions";
  KMS_RETURN_IF_ERROR(CheckAddEncryptions(count));
  MutexLock lock(&mu_);
  // A single statement is its own transaction. A usage counter, not a state change:
  // neither the epoch nor the tenant's row_version moves, so frequent counter flushes
  // neither invalidate replicas' caches nor make a concurrent rotation's CAS fail.
  KMS_ASSIGN_OR_RETURN(
      Stmt s, Prepare("UPDATE tenant_deks SET encryptions = encryptions + ?3 "
                      "WHERE tenant_id = ?1 AND version = ?2",
                      kOp));
  KMS_ASSIGN_OR_RETURN(
      int64_t changed,
      s.Bind(1, tenant_id).Bind(2, version).Bind(3, static_cast<int64_t>(count)).Run());
  if (changed == 0) {
    return absl::NotFoundError(
        absl::StrCat(kOp, ": tenant ", tenant_id, " has no DEK version ", version));
  }
  return absl::OkStatus();
}

// --- JWT signing keys

absl::StatusOr<std::vector<JwtKeyRecord>> SqliteKeyStore::ListJwtKeys() {
  constexpr absl::string_view kOp = "ListJwtKeys";
  MutexLock lock(&mu_);
  KMS_ASSIGN_OR_RETURN(
      Stmt s, Prepare(absl::StrCat("SELECT ", kJwtKeyColumns,
                                   " FROM jwt_keys ORDER BY activate_at, kid"),
                      kOp));
  std::vector<JwtKeyRecord> keys;
  for (;;) {
    KMS_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    keys.push_back(s.ReadJwtKey(0));
  }
  return keys;
}

absl::Status SqliteKeyStore::InsertFirstJwtKey(const JwtKeyRecord& key) {
  constexpr absl::string_view kOp = "InsertFirstJwtKey";
  KMS_RETURN_IF_ERROR(CheckInsertFirstJwtKey(key));
  MutexLock lock(&mu_);
  // The emptiness check and the insert share one write transaction, so two replicas
  // starting at once cannot both insert a first key.
  Transaction txn(*this, kOp);
  KMS_RETURN_IF_ERROR(txn.Begin());
  {
    KMS_ASSIGN_OR_RETURN(Stmt s, Prepare("SELECT EXISTS (SELECT 1 FROM jwt_keys)", kOp));
    KMS_ASSIGN_OR_RETURN(bool row, s.Step());
    if (row && s.Int(0) != 0) {
      return absl::AlreadyExistsError(absl::StrCat(kOp, ": a JWT key already exists"));
    }
  }
  {
    KMS_ASSIGN_OR_RETURN(Stmt s, Prepare(absl::StrCat("INSERT INTO jwt_keys (", kJwtKeyColumns,
                                                      ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1)"),
                                         kOp));
    KMS_RETURN_IF_ERROR(s.Bind(1, key.kid)
                            .Bind(2, key.public_jwk)
                            .Bind(3, key.wrapped_private)
                            .Bind(4, key.kek_version)
                            .Bind(5, key.created_at)
                            .Bind(6, key.activate_at)
                            .Bind(7, key.retire_at)
                            .Run()
                            .status());
  }
  KMS_RETURN_IF_ERROR(BumpEpoch(kOp));
  return txn.Commit();
}

absl::Status SqliteKeyStore::RotateJwtKey(const std::string& current_kid,
                                          int64_t expected_row_version,
                                          int64_t current_retire_at, const JwtKeyRecord& next) {
  constexpr absl::string_view kOp = "RotateJwtKey";
  KMS_RETURN_IF_ERROR(CheckRotateJwtKey(current_kid, current_retire_at, next));
  MutexLock lock(&mu_);
  Transaction txn(*this, kOp);
  KMS_RETURN_IF_ERROR(txn.Begin());
  int64_t changed = 0;
  {
    KMS_ASSIGN_OR_RETURN(
        Stmt s, Prepare("UPDATE jwt_keys SET retire_at = ?3, row_version = row_version + 1 "
                        "WHERE kid = ?1 AND row_version = ?2",
                        kOp));
    KMS_ASSIGN_OR_RETURN(changed, s.Bind(1, current_kid)
                                      .Bind(2, expected_row_version)
                                      .Bind(3, current_retire_at)
                                      .Run());
  }
  if (changed == 0) {
    KMS_RETURN_IF_ERROR(DiagnoseJwtKeyCas(current_kid, expected_row_version, kOp));
    return absl::InternalError(absl::StrCat(kOp, ": update matched no row"));
  }
  {
    KMS_ASSIGN_OR_RETURN(Stmt s, Prepare(absl::StrCat("INSERT INTO jwt_keys (", kJwtKeyColumns,
                                                      ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1)"),
                                         kOp));
    absl::Status st = s.Bind(1, next.kid)
                          .Bind(2, next.public_jwk)
                          .Bind(3, next.wrapped_private)
                          .Bind(4, next.kek_version)
                          .Bind(5, next.created_at)
                          .Bind(6, next.activate_at)
                          .Bind(7, next.retire_at)
                          .Run()
                          .status();
    if (absl::IsAlreadyExists(st)) {
      // The transaction rolls back: the current key's retire_at is not changed either.
      return absl::AlreadyExistsError(
          absl::StrCat(kOp, ": JWT key ", next.kid, " already exists"));
    }
    KMS_RETURN_IF_ERROR(st);
  }
  KMS_RETURN_IF_ERROR(BumpEpoch(kOp));
  return txn.Commit();
}

absl::Status SqliteKeyStore::UpdateJwtKeyWrapping(const std::string& kid,
                                                  int64_t expected_row_version,
                                                  uint32_t kek_version,
                                                  const std::vector<uint8_t>& wrapped_private) {
  constexpr absl::string_view kOp = "UpdateJwtKeyWrapping";
  MutexLock lock(&mu_);
  Transaction txn(*this, kOp);
  KMS_RETURN_IF_ERROR(txn.Begin());
  int64_t changed = 0;
  {
    KMS_ASSIGN_OR_RETURN(
        Stmt s, Prepare("UPDATE jwt_keys SET kek_version = ?3, wrapped_private = ?4, "
                        "row_version = row_version + 1 WHERE kid = ?1 AND row_version = ?2",
                        kOp));
    KMS_ASSIGN_OR_RETURN(changed, s.Bind(1, kid)
                                      .Bind(2, expected_row_version)
                                      .Bind(3, kek_version)
                                      .Bind(4, wrapped_private)
                                      .Run());
  }
  if (changed == 0) {
    KMS_RETURN_IF_ERROR(DiagnoseJwtKeyCas(kid, expected_row_version, kOp));
    return absl::InternalError(absl::StrCat(kOp, ": update matched no row"));
  }
  KMS_RETURN_IF_ERROR(BumpEpoch(kOp));
  return txn.Commit();
}

absl::Status SqliteKeyStore::DiagnoseJwtKeyCas(const std::string& kid,
                                               int64_t expected_row_version,
                                               absl::string_view op) {
  KMS_ASSIGN_OR_RETURN(Stmt s, Prepare("SELECT row_version FROM jwt_keys WHERE kid = ?1", op));
  KMS_ASSIGN_OR_RETURN(bool row, s.Bind(1, kid).Step());
  if (!row) return absl::NotFoundError(absl::StrCat(op, ": JWT key ", kid, " not found"));
  if (s.Int(0) != expected_row_version) {
    return absl::AbortedError(absl::StrCat(op, ": JWT key ", kid,
                                           " changed concurrently (row_version ", s.Int(0),
                                           ", expected ", expected_row_version, ")"));
  }
  return absl::OkStatus();
}

// --- Coherence

absl::StatusOr<int64_t> SqliteKeyStore::GetEpoch() {
  MutexLock lock(&mu_);
  KMS_ASSIGN_OR_RETURN(Stmt s, Prepare("SELECT epoch FROM store_epoch WHERE id = 1", "GetEpoch"));
  KMS_ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) return absl::InternalError("GetEpoch: store_epoch row missing");
  return s.Int(0);
}

absl::Status SqliteKeyStore::Ping() {
  MutexLock lock(&mu_);
  // Reads through the file (a read transaction checks the WAL index), not just the cache.
  KMS_ASSIGN_OR_RETURN(Stmt s, Prepare("SELECT epoch FROM store_epoch WHERE id = 1", "Ping"));
  KMS_ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) return absl::InternalError("Ping: store_epoch row missing");
  return absl::OkStatus();
}

}  // namespace kms::store
