#include "src/store/postgres/pg_connection.h"

#include <endian.h>
#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "src/common/secret_file.h"

namespace kms::store::pg {
namespace {

// Type OIDs from the server's catalog (pg_type.dat); stable across releases.
constexpr Oid kInt8Oid = 20;
constexpr Oid kTextOid = 25;
constexpr Oid kByteaOid = 17;

constexpr size_t kMaxPasswordFileSize = 4096;

bool IsValidSchemaName(const std::string& s) {
  if (s.empty() || s.size() > 63) return false;
  if (!(absl::ascii_islower(s[0]) || s[0] == '_')) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '_';
  });
}

// The first line of a libpq/server message, without trailing whitespace. libpq's
// connection messages run over several lines ("\n\tThis probably means ...").
std::string FirstLine(absl::string_view message) {
  absl::string_view line = message.substr(0, message.find('\n'));
  return std::string(absl::StripAsciiWhitespace(line));
}

// Belt and braces: libpq does not echo passwords, but a message that did would not
// leave this module.
std::string Redact(std::string message, const SecretBytes& password) {
  if (password.size() <= 1) return message;
  std::string_view pw(reinterpret_cast<const char*>(password.data()), password.size() - 1);
  for (size_t pos = message.find(pw); pos != std::string::npos; pos = message.find(pw, pos)) {
    message.replace(pos, pw.size(), "<redacted>");
  }
  return message;
}

// The password, '\0'-terminated for libpq. Every failure is FAILED_PRECONDITION (the
// contract of ConnectConfig::FromOptions).
absl::StatusOr<SecretBytes> ReadPasswordFile(const std::string& path) {
  absl::StatusOr<SecretBytes> read = ReadSecretFile(
      path, "postgres: the password", kMaxPasswordFileSize, SecretFileTrim::kSurroundingWhitespace);
  if (!read.ok()) return absl::FailedPreconditionError(read.status().message());
  const uint8_t* begin = read->data();
  const uint8_t* end = begin + read->size();
  if (std::find(begin, end, '\0') != end) {
    return absl::FailedPreconditionError(
        absl::StrCat("postgres: the password file ", path, " contains a NUL byte"));
  }
  SecretBytes password(read->size() + 1);  // zero-filled: the last byte terminates it
  std::memcpy(password.data(), begin, read->size());
  return password;
}

struct ConninfoOptionsDeleter {
  void operator()(PQconninfoOption* options) const { PQconninfoFree(options); }
};

}  // namespace

// --- ConnectConfig

absl::StatusOr<ConnectConfig> ConnectConfig::FromOptions(const PostgresOptions& options) {
  if (options.conninfo.empty()) {
    return absl::InvalidArgumentError("postgres: conninfo is empty");
  }
  char* parse_error = nullptr;
  std::unique_ptr<PQconninfoOption, ConninfoOptionsDeleter> parsed(
      PQconninfoParse(options.conninfo.c_str(), &parse_error));
  if (parse_error != nullptr) PQfreemem(parse_error);  // may quote the string: not shown
  if (parsed == nullptr) {
    return absl::InvalidArgumentError(
        "postgres: conninfo is not a valid libpq connection string or URI");
  }
  for (const PQconninfoOption* o = parsed.get(); o->keyword != nullptr; ++o) {
    if (std::strcmp(o->keyword, "password") == 0 && o->val != nullptr && o->val[0] != '\0') {
      return absl::InvalidArgumentError(
          "postgres: conninfo must not contain a password; use password_file");
    }
  }
  if (!IsValidSchemaName(options.schema)) {
    return absl::InvalidArgumentError(
        "postgres: schema must be 1-63 characters of [a-z0-9_], not starting with a digit");
  }
  if (options.pool_size < 1 || options.pool_size > 1000) {
    return absl::InvalidArgumentError("postgres: pool_size must be in [1, 1000]");
  }
  if (options.connect_timeout.count() <= 0 || options.statement_timeout.count() <= 0 ||
      options.acquire_timeout.count() <= 0) {
    return absl::InvalidArgumentError("postgres: timeouts must be positive");
  }
  ConnectConfig config;
  config.options_ = options;
  if (!options.password_file.empty()) {
    KMS_ASSIGN_OR_RETURN(config.password_, ReadPasswordFile(options.password_file));
  }
  return config;
}

// --- Params

void Params::Add(Oid type, const char* data, size_t size) {
  if (size > static_cast<size_t>(std::numeric_limits<int>::max())) too_large_ = true;
  types_.push_back(type);
  // A null pointer would send SQL NULL; an empty value must stay empty.
  values_.push_back(data != nullptr ? data : "");
  lengths_.push_back(static_cast<int>(std::min<size_t>(size, std::numeric_limits<int>::max())));
  formats_.push_back(1);
}

