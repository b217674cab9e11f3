// The AWS KMS External Key Store door: the XKS proxy API v1 (aws/aws-kms-xksproxy-api-spec
// v1.0.3) on a listener of its own. Routes, under the configured URI prefix:
//
//   POST {prefix}/kms/xks/v1/keys/{externalKeyId}/metadata   GetKeyMetadata
//   POST {prefix}/kms/xks/v1/keys/{externalKeyId}/encrypt    Encrypt
//   POST {prefix}/kms/xks/v1/keys/{externalKeyId}/decrypt    Decrypt
//   POST {prefix}/kms/xks/v1/health                          GetHealthStatus
//
// Every request is authenticated first with AWS SigV4 (service kms-xks-proxy, the
// configured region, any of the configured access keys; sigv4.h), then its path and
// JSON body are checked, then the CallGate admits the configured identity (policy, the
// key's allowed operations, rate limit), then the domain runs (KeyManager raw AEAD; an
// XKS key is a kmsd tenant: externalKeyId = tenant id). Errors are the specification's
// JSON {"errorName", "errorMessage"} with its HTTP codes. Plaintext is never logged; each
// request's metadata (awsPrincipalArn, kmsOperation, kmsRequestId) is.
//
// Thread-safe: Handle runs on the listener's worker threads.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "kms/common/clock.h"
#include "kms/metrics/metrics.h"
#include "src/keys/key_manager.h"
#include "src/server/gate/call_gate.h"
#include "src/server/http/https_server.h"
#include "src/server/xks/sigv4.h"

namespace kms::server::xks {

// The specification's limits ("MUST support" sizes; larger inputs are refused with
// UnsupportedOperationException, as it allows).
inline constexpr size_t kMaxPlaintextBytes = 4300;
inline constexpr size_t kMaxCiphertextBytes = 4300;
inline constexpr size_t kMaxAadBytes = 8192;
inline constexpr size_t kMaxMetadataBytes = 20;
inline constexpr size_t kMaxArnBytes = 2048;
inline constexpr size_t kMaxKeyIdBytes = 128;

// The status of the external key manager for GetHealthStatus.
enum class EkmHealth { kActive, kDegraded, kUnavailable };

struct XksDoorOptions {
  std::string uri_prefix;  // "" or "/path" (no trailing '/'); the API lives at {prefix}/kms/xks/v1
  std::string identity;    // the identity the policy, rate limit and log see
  std::string node_id;     // ekmFleetDetails.id
  std::string version;     // in xksProxyModel
  // When set, GetHealthStatus also runs a raw encrypt + decrypt on this tenant (a test
  // key, not a KMS key's): the deep check the specification recommends.
  std::string health_key;
  // The backends' health (the scheduler's probes); nullptr: always active.
  std::function<EkmHealth()> backend_health;
};

// Audit: every request that reaches the gate (metadata, encrypt, decrypt) is reported
// through it (CallGate::Report) as a data-plane call: identity "<xks.identity> as
// <awsPrincipalArn>", operation "XksEncrypt:<kmsOperation>" (and XksDecrypt,
// XksGetKeyMetadata), request id = kmsRequestId when it is a plain id (else a generated
// one). The audit log aggregates data-plane calls per second, identity and operation,
// so the per-request line below keeps every kmsRequestId.
//
// One line per request for the log: operation, key, principal, KMS operation and
// request id, the access key that signed, result and time. Plaintext never.
struct XksRequestRecord {
  std::string operation;  // metadata | encrypt | decrypt | health | unknown
  std::string key_id;
  std::string aws_principal_arn;
  std::string kms_operation;
  std::string kms_request_id;
  std::string access_key_id;
  std::string error_name;  // empty on success
  std::string key_versions;  // "dek:N" of a successful encrypt or decrypt
  int http_status = 0;
  double latency_ms = 0;
};

class XksDoor {
 public:
  XksDoor(keys::KeyManager& keys, const CallGate& gate, SigV4Verifier verifier, const Clock& clock,
          XksDoorOptions options);

  // The handler for every path of the XKS listener.
  http::Response Handle(const http::Request& request) const;

  // What the listener answers when a request's handler misses the latency budget
  // (DependencyTimeoutException, 503) or the queue is full (ThrottlingException, 429).
  static http::Response DeadlineResponse();
  static http::Response BusyResponse();

  // Called with every request's record (the audit hook); by default one structured log
  // line. Set before serving.
  void set_recorder(std::function<void(const XksRequestRecord&)> recorder) {
    recorder_ = std::move(recorder);
  }
  // Counts requests (kmsd_xks_requests_total{operation, error}) and their time
  // (kmsd_xks_request_duration_seconds{operation}) in `registry`; set before serving.
  void set_metrics(metrics::Registry* registry) { metrics_ = registry; }

 private:
  struct Outcome;
  struct Audit;
  Outcome Serve(const http::Request& request, XksRequestRecord& record, Audit& audit) const;

  keys::KeyManager& keys_;
  const CallGate& gate_;
  const SigV4Verifier verifier_;
  const Clock& clock_;
  const XksDoorOptions options_;
  std::function<void(const XksRequestRecord&)> recorder_;
  metrics::Registry* metrics_ = nullptr;
};

// The spec's error body: {"errorName": name, "errorMessage": message} (message printable
// ASCII, under 512 characters).
http::Response XksError(int http_status, std::string_view error_name, std::string_view message);

}  // namespace kms::server::xks
