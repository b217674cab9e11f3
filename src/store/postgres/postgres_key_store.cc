#include "src/store/postgres/postgres_key_store.h"

#include <algorithm>
#include <iterator>
#include <limits>
#include <numeric>
#include <tuple>
#include <unordered_set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kms/common/clock.h"
#include "src/store/audit_checks.h"
#include "src/store/record_checks.h"
#include "src/store/postgres/connection_pool.h"
#include "src/store/postgres/pg_connection.h"

namespace kms::store {
namespace {

using pg::Connection;
using pg::Params;
using pg::Result;

// Migration N is kMigrations[N - 1]. Append only: a released migration is never edited,
// because databases in the field have already applied it. Run with search_path = the
// configured schema. The logical schema is SQLite's (src/store/sqlite).
constexpr const char* kMigrations[] = {
    // 1: the initial schema (DESIGN §3).
    R"sql(
CREATE TABLE kek_versions (
  version    BIGINT PRIMARY KEY CHECK (version > 0),
  wrapped    BYTEA  NOT NULL,
  state      TEXT   NOT NULL CHECK (state IN ('active', 'retired')),
  created_at BIGINT NOT NULL
);

CREATE TABLE tenants (
  id                  TEXT COLLATE "C" NOT NULL PRIMARY KEY CHECK (length(id) > 0),
  state               TEXT   NOT NULL CHECK (state IN ('active', 'shredded')),
  primary_dek_version BIGINT NOT NULL CHECK (primary_dek_version > 0),
  min_decrypt_version BIGINT NOT NULL CHECK (min_decrypt_version >= 0),
  created_at          BIGINT NOT NULL,
  row_version         BIGINT NOT NULL CHECK (row_version > 0)
);

CREATE TABLE tenant_deks (
  tenant_id   TEXT COLLATE "C" NOT NULL REFERENCES tenants (id),
  version     BIGINT NOT NULL CHECK (version > 0),
  kek_version BIGINT NOT NULL,
  wrapped     BYTEA  NOT NULL,
  state       TEXT   NOT NULL CHECK (state IN ('active', 'retired', 'destroyed')),
  created_at  BIGINT NOT NULL,
  encryptions BIGINT NOT NULL DEFAULT 0 CHECK (encryptions >= 0),
  PRIMARY KEY (tenant_id, version),
  -- A destroyed DEK keeps no key bytes.
  CHECK (state <> 'destroyed' OR length(wrapped) = 0)
);

-- The KEK re-wrap job looks for DEKs still wrapped under an old KEK version.
CREATE INDEX tenant_deks_by_kek ON tenant_deks (kek_version);

CREATE TABLE store_epoch (
  id    INTEGER PRIMARY KEY CHECK (id = 1),
  epoch BIGINT  NOT NULL
);
INSERT INTO store_epoch (id, epoch) VALUES (1, 0);

-- JWT signing keys (DESIGN §5). No state column: the state is derived from
-- activate_at/retire_at (retire_at 0: not scheduled).
CREATE TABLE jwt_keys (
  kid             TEXT COLLATE "C" NOT NULL PRIMARY KEY CHECK (length(kid) > 0),
  public_jwk      TEXT   NOT NULL,
  wrapped_private BYTEA  NOT NULL,
  kek_version     BIGINT NOT NULL,
  created_at      BIGINT NOT NULL,
  activate_at     BIGINT NOT NULL,
  retire_at       BIGINT NOT NULL DEFAULT 0 CHECK (retire_at >= 0),
  row_version     BIGINT NOT NULL DEFAULT 1 CHECK (row_version > 0)
);

CREATE TABLE audit_log (
  seq       BIGINT PRIMARY KEY,
  at        BIGINT NOT NULL,
  actor     TEXT   NOT NULL,
  action    TEXT   NOT NULL,
  subject   TEXT   NOT NULL,
  prev_hash BYTEA  NOT NULL,
  hash      BYTEA  NOT NULL
);
)sql",
    // 2: checkpoints of rotation jobs (one running job per kind, by a unique index), and
    // the DEK index in the re-wrap job's key order (ListDeksWrappedUnder).
    R"sql(
DROP INDEX tenant_deks_by_kek;
CREATE INDEX tenant_deks_by_kek ON tenant_deks (kek_version, tenant_id, version);

CREATE TABLE rotation_jobs (
  id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- never reused
  kind             TEXT   NOT NULL CHECK (length(kind) > 0),
  state            TEXT   NOT NULL CHECK (state IN ('running', 'done', 'failed')),
  from_kek_version BIGINT NOT NULL CHECK (from_kek_version > 0),
  to_kek_version   BIGINT NOT NULL CHECK (to_kek_version > 0),
  phase            TEXT   NOT NULL,
  cursor_key       TEXT COLLATE "C" NOT NULL,
  cursor_version   BIGINT NOT NULL CHECK (cursor_version >= 0),
  keys_done        BIGINT NOT NULL CHECK (keys_done >= 0),
  keys_skipped     BIGINT NOT NULL CHECK (keys_skipped >= 0),
  keys_total       BIGINT NOT NULL CHECK (keys_total >= 0),
  error            TEXT   NOT NULL,
  created_at       BIGINT NOT NULL,
  updated_at       BIGINT NOT NULL,
  finished_at      BIGINT NOT NULL,
  row_version      BIGINT NOT NULL CHECK (row_version > 0)
);
CREATE UNIQUE INDEX rotation_jobs_one_running ON rotation_jobs (kind) WHERE state = 'running';
)sql",
    // 3: KEK retirement time (retired blobs are destroyed after a keep period; versions
    // retired before this migration count from now), and a tenant's own DEK rotation
    // period (NULL or 0: the configured default).
    R"sql(
ALTER TABLE kek_versions ADD COLUMN retired_at BIGINT NOT NULL DEFAULT 0
  CHECK (retired_at >= 0);
UPDATE kek_versions SET retired_at = EXTRACT(EPOCH FROM now())::bigint WHERE state = 'retired';
ALTER TABLE tenants ADD COLUMN rotation_period_seconds BIGINT
  CHECK (rotation_period_seconds IS NULL OR rotation_period_seconds >= 0);
)sql",
    // 4: the hash-chained audit log (include/kms/store/audit_store.h): one chain per node.
    R"sql(
DROP TABLE audit_log;
CREATE TABLE audit_log (
  id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  node         TEXT COLLATE "C" NOT NULL CHECK (length(node) > 0),
  seq          BIGINT NOT NULL CHECK (seq > 0),
  at_ms        BIGINT NOT NULL,
  kind         TEXT   NOT NULL CHECK (kind IN ('admin', 'data')),
  identity     TEXT   NOT NULL,
  operation    TEXT   NOT NULL,
  tenant       TEXT   NOT NULL,
  tenants      BIGINT NOT NULL CHECK (tenants >= 0),
  calls        BIGINT NOT NULL CHECK (calls > 0),
  key_versions TEXT   NOT NULL,
  outcome      TEXT   NOT NULL,
  request_id   TEXT   NOT NULL,
  prev_hash    BYTEA  NOT NULL CHECK (length(prev_hash) = 32),
  hash         BYTEA  NOT NULL CHECK (length(hash) = 32),
  UNIQUE (node, seq)
);
CREATE INDEX audit_log_by_time ON audit_log (at_ms);
)sql",
    // 5: start-up and the periodic key-state reads do not grow with the store (see the
    // SQLite backend's migration 5): the primary DEK's created_at on the tenant row with
    // an index over active tenants, and a KEK index without destroyed DEKs.
    R"sql(
ALTER TABLE tenants ADD COLUMN primary_dek_created_at BIGINT NOT NULL DEFAULT 0;
UPDATE tenants t SET primary_dek_created_at = d.created_at FROM tenant_deks d
  WHERE d.tenant_id = t.id AND d.version = t.primary_dek_version;
CREATE INDEX tenants_active_by_primary_dek_age ON tenants (primary_dek_created_at)
  WHERE state = 'active';
DROP INDEX tenant_deks_by_kek;
CREATE INDEX tenant_deks_by_kek ON tenant_deks (kek_version, tenant_id, version)
  WHERE state <> 'destroyed';
)sql",
};

constexpr int kLatestSchemaVersion = static_cast<int>(std::size(kMigrations));

// Advisory lock keys (classid, objid): classid says what for, objid = hashtext(schema),
// so deployments (and tests) in different schemas of one database do not contend.
constexpr int64_t kMigrationLockClass = 0x4b4d5331;  // "KMS1"

constexpr int kMaxAttempts = 3;


absl::StatusOr<TenantRecord> ReadTenant(const Result& r, int row, int first_col) {
  TenantRecord t;
  t.id = r.Text(row, first_col);
  KMS_ASSIGN_OR_RETURN(t.state, ParseTenantState(r.Text(row, first_col + 1)));
  t.primary_dek_version = static_cast<uint32_t>(r.Int(row, first_col + 2));
  t.min_decrypt_version = static_cast<uint32_t>(r.Int(row, first_col + 3));
  t.created_at = r.Int(row, first_col + 4);
  t.row_version = r.Int(row, first_col + 5);
  return t;
}

absl::StatusOr<DekRecord> ReadDek(const Result& r, int row, int first_col) {
  DekRecord d;
  d.tenant_id = r.Text(row, first_col);
  d.version = static_cast<uint32_t>(r.Int(row, first_col + 1));
  d.kek_version = static_cast<uint32_t>(r.Int(row, first_col + 2));
  d.wrapped = r.Bytes(row, first_col + 3);
  KMS_ASSIGN_OR_RETURN(d.state, ParseDekState(r.Text(row, first_col + 4)));
  d.created_at = r.Int(row, first_col + 5);
  d.encryptions = static_cast<uint64_t>(r.Int(row, first_col + 6));
  return d;
}

absl::StatusOr<KekRecord> ReadKek(const Result& r, int row) {
  KekRecord k;
  k.version = static_cast<uint32_t>(r.Int(row, 0));
  k.wrapped = r.Bytes(row, 1);
  KMS_ASSIGN_OR_RETURN(k.state, ParseKekState(r.Text(row, 2)));
  k.created_at = r.Int(row, 3);
  return k;
}

