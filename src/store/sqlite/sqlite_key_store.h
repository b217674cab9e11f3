// SQLite backend of the KeyStore seam: the embedded, single-node default.
//
// One database file (created mode 0600) in WAL mode with synchronous=FULL. The schema
// is versioned: `schema_migrations` records every migration applied; Open() applies the
// missing ones, each in its own IMMEDIATE transaction, and refuses a database written
// by a newer kmsd (FAILED_PRECONDITION).
//
// Thread-safe: one connection, serialized by a mutex (SQLite serializes writers anyway).
// Several processes may open the same file (kmsd and kmsctl); writers wait up to the
// busy timeout and then get UNAVAILABLE.
//
// Semantics: the contracts of the seams in include/kms/store (key_store.h and the
// headers it names), checked by the contract suite in tests/integration/store.
#pragma once

#include <chrono>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/strings/string_view.h"
#include "kms/common/status.h"
#include "kms/store/audit_store.h"
#include "kms/store/key_store.h"
#include "src/common/sync.h"

struct sqlite3;
struct sqlite3_stmt;

namespace kms::store {

class SqliteKeyStore final : public KeyStore, public AuditStore {
 public:
  struct Options {
    // How long a writer waits for another process's lock before UNAVAILABLE.
    std::chrono::milliseconds busy_timeout{5000};
    // synchronous=FULL (every commit reaches the disk). false (synchronous=OFF) only for
    // tools and tests that bulk-load a throw-away database: a crash may lose commits.
    bool durable = true;
  };

  // Opens (creating if absent, mode 0600) the database at `path` and migrates it.
  // ":memory:" gives a private in-memory store. Errors: INVALID_ARGUMENT (empty path),
  // UNAVAILABLE (cannot open / I/O error / locked), FAILED_PRECONDITION (schema newer
  // than this binary), INTERNAL.
  static absl::StatusOr<std::unique_ptr<SqliteKeyStore>> Open(const std::string& path);
  static absl::StatusOr<std::unique_ptr<SqliteKeyStore>> Open(const std::string& path,
                                                             const Options& options);

  // The schema version this binary migrates to.
  static int LatestSchemaVersion();

  // The statements of the reads KeyStateCache::Refresh makes at start-up and every
  // minute, for the test that checks their query plans search an index (a scan would
  // make start-up grow with the store). ?1: the primary KEK version.
  static constexpr const char* kOldestPrimaryDekSql =
      "SELECT COALESCE(MIN(primary_dek_created_at), 0) FROM tenants WHERE state = 'active'";
  static constexpr const char* kKekUsageExceptSql =
      "SELECT v, SUM(d), SUM(j) FROM ("
      "SELECT version AS v, 0 AS d, 0 AS j FROM kek_versions WHERE version <> ?1 "
      "UNION ALL SELECT kek_version, COUNT(*), 0 FROM tenant_deks "
      "WHERE kek_version < ?1 AND state <> 'destroyed' GROUP BY kek_version "
      "UNION ALL SELECT kek_version, COUNT(*), 0 FROM tenant_deks "
      "WHERE kek_version > ?1 AND state <> 'destroyed' GROUP BY kek_version "
      "UNION ALL SELECT kek_version, 0, COUNT(*) FROM jwt_keys "
      "WHERE kek_version <> ?1 GROUP BY kek_version) GROUP BY v ORDER BY v";

  ~SqliteKeyStore() override;
  SqliteKeyStore(const SqliteKeyStore&) = delete;
  SqliteKeyStore& operator=(const SqliteKeyStore&) = delete;

  std::string_view backend_name() const override { return "sqlite"; }

  // KekStore
  absl::StatusOr<std::vector<KekRecord>> ListKeks() override;
  absl::Status InsertKek(const KekRecord& kek) override;
  absl::Status UpdateKekState(uint32_t version, KekState from, KekState to) override;
  absl::StatusOr<std::vector<KekUsage>> ListKekUsage() override;
  absl::StatusOr<std::vector<KekUsage>> ListKekUsageExcept(uint32_t kek_version) override;
  absl::Status RetireKek(uint32_t version, int64_t retired_at) override;
  absl::StatusOr<std::vector<uint32_t>> DestroyRetiredKeks(int64_t retired_before) override;

  // TenantKeyStore
  absl::Status CreateTenant(const TenantRecord& tenant, const DekRecord& first_dek) override;
  absl::StatusOr<std::vector<CreateTenantResult>> CreateTenants(
      std::span<const NewTenant> tenants) override;
  absl::StatusOr<TenantRecord> GetTenant(const std::string& tenant_id) override;
  absl::StatusOr<TenantPage> ListTenants(const std::string& after, int limit) override;
  absl::StatusOr<uint64_t> CountTenants() override;
  absl::StatusOr<int64_t> OldestPrimaryDekCreatedAt() override;
  absl::StatusOr<TenantDek> GetTenantDek(const std::string& tenant_id,
                                         uint32_t version) override;
  absl::StatusOr<std::vector<DekRecord>> ListDeks(const std::string& tenant_id) override;
  absl::Status RotateDek(const std::string& tenant_id, int64_t expected_row_version,
                         const DekRecord& new_dek) override;
  absl::Status SetTenantState(const std::string& tenant_id, int64_t expected_row_version,
                              TenantState state) override;
  absl::Status SetMinDecryptVersion(const std::string& tenant_id, int64_t expected_row_version,
                                    uint32_t min_version) override;
  absl::Status AddEncryptions(const std::string& tenant_id, uint32_t version,
                              uint64_t count) override;
  absl::Status AddEncryptionsBatch(std::span<const EncryptionCount> counts) override;
  absl::StatusOr<DekPage> ListDeksWrappedUnder(uint32_t kek_version, const DekKey& after,
                                               int limit) override;
  // The batch is one IMMEDIATE transaction: one UPDATE per row (and a lookup for a row
  // it did not change, to tell kSkipped from kNotFound).
  absl::StatusOr<std::vector<DekRewrapResult>> UpdateDekWrappings(
      std::span<const DekRewrap> rewraps) override;
  absl::StatusOr<DueTenantPage> ListTenantsDueForRotation(int64_t now,
                                                          int64_t default_period_seconds,
                                                          const std::string& after,
                                                          int limit) override;
  absl::Status SetTenantRotationPeriod(const std::string& tenant_id,
                                       int64_t period_seconds) override;
  absl::StatusOr<int64_t> GetTenantRotationPeriod(const std::string& tenant_id) override;

