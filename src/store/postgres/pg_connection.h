// Internal to src/store/postgres, the only module that includes libpq-fe.h: one libpq
// connection with RAII handles, typed binary parameters and results, and the one place
// where libpq failures and SQLSTATEs become absl codes.
//
// Not thread-safe: a Connection is used by one thread at a time (the pool hands it out).
#pragma once

#include <libpq-fe.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/string_view.h"
#include "kms/common/secret.h"
#include "kms/common/status.h"
#include "src/store/postgres/postgres_options.h"

namespace kms::store::pg {

struct ConnDeleter {
  void operator()(PGconn* conn) const { PQfinish(conn); }
};
struct ResultDeleter {
  void operator()(PGresult* result) const { PQclear(result); }
};
using ConnPtr = std::unique_ptr<PGconn, ConnDeleter>;
using ResultPtr = std::unique_ptr<PGresult, ResultDeleter>;

// Everything needed to open a session, validated, with the password read from its file.
class ConnectConfig {
 public:
  // INVALID_ARGUMENT: empty conninfo, a password inside it, a bad schema name or
  // sizes; FAILED_PRECONDITION: the password file cannot be read or is empty.
  static absl::StatusOr<ConnectConfig> FromOptions(const PostgresOptions& options);

  ConnectConfig(ConnectConfig&&) = default;
  ConnectConfig& operator=(ConnectConfig&&) = default;

  const PostgresOptions& options() const { return options_; }
  // A '\0'-terminated copy of the password, or empty.
  const SecretBytes& password() const { return password_; }

 private:
  ConnectConfig() = default;
  PostgresOptions options_;
  SecretBytes password_;
};

// Statement parameters, all sent in binary format with explicit types, so values never
// pass through SQL text. The referenced text and bytes must outlive the statement.
class Params {
 public:
  Params() = default;
  Params(const Params&) = delete;
  Params& operator=(const Params&) = delete;

  Params& Int(int64_t value);                     // int8
  Params& Text(std::string_view value);           // text
  Params& Bytes(std::span<const uint8_t> value);  // bytea

  int size() const { return static_cast<int>(types_.size()); }
  // A value over libpq's 2 GiB limit was added: Exec refuses (INVALID_ARGUMENT).
  bool too_large() const { return too_large_; }
  const Oid* types() const { return types_.data(); }
  const char* const* values() const { return values_.data(); }
  const int* lengths() const { return lengths_.data(); }
  const int* formats() const { return formats_.data(); }

 private:
  void Add(Oid type, const char* data, size_t size);

  std::vector<Oid> types_;
  std::vector<const char*> values_;
  std::vector<int> lengths_;
  std::vector<int> formats_;
  std::deque<std::array<char, 8>> ints_;  // a deque: push_back keeps earlier addresses
  bool too_large_ = false;
};

// A statement's result, in binary format.
class Result {
 public:
  explicit Result(ResultPtr result) : result_(std::move(result)) {}

  int rows() const { return PQntuples(result_.get()); }
  // Rows changed by an INSERT/UPDATE/DELETE.
  int64_t affected() const;
  bool IsNull(int row, int col) const { return PQgetisnull(result_.get(), row, col) != 0; }
  // An integer column (int2/int4/int8, or bool as 0/1), decoded from network order.
  int64_t Int(int row, int col) const;
  std::string Text(int row, int col) const;
  std::vector<uint8_t> Bytes(int row, int col) const;

 private:
  ResultPtr result_;
};

// Maps a failed result (or a connection failure when `result` is null) to a status:
//   class 08, 57P01-57P03, class 53, 57014, 55P03, no connection -> UNAVAILABLE
//   23505 -> ALREADY_EXISTS;  40001, 40P01 -> ABORTED;  22021, 22P05 -> INVALID_ARGUMENT
//   anything else -> INTERNAL.
// The message is "<op>: postgres: <primary message> (SQLSTATE xxxxx)": the server's
// primary message names constraints and types, never bound values (DETAIL, which can
// show a row, is never used).
absl::Status ErrorStatus(PGconn* conn, const PGresult* result, absl::string_view op);

class Connection {
 public:
  // Connects, then sets the session's search_path (the schema) and statement_timeout.
  // Errors: UNAUTHENTICATED (the server refused the credentials), UNAVAILABLE
  // (unreachable, refused, timed out, server starting or shutting down), INTERNAL.
  // Messages never contain the password.
  static absl::StatusOr<std::unique_ptr<Connection>> Open(const ConnectConfig& config,
                                                          absl::string_view op);

  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // One statement with parameters; rows come back in binary format. The answer is
  // awaited at most statement_timeout + kAnswerGrace (postgres_options.h): past that the
  // session is poisoned and the call fails UNAVAILABLE ("no answer within N ms").
  absl::StatusOr<Result> Exec(const char* sql, const Params& params, absl::string_view op);
  absl::StatusOr<Result> Exec(const char* sql, absl::string_view op);
  // Several statements without parameters (migrations, BEGIN/COMMIT); the same bound.
  absl::Status ExecScript(const char* sql, absl::string_view op);

  // Whether the session is gone (a statement saw it fail, or libpq says so). A broken
  // connection is never returned to the pool.
  bool broken() const;
  // For a connection that has been idle: one zero-timeout poll when nothing is waiting.
  // Input on an idle session is a termination notice (pg_terminate_backend, shutdown,
  // restart) and the end of the stream, which make it dead, or TLS housekeeping, which
  // libpq absorbs.
  bool LooksAliveWhileIdle();
  // The SQLSTATE of the last failed statement ("" if none or no result).
  const std::string& last_sqlstate() const { return last_sqlstate_; }
  // The libpq handle, for pipeline mode.
  PGconn* raw() { return conn_.get(); }
  // Records a failure seen through raw() use.
  void set_last_sqlstate(std::string s) { last_sqlstate_ = std::move(s); }
  // Marks the session unusable (its protocol state is unknown): broken() from now on.
  void Poison() { poisoned_ = true; }
  // How long Exec and ExecScript wait for an answer: Open sets statement_timeout +
  // kAnswerGrace; the schema migration raises it for its long statements.
  std::chrono::milliseconds answer_timeout() const { return answer_timeout_; }
  void set_answer_timeout(std::chrono::milliseconds timeout) { answer_timeout_ = timeout; }

 private:
  Connection(ConnPtr conn, std::chrono::milliseconds answer_timeout)
      : conn_(std::move(conn)), answer_timeout_(answer_timeout) {}
  absl::StatusOr<Result> Check(ResultPtr result, absl::string_view op);
  // Sends a query (`send`: a PQsend* call) and collects its results within
  // answer_timeout_, the sending included (the socket is non-blocking meanwhile),
  // keeping what PQexec would return (the last, or the first error). UNAVAILABLE "no
  // answer within N ms" (the session poisoned) when the deadline passes.
  absl::StatusOr<Result> Run(const std::function<int(PGconn*)>& send, absl::string_view op);

  ConnPtr conn_;
  std::chrono::milliseconds answer_timeout_;
  std::string last_sqlstate_;
  bool poisoned_ = false;
};

// Whether a status came from a serialization failure or deadlock (worth a retry).
bool IsRetryableSqlstate(const std::string& sqlstate);

}  // namespace kms::store::pg