Params& Params::Int(int64_t value) {
  std::array<char, 8>& slot = ints_.emplace_back();
  const uint64_t be = htobe64(static_cast<uint64_t>(value));
  std::memcpy(slot.data(), &be, sizeof(be));
  Add(kInt8Oid, slot.data(), slot.size());
  return *this;
}

Params& Params::Text(std::string_view value) {
  Add(kTextOid, value.data(), value.size());
  return *this;
}

Params& Params::Bytes(std::span<const uint8_t> value) {
  Add(kByteaOid, reinterpret_cast<const char*>(value.data()), value.size());
  return *this;
}

// --- Result

int64_t Result::affected() const {
  const char* n = PQcmdTuples(result_.get());
  if (n == nullptr || *n == '\0') return 0;
  return std::strtoll(n, nullptr, 10);
}

int64_t Result::Int(int row, int col) const {
  const char* p = PQgetvalue(result_.get(), row, col);
  switch (PQgetlength(result_.get(), row, col)) {
    case 8: {
      uint64_t v;
      std::memcpy(&v, p, 8);
      return static_cast<int64_t>(be64toh(v));
    }
    case 4: {
      uint32_t v;
      std::memcpy(&v, p, 4);
      return static_cast<int32_t>(be32toh(v));
    }
    case 2: {
      uint16_t v;
      std::memcpy(&v, p, 2);
      return static_cast<int16_t>(be16toh(v));
    }
    case 1:
      return static_cast<uint8_t>(p[0]);
    default:
      return 0;
  }
}

std::string Result::Text(int row, int col) const {
  return std::string(PQgetvalue(result_.get(), row, col),
                     static_cast<size_t>(PQgetlength(result_.get(), row, col)));
}

std::vector<uint8_t> Result::Bytes(int row, int col) const {
  const auto* p = reinterpret_cast<const uint8_t*>(PQgetvalue(result_.get(), row, col));
  return std::vector<uint8_t>(p, p + PQgetlength(result_.get(), row, col));
}

// --- Errors

absl::Status ErrorStatus(PGconn* conn, const PGresult* result, absl::string_view op) {
  const char* sqlstate_c =
      result != nullptr ? PQresultErrorField(result, PG_DIAG_SQLSTATE) : nullptr;
  const std::string sqlstate = sqlstate_c != nullptr ? sqlstate_c : "";
  const char* primary =
      result != nullptr ? PQresultErrorField(result, PG_DIAG_MESSAGE_PRIMARY) : nullptr;
  std::string detail;
  if (primary != nullptr) {
    detail = FirstLine(primary);
  } else if (result != nullptr && PQresultErrorMessage(result)[0] != '\0') {
    detail = FirstLine(PQresultErrorMessage(result));
  } else if (conn != nullptr) {
    detail = FirstLine(PQerrorMessage(conn));
  }
  if (detail.empty()) detail = "unknown error";
  std::string message =
      sqlstate.empty() ? absl::StrCat(op, ": postgres: ", detail)
                       : absl::StrCat(op, ": postgres: ", detail, " (SQLSTATE ", sqlstate, ")");

  if (sqlstate.empty()) {
    // No server error: libpq lost (or never had) the connection, or refused the call.
    if (conn == nullptr || PQstatus(conn) == CONNECTION_BAD) {
      return absl::UnavailableError(message);
    }
    return absl::InternalError(message);
  }
  const std::string_view cls = std::string_view(sqlstate).substr(0, 2);
  if (cls == "08" || cls == "53" || sqlstate == "57P01" || sqlstate == "57P02" ||
      sqlstate == "57P03" || sqlstate == "57014" || sqlstate == "55P03") {
    return absl::UnavailableError(message);
  }
  if (sqlstate == "23505") return absl::AlreadyExistsError(message);
  if (IsRetryableSqlstate(sqlstate)) return absl::AbortedError(message);
  if (sqlstate == "22021" || sqlstate == "22P05") return absl::InvalidArgumentError(message);
  return absl::InternalError(message);
}

bool IsRetryableSqlstate(const std::string& sqlstate) {
  return sqlstate == "40001" || sqlstate == "40P01";
}

// --- Connection

