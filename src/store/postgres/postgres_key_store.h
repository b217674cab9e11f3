// PostgreSQL backend of the KeyStore seam: the shared truth of a cluster (DESIGN §3, §9).
//
// Schema: every table lives in one schema (PostgresOptions::schema, default "kmsd"),
// the same logical schema as SQLite (BYTEA blobs, BIGINT integers, tenant ids and kids
// as TEXT COLLATE "C" so they order bytewise, like SQLite). `schema_migrations` records
// every migration applied. Open() applies the missing ones in one transaction holding
// pg_advisory_xact_lock, so replicas starting together migrate once; a schema newer
// than this binary is FAILED_PRECONDITION.
//
// Thread-safe: a bounded pool of sessions (src/store/postgres/connection_pool.h), each
// with search_path = the schema and statement_timeout set. Every mutation is one
// READ COMMITTED transaction: a compare-and-set UPDATE on row_version / state (a
// concurrent writer of the same row waits for the row lock, then sees the new version
// and matches nothing: ABORTED), plus the store_epoch bump. Deadlocks and serialization
// failures are retried (3 attempts), and so is any transaction whose session broke
// before COMMIT was sent (the server rolled it back). A session lost during COMMIT is
// UNAVAILABLE with "outcome unknown": the change may have been applied.
//
// Semantics: the contracts of the seams in include/kms/store (key_store.h and the
// headers it names), the same as SqliteKeyStore's, checked by the same contract suite
// (tests/integration/store).
//
// Errors: UNAVAILABLE (server unreachable, restarting, out of connections/resources,
// statement timeout), ALREADY_EXISTS (unique violation), ABORTED (compare-and-set lost,
// or a conflict that persisted through the retries), INVALID_ARGUMENT (bytes that are
// not valid UTF-8 in a tenant id / kid, and bad options), INTERNAL otherwise. Messages
// name the operation and the server's primary message, never blob contents or the
// password. Open() may also return UNAUTHENTICATED (credentials refused) and
// FAILED_PRECONDITION (schema too new, password file unreadable).
//
// Shredding caveat: PostgreSQL keeps the old row version of a shredded DEK until VACUUM
// reclaims it, and in WAL and backups; the bytes are only wrapped DEKs (useless without
// the KEK in the HSM). Crypto-erasure that survives backups is a KEK rotation + retire.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/strings/string_view.h"
#include "kms/common/status.h"
#include "kms/store/audit_store.h"
#include "kms/store/key_store.h"
#include "src/store/postgres/postgres_options.h"

namespace kms::store {

namespace pg {
class Connection;
class ConnectionPool;
}  // namespace pg

class PostgresKeyStore final : public KeyStore, public AuditStore {
 public:
  // Connects (one session, kept in the pool), creates the schema if missing, migrates.
  // Errors: INVALID_ARGUMENT (options), FAILED_PRECONDITION (password file, schema newer
  // than this binary), UNAUTHENTICATED (credentials refused), UNAVAILABLE (server
  // unreachable), INTERNAL.
  static absl::StatusOr<std::unique_ptr<PostgresKeyStore>> Open(const PostgresOptions& options);

  // The schema version this binary migrates to.
  static int LatestSchemaVersion();

  ~PostgresKeyStore() override;
  PostgresKeyStore(const PostgresKeyStore&) = delete;
  PostgresKeyStore& operator=(const PostgresKeyStore&) = delete;

  std::string_view backend_name() const override { return "postgres"; }

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
  absl::StatusOr<TenantDek> GetTenantDek(const std::string& tenant_id, uint32_t version) override;
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
  // The batch goes in pipeline mode: one round trip, one implicit transaction, rows in
  // key order (tenant id, version) so that concurrent batches cannot deadlock.
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
  enum class Mode {
    kStatement,    // one statement, autocommit (or a pipeline: implicit transactions)
    kTransaction,  // BEGIN ... COMMIT around the body
  };

  explicit PostgresKeyStore(std::unique_ptr<pg::ConnectionPool> pool);

  // Runs `body` on a pooled session, with the retries described above. `body` may run
  // more than once, so it must only fill its outputs on success.
  absl::Status Run(absl::string_view op, Mode mode,
                   absl::FunctionRef<absl::Status(pg::Connection&)> body);

  std::unique_ptr<pg::ConnectionPool> pool_;
};

}  // namespace kms::store