  // JwtKeyStore
  absl::StatusOr<std::vector<JwtKeyRecord>> ListJwtKeys() override;
  absl::Status InsertFirstJwtKey(const JwtKeyRecord& key) override;
  absl::Status RotateJwtKey(const std::string& current_kid, int64_t expected_row_version,
                            int64_t current_retire_at, const JwtKeyRecord& next) override;
  absl::Status UpdateJwtKeyWrapping(const std::string& kid, int64_t expected_row_version,
                                    uint32_t kek_version,
                                    const std::vector<uint8_t>& wrapped_private) override;

  // RotationJobStore
  absl::StatusOr<RotationJobRecord> CreateRotationJob(const RotationJobRecord& job) override;
  absl::StatusOr<RotationJobRecord> GetRotationJob(int64_t id) override;
  absl::StatusOr<RotationJobRecord> GetRunningRotationJob(RotationJobKind kind) override;
  absl::StatusOr<std::vector<RotationJobRecord>> ListRotationJobs(int64_t before_id,
                                                                  int limit) override;
  absl::Status UpdateRotationJobProgress(int64_t id, int64_t expected_row_version,
                                         const RotationJobProgress& progress,
                                         int64_t updated_at) override;
  absl::Status FinishRotationJob(int64_t id, int64_t expected_row_version, RotationJobState state,
                                 const RotationJobProgress& progress, const std::string& error,
                                 int64_t finished_at) override;

  // AuditStore
  absl::Status AppendAudit(std::span<const AuditRecord> records) override;
  absl::StatusOr<std::vector<AuditRecord>> ReadAudit(int64_t after_id, int limit,
                                                     const std::string& node) override;
  absl::StatusOr<std::vector<AuditRecord>> TailAudit(int count, const std::string& node) override;
  absl::StatusOr<AuditRecord> LastAudit(const std::string& node) override;
  absl::StatusOr<int64_t> DeleteAuditBefore(int64_t before_ms) override;

  // StoreHealth
  absl::StatusOr<int64_t> GetEpoch() override;
  absl::Status Ping() override;

 private:
  struct DbCloser {
    void operator()(sqlite3* db) const;
  };
  struct StmtFinalizer {
    void operator()(sqlite3_stmt* stmt) const;
  };
  using DbPtr = std::unique_ptr<sqlite3, DbCloser>;
  using StmtPtr = std::unique_ptr<sqlite3_stmt, StmtFinalizer>;
  class Stmt;
  class Transaction;
  // The rows (kek version, live DEKs, JWT keys) of the KEK-usage queries.
  static absl::StatusOr<std::vector<KekUsage>> ReadKekUsage(Stmt& s);

  explicit SqliteKeyStore(DbPtr db);

  absl::Status Configure(const Options& options, bool in_memory)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Migrate() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A cached prepared statement for `sql`, reset when the returned Stmt is destroyed.
  absl::StatusOr<Stmt> Prepare(absl::string_view sql, absl::string_view op)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Runs a statement that returns no rows.
  absl::Status Exec(absl::string_view sql, absl::string_view op)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status BumpEpoch(absl::string_view op) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // The envelope of every change: takes mu_, BEGIN IMMEDIATE, runs `body`, bumps the
  // epoch (unless bump_epoch is false), COMMIT; an error anywhere rolls back. An
  // ALREADY_EXISTS out of `body` (a unique constraint) gets the message `on_duplicate`,
  // when set, which names the key instead of SQLite's table and column. `body` runs
  // with mu_ held (it says so with mu_.AssertHeld(), for the lock analysis).
  struct Mutation {
    absl::string_view op;
    bool bump_epoch = true;
    std::string on_duplicate;
  };
  absl::Status Mutate(const Mutation& m, absl::FunctionRef<absl::Status()> body)
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status InsertDek(const std::string& tenant_id, const DekRecord& dek,
                         absl::string_view op) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status InsertJwtKey(const JwtKeyRecord& key, absl::string_view op)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // After a CAS matched no row: NOT_FOUND, ABORTED or FAILED_PRECONDITION, by reading
  // the tenant row inside the same transaction.
  absl::Status DiagnoseTenantCas(const std::string& tenant_id, int64_t expected_row_version,
                                 absl::string_view op) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // After a JWT key CAS matched no row: NOT_FOUND or ABORTED.
  absl::Status DiagnoseJwtKeyCas(const std::string& kid, int64_t expected_row_version,
                                 absl::string_view op) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // After a rotation job CAS matched no row: NOT_FOUND, ABORTED or FAILED_PRECONDITION.
  absl::Status DiagnoseRotationJobCas(int64_t id, int64_t expected_row_version,
                                      absl::string_view op) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Mutex mu_;
  DbPtr db_ ABSL_GUARDED_BY(mu_);
  // Keyed by SQL text. Declared after db_, so finalized before the connection closes.
  absl::flat_hash_map<std::string, StmtPtr> stmts_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kms::store