absl::StatusOr<std::unique_ptr<Connection>> Connection::Open(const ConnectConfig& config,
                                                             absl::string_view op) {
  const PostgresOptions& o = config.options();
  // libpq counts whole seconds, and treats 1 as 2.
  const auto timeout_s = std::max<int64_t>(2, (o.connect_timeout.count() + 999) / 1000);
  const std::string timeout = std::to_string(timeout_s);

  // With expand_dbname, the conninfo in "dbname" is expanded in place: keywords after it
  // override what it says, keywords before it are overridden by it.
  // Before "dbname": defaults the conninfo may override. TCP keepalives make a session
  // to a vanished server fail in about a minute instead of hanging.
  std::vector<const char*> keys = {"keepalives",       "keepalives_idle", "keepalives_interval",
                                   "keepalives_count", "dbname",          "connect_timeout",
                                   "application_name", "client_encoding"};
  std::vector<const char*> values = {
      "1",   "30", "10", "3", o.conninfo.c_str(), timeout.c_str(), o.application_name.c_str(),
      "UTF8"};
  if (!config.password().empty()) {
    keys.push_back("password");
    values.push_back(reinterpret_cast<const char*>(config.password().data()));
  }
  if (!o.sslmode.empty()) {
    keys.push_back("sslmode");
    values.push_back(o.sslmode.c_str());
  }
  if (!o.sslrootcert.empty()) {
    keys.push_back("sslrootcert");
    values.push_back(o.sslrootcert.c_str());
  }
  keys.push_back(nullptr);
  values.push_back(nullptr);

  ConnPtr conn(PQconnectdbParams(keys.data(), values.data(), /*expand_dbname=*/1));
  if (conn == nullptr)
    return absl::ResourceExhaustedError(absl::StrCat(op, ": postgres: out of memory"));
  if (PQstatus(conn.get()) != CONNECTION_OK) {
    std::string detail = Redact(FirstLine(PQerrorMessage(conn.get())), config.password());
    if (PQconnectionNeedsPassword(conn.get())) {
      return absl::UnauthenticatedError(
          absl::StrCat(op,
                       ": postgres: the server requires a password and none is configured "
                       "(password_file): ",
                       detail));
    }
    // The server's "password authentication failed" (28P01) comes without a SQLSTATE
    // here; libpq says whether a password was sent.
    if (PQconnectionUsedPassword(conn.get()) &&
        (absl::StrContains(detail, "authentication failed") ||
         absl::StrContains(detail, "28P01"))) {
      return absl::UnauthenticatedError(absl::StrCat(
          op, ": postgres: authentication failed (check the user and password_file): ", detail));
    }
    return absl::UnavailableError(absl::StrCat(op, ": postgres: cannot connect: ", detail));
  }

  // Server NOTICEs ("relation already exists, skipping") are not for kmsd's stderr.
  PQsetNoticeProcessor(
      conn.get(), [](void*, const char*) {}, nullptr);
  std::unique_ptr<Connection> c(new Connection(std::move(conn), o.statement_timeout + kAnswerGrace));
  const std::string statement_timeout = std::to_string(o.statement_timeout.count());
  Params params;
  params.Text(o.schema).Text(statement_timeout);
  KMS_RETURN_IF_ERROR(c->Exec("SELECT set_config('search_path', $1, false), "
                              "set_config('statement_timeout', $2, false)",
                              params, op)
                          .status());
  return c;
}

absl::StatusOr<Result> Connection::Check(ResultPtr result, absl::string_view op) {
  ExecStatusType st = result != nullptr ? PQresultStatus(result.get()) : PGRES_FATAL_ERROR;
  if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
    last_sqlstate_.clear();
    return Result(std::move(result));
  }
  const char* sqlstate =
      result != nullptr ? PQresultErrorField(result.get(), PG_DIAG_SQLSTATE) : nullptr;
  last_sqlstate_ = sqlstate != nullptr ? sqlstate : "";
  return ErrorStatus(conn_.get(), result.get(), op);
}

namespace {

// Waits until `fd` is ready for `events` or `deadline` passes. 1: ready, 0: deadline,
// -1: error or hang-up (libpq then reports the failure itself).
int PollUntil(int fd, short events, std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    // Rounded up: poll() counts whole milliseconds, and an early wake-up must not
    // report the deadline before it has passed.
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return 0;
    pollfd p{};
    p.fd = fd;
    p.events = events;
    const int n = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 1 << 30)));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 || (p.revents & POLLNVAL) != 0) return -1;
    if (n > 0) return 1;  // POLLERR/POLLHUP included: the read or write below reports it
  }
}

}  // namespace