absl::StatusOr<RotationJobRecord> ReadRotationJob(const Result& r, int row) {
  RotationJobRecord j;
  j.id = r.Int(row, 0);
  KMS_ASSIGN_OR_RETURN(j.kind, ParseRotationJobKind(r.Text(row, 1)));
  KMS_ASSIGN_OR_RETURN(j.state, ParseRotationJobState(r.Text(row, 2)));
  j.from_kek_version = static_cast<uint32_t>(r.Int(row, 3));
  j.to_kek_version = static_cast<uint32_t>(r.Int(row, 4));
  j.progress.phase = r.Text(row, 5);
  j.progress.cursor_key = r.Text(row, 6);
  j.progress.cursor_version = static_cast<uint32_t>(r.Int(row, 7));
  j.progress.done = static_cast<uint64_t>(r.Int(row, 8));
  j.progress.skipped = static_cast<uint64_t>(r.Int(row, 9));
  j.progress.total = static_cast<uint64_t>(r.Int(row, 10));
  j.error = r.Text(row, 11);
  j.created_at = r.Int(row, 12);
  j.updated_at = r.Int(row, 13);
  j.finished_at = r.Int(row, 14);
  j.row_version = r.Int(row, 15);
  return j;
}

JwtKeyRecord ReadJwtKey(const Result& r, int row) {
  JwtKeyRecord k;
  k.kid = r.Text(row, 0);
  k.public_jwk = r.Text(row, 1);
  k.wrapped_private = r.Bytes(row, 2);
  k.kek_version = static_cast<uint32_t>(r.Int(row, 3));
  k.created_at = r.Int(row, 4);
  k.activate_at = r.Int(row, 5);
  k.retire_at = r.Int(row, 6);
  k.row_version = r.Int(row, 7);
  return k;
}

absl::Status BumpEpoch(Connection& c, absl::string_view op) {
  KMS_ASSIGN_OR_RETURN(Result r,
                       c.Exec("UPDATE store_epoch SET epoch = epoch + 1 WHERE id = 1", op));
  if (r.affected() != 1) return absl::InternalError(absl::StrCat(op, ": store_epoch row missing"));
  return absl::OkStatus();
}

// After a CAS matched no row: NOT_FOUND, ABORTED or FAILED_PRECONDITION, from the
// tenant row as it is now (READ COMMITTED: this statement sees the latest commit).
absl::Status DiagnoseTenantCas(Connection& c, const std::string& tenant_id,
                               int64_t expected_row_version, absl::string_view op) {
  Params p;
  p.Text(tenant_id);
  KMS_ASSIGN_OR_RETURN(Result r,
                       c.Exec("SELECT state, row_version FROM tenants WHERE id = $1", p, op));
  if (r.rows() == 0) {
    return absl::NotFoundError(absl::StrCat("tenant ", tenant_id, " not found"));
  }
  if (r.Int(0, 1) != expected_row_version) {
    return absl::AbortedError(absl::StrCat("tenant ", tenant_id,
                                           " changed concurrently (row_version ", r.Int(0, 1),
                                           ", expected ", expected_row_version, ")"));
  }
  if (r.Text(0, 0) == TenantStateName(TenantState::kShredded)) {
    return absl::FailedPreconditionError(absl::StrCat("tenant ", tenant_id, " is shredded"));
  }
  return absl::OkStatus();
}

absl::Status DiagnoseJwtKeyCas(Connection& c, const std::string& kid, int64_t expected_row_version,
                               absl::string_view op) {
  Params p;
  p.Text(kid);
  KMS_ASSIGN_OR_RETURN(Result r, c.Exec("SELECT row_version FROM jwt_keys WHERE kid = $1", p, op));
  if (r.rows() == 0) return absl::NotFoundError(absl::StrCat("JWT key ", kid, " not found"));
  if (r.Int(0, 0) != expected_row_version) {
    return absl::AbortedError(absl::StrCat("JWT key ", kid,
                                           " changed concurrently (row_version ", r.Int(0, 0),
                                           ", expected ", expected_row_version, ")"));
  }
  return absl::OkStatus();
}

absl::Status DiagnoseRotationJobCas(Connection& c, int64_t id, int64_t expected_row_version,
                                    absl::string_view op) {
  Params p;
  p.Int(id);
  KMS_ASSIGN_OR_RETURN(Result r,
                       c.Exec("SELECT state, row_version FROM rotation_jobs WHERE id = $1", p, op));
  if (r.rows() == 0) {
    return absl::NotFoundError(absl::StrCat("rotation job ", id, " not found"));
  }
  if (r.Int(0, 1) != expected_row_version) {
    return absl::AbortedError(absl::StrCat("rotation job ", id,
                                           " changed concurrently (row_version ", r.Int(0, 1),
                                           ", expected ", expected_row_version, ")"));
  }
  if (r.Text(0, 0) != RotationJobStateName(RotationJobState::kRunning)) {
    return absl::FailedPreconditionError(
        absl::StrCat("rotation job ", id, " is ", r.Text(0, 0), ", not running"));
  }
  return absl::OkStatus();
}

absl::Status InsertDek(Connection& c, const std::string& tenant_id, const DekRecord& dek,
                       absl::string_view op) {
  Params p;
  p.Text(tenant_id)
      .Int(dek.version)
      .Int(dek.kek_version)
      .Bytes(dek.wrapped)
      .Text(DekStateName(dek.state))
      .Int(dek.created_at)
      .Int(static_cast<int64_t>(dek.encryptions));
  return c
      .Exec(absl::StrCat("INSERT INTO tenant_deks (", kDekColumns,
                         ") VALUES ($1, $2, $3, $4, $5, $6, $7)")
                .c_str(),
            p,
            op)
      .status();
}

absl::Status InsertJwtKey(Connection& c, const JwtKeyRecord& key, absl::string_view op) {
  Params p;
  p.Text(key.kid)
      .Text(key.public_jwk)
      .Bytes(key.wrapped_private)
      .Int(key.kek_version)
      .Int(key.created_at)
      .Int(key.activate_at)
      .Int(key.retire_at);
  return c
      .Exec(absl::StrCat("INSERT INTO jwt_keys (", kJwtKeyColumns,
                         ") VALUES ($1, $2, $3, $4, $5, $6, $7, 1)")
                .c_str(),
            p,
            op)
      .status();
}

// A transaction on one connection, rolled back unless `body` and COMMIT succeed.
absl::Status InTransaction(Connection& c, absl::string_view op,
                           absl::FunctionRef<absl::Status(Connection&)> body, bool* commit_sent) {
  *commit_sent = false;
  absl::Status st = c.ExecScript("BEGIN", op);
  if (st.ok()) st = body(c);
  if (st.ok()) {
    *commit_sent = true;
    st = c.ExecScript("COMMIT", op);
  }
  if (!st.ok() && !c.broken() && PQtransactionStatus(c.raw()) != PQTRANS_IDLE) {
    // Keep the session's own SQLSTATE (ROLLBACK succeeding clears it).
    std::string sqlstate = c.last_sqlstate();
    c.ExecScript("ROLLBACK", op).IgnoreError();
    c.set_last_sqlstate(std::move(sqlstate));
  }
  return st;
}

// A migration rewrites whole tables (migration 5 fills a column of every tenant and
// indexes every DEK): at 1,000,000 tenants that takes longer than statement_timeout.
// Its transaction runs without a server-side statement limit, and the client waits up
// to this long for each statement (replicas opening at the same time wait as long for
// the migration lock).
constexpr std::chrono::minutes kMigrationAnswerTimeout{30};

absl::Status Migrate(Connection& c, const std::string& schema) {
  constexpr absl::string_view kOp = "Open: schema migration";
  bool commit_sent = false;
  struct LongAnswers {
    Connection& c;
    const std::chrono::milliseconds normal = c.answer_timeout();
    ~LongAnswers() { c.set_answer_timeout(normal); }
  } long_answers{c};
  c.set_answer_timeout(kMigrationAnswerTimeout);
  return InTransaction(
      c, kOp,
      [&](Connection& c) -> absl::Status {
        KMS_RETURN_IF_ERROR(c.ExecScript("SET LOCAL statement_timeout = 0", kOp));
        {
          Params p;
          p.Int(kMigrationLockClass).Text(schema);
          KMS_RETURN_IF_ERROR(
              c.Exec("SELECT pg_advisory_xact_lock($1::integer, hashtext($2))", p, kOp).status());
        }
        {
          Params p;
          p.Text(schema);
          KMS_ASSIGN_OR_RETURN(Result r,
                               c.Exec("SELECT 1 FROM pg_namespace WHERE nspname = $1", p, kOp));
          // Only when missing: an operator may pre-create the schema and grant kmsd
          // rights in it without the right to create schemas in the database. The name
          // is an identifier (validated: [a-z_][a-z0-9_]*), not a value.
          if (r.rows() == 0) {
            KMS_RETURN_IF_ERROR(
                c.ExecScript(absl::StrCat("CREATE SCHEMA \"", schema, "\"").c_str(), kOp));
          }
        }
        KMS_RETURN_IF_ERROR(
            c.ExecScript("CREATE TABLE IF NOT EXISTS schema_migrations ("
                         "version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)",
                         kOp));
        int64_t current = 0;
        {
          KMS_ASSIGN_OR_RETURN(
              Result r, c.Exec("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", kOp));
          current = r.Int(0, 0);
        }
        if (current > kLatestSchemaVersion) {
          return absl::FailedPreconditionError(absl::StrCat("database schema version ", current,
                                                            " is newer than this kmsd (",
                                                            kLatestSchemaVersion, ")"));
        }
        for (int64_t v = current + 1; v <= kLatestSchemaVersion; ++v) {
          absl::Status st = c.ExecScript(kMigrations[v - 1], kOp);
          if (!st.ok()) {
            return absl::Status(st.code(), absl::StrCat(kOp, ": migration ", v,
                                                        " failed: ", std::string(st.message())));
          }
          Params p;
          p.Int(v).Int(RealClock::Instance().UnixSeconds());
          KMS_RETURN_IF_ERROR(
              c.Exec("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)", p, kOp)
                  .status());
        }
        return absl::OkStatus();
      },
      &commit_sent);
}

}  // namespace

// --- Opening

