// ResilientHsm: the self-healing HSM layer. An Hsm over a Pkcs11Hsm that it re-opens on
// its own after the token fails (DESIGN §7, issue 9).
//
// Every failure of the inner Pkcs11Hsm is sorted by the CK_RV it carries (CkrOf):
//   retry on a new session  CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED: the pool
//                           has dropped the dead session; the call is retried once.
//   re-initialise           CKR_DEVICE_ERROR, CKR_DEVICE_REMOVED, CKR_TOKEN_NOT_PRESENT,
//                           CKR_TOKEN_NOT_RECOGNIZED, CKR_CRYPTOKI_NOT_INITIALIZED,
//                           CKR_USER_NOT_LOGGED_IN, CKR_OBJECT_HANDLE_INVALID,
//                           CKR_KEY_HANDLE_INVALID (every object handle kmsd uses is its
//                           own: the master key and its KEKs), and a retry on a new
//                           session that fails again: the recovery thread drains, then
//                           C_Finalize / C_Initialize (a new Pkcs11Hsm: log in, find the
//                           master key), unwraps every KEK that was loaded into fresh
//                           session objects, runs the known-answer self-test, and serves
//                           again. The failed call waits for that (at most
//                           `recovery_wait`) and is retried once.
//   permanent               CKR_PIN_INCORRECT, CKR_PIN_LOCKED, CKR_PIN_EXPIRED,
//                           CKR_PIN_LEN_RANGE (or PERMISSION_DENIED from the login): the
//                           HSM is down until the PIN file changes; the login is never
//                           retried with the same PIN (a token locks a PIN after a few
//                           wrong tries), so there is no retry storm. permanent_failure()
//                           says so (a metric and an alert read it).
//   anything else           returned as it is (a bad blob is DATA_LOSS, not an outage).
//
// Drain, in-process (not a worker process): a PKCS#11 call cannot be cancelled and
// finalizing under a call in flight is undefined (SoftHSM2 crashes). Re-initialisation
// therefore first stops admitting calls (they fail fast UNAVAILABLE "HSM is recovering"),
// then waits until no call is in flight. A call in flight longer than `stuck_after` marks
// the HSM hung (state kHung, new calls fail fast); the module is never finalized under it:
// recovery waits for it to return, however long that takes. A request never waits on a
// hung call beyond its own deadline: callers reach the HSM through the backend executor
// (src/keys/guarded_backends.h), whose threads are the ones that stay stuck.
//
// `serialize_calls` makes every call into the module take one lock, for modules that are
// not thread-safe.
//
// Thread-safe. Destroy only when no call is in flight.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "kms/hsm/hsm.h"
#include "src/common/sync.h"
#include "src/hsm/pkcs11_hsm.h"

namespace kms::hsm {

struct ResilienceOptions {
  bool serialize_calls = false;
  // A call in flight longer than this marks the HSM hung.
  std::chrono::milliseconds stuck_after{3000};
  // How long a call that hit a re-initialisation error waits for the HSM to come back
  // before it fails UNAVAILABLE.
  std::chrono::milliseconds recovery_wait{2000};
  // Back-off between failed re-initialisations: doubles from `retry_initial` up to
  // `retry_max`.
  std::chrono::milliseconds retry_initial{100};
  std::chrono::milliseconds retry_max{2000};
  // Run the known-answer self-test after every (re)open.
  bool self_test = true;
};

enum class HsmLinkState { kUp, kRecovering, kHung, kDown };
std::string_view HsmLinkStateName(HsmLinkState state);  // "up", "recovering", "hung", "down"

enum class RvClass { kNone, kRetrySession, kReinitialize, kPermanent };
// The class of a status the inner Pkcs11Hsm returned (see the table above).
RvClass ClassifyHsmStatus(const absl::Status& status);

class ResilientHsm final : public Hsm {
 public:
  // Opens the inner HSM (Pkcs11Hsm::Open in production).
  using Opener = std::function<absl::StatusOr<std::unique_ptr<Pkcs11Hsm>>()>;

  // Opens once (errors of the opener pass through: the caller retries start-up) and runs
  // the self-tests: the known-answer test and a wrap round trip (a KEK created, used,
  // unloaded, unwrapped again from its blob, and opening what it sealed). A wrong answer is
  // FAILED_PRECONDITION "HSM self-test failed: ...". `pin_file` is watched after a
  // permanent (PIN) failure: a new PIN file ends it.
  static absl::StatusOr<std::unique_ptr<ResilientHsm>> Open(Opener opener, std::string pin_file,
                                                            ResilienceOptions options);
  ~ResilientHsm() override;

