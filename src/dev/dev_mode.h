// Dev mode: one command creates (first run) or reuses (later runs) everything a
// single node needs in one state directory:
//
//   DIR/softhsm2.conf, DIR/tokens/     a SoftHSM2 token "kmsd-dev" of its own
//   DIR/secrets/hsm-user.pin           the token's user PIN (0600); hsm-so.pin likewise
//   DIR/pki/ca.pem, ca.key (0600)      a dev CA, kept so more client certificates can be issued
//   DIR/pki/server.pem, server.key     for localhost / 127.0.0.1 / ::1
//   DIR/pki/clients/<name>.pem, .key   "operator" (every operation), "billing" (encrypt,
//                                      decrypt) and "iam" (sign and verify JWTs)
//   DIR/policy.json                    who may do what (deny by default)
//   DIR/kmsd.db                        the SQLite key store
//   DIR/kmsctl.json                    how kmsctl reaches this node (written once listening)
//
// Also the dev-only steps of kmsd's command line (--issue-client-cert, the hints printed
// once the node listens). The server knows none of this: it runs the Config returned here
// like any other.
#pragma once

#include <string>

#include "kms/common/status.h"
#include "src/config/config.h"

namespace kms::dev {

inline constexpr char kDevTrustDomain[] = "kmsd.dev";
inline constexpr char kDevTokenLabel[] = "kmsd-dev";

struct DevOptions {
  std::string state_dir;
  std::string grpc_listen = "127.0.0.1:8443";
  std::string http_listen = "127.0.0.1:8444";
  // Cluster on one machine: several replicas share the state dir (token, certificates,
  // policy) and one PostgreSQL (+ Redis), each on its own ports.
  std::string postgres_conninfo;       // empty: SQLite in the state dir
  std::string postgres_password_file;  // the database password, from a file
  std::string redis_addr;              // host:port or unix:/path; empty: no Redis
  int64_t poll_interval_seconds = 10;  // the store-epoch poll (coherence without Redis)
};

// Creates what is missing in the state dir and returns the config to run with.
absl::StatusOr<config::Config> PrepareDevState(const DevOptions& options);

// Issues a client certificate for spiffe://kmsd.dev/<name> from the dev CA, into
// DIR/pki/clients/<name>.pem and .key. Returns the certificate's path.
absl::StatusOr<std::string> IssueDevClientCert(const std::string& state_dir,
                                               const std::string& name);

// Writes DIR/kmsctl.json pointing at `grpc_addr` with the operator's certificate.
absl::Status WriteKmsctlConfig(const std::string& state_dir, const std::string& grpc_addr);

// `kmsd --dev --state-dir DIR --issue-client-cert NAME`: issues the certificate and
// returns what to tell the operator (lines ending in a newline).
absl::StatusOr<std::string> RunIssueClientCert(const std::string& state_dir,
                                               const std::string& name);

// Once a dev node listens on `grpc_addr`: writes DIR/kmsctl.json (a failure is logged,
// the node runs on) and returns the hint to print after the ready line.
std::string OnDevNodeListening(const std::string& state_dir, const std::string& grpc_addr);

// The host a client on this machine uses to reach a listener bound to `listen`
// (HOST:PORT): a wildcard address becomes the loopback address (0.0.0.0 -> 127.0.0.1,
// [::] -> [::1]). kmsd's ready line uses it in every mode.
std::string HostOf(const std::string& listen);

}  // namespace kms::dev