PostgresKeyStore::PostgresKeyStore(std::unique_ptr<pg::ConnectionPool> pool)
    : pool_(std::move(pool)) {}

PostgresKeyStore::~PostgresKeyStore() = default;

int PostgresKeyStore::LatestSchemaVersion() { return kLatestSchemaVersion; }

absl::StatusOr<std::unique_ptr<PostgresKeyStore>> PostgresKeyStore::Open(
    const PostgresOptions& options) {
  KMS_ASSIGN_OR_RETURN(pg::ConnectConfig config, pg::ConnectConfig::FromOptions(options));
  KMS_ASSIGN_OR_RETURN(std::unique_ptr<Connection> first, Connection::Open(config, "Open"));
  absl::Status migrated;
  for (int attempt = 0; attempt < kMaxAttempts; ++attempt) {
    migrated = Migrate(*first, options.schema);
    if (migrated.ok() || !pg::IsRetryableSqlstate(first->last_sqlstate())) break;
  }
  KMS_RETURN_IF_ERROR(migrated);
  auto pool = std::make_unique<pg::ConnectionPool>(std::move(config), std::move(first));
  return std::unique_ptr<PostgresKeyStore>(new PostgresKeyStore(std::move(pool)));
}

absl::Status PostgresKeyStore::Run(absl::string_view op, Mode mode,
                                   absl::FunctionRef<absl::Status(Connection&)> body) {
  absl::Status st;
  for (int attempt = 1;; ++attempt) {
    KMS_ASSIGN_OR_RETURN(pg::ConnectionPool::Lease lease, pool_->Acquire(op));
    Connection& c = *lease;
    bool commit_sent = false;
    st = mode == Mode::kTransaction ? InTransaction(c, op, body, &commit_sent) : body(c);
    if (st.ok()) return st;
    const bool lost = c.broken();
    const bool conflict = pg::IsRetryableSqlstate(c.last_sqlstate());
    if (lost && commit_sent) {
      return absl::UnavailableError(
          absl::StrCat(op, ": postgres: connection lost during COMMIT; outcome unknown (",
                       std::string(st.message()), ")"));
    }
    // A session lost before COMMIT took its transaction with it (and a statement in
    // autocommit mode is a read or idempotent here); a deadlock or serialization
    // failure rolled back everything. Both are safe to run again.
    if (!(lost || conflict) || attempt == kMaxAttempts) return st;
  }
}

// --- KEKs

absl::StatusOr<std::vector<KekRecord>> PostgresKeyStore::ListKeks() {
  constexpr absl::string_view kOp = "ListKeks";
  std::vector<KekRecord> out;
  KMS_RETURN_IF_ERROR(Run(kOp, Mode::kStatement, [&](Connection& c) -> absl::Status {
    KMS_ASSIGN_OR_RETURN(
        Result r,
        c.Exec(absl::StrCat("SELECT ", kKekColumns, " FROM kek_versions ORDER BY version").c_str(),
               kOp));
    std::vector<KekRecord> keks;
    keks.reserve(r.rows());
    for (int i = 0; i < r.rows(); ++i) {
      KMS_ASSIGN_OR_RETURN(KekRecord k, ReadKek(r, i));
      keks.push_back(std::move(k));
    }
    out = std::move(keks);
    return absl::OkStatus();
  }));
  return out;
}

absl::Status PostgresKeyStore::InsertKek(const KekRecord& kek) {
  constexpr absl::string_view kOp = "InsertKek";
  KMS_RETURN_IF_ERROR(CheckInsertKek(kek));
  return Run(kOp, Mode::kTransaction, [&](Connection& c) -> absl::Status {
    Params p;
    p.Int(kek.version).Bytes(kek.wrapped).Text(KekStateName(kek.state)).Int(kek.created_at);
    absl::Status st =
        c.Exec(absl::StrCat("INSERT INTO kek_versions (", kKekColumns, ") VALUES ($1, $2, $3, $4)")
                   .c_str(),
               p, kOp)
            .status();
    if (absl::IsAlreadyExists(st)) {
      return absl::AlreadyExistsError(
          absl::StrCat("KEK version ", kek.version, " already exists"));
    }
    KMS_RETURN_IF_ERROR(st);
    return BumpEpoch(c, kOp);
  });
}

absl::Status PostgresKeyStore::UpdateKekState(uint32_t version, KekState from, KekState to) {
  constexpr absl::string_view kOp = "UpdateKekState";
  return Run(kOp, Mode::kTransaction, [&](Connection& c) -> absl::Status {
    Params p;
    p.Text(KekStateName(to)).Int(version).Text(KekStateName(from));
    KMS_ASSIGN_OR_RETURN(
        Result r,
        c.Exec("UPDATE kek_versions SET state = $1 WHERE version = $2 AND state = $3", p, kOp));
    if (r.affected() == 0) {
      Params q;
      q.Int(version);
      KMS_ASSIGN_OR_RETURN(Result s,
                           c.Exec("SELECT state FROM kek_versions WHERE version = $1", q, kOp));
      if (s.rows() == 0) {
        return absl::NotFoundError(absl::StrCat("KEK version ", version, " not found"));
      }
      return absl::AbortedError(absl::StrCat("KEK version ", version, " is ", s.Text(0, 0),
                                             ", not ", std::string(KekStateName(from))));
    }
    return BumpEpoch(c, kOp);
  });
}

namespace {

// The rows (kek version, live DEKs, JWT keys) of the KEK-usage queries.
std::vector<KekUsage> ReadKekUsage(const Result& r) {
  std::vector<KekUsage> usage;
  usage.reserve(r.rows());
  for (int i = 0; i < r.rows(); ++i) {
    usage.push_back({.kek_version = static_cast<uint32_t>(r.Int(i, 0)),
                     .deks = static_cast<uint64_t>(r.Int(i, 1)),
                     .jwt_keys = static_cast<uint64_t>(r.Int(i, 2))});
  }
  return usage;
}

}  // namespace