absl::StatusOr<Result> Connection::Run(const std::function<int(PGconn*)>& send,
                                       absl::string_view op) {
  PGconn* conn = conn_.get();
  const auto deadline = std::chrono::steady_clock::now() + answer_timeout_;
  const auto timed_out = [&]() -> absl::StatusOr<Result> {
    Poison();  // a statement may still run server-side: the session is unusable
    return absl::UnavailableError(
        absl::StrCat(op, ": postgres: no answer within ", answer_timeout_.count(), " ms"));
  };
  // Non-blocking while sending, so that a peer that stops reading (a partition) costs
  // the deadline, not TCP's retransmission timeout; the pipeline code (raw()) keeps the
  // blocking mode it expects.
  if (PQsetnonblocking(conn, 1) != 0) return Check(nullptr, op);
  struct Blocking {
    PGconn* conn;
    ~Blocking() { PQsetnonblocking(conn, 0); }
  } restore{conn};
  if (send(conn) == 0) return Check(nullptr, op);
  const int fd = PQsocket(conn);
  for (int f; (f = PQflush(conn)) != 0;) {
    if (f < 0) return Check(nullptr, op);
    const int ready = PollUntil(fd, POLLIN | POLLOUT, deadline);
    if (ready == 0) return timed_out();
    if (ready < 0 || PQconsumeInput(conn) == 0) return Check(nullptr, op);
  }
  ResultPtr kept;
  for (;;) {
    while (PQisBusy(conn) != 0) {
      const int ready = PollUntil(fd, POLLIN, deadline);
      if (ready == 0) return timed_out();
      if (ready < 0 || PQconsumeInput(conn) == 0) {
        // The connection failed mid-answer: an error, even after an earlier statement's
        // success (as PQexec reports it).
        if (kept != nullptr && PQresultStatus(kept.get()) == PGRES_FATAL_ERROR) break;
        return Check(nullptr, op);
      }
    }
    PGresult* next = PQgetResult(conn);
    if (next == nullptr) break;
    // A FATAL error ends the session (57P01 at pg_terminate_backend, a restart): the
    // server closes it, maybe before libpq has read the end of the stream. Broken now,
    // so that the caller's retry takes a new session.
    if (const char* severity = PQresultErrorField(next, PG_DIAG_SEVERITY_NONLOCALIZED);
        severity != nullptr && std::string_view(severity) == "FATAL") {
      Poison();
    }
    // Like PQexec: the last result, except that an error is kept once seen (a script
    // stops at its first failing statement).
    if (kept == nullptr || PQresultStatus(kept.get()) != PGRES_FATAL_ERROR) {
      kept.reset(next);
    } else {
      PQclear(next);
    }
  }
  return Check(std::move(kept), op);
}

absl::StatusOr<Result> Connection::Exec(const char* sql, const Params& params,
                                        absl::string_view op) {
  if (params.too_large()) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": a value is larger than 2 GiB"));
  }
  return Run(
      [&](PGconn* conn) {
        return PQsendQueryParams(conn, sql, params.size(), params.types(), params.values(),
                                 params.lengths(), params.formats(), /*resultFormat=*/1);
      },
      op);
}

absl::StatusOr<Result> Connection::Exec(const char* sql, absl::string_view op) {
  Params none;
  return Exec(sql, none, op);
}

absl::Status Connection::ExecScript(const char* sql, absl::string_view op) {
  return Run([&](PGconn* conn) { return PQsendQuery(conn, sql); }, op).status();
}

bool Connection::broken() const { return poisoned_ || PQstatus(conn_.get()) != CONNECTION_OK; }

namespace {

// 1: input waiting, 0: none, -1: error or hang-up.
int PollReadable(int fd) {
  pollfd p{};
  p.fd = fd;
  p.events = POLLIN;
  int n;
  do {
    n = ::poll(&p, 1, 0);
  } while (n < 0 && errno == EINTR);
  if (n < 0 || (p.revents & (POLLERR | POLLNVAL)) != 0) return -1;
  return n > 0 ? 1 : 0;
}

}  // namespace

bool Connection::LooksAliveWhileIdle() {
  if (broken() || PQtransactionStatus(conn_.get()) != PQTRANS_IDLE) return false;
  const int fd = PQsocket(conn_.get());
  if (fd < 0) return false;
  int readable = PollReadable(fd);
  if (readable == 0) return true;  // the common case: one syscall
  if (readable < 0) return false;
  // Something arrived while idle: a termination notice followed by the end of the
  // stream, or (harmless) TLS housekeeping. Let libpq read it; the session is dead if
  // libpq saw the end, or if more (the end of the stream) is still waiting.
  if (PQconsumeInput(conn_.get()) == 0 || broken()) return false;
  return PollReadable(fd) == 0;
}

}  // namespace kms::store::pg
