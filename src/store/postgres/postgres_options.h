// How kmsd reaches PostgreSQL: shared by PostgresKeyStore and PostgresLeaderElection.
#pragma once

#include <chrono>
#include <string>

namespace kms::store {

// How much longer than statement_timeout the client waits for a statement's answer.
inline constexpr std::chrono::milliseconds kAnswerGrace{1000};

struct PostgresOptions {
  // A libpq connection string or URI WITHOUT a password ("host=db.internal port=5432
  // dbname=kms user=kmsd"). A password in it is refused (INVALID_ARGUMENT).
  std::string conninfo;
  // A file holding the password (a mounted secret); read once at Open, surrounding
  // whitespace trimmed, and handed to libpq as the 'password' parameter: never in the
  // conninfo, the environment or a log. Empty: no password (e.g. client-certificate
  // auth through the conninfo's sslcert/sslkey).
  std::string password_file;
  // libpq sslmode ("verify-full" in production); empty leaves it to the conninfo.
  std::string sslmode;
  // CA bundle that verifies the server (libpq sslrootcert); empty leaves it to conninfo.
  std::string sslrootcert;
  // Connections kept open at most (each lazily opened).
  int pool_size = 8;
  // To establish one connection (libpq connect_timeout, rounded up to whole seconds,
  // at least 2).
  std::chrono::milliseconds connect_timeout{5000};
  // The schema holding kmsd's tables (created if missing). Lower-case letters, digits
  // and '_', starting with a letter or '_', at most 63 characters.
  std::string schema = "kmsd";
  // Server-side limit for one statement (per session statement_timeout). The client
  // waits for an answer at most statement_timeout + kAnswerGrace: a server that is
  // frozen or cut off by a partition never answers, and TCP keepalives never fire while
  // its kernel still acknowledges, so without a client-side bound a session would wait
  // forever. Past it the session is dropped (UNAVAILABLE).
  std::chrono::milliseconds statement_timeout{5000};
  // How long a caller waits for a free pooled connection before UNAVAILABLE.
  std::chrono::milliseconds acquire_timeout{5000};
  // libpq application_name: shows in pg_stat_activity (operators and tests find kmsd's
  // sessions by it).
  std::string application_name = "kmsd";
};

}  // namespace kms::store