absl::StatusOr<std::vector<KekUsage>> PostgresKeyStore::ListKekUsage() {
  constexpr absl::string_view kOp = "ListKekUsage";
  std::vector<KekUsage> out;
  KMS_RETURN_IF_ERROR(Run(kOp, Mode::kStatement, [&](Connection& c) -> absl::Status {
    // One statement: one snapshot of the three tables.
    KMS_ASSIGN_OR_RETURN(
        Result r, c.Exec("SELECT v, SUM(d)::bigint, SUM(j)::bigint FROM ("
                         "SELECT version AS v, 0::bigint AS d, 0::bigint AS j FROM kek_versions "
                         "UNION ALL SELECT kek_version, COUNT(*), 0 FROM tenant_deks "
                         "WHERE state <> 'destroyed' GROUP BY kek_version "
                         "UNION ALL SELECT kek_version, 0, COUNT(*) FROM jwt_keys "
                         "GROUP BY kek_version) AS u GROUP BY v ORDER BY v",
                         kOp));
    out = ReadKekUsage(r);
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::vector<KekUsage>> PostgresKeyStore::ListKekUsageExcept(
    uint32_t kek_version) {
  constexpr absl::string_view kOp = "ListKekUsageExcept";
  std::vector<KekUsage> out;
  KMS_RETURN_IF_ERROR(Run(kOp, Mode::kStatement, [&](Connection& c) -> absl::Status {
    // Two ranges of tenant_deks_by_kek (no destroyed DEK in it: migration 5).
    Params p;
    p.Int(kek_version);
    KMS_ASSIGN_OR_RETURN(
        Result r, c.Exec("SELECT v, SUM(d)::bigint, SUM(j)::bigint FROM ("
                         "SELECT version AS v, 0::bigint AS d, 0::bigint AS j FROM kek_versions "
                         "WHERE version <> $1 "
                         "UNION ALL SELECT kek_version, COUNT(*), 0 FROM tenant_deks "
                         "WHERE kek_version < $1 AND state <> 'destroyed' GROUP BY kek_version "
                         "UNION ALL SELECT kek_version, COUNT(*), 0 FROM tenant_deks "
                         "WHERE kek_version > $1 AND state <> 'destroyed' GROUP BY kek_version "
                         "UNION ALL SELECT kek_version, 0, COUNT(*) FROM jwt_keys "
                         "WHERE kek_version <> $1 GROUP BY kek_version) AS u GROUP BY v ORDER BY v",
                         p, kOp));
    out = ReadKekUsage(r);
    return absl::OkStatus();
  }));
  return out;
}

absl::Status PostgresKeyStore::RetireKek(uint32_t version, int64_t retired_at) {
  constexpr absl::string_view kOp = "RetireKek";
  KMS_RETURN_IF_ERROR(CheckRetireKek(version, retired_at));
  return Run(kOp, Mode::kTransaction, [&](Connection& c) -> absl::Status {
    // SHARE mode conflicts with every writer of the two tables: from here to COMMIT no
    // DEK or JWT key can be written (under this version or any), so the count below
    // is still true when the state changes. Writers wait for this short transaction.
    KMS_RETURN_IF_ERROR(
        c.Exec("LOCK TABLE tenant_deks, jwt_keys IN SHARE MODE", kOp).status());
    Params p;
    p.Int(version);
    KMS_ASSIGN_OR_RETURN(
        Result k, c.Exec("SELECT state, (SELECT MAX(version) FROM kek_versions) "
                         "FROM kek_versions WHERE version = $1 FOR UPDATE",
                         p, kOp));
    if (k.rows() == 0) return KekNotFound(kOp, version);
    if (k.Text(0, 0) != KekStateName(KekState::kActive)) {
      return KekNotActive(kOp, version, k.Text(0, 0));
    }
    if (k.Int(0, 1) == static_cast<int64_t>(version)) return KekIsNewest(kOp, version);
    KMS_ASSIGN_OR_RETURN(
        Result n, c.Exec("SELECT (SELECT COUNT(*) FROM tenant_deks WHERE kek_version = $1 "
                         "AND state <> 'destroyed'), "
                         "(SELECT COUNT(*) FROM jwt_keys WHERE kek_version = $1)",
                         p, kOp));
    KMS_RETURN_IF_ERROR(KekStillReferenced(kOp, version, static_cast<uint64_t>(n.Int(0, 0)),
                                           static_cast<uint64_t>(n.Int(0, 1))));
    Params u;
    u.Int(version).Int(retired_at);
    KMS_RETURN_IF_ERROR(c.Exec("UPDATE kek_versions SET state = 'retired', retired_at = $2 "
                               "WHERE version = $1",
                               u, kOp)
                            .status());
    return BumpEpoch(c, kOp);
  });
}

absl::StatusOr<std::vector<uint32_t>> PostgresKeyStore::DestroyRetiredKeks(
    int64_t retired_before) {
  constexpr absl::string_view kOp = "DestroyRetiredKeks";
  std::vector<uint32_t> destroyed;
  KMS_RETURN_IF_ERROR(Run(kOp, Mode::kTransaction, [&](Connection& c) -> absl::Status {
    destroyed.clear();
    KMS_RETURN_IF_ERROR(
        c.Exec("LOCK TABLE tenant_deks, jwt_keys IN SHARE MODE", kOp).status());
    Params p;
    p.Int(retired_before);
    KMS_ASSIGN_OR_RETURN(
        Result r,
        c.Exec("DELETE FROM kek_versions WHERE state = 'retired' AND retired_at < $1 "
               "AND NOT EXISTS (SELECT 1 FROM tenant_deks d WHERE d.kek_version = kek_versions.version "
               "AND d.state <> 'destroyed') "
               "AND NOT EXISTS (SELECT 1 FROM jwt_keys j WHERE j.kek_version = kek_versions.version) "
               "RETURNING version",
               p, kOp));
    for (int i = 0; i < r.rows(); ++i) destroyed.push_back(static_cast<uint32_t>(r.Int(i, 0)));
    if (destroyed.empty()) return absl::OkStatus();
    return BumpEpoch(c, kOp);
  }));
  std::sort(destroyed.begin(), destroyed.end());
  return destroyed;
}

// --- Tenants

absl::Status PostgresKeyStore::CreateTenant(const TenantRecord& tenant,
                                            const DekRecord& first_dek) {
  constexpr absl::string_view kOp = "CreateTenant";
  KMS_RETURN_IF_ERROR(CheckCreateTenant(tenant, first_dek));
  return Run(kOp, Mode::kTransaction, [&](Connection& c) -> absl::Status {
    Params p;
    p.Text(tenant.id)
        .Text(TenantStateName(tenant.state))
        .Int(first_dek.version)
        .Int(tenant.min_decrypt_version)
        .Int(tenant.created_at)
        .Int(first_dek.created_at);
    absl::Status st =
        c.Exec(absl::StrCat("INSERT INTO tenants (", kTenantColumns,
                            ", primary_dek_created_at) VALUES ($1, $2, $3, $4, $5, 1, $6)")
                   .c_str(),
               p,
               kOp)
            .status();
    if (absl::IsAlreadyExists(st)) {
      return absl::AlreadyExistsError(absl::StrCat("tenant ", tenant.id, " already exists"));
    }
    KMS_RETURN_IF_ERROR(st);
    KMS_RETURN_IF_ERROR(InsertDek(c, tenant.id, first_dek, kOp));
    return BumpEpoch(c, kOp);
  });
}

absl::StatusOr<std::vector<CreateTenantResult>> PostgresKeyStore::CreateTenants(
    std::span<const NewTenant> tenants) {
  constexpr absl::string_view kOp = "CreateTenants";
  KMS_RETURN_IF_ERROR(CheckCreateTenants(tenants));
  if (tenants.empty()) return std::vector<CreateTenantResult>();
  // One statement for the whole call (one round trip, one commit): the tenants as a
  // VALUES list, inserted in id order (concurrent loads lock rows in the same order and
  // cannot deadlock) with ON CONFLICT (id) DO NOTHING, so a taken id is left as it
  // was; the first DEK of exactly the tenants inserted. 11 parameters per tenant:
  // 11,000 at kMaxCreateTenantsBatch, under libpq's 65,535.
  constexpr int kPerTenant = 11;
  std::string values;
  values.reserve(tenants.size() * 64);
  for (size_t i = 0; i < tenants.size(); ++i) {
    const int b = static_cast<int>(i) * kPerTenant;
    absl::StrAppend(&values, i == 0 ? "" : ", ", "(");
    for (int k = 1; k <= kPerTenant; ++k) absl::StrAppend(&values, k == 1 ? "$" : ", $", b + k);
    values += ")";
  }
  const std::string sql = absl::StrCat(
      "WITH input (id, state, primary_dek_version, min_decrypt_version, created_at, "
      "dek_version, kek_version, wrapped, dek_state, dek_created_at, encryptions) AS (VALUES ",
      values,
      "), t AS (INSERT INTO tenants (", kTenantColumns,
      ", primary_dek_created_at) SELECT id, state, primary_dek_version, min_decrypt_version, "
      "created_at, 1, dek_created_at "
      "FROM input ORDER BY id ON CONFLICT (id) DO NOTHING RETURNING id), "
      "d AS (INSERT INTO tenant_deks (", kDekColumns,
      ") SELECT i.id, i.dek_version, i.kek_version, i.wrapped, i.dek_state, i.dek_created_at, "
      "i.encryptions FROM input i JOIN t ON t.id = i.id RETURNING tenant_id) "
      "SELECT tenant_id FROM d");
  std::vector<CreateTenantResult> out;
  KMS_RETURN_IF_ERROR(Run(kOp, Mode::kTransaction, [&](Connection& c) -> absl::Status {
    Params p;
    for (const NewTenant& t : tenants) {
      p.Text(t.tenant.id)
          .Text(TenantStateName(t.tenant.state))
          .Int(t.first_dek.version)
          .Int(t.tenant.min_decrypt_version)
          .Int(t.tenant.created_at)
          .Int(t.first_dek.version)
          .Int(t.first_dek.kek_version)
          .Bytes(t.first_dek.wrapped)
          .Text(DekStateName(t.first_dek.state))
          .Int(t.first_dek.created_at)
          .Int(static_cast<int64_t>(t.first_dek.encryptions));
    }
    KMS_ASSIGN_OR_RETURN(Result r, c.Exec(sql.c_str(), p, kOp));
    std::unordered_set<std::string> created;
    created.reserve(static_cast<size_t>(r.rows()));
    for (int i = 0; i < r.rows(); ++i) created.insert(r.Text(i, 0));
    std::vector<CreateTenantResult> results;
    results.reserve(tenants.size());
    for (const NewTenant& t : tenants) {
      results.push_back(created.contains(t.tenant.id) ? CreateTenantResult::kCreated
                                                      : CreateTenantResult::kAlreadyExists);
    }
    // The epoch moves once per call, and only when a tenant was created.
    if (!created.empty()) KMS_RETURN_IF_ERROR(BumpEpoch(c, kOp));
    out = std::move(results);
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<TenantRecord> PostgresKeyStore::GetTenant(const std::string& tenant_id) {
  constexpr absl::string_view kOp = "GetTenant";
  TenantRecord out;
  KMS_RETURN_IF_ERROR(Run(kOp, Mode::kStatement, [&](Connection& c) -> absl::Status {
    Params p;
    p.Text(tenant_id);
    KMS_ASSIGN_OR_RETURN(
        Result r,
        c.Exec(absl::StrCat("SELECT ", kTenantColumns, " FROM tenants WHERE id = $1").c_str(), p,
               kOp));
    if (r.rows() == 0) {
      return absl::NotFoundError(absl::StrCat("tenant ", tenant_id, " not found"));
    }
    KMS_ASSIGN_OR_RETURN(out, ReadTenant(r, 0, 0));
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<TenantPage> PostgresKeyStore::ListTenants(const std::string& after, int limit) {
  constexpr absl::string_view kOp = "ListTenants";
  KMS_RETURN_IF_ERROR(CheckListTenants(limit));
  TenantPage out;
  KMS_RETURN_IF_ERROR(Run(kOp, Mode::kStatement, [&](Connection& c) -> absl::Status {
    // The id column is COLLATE "C": bytewise, like SQLite and std::string. One row more
    // than asked tells whether another page follows.
    Params p;
    p.Text(after).Int(static_cast<int64_t>(limit) + 1);
    KMS_ASSIGN_OR_RETURN(Result r, c.Exec(absl::StrCat("SELECT ", kTenantColumns,
                                                       " FROM tenants WHERE id > $1 "
                                                       "ORDER BY id LIMIT $2")
                                              .c_str(),
                                          p, kOp));
    TenantPage page;
    for (int i = 0; i < r.rows(); ++i) {
      if (static_cast<int>(page.tenants.size()) == limit) {
        page.next_after = page.tenants.back().id;
        break;
      }
      KMS_ASSIGN_OR_RETURN(TenantRecord t, ReadTenant(r, i, 0));
      page.tenants.push_back(std::move(t));
    }
    out = std::move(page);
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<int64_t> PostgresKeyStore::OldestPrimaryDekCreatedAt() {
  constexpr absl::string_view kOp = "OldestPrimaryDekCreatedAt";
  int64_t out = 0;
  KMS_RETURN_IF_ERROR(Run(kOp, Mode::kStatement, [&](Connection& c) -> absl::Status {
    KMS_ASSIGN_OR_RETURN(Result r, c.Exec(
        // One lookup in tenants_active_by_primary_dek_age (migration 5), not a scan.
        "SELECT COALESCE(MIN(primary_dek_created_at), 0) FROM tenants WHERE state = 'active'",
        kOp));
    out = r.Int(0, 0);
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<uint64_t> PostgresKeyStore::CountTenants() {
  constexpr absl::string_view kOp = "CountTenants";
  uint64_t out = 0;
  KMS_RETURN_IF_ERROR(Run(kOp, Mode::kStatement, [&](Connection& c) -> absl::Status {
    KMS_ASSIGN_OR_RETURN(Result r, c.Exec("SELECT COUNT(*) FROM tenants", kOp));
    out = static_cast<uint64_t>(r.Int(0, 0));
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<TenantDek> PostgresKeyStore::GetTenantDek(const std::string& tenant_id,
                                                         uint32_t version) {
  constexpr absl::string_view kOp = "GetTenantDek";
  TenantDek out;
  KMS_RETURN_IF_ERROR(Run(kOp, Mode::kStatement, [&](Connection& c) -> absl::Status {
    // One statement, so both rows come from the same snapshot. The LEFT JOIN tells an
    // unknown tenant (no row) from an unknown version (NULL DEK columns).
    Params p;
    p.Text(tenant_id).Int(version);
    KMS_ASSIGN_OR_RETURN(
        Result r, c.Exec("SELECT t.id, t.state, t.primary_dek_version, t.min_decrypt_version, "
                         "t.created_at, t.row_version, "
                         "d.tenant_id, d.version, d.kek_version, d.wrapped, d.state, d.created_at, "
                         "d.encryptions "
                         "FROM tenants AS t LEFT JOIN tenant_deks AS d ON d.tenant_id = t.id AND "
                         "d.version = CASE WHEN $2 = 0 THEN t.primary_dek_version ELSE $2 END "
                         "WHERE t.id = $1",
                         p, kOp));
    if (r.rows() == 0) {
      return absl::NotFoundError(absl::StrCat("tenant ", tenant_id, " not found"));
    }
    if (r.IsNull(0, 7)) {
      return absl::NotFoundError(
          absl::StrCat("tenant ", tenant_id, " has no DEK version ", version));
    }
    TenantDek td;
    KMS_ASSIGN_OR_RETURN(td.tenant, ReadTenant(r, 0, 0));
    KMS_ASSIGN_OR_RETURN(td.dek, ReadDek(r, 0, 6));
    out = std::move(td);
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::vector<DekRecord>> PostgresKeyStore::ListDeks(const std::string& tenant_id) {
  constexpr absl::string_view kOp = "ListDeks";
  std::vector<DekRecord> out;
  KMS_RETURN_IF_ERROR(Run(kOp, Mode::kStatement, [&](Connection& c) -> absl::Status {
    Params p;
    p.Text(tenant_id);
    KMS_ASSIGN_OR_RETURN(Result r,
                         c.Exec(absl::StrCat("SELECT ", kDekColumns,
                                             " FROM tenant_deks WHERE tenant_id = $1 "
                                             "ORDER BY version")
                                    .c_str(),
                                p, kOp));
    // Every tenant has at least its first DEK, so no rows means no tenant.
    if (r.rows() == 0) {
      return absl::NotFoundError(absl::StrCat("tenant ", tenant_id, " not found"));
    }
    std::vector<DekRecord> deks;
    deks.reserve(r.rows());
    for (int i = 0; i < r.rows(); ++i) {
      KMS_ASSIGN_OR_RETURN(DekRecord d, ReadDek(r, i, 0));
      deks.push_back(std::move(d));
    }
    out = std::move(deks);
    return absl::OkStatus();
  }));
  return out;
}

absl::Status PostgresKeyStore::RotateDek(const std::string& tenant_id, int64_t expected_row_version,
                                         const DekRecord& new_dek) {
  constexpr absl::string_view kOp = "RotateDek";
  KMS_RETURN_IF_ERROR(CheckRotateDek(tenant_id, new_dek));
  return Run(kOp, Mode::kTransaction, [&](Connection& c) -> absl::Status {
    // The compare-and-set: only from the row_version the caller read, only forward.
    Params p;
    p.Text(tenant_id).Int(expected_row_version).Int(new_dek.version).Int(new_dek.created_at);
    KMS_ASSIGN_OR_RETURN(Result r, c.Exec("UPDATE tenants SET primary_dek_version = $3, "
                                          "primary_dek_created_at = $4, "
                                          "row_version = row_version + 1 "
                                          "WHERE id = $1 AND row_version = $2 "
                                          "AND state = 'active' AND primary_dek_version < $3",
                                          p, kOp));
    if (r.affected() == 0) {
      KMS_RETURN_IF_ERROR(DiagnoseTenantCas(c, tenant_id, expected_row_version, kOp));
      return absl::FailedPreconditionError(
          absl::StrCat("DEK version ", new_dek.version,
                       " is not above the primary version of tenant ", tenant_id));
    }
    absl::Status st = InsertDek(c, tenant_id, new_dek, kOp);
    if (absl::IsAlreadyExists(st)) {
      return absl::AlreadyExistsError(
          absl::StrCat("tenant ", tenant_id, " already has DEK version ", new_dek.version));
    }
    KMS_RETURN_IF_ERROR(st);
    return BumpEpoch(c, kOp);
  });
}

absl::Status PostgresKeyStore::SetTenantState(const std::string& tenant_id,
                                              int64_t expected_row_version, TenantState state) {
  constexpr absl::string_view kOp = "SetTenantState";
  return Run(kOp, Mode::kTransaction, [&](Connection& c) -> absl::Status {
    // Shredding is final: a shredded tenant can only be "shredded" again.
    Params p;
    p.Text(tenant_id).Int(expected_row_version).Text(TenantStateName(state));
    KMS_ASSIGN_OR_RETURN(Result r,
                         c.Exec("UPDATE tenants SET state = $3, row_version = row_version + 1 "
                                "WHERE id = $1 AND row_version = $2 "
                                "AND (state = 'active' OR $3 = 'shredded')",
                                p, kOp));
    if (r.affected() == 0) {
      KMS_RETURN_IF_ERROR(DiagnoseTenantCas(c, tenant_id, expected_row_version, kOp));
      return absl::InternalError(absl::StrCat(kOp, ": update matched no row"));
    }
    if (state == TenantState::kShredded) {
      // The rows stay (reads can say "shredded"); the key bytes go.
      Params q;
      q.Text(tenant_id);
      KMS_RETURN_IF_ERROR(c.Exec("UPDATE tenant_deks SET state = 'destroyed', "
                                 "wrapped = '\\x'::bytea WHERE tenant_id = $1",
                                 q, kOp)
                              .status());
    }
    return BumpEpoch(c, kOp);
  });
}

absl::Status PostgresKeyStore::SetMinDecryptVersion(const std::string& tenant_id,
                                                    int64_t expected_row_version,
                                                    uint32_t min_version) {
  constexpr absl::string_view kOp = "SetMinDecryptVersion";
  KMS_RETURN_IF_ERROR(CheckSetMinDecryptVersion(min_version));
  return Run(kOp, Mode::kTransaction, [&](Connection& c) -> absl::Status {
    // The compare-and-set: from the row_version the caller read, never down, never past
    // the primary.
    Params p;
    p.Text(tenant_id).Int(expected_row_version).Int(min_version);
    KMS_ASSIGN_OR_RETURN(Result r, c.Exec("UPDATE tenants SET min_decrypt_version = $3, "
                                          "row_version = row_version + 1 "
                                          "WHERE id = $1 AND row_version = $2 "
                                          "AND state = 'active' AND min_decrypt_version <= $3 "
                                          "AND primary_dek_version >= $3",
                                          p, kOp));
    if (r.affected() == 0) {
      KMS_RETURN_IF_ERROR(DiagnoseTenantCas(c, tenant_id, expected_row_version, kOp));
      Params q;
      q.Text(tenant_id);
      KMS_ASSIGN_OR_RETURN(Result now, c.Exec("SELECT primary_dek_version, min_decrypt_version "
                                              "FROM tenants WHERE id = $1",
                                              q, kOp));
      if (now.rows() == 0) return absl::InternalError(absl::StrCat(kOp, ": tenant row vanished"));
      return MinDecryptVersionRefused(kOp, tenant_id, min_version, now.Int(0, 0), now.Int(0, 1));
    }
    Params q;
    q.Text(tenant_id).Int(min_version);
    KMS_RETURN_IF_ERROR(c.Exec("UPDATE tenant_deks SET state = 'retired' "
                               "WHERE tenant_id = $1 AND version < $2 AND state = 'active'",
                               q, kOp)
                            .status());
    return BumpEpoch(c, kOp);
  });
}

absl::Status PostgresKeyStore::AddEncryptions(const std::string& tenant_id, uint32_t version,
                                              uint64_t count) {
  constexpr absl::string_view kOp = "AddEncryptions";
  KMS_RETURN_IF_ERROR(CheckAddEncryptions(count));
  // In an explicit transaction, so a session lost before COMMIT is safely retried (the
  // increment is not idempotent). A usage counter, not a state change: neither the epoch
  // nor the tenant's row_version moves.
  return Run(kOp, Mode::kTransaction, [&](Connection& c) -> absl::Status {
    Params p;
    p.Text(tenant_id).Int(version).Int(static_cast<int64_t>(count));
    KMS_ASSIGN_OR_RETURN(Result r, c.Exec("UPDATE tenant_deks SET encryptions = encryptions + $3 "
                                          "WHERE tenant_id = $1 AND version = $2",
                                          p, kOp));
    if (r.affected() == 0) {
      return absl::NotFoundError(
          absl::StrCat("tenant ", tenant_id, " has no DEK version ", version));
    }
    return absl::OkStatus();
  });
}

absl::Status PostgresKeyStore::AddEncryptionsBatch(std::span<const EncryptionCount> counts) {
  constexpr absl::string_view kOp = "AddEncryptionsBatch";
  for (const EncryptionCount& c : counts) KMS_RETURN_IF_ERROR(CheckAddEncryptions(c.count));
  if (counts.empty()) return absl::OkStatus();
  // One transaction for the whole flush; retried whole if the session is lost before
  // COMMIT (see AddEncryptions). A statement per DEK inside it: one round trip each,
  // but one commit (one WAL flush) in all.
  return Run(kOp, Mode::kTransaction, [&](Connection& c) -> absl::Status {
    for (const EncryptionCount& e : counts) {
      Params p;
      p.Text(e.tenant_id).Int(e.version).Int(static_cast<int64_t>(e.count));
      KMS_ASSIGN_OR_RETURN(Result r,
                           c.Exec("UPDATE tenant_deks SET encryptions = encryptions + $3 "
                                  "WHERE tenant_id = $1 AND version = $2",
                                  p, kOp));
      if (r.affected() == 0) {
        return absl::NotFoundError(
            absl::StrCat("tenant ", e.tenant_id, " has no DEK version ", e.version));
      }
    }
    return absl::OkStatus();
  });
}

// --- JWT signing keys

absl::StatusOr<std::vector<JwtKeyRecord>> PostgresKeyStore::ListJwtKeys() {
  constexpr absl::string_view kOp = "ListJwtKeys";
  std::vector<JwtKeyRecord> out;
  KMS_RETURN_IF_ERROR(Run(kOp, Mode::kStatement, [&](Connection& c) -> absl::Status {
    KMS_ASSIGN_OR_RETURN(
        Result r,
        c.Exec(
            absl::StrCat("SELECT ", kJwtKeyColumns, " FROM jwt_keys ORDER BY activate_at, kid")
                .c_str(),
            kOp));
    std::vector<JwtKeyRecord> keys;
    keys.reserve(r.rows());
    for (int i = 0; i < r.rows(); ++i) keys.push_back(ReadJwtKey(r, i));
    out = std::move(keys);
    return absl::OkStatus();
  }));
  return out;
}

absl::Status PostgresKeyStore::InsertFirstJwtKey(const JwtKeyRecord& key) {
  constexpr absl::string_view kOp = "InsertFirstJwtKey";
  KMS_RETURN_IF_ERROR(CheckInsertFirstJwtKey(key));
  return Run(kOp, Mode::kTransaction, [&](Connection& c) -> absl::Status {
    // Two replicas starting at once must not both insert a first key (with different
    // kids, no unique index would stop them): this lock mode excludes other writers of
    // jwt_keys, and itself, until commit; readers are not blocked.
    KMS_RETURN_IF_ERROR(c.ExecScript("LOCK TABLE jwt_keys IN SHARE ROW EXCLUSIVE MODE", kOp));
    KMS_ASSIGN_OR_RETURN(Result r, c.Exec("SELECT EXISTS (SELECT 1 FROM jwt_keys)", kOp));
    if (r.Int(0, 0) != 0) {
      return absl::AlreadyExistsError(absl::StrCat("a JWT key already exists"));
    }
    KMS_RETURN_IF_ERROR(InsertJwtKey(c, key, kOp));
    return BumpEpoch(c, kOp);
  });
}

absl::Status PostgresKeyStore::RotateJwtKey(const std::string& current_kid,
                                            int64_t expected_row_version, int64_t current_retire_at,
                                            const JwtKeyRecord& next) {
  constexpr absl::string_view kOp = "RotateJwtKey";
  KMS_RETURN_IF_ERROR(CheckRotateJwtKey(current_kid, current_retire_at, next));
  return Run(kOp, Mode::kTransaction, [&](Connection& c) -> absl::Status {
    Params p;
    p.Text(current_kid).Int(expected_row_version).Int(current_retire_at);
    KMS_ASSIGN_OR_RETURN(Result r,
                         c.Exec("UPDATE jwt_keys SET retire_at = $3, row_version = row_version + 1 "
                                "WHERE kid = $1 AND row_version = $2",
                                p, kOp));
    if (r.affected() == 0) {
      KMS_RETURN_IF_ERROR(DiagnoseJwtKeyCas(c, current_kid, expected_row_version, kOp));
      return absl::InternalError(absl::StrCat(kOp, ": update matched no row"));
    }
    absl::Status st = InsertJwtKey(c, next, kOp);
    if (absl::IsAlreadyExists(st)) {
      // The transaction rolls back: the current key's retire_at is not changed either.
      return absl::AlreadyExistsError(absl::StrCat("JWT key ", next.kid, " already exists"));
    }
    KMS_RETURN_IF_ERROR(st);
    return BumpEpoch(c, kOp);
  });
}

absl::Status PostgresKeyStore::UpdateJwtKeyWrapping(const std::string& kid,
                                                    int64_t expected_row_version,
                                                    uint32_t kek_version,
                                                    const std::vector<uint8_t>& wrapped_private) {
  constexpr absl::string_view kOp = "UpdateJwtKeyWrapping";
  return Run(kOp, Mode::kTransaction, [&](Connection& c) -> absl::Status {
    Params p;
    p.Text(kid).Int(expected_row_version).Int(kek_version).Bytes(wrapped_private);
    KMS_ASSIGN_OR_RETURN(Result r, c.Exec("UPDATE jwt_keys SET kek_version = $3, "
                                          "wrapped_private = $4, row_version = row_version + 1 "
                                          "WHERE kid = $1 AND row_version = $2",
                                          p, kOp));
    if (r.affected() == 0) {
      KMS_RETURN_IF_ERROR(DiagnoseJwtKeyCas(c, kid, expected_row_version, kOp));
      return absl::InternalError(absl::StrCat(kOp, ": update matched no row"));
    }
    return BumpEpoch(c, kOp);
  });
}

// --- Coherence

absl::StatusOr<int64_t> PostgresKeyStore::GetEpoch() {
  constexpr absl::string_view kOp = "GetEpoch";
  int64_t out = 0;
  KMS_RETURN_IF_ERROR(Run(kOp, Mode::kStatement, [&](Connection& c) -> absl::Status {
    KMS_ASSIGN_OR_RETURN(Result r, c.Exec("SELECT epoch FROM store_epoch WHERE id = 1", kOp));
    if (r.rows() == 0) return absl::InternalError("GetEpoch: store_epoch row missing");
    out = r.Int(0, 0);
    return absl::OkStatus();
  }));
  return out;
}

absl::Status PostgresKeyStore::Ping() {
  constexpr absl::string_view kOp = "Ping";
  // Reads a table of ours: proves the server, the session and the schema.
  return Run(kOp, Mode::kStatement, [&](Connection& c) -> absl::Status {
    KMS_ASSIGN_OR_RETURN(Result r, c.Exec("SELECT epoch FROM store_epoch WHERE id = 1", kOp));
    if (r.rows() == 0) return absl::InternalError("Ping: store_epoch row missing");
    return absl::OkStatus();
  });
}

// --- KEK re-wrap

absl::StatusOr<DekPage> PostgresKeyStore::ListDeksWrappedUnder(uint32_t kek_version,
                                                               const DekKey& after, int limit) {
  constexpr absl::string_view kOp = "ListDeksWrappedUnder";
  KMS_RETURN_IF_ERROR(CheckListDeksWrappedUnder(limit));
  DekPage out;
  KMS_RETURN_IF_ERROR(Run(kOp, Mode::kStatement, [&](Connection& c) -> absl::Status {
    // Keyset pagination on the index (kek_version, tenant_id, version); tenant_id is
    // COLLATE "C" (bytewise, like SQLite). One row more than asked tells whether more
    // follow.
    Params p;
    p.Int(kek_version).Text(after.tenant_id).Int(after.version).Int(static_cast<int64_t>(limit) + 1);
    KMS_ASSIGN_OR_RETURN(
        Result r, c.Exec(absl::StrCat("SELECT ", kDekColumns,
                                      " FROM tenant_deks WHERE kek_version = $1 "
                                      "AND state <> 'destroyed' "
                                      "AND (tenant_id, version) > ($2, $3) "
                                      "ORDER BY tenant_id, version LIMIT $4")
                             .c_str(),
                         p, kOp));
    DekPage page;
    for (int i = 0; i < r.rows(); ++i) {
      if (static_cast<int>(page.deks.size()) == limit) {
        page.more = true;
        break;
      }
      KMS_ASSIGN_OR_RETURN(DekRecord d, ReadDek(r, i, 0));
      page.deks.push_back(std::move(d));
    }
    out = std::move(page);
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<DueTenantPage> PostgresKeyStore::ListTenantsDueForRotation(
    int64_t now, int64_t default_period_seconds, const std::string& after, int limit) {
  constexpr absl::string_view kOp = "ListTenantsDueForRotation";
  KMS_RETURN_IF_ERROR(CheckListTenantsDue(default_period_seconds, limit));
  DueTenantPage out;
  KMS_RETURN_IF_ERROR(Run(kOp, Mode::kStatement, [&](Connection& c) -> absl::Status {
    // Walks the tenants' primary key (COLLATE "C": bytewise) from `after`; the primary
    // DEK's age is on the tenant row (migration 5: no join); the filter runs in the
    // database.
    Params p;
    p.Int(now).Int(default_period_seconds).Text(after).Int(static_cast<int64_t>(limit) + 1);
    KMS_ASSIGN_OR_RETURN(
        Result r,
        c.Exec("SELECT t.id, t.primary_dek_version, t.primary_dek_created_at, "
               "COALESCE(NULLIF(t.rotation_period_seconds, 0), $2::bigint), t.row_version "
               "FROM tenants AS t "
               "WHERE t.id > $3 AND t.state = 'active' "
               "AND t.primary_dek_created_at <= $1::bigint - "
               "COALESCE(NULLIF(t.rotation_period_seconds, 0), $2::bigint) "
               "ORDER BY t.id LIMIT $4",
               p, kOp));
    DueTenantPage page;
    for (int i = 0; i < r.rows(); ++i) {
      if (static_cast<int>(page.tenants.size()) == limit) {
        page.more = true;
        break;
      }
      page.tenants.push_back(DueTenant{.tenant_id = r.Text(i, 0),
                                       .primary_dek_version = static_cast<uint32_t>(r.Int(i, 1)),
                                       .dek_created_at = r.Int(i, 2),
                                       .period_seconds = r.Int(i, 3),
                                       .row_version = r.Int(i, 4)});
    }
    out = std::move(page);
    return absl::OkStatus();
  }));
  return out;
}

absl::Status PostgresKeyStore::SetTenantRotationPeriod(const std::string& tenant_id,
                                                       int64_t period_seconds) {
  constexpr absl::string_view kOp = "SetTenantRotationPeriod";
  KMS_RETURN_IF_ERROR(CheckTenantRotationPeriod(tenant_id, period_seconds));
  // A setting, not a key change: no epoch, no row_version (tenant_key_store.h).
  return Run(kOp, Mode::kTransaction, [&](Connection& c) -> absl::Status {
    Params p;
    p.Text(tenant_id);
    KMS_ASSIGN_OR_RETURN(Result r,
                         c.Exec("SELECT state FROM tenants WHERE id = $1 FOR UPDATE", p, kOp));
    if (r.rows() == 0) {
      return absl::NotFoundError(absl::StrCat(kOp, ": tenant ", tenant_id, " not found"));
    }
    if (r.Text(0, 0) != TenantStateName(TenantState::kActive)) {
      return absl::FailedPreconditionError(absl::StrCat(kOp, ": tenant ", tenant_id, " is shredded"));
    }
    Params u;
    u.Text(tenant_id).Int(period_seconds);
    return c.Exec("UPDATE tenants SET rotation_period_seconds = $2 WHERE id = $1", u, kOp).status();
  });
}

absl::StatusOr<int64_t> PostgresKeyStore::GetTenantRotationPeriod(const std::string& tenant_id) {
  constexpr absl::string_view kOp = "GetTenantRotationPeriod";
  int64_t out = 0;
  KMS_RETURN_IF_ERROR(Run(kOp, Mode::kStatement, [&](Connection& c) -> absl::Status {
    Params p;
    p.Text(tenant_id);
    KMS_ASSIGN_OR_RETURN(
        Result r,
        c.Exec("SELECT COALESCE(rotation_period_seconds, 0) FROM tenants WHERE id = $1", p, kOp));
    if (r.rows() == 0) {
      return absl::NotFoundError(absl::StrCat(kOp, ": tenant ", tenant_id, " not found"));
    }
    out = r.Int(0, 0);
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::vector<DekRewrapResult>> PostgresKeyStore::UpdateDekWrappings(
    std::span<const DekRewrap> rewraps) {
  constexpr absl::string_view kOp = "UpdateDekWrappings";
  // Per row: the compare-and-set UPDATE, and whether the row existed before it (the
  // sub-select sees the statement's snapshot, from before the UPDATE), which tells
  // kSkipped from kNotFound in the same round trip.
  constexpr const char* kSql =
      "WITH u AS (UPDATE tenant_deks SET kek_version = $4, wrapped = $5 "
      "WHERE tenant_id = $1 AND version = $2 AND kek_version = $3 AND state <> 'destroyed' "
      "RETURNING 1) "
      "SELECT (SELECT count(*) FROM u), "
      "(SELECT count(*) FROM tenant_deks WHERE tenant_id = $1 AND version = $2)";
  KMS_RETURN_IF_ERROR(CheckUpdateDekWrappings(rewraps));
  if (rewraps.empty()) return std::vector<DekRewrapResult>();
  // Sent in key order, so concurrent batches (two replicas, or a retry racing the
  // original) lock rows in the same order and cannot deadlock each other; a stable sort
  // keeps repeated rows in input order. Results go back in input order.
  std::vector<size_t> order(rewraps.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return std::tie(rewraps[a].tenant_id, rewraps[a].version) <
           std::tie(rewraps[b].tenant_id, rewraps[b].version);
  });
  std::vector<DekRewrapResult> out;
  // A pipeline: every statement is sent before any result is read, and the Sync at the
  // end makes them one implicit transaction (an error anywhere rolls back all of them).
  // Running it again is harmless (rows already moved no longer match from_kek_version).
  // No epoch bump: a re-wrap changes no key (tenant_key_store.h).
  KMS_RETURN_IF_ERROR(Run(kOp, Mode::kStatement, [&](Connection& c) -> absl::Status {
    PGconn* conn = c.raw();
    if (PQenterPipelineMode(conn) != 1) return pg::ErrorStatus(conn, nullptr, kOp);
    // Leaves pipeline mode, or makes sure the pool drops this session.
    auto fail = [&](absl::Status st) {
      if (PQexitPipelineMode(conn) != 1) c.Poison();
      return st;
    };
    for (size_t index : order) {
      const DekRewrap& r = rewraps[index];
      Params p;
      p.Text(r.tenant_id).Int(r.version).Int(r.from_kek_version).Int(r.to_kek_version).Bytes(
          r.wrapped);
      if (PQsendQueryParams(conn, kSql, p.size(), p.types(), p.values(), p.lengths(), p.formats(),
                            /*resultFormat=*/1) != 1) {
        return fail(pg::ErrorStatus(conn, nullptr, kOp));
      }
    }
    if (PQpipelineSync(conn) != 1) return fail(pg::ErrorStatus(conn, nullptr, kOp));

    absl::Status first_error;
    std::vector<DekRewrapResult> results(rewraps.size(), DekRewrapResult::kNotFound);
    for (size_t i = 0; i < rewraps.size(); ++i) {
      pg::ResultPtr res(PQgetResult(conn));
      if (res == nullptr) return fail(pg::ErrorStatus(conn, nullptr, kOp));
      switch (PQresultStatus(res.get())) {
        case PGRES_TUPLES_OK: {
          Result row(std::move(res));
          if (row.rows() != 1) {
            if (first_error.ok()) {
              first_error = absl::InternalError(absl::StrCat(kOp, ": postgres: no result row"));
            }
            break;
          }
          results[order[i]] = row.Int(0, 0) != 0   ? DekRewrapResult::kUpdated
                              : row.Int(0, 1) != 0 ? DekRewrapResult::kSkipped
                                                   : DekRewrapResult::kNotFound;
          break;
        }
        case PGRES_PIPELINE_ABORTED:  // skipped after an earlier error
          break;
        default:
          if (first_error.ok()) {
            const char* sqlstate = PQresultErrorField(res.get(), PG_DIAG_SQLSTATE);
            c.set_last_sqlstate(sqlstate != nullptr ? sqlstate : "");
            first_error = pg::ErrorStatus(conn, res.get(), kOp);
          }
          break;
      }
      pg::ResultPtr end(PQgetResult(conn));  // each query's results end with a null
      if (end != nullptr) {
        return fail(
            absl::InternalError(absl::StrCat(kOp, ": postgres: unexpected extra result in pipeline")));
      }
    }
    pg::ResultPtr sync(PQgetResult(conn));
    if (sync == nullptr || PQresultStatus(sync.get()) != PGRES_PIPELINE_SYNC) {
      return fail(first_error.ok() ? pg::ErrorStatus(conn, sync.get(), kOp) : first_error);
    }
    if (PQexitPipelineMode(conn) != 1) {
      c.Poison();
      return absl::InternalError(absl::StrCat(kOp, ": postgres: cannot leave pipeline mode"));
    }
    KMS_RETURN_IF_ERROR(first_error);
    out = std::move(results);
    return absl::OkStatus();
  }));
  return out;
}

// --- Rotation jobs (no epoch bump: rotation_job_store.h)

absl::StatusOr<RotationJobRecord> PostgresKeyStore::CreateRotationJob(
    const RotationJobRecord& job) {
  constexpr absl::string_view kOp = "CreateRotationJob";
  KMS_RETURN_IF_ERROR(CheckCreateRotationJob(job));
  RotationJobRecord out = job;
  out.state = RotationJobState::kRunning;
  out.error.clear();
  out.updated_at = job.created_at;
  out.finished_at = 0;
  out.row_version = 1;
  KMS_RETURN_IF_ERROR(Run(kOp, Mode::kTransaction, [&](Connection& c) -> absl::Status {
    Params p;
    p.Text(RotationJobKindName(out.kind))
        .Text(RotationJobStateName(out.state))
        .Int(out.from_kek_version)
        .Int(out.to_kek_version)
        .Text(out.progress.phase)
        .Text(out.progress.cursor_key)
        .Int(out.progress.cursor_version)
        .Int(static_cast<int64_t>(out.progress.done))
        .Int(static_cast<int64_t>(out.progress.skipped))
        .Int(static_cast<int64_t>(out.progress.total))
        .Text(out.error)
        .Int(out.created_at)
        .Int(out.updated_at)
        .Int(out.finished_at)
        .Int(out.row_version);
    // Every column but the id, which the identity assigns.
    absl::StatusOr<Result> r = c.Exec(
        absl::StrCat("INSERT INTO rotation_jobs (",
                     kRotationJobColumns.substr(kRotationJobColumns.find(',') + 2),
                     ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) "
                     "RETURNING id")
            .c_str(),
        p, kOp);
    if (absl::IsAlreadyExists(r.status())) {
      return absl::AlreadyExistsError(absl::StrCat(
          "a ", std::string(RotationJobKindName(out.kind)), " job is already running"));
    }
    KMS_RETURN_IF_ERROR(r.status());
    if (r->rows() != 1) return absl::InternalError(absl::StrCat(kOp, ": no id returned"));
    out.id = r->Int(0, 0);
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<RotationJobRecord> PostgresKeyStore::GetRotationJob(int64_t id) {
  constexpr absl::string_view kOp = "GetRotationJob";
  RotationJobRecord out;
  KMS_RETURN_IF_ERROR(Run(kOp, Mode::kStatement, [&](Connection& c) -> absl::Status {
    Params p;
    p.Int(id);
    KMS_ASSIGN_OR_RETURN(
        Result r,
        c.Exec(absl::StrCat("SELECT ", kRotationJobColumns, " FROM rotation_jobs WHERE id = $1")
                   .c_str(),
               p, kOp));
    if (r.rows() == 0) {
      return absl::NotFoundError(absl::StrCat("rotation job ", id, " not found"));
    }
    KMS_ASSIGN_OR_RETURN(out, ReadRotationJob(r, 0));
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<RotationJobRecord> PostgresKeyStore::GetRunningRotationJob(RotationJobKind kind) {
  constexpr absl::string_view kOp = "GetRunningRotationJob";
  RotationJobRecord out;
  KMS_RETURN_IF_ERROR(Run(kOp, Mode::kStatement, [&](Connection& c) -> absl::Status {
    Params p;
    p.Text(RotationJobKindName(kind));
    KMS_ASSIGN_OR_RETURN(Result r, c.Exec(absl::StrCat("SELECT ", kRotationJobColumns,
                                                       " FROM rotation_jobs "
                                                       "WHERE kind = $1 AND state = 'running'")
                                              .c_str(),
                                          p, kOp));
    if (r.rows() == 0) {
      return absl::NotFoundError(absl::StrCat(
          "no ", std::string(RotationJobKindName(kind)), " job is running"));
    }
    KMS_ASSIGN_OR_RETURN(out, ReadRotationJob(r, 0));
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::vector<RotationJobRecord>> PostgresKeyStore::ListRotationJobs(
    int64_t before_id, int limit) {
  constexpr absl::string_view kOp = "ListRotationJobs";
  KMS_RETURN_IF_ERROR(CheckListRotationJobs(limit));
  std::vector<RotationJobRecord> out;
  KMS_RETURN_IF_ERROR(Run(kOp, Mode::kStatement, [&](Connection& c) -> absl::Status {
    Params p;
    p.Int(before_id).Int(limit);
    KMS_ASSIGN_OR_RETURN(Result r, c.Exec(absl::StrCat("SELECT ", kRotationJobColumns,
                                                       " FROM rotation_jobs "
                                                       "WHERE $1 = 0 OR id < $1 "
                                                       "ORDER BY id DESC LIMIT $2")
                                              .c_str(),
                                          p, kOp));
    std::vector<RotationJobRecord> jobs;
    jobs.reserve(r.rows());
    for (int i = 0; i < r.rows(); ++i) {
      KMS_ASSIGN_OR_RETURN(RotationJobRecord j, ReadRotationJob(r, i));
      jobs.push_back(std::move(j));
    }
    out = std::move(jobs);
    return absl::OkStatus();
  }));
  return out;
}

absl::Status PostgresKeyStore::UpdateRotationJobProgress(int64_t id, int64_t expected_row_version,
                                                         const RotationJobProgress& progress,
                                                         int64_t updated_at) {
  constexpr absl::string_view kOp = "UpdateRotationJobProgress";
  KMS_RETURN_IF_ERROR(CheckRotationJobProgress(kOp, progress));
  return Run(kOp, Mode::kTransaction, [&](Connection& c) -> absl::Status {
    Params p;
    p.Int(id)
        .Int(expected_row_version)
        .Text(progress.phase)
        .Text(progress.cursor_key)
        .Int(progress.cursor_version)
        .Int(static_cast<int64_t>(progress.done))
        .Int(static_cast<int64_t>(progress.skipped))
        .Int(static_cast<int64_t>(progress.total))
        .Int(updated_at);
    KMS_ASSIGN_OR_RETURN(Result r,
                         c.Exec("UPDATE rotation_jobs SET phase = $3, cursor_key = $4, "
                                "cursor_version = $5, keys_done = $6, keys_skipped = $7, "
                                "keys_total = $8, updated_at = $9, row_version = row_version + 1 "
                                "WHERE id = $1 AND row_version = $2 AND state = 'running'",
                                p, kOp));
    if (r.affected() != 0) return absl::OkStatus();
    KMS_RETURN_IF_ERROR(DiagnoseRotationJobCas(c, id, expected_row_version, kOp));
    return absl::InternalError(absl::StrCat(kOp, ": update matched no row"));
  });
}

absl::Status PostgresKeyStore::FinishRotationJob(int64_t id, int64_t expected_row_version,
                                                 RotationJobState state,
                                                 const RotationJobProgress& progress,
                                                 const std::string& error, int64_t finished_at) {
  constexpr absl::string_view kOp = "FinishRotationJob";
  KMS_RETURN_IF_ERROR(CheckFinishRotationJob(state, progress));
  return Run(kOp, Mode::kTransaction, [&](Connection& c) -> absl::Status {
    Params p;
    p.Int(id)
        .Int(expected_row_version)
        .Text(RotationJobStateName(state))
        .Text(progress.phase)
        .Text(progress.cursor_key)
        .Int(progress.cursor_version)
        .Int(static_cast<int64_t>(progress.done))
        .Int(static_cast<int64_t>(progress.skipped))
        .Int(static_cast<int64_t>(progress.total))
        .Text(error)
        .Int(finished_at);
    KMS_ASSIGN_OR_RETURN(Result r,
                         c.Exec("UPDATE rotation_jobs SET state = $3, phase = $4, cursor_key = $5, "
                                "cursor_version = $6, keys_done = $7, keys_skipped = $8, "
                                "keys_total = $9, error = $10, updated_at = $11, "
                                "finished_at = $11, row_version = row_version + 1 "
                                "WHERE id = $1 AND row_version = $2 AND state = 'running'",
                                p, kOp));
    if (r.affected() != 0) return absl::OkStatus();
    KMS_RETURN_IF_ERROR(DiagnoseRotationJobCas(c, id, expected_row_version, kOp));
    return absl::InternalError(absl::StrCat(kOp, ": update matched no row"));
  });
}

// --- Audit log (no epoch bump: audit_store.h)

namespace {

AuditRecord ReadAuditRow(const Result& r, int row) {
  AuditRecord a;
  a.id = r.Int(row, 0);
  a.node = r.Text(row, 1);
  a.seq = r.Int(row, 2);
  a.at_ms = r.Int(row, 3);
  a.kind = r.Text(row, 4);
  a.identity = r.Text(row, 5);
  a.operation = r.Text(row, 6);
  a.tenant = r.Text(row, 7);
  a.tenants = static_cast<uint64_t>(r.Int(row, 8));
  a.calls = static_cast<uint64_t>(r.Int(row, 9));
  a.key_versions = r.Text(row, 10);
  a.outcome = r.Text(row, 11);
  a.request_id = r.Text(row, 12);
  a.prev_hash = r.Bytes(row, 13);
  a.hash = r.Bytes(row, 14);
  return a;
}

}  // namespace

absl::Status PostgresKeyStore::AppendAudit(std::span<const AuditRecord> records) {
  constexpr absl::string_view kOp = "AppendAudit";
  KMS_RETURN_IF_ERROR(CheckAppendAudit(records));
  if (records.empty()) return absl::OkStatus();
  const std::string insert =
      absl::StrCat("INSERT INTO audit_log (", kAuditColumns.substr(kAuditColumns.find(',') + 2),
                   ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)");
  return Run(kOp, Mode::kTransaction, [&](Connection& c) -> absl::Status {
    // Appends of all replicas take turns, so ids are assigned in commit order and a
    // reader paging by id (kmsctl audit tail --follow) never skips a late commit.
    // Readers are not blocked (EXCLUSIVE allows ACCESS SHARE).
    KMS_RETURN_IF_ERROR(c.ExecScript("LOCK TABLE audit_log IN EXCLUSIVE MODE", kOp));
    for (const AuditRecord& r : records) {
      Params p;
      p.Text(r.node)
          .Int(r.seq)
          .Int(r.at_ms)
          .Text(r.kind)
          .Text(r.identity)
          .Text(r.operation)
          .Text(r.tenant)
          .Int(static_cast<int64_t>(r.tenants))
          .Int(static_cast<int64_t>(r.calls))
          .Text(r.key_versions)
          .Text(r.outcome)
          .Text(r.request_id)
          .Bytes(r.prev_hash)
          .Bytes(r.hash);
      absl::StatusOr<Result> result = c.Exec(insert.c_str(), p, kOp);
      if (absl::IsAlreadyExists(result.status())) {
        return absl::AlreadyExistsError(
            absl::StrCat("audit record ", r.node, "/", r.seq, " already exists"));
      }
      KMS_RETURN_IF_ERROR(result.status());
    }
    return absl::OkStatus();
  });
}

absl::StatusOr<std::vector<AuditRecord>> PostgresKeyStore::ReadAudit(int64_t after_id, int limit,
                                                                     const std::string& node) {
  constexpr absl::string_view kOp = "ReadAudit";
  KMS_RETURN_IF_ERROR(CheckAuditLimit(limit));
  std::vector<AuditRecord> out;
  KMS_RETURN_IF_ERROR(Run(kOp, Mode::kStatement, [&](Connection& c) -> absl::Status {
    Params p;
    p.Int(after_id).Text(node).Int(limit);
    KMS_ASSIGN_OR_RETURN(
        Result r, c.Exec(absl::StrCat("SELECT ", kAuditColumns,
                                      " FROM audit_log WHERE id > $1 AND ($2 = '' OR node = $2) "
                                      "ORDER BY id LIMIT $3")
                             .c_str(),
                         p, kOp));
    std::vector<AuditRecord> rows;
    rows.reserve(r.rows());
    for (int i = 0; i < r.rows(); ++i) rows.push_back(ReadAuditRow(r, i));
    out = std::move(rows);
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<std::vector<AuditRecord>> PostgresKeyStore::TailAudit(int count,
                                                                     const std::string& node) {
  constexpr absl::string_view kOp = "TailAudit";
  KMS_RETURN_IF_ERROR(CheckAuditLimit(count));
  std::vector<AuditRecord> out;
  KMS_RETURN_IF_ERROR(Run(kOp, Mode::kStatement, [&](Connection& c) -> absl::Status {
    Params p;
    p.Text(node).Int(count);
    KMS_ASSIGN_OR_RETURN(
        Result r, c.Exec(absl::StrCat("SELECT ", kAuditColumns,
                                      " FROM audit_log WHERE $1 = '' OR node = $1 "
                                      "ORDER BY id DESC LIMIT $2")
                             .c_str(),
                         p, kOp));
    std::vector<AuditRecord> rows;
    rows.reserve(r.rows());
    for (int i = r.rows() - 1; i >= 0; --i) rows.push_back(ReadAuditRow(r, i));
    out = std::move(rows);
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<AuditRecord> PostgresKeyStore::LastAudit(const std::string& node) {
  constexpr absl::string_view kOp = "LastAudit";
  AuditRecord out;
  KMS_RETURN_IF_ERROR(Run(kOp, Mode::kStatement, [&](Connection& c) -> absl::Status {
    Params p;
    p.Text(node);
    KMS_ASSIGN_OR_RETURN(
        Result r, c.Exec(absl::StrCat("SELECT ", kAuditColumns,
                                      " FROM audit_log WHERE node = $1 ORDER BY seq DESC LIMIT 1")
                             .c_str(),
                         p, kOp));
    if (r.rows() == 0) return absl::NotFoundError(absl::StrCat("node ", node, " has no audit record"));
    out = ReadAuditRow(r, 0);
    return absl::OkStatus();
  }));
  return out;
}

absl::StatusOr<int64_t> PostgresKeyStore::DeleteAuditBefore(int64_t before_ms) {
  constexpr absl::string_view kOp = "DeleteAuditBefore";
  int64_t deleted = 0;
  KMS_RETURN_IF_ERROR(Run(kOp, Mode::kStatement, [&](Connection& c) -> absl::Status {
    Params p;
    p.Int(before_ms);
    KMS_ASSIGN_OR_RETURN(Result r, c.Exec("DELETE FROM audit_log WHERE at_ms < $1", p, kOp));
    deleted = r.affected();
    return absl::OkStatus();
  }));
  return deleted;
}

}  // namespace kms::store