  // Hsm
  MasterKeyKind master_key_kind() const override { return kind_; }
  absl::StatusOr<std::vector<uint8_t>> CreateKek(uint32_t kek_version) override;
  absl::Status LoadKek(uint32_t kek_version, std::span<const uint8_t> wrapped_kek) override;
  bool HasKek(uint32_t kek_version) const override;
  absl::Status UnloadKek(uint32_t kek_version) override;
  absl::StatusOr<std::vector<uint8_t>> Seal(uint32_t kek_version, std::span<const uint8_t> plaintext,
                                            std::span<const uint8_t> aad) override;
  absl::StatusOr<SecretBytes> Open(uint32_t kek_version, std::span<const uint8_t> sealed,
                                   std::span<const uint8_t> aad) override;
  // UNAVAILABLE naming the state while the HSM is not up; else a round trip.
  absl::Status Ping() override;
  std::string DescribeWrappedKek(std::span<const uint8_t> wrapped_kek) const override;

  HsmLinkState state() const;
  // Successful re-initialisations since Open.
  uint64_t reinitializations() const;
  // A PIN failure stopped the HSM until the PIN file changes.
  bool permanent_failure() const;
  // The inner HSM's counters (zero while it is being re-opened).
  HsmStats stats() const;
  // What the start-up wrap mechanism was (constant: the master key does not change kind).
  KekWrapMechanism kek_wrap_mechanism() const { return wrap_mechanism_; }
  bool created_master_key() const { return created_master_key_; }

 private:
  ResilientHsm(Opener opener, std::string pin_file, ResilienceOptions options);

  // Runs `f` on the inner HSM with the admission, accounting and classification above.
  template <typename F>
  auto Call(F&& f) -> decltype(f(std::declval<Pkcs11Hsm&>()));
  // Admits a call: the inner HSM and the id of the in-flight record, or UNAVAILABLE.
  absl::StatusOr<std::pair<Pkcs11Hsm*, uint64_t>> Admit(uint64_t* generation);
  void Leave(uint64_t id);
  // Asks the recovery thread to re-initialise (once per generation).
  void RequestRecovery(uint64_t generation, const absl::Status& cause);
  void MarkPermanent(const absl::Status& cause);
  // Waits until the HSM is up in a newer generation than `generation`, or `wait` passes.
  bool WaitRecovered(uint64_t generation, std::chrono::milliseconds wait);
  void RecoveryLoop();
  // One re-initialisation attempt; runs with nothing in flight.
  absl::Status Reopen();
  absl::Status SelfTest(Pkcs11Hsm& inner);
  absl::Status DownStatus() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Opener opener_;
  const std::string pin_file_;
  const ResilienceOptions options_;
  MasterKeyKind kind_ = MasterKeyKind::kRsa4096;
  KekWrapMechanism wrap_mechanism_ = KekWrapMechanism::kAesKeyWrapPad;
  bool created_master_key_ = false;

  Mutex serial_mu_;  // every module call, when serialize_calls

  mutable Mutex mu_;
  std::condition_variable cv_;  // state, in-flight and recovery changes
  std::unique_ptr<Pkcs11Hsm> inner_ ABSL_GUARDED_BY(mu_);
  HsmLinkState state_ ABSL_GUARDED_BY(mu_) = HsmLinkState::kUp;
  std::string down_reason_ ABSL_GUARDED_BY(mu_);
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 1;  // bumped by every re-initialisation
  bool recovery_requested_ ABSL_GUARDED_BY(mu_) = false;
  bool permanent_ ABSL_GUARDED_BY(mu_) = false;
  int64_t pin_file_mtime_ns_ ABSL_GUARDED_BY(mu_) = 0;  // at the permanent failure
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_call_id_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<uint64_t, std::chrono::steady_clock::time_point> in_flight_ ABSL_GUARDED_BY(mu_);
  // Every KEK loaded or created, with its blob: re-loaded after a re-initialisation.
  std::map<uint32_t, std::vector<uint8_t>> kek_blobs_ ABSL_GUARDED_BY(mu_);
  uint64_t reinitializations_ ABSL_GUARDED_BY(mu_) = 0;
  // Counters of the inner HSMs closed by re-initialisations, and the last reading: the
  // counters stay monotonic across re-opens (they feed Prometheus counters).
  HsmStats retired_stats_ ABSL_GUARDED_BY(mu_);
  HsmStats last_stats_ ABSL_GUARDED_BY(mu_);
  std::thread recovery_thread_;
};

}  // namespace kms::hsm
