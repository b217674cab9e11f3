#include "src/hsm/resilient_hsm.h"

#include <sys/stat.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"
#include "src/common/strings.h"
#include "src/hsm/pkcs11_module.h"

namespace kms::hsm {
namespace {

// A KEK version no store ever hands out (they count up from 1): used by the start-up
// wrap round trip only, and unloaded at once.
constexpr uint32_t kSelfTestKekVersion = 0xFFFFFFFFu;

const absl::Status& StatusOf(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& StatusOf(const absl::StatusOr<T>& s) {
  return s.status();
}

// a + b for the counters; the session gauges are b's.
HsmStats AddStats(const HsmStats& a, const HsmStats& b) {
  HsmStats s = b;
  s.seals += a.seals;
  s.opens += a.opens;
  s.kek_loads += a.kek_loads;
  s.errors += a.errors;
  s.pings += a.pings;
  s.kek_creates += a.kek_creates;
  for (size_t i = 0; i < kHsmOperationCount; ++i) {
    s.errors_by_operation[i] += a.errors_by_operation[i];
  }
  return s;
}

int64_t FileMtimeNs(const std::string& path) {
  struct stat st {};
  if (path.empty() || stat(path.c_str(), &st) != 0) return 0;
  return int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec;
}

}  // namespace

std::string_view HsmLinkStateName(HsmLinkState state) {
  switch (state) {
    case HsmLinkState::kUp:
      return "up";
    case HsmLinkState::kRecovering:
      return "recovering";
    case HsmLinkState::kHung:
      return "hung";
    case HsmLinkState::kDown:
      return "down";
  }
  return "unknown";
}

RvClass ClassifyHsmStatus(const absl::Status& status) {
  if (status.ok()) return RvClass::kNone;
  std::optional<CK_RV> rv = CkrOf(status);
  if (rv.has_value()) {
    switch (*rv) {
      case CKR_SESSION_HANDLE_INVALID:
      case CKR_SESSION_CLOSED:
        return RvClass::kRetrySession;
      case CKR_DEVICE_ERROR:
      case CKR_DEVICE_REMOVED:
      case CKR_TOKEN_NOT_PRESENT:
      case CKR_TOKEN_NOT_RECOGNIZED:
      case CKR_CRYPTOKI_NOT_INITIALIZED:
      case CKR_USER_NOT_LOGGED_IN:
      case CKR_OBJECT_HANDLE_INVALID:
      case CKR_KEY_HANDLE_INVALID:
        return RvClass::kReinitialize;
      case CKR_PIN_INCORRECT:
      case CKR_PIN_LOCKED:
      case CKR_PIN_EXPIRED:
      case CKR_PIN_LEN_RANGE:
        return RvClass::kPermanent;
      default:
        return RvClass::kNone;
    }
  }
  if (absl::IsPermissionDenied(status)) return RvClass::kPermanent;
  return RvClass::kNone;
}

ResilientHsm::ResilientHsm(Opener opener, std::string pin_file, ResilienceOptions options)
    : opener_(std::move(opener)), pin_file_(std::move(pin_file)), options_(options) {}

absl::StatusOr<std::unique_ptr<ResilientHsm>> ResilientHsm::Open(Opener opener,
                                                                 std::string pin_file,
                                                                 ResilienceOptions options) {
  std::unique_ptr<ResilientHsm> hsm(new ResilientHsm(std::move(opener), std::move(pin_file), options));
  KMS_ASSIGN_OR_RETURN(std::unique_ptr<Pkcs11Hsm> inner, hsm->opener_());
  hsm->kind_ = inner->master_key_kind();
  hsm->wrap_mechanism_ = inner->kek_wrap_mechanism();
  hsm->created_master_key_ = inner->created_master_key();
  if (options.self_test) KMS_RETURN_IF_ERROR(hsm->SelfTest(*inner));
  {
    MutexLock lock(&hsm->mu_);
    hsm->inner_ = std::move(inner);
  }
  hsm->recovery_thread_ = std::thread([h = hsm.get()] { h->RecoveryLoop(); });
  return hsm;
}

ResilientHsm::~ResilientHsm() {
  {
    MutexLock lock(&mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (recovery_thread_.joinable()) recovery_thread_.join();
}

absl::Status ResilientHsm::SelfTest(Pkcs11Hsm& inner) {
  KMS_RETURN_IF_ERROR(inner.KnownAnswerTest());
  // The wrap mechanism: a KEK wrapped under the master key unwraps into the same key.
  static constexpr uint8_t kPlain[] = "kmsd HSM self-test";
  static constexpr uint8_t kAad[] = "kmsd:self-test:v1";
  const std::span<const uint8_t> plain(kPlain, sizeof(kPlain) - 1);
  const std::span<const uint8_t> aad(kAad, sizeof(kAad) - 1);
  (void)inner.UnloadKek(kSelfTestKekVersion);
  KMS_ASSIGN_OR_RETURN(std::vector<uint8_t> blob, inner.CreateKek(kSelfTestKekVersion));
  absl::StatusOr<std::vector<uint8_t>> sealed = inner.Seal(kSelfTestKekVersion, plain, aad);
  KMS_RETURN_IF_ERROR(inner.UnloadKek(kSelfTestKekVersion));
  if (!sealed.ok()) return sealed.status();
  KMS_RETURN_IF_ERROR(inner.LoadKek(kSelfTestKekVersion, blob));
  absl::StatusOr<SecretBytes> opened = inner.Open(kSelfTestKekVersion, *sealed, aad);
  KMS_RETURN_IF_ERROR(inner.UnloadKek(kSelfTestKekVersion));
  if (absl::IsDataLoss(opened.status())) {
    return absl::FailedPreconditionError(absl::StrCat(
        "HSM self-test failed: a KEK wrapped with ", Av(KekWrapMechanismName(inner.kek_wrap_mechanism())),
        " does not unwrap into the same key"));
  }
  if (!opened.ok()) return opened.status();
  if (opened->size() != plain.size() ||
      !std::equal(plain.begin(), plain.end(), opened->data())) {
    return absl::FailedPreconditionError("HSM self-test failed: AES-GCM round trip mismatch");
  }
  return absl::OkStatus();
}

absl::Status ResilientHsm::DownStatus() const {
  const absl::string_view state = Av(HsmLinkStateName(state_));
  return absl::UnavailableError(
      absl::StrCat("HSM is ", state, down_reason_.empty() ? "" : ": ", down_reason_));
}

absl::StatusOr<std::pair<Pkcs11Hsm*, uint64_t>> ResilientHsm::Admit(uint64_t* generation) {
  MutexLock lock(&mu_);
  if (state_ != HsmLinkState::kUp || inner_ == nullptr) return DownStatus();
  const uint64_t id = next_call_id_++;
  in_flight_.emplace(id, std::chrono::steady_clock::now());
  *generation = generation_;
  return std::make_pair(inner_.get(), id);
}

void ResilientHsm::Leave(uint64_t id) {
  {
    MutexLock lock(&mu_);
    in_flight_.erase(id);
  }
  cv_.notify_all();
}

void ResilientHsm::RequestRecovery(uint64_t generation, const absl::Status& cause) {
  {
    MutexLock lock(&mu_);
    if (generation != generation_ || permanent_ || state_ == HsmLinkState::kRecovering) return;
    if (!recovery_requested_) {
      spdlog::warn("HSM: {}; re-initializing", std::string(cause.message()));
    }
    recovery_requested_ = true;
    if (state_ == HsmLinkState::kUp) {
      state_ = HsmLinkState::kRecovering;
      down_reason_ = absl::StrCat("re-initializing after ", cause.message());
    }
  }
  cv_.notify_all();
}

void ResilientHsm::MarkPermanent(const absl::Status& cause) {
  {
    MutexLock lock(&mu_);
    if (!permanent_) {
      spdlog::error(
          "HSM: {}; the HSM stays down (no login is retried with this PIN) until the PIN file "
          "changes",
          std::string(cause.message()));
    }
    permanent_ = true;
    pin_file_mtime_ns_ = FileMtimeNs(pin_file_);
    state_ = HsmLinkState::kDown;
    down_reason_ = absl::StrCat("the token refuses the PIN (", cause.message(),
                                "); fix the PIN file");
  }
  cv_.notify_all();
}

bool ResilientHsm::WaitRecovered(uint64_t generation, std::chrono::milliseconds wait) {
  MutexLock lock(&mu_);
  return mu_.AwaitUntil(cv_, std::chrono::steady_clock::now() + wait,
                        [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
                          return (state_ == HsmLinkState::kUp && generation_ > generation) ||
                                 permanent_ || stopping_;
                        }) &&
         state_ == HsmLinkState::kUp;
}

template <typename F>
auto ResilientHsm::Call(F&& f) -> decltype(f(std::declval<Pkcs11Hsm&>())) {
  using R = decltype(f(std::declval<Pkcs11Hsm&>()));
  bool session_retried = false;
  bool recovered = false;
  for (;;) {
    uint64_t generation = 0;
    absl::StatusOr<std::pair<Pkcs11Hsm*, uint64_t>> admitted = Admit(&generation);
    if (!admitted.ok()) return R(admitted.status());
    R result = [&]() -> R {
      if (options_.serialize_calls) {
        MutexLock serial(&serial_mu_);
        return f(*admitted->first);
      }
      return f(*admitted->first);
    }();
    Leave(admitted->second);
    if (result.ok()) return result;
    const absl::Status status = StatusOf(result);
    RvClass cls = ClassifyHsmStatus(status);
    if (cls == RvClass::kRetrySession && !session_retried) {
      session_retried = true;  // the lease dropped the dead session: a new one is opened
      continue;
    }
    switch (cls) {
      case RvClass::kNone:
        return result;
      case RvClass::kPermanent:
        MarkPermanent(status);
        return R(absl::UnavailableError(absl::StrCat("HSM is down: ", status.message())));
      case RvClass::kRetrySession:
      case RvClass::kReinitialize:
        RequestRecovery(generation, status);
        if (recovered || !WaitRecovered(generation, options_.recovery_wait)) {
          return R(absl::UnavailableError(
              absl::StrCat("HSM is recovering (", status.message(), ")")));
        }
        recovered = true;
        continue;
    }
  }
}

absl::Status ResilientHsm::Reopen() {
  // Nothing is in flight and nothing is admitted: finalizing the module is safe.
  {
    std::unique_ptr<Pkcs11Hsm> old;
    {
      MutexLock lock(&mu_);
      old = std::move(inner_);
    }
    if (old != nullptr) {
      HsmStats closed = old->stats();
      MutexLock lock(&mu_);
      retired_stats_ = AddStats(retired_stats_, closed);
      retired_stats_.sessions_in_use = 0;
    }
    old.reset();  // closes the sessions; the last module reference calls C_Finalize
  }
  KMS_ASSIGN_OR_RETURN(std::unique_ptr<Pkcs11Hsm> inner, opener_());
  if (options_.self_test) KMS_RETURN_IF_ERROR(SelfTest(*inner));
  std::map<uint32_t, std::vector<uint8_t>> blobs;
  {
    MutexLock lock(&mu_);
    blobs = kek_blobs_;
  }
  for (const auto& [version, blob] : blobs) {
    absl::Status loaded = inner->LoadKek(version, blob);
    if (!loaded.ok()) {
      return absl::Status(loaded.code(), absl::StrCat("re-loading KEK version ", version, ": ",
                                                      loaded.message()));
    }
  }
  MutexLock lock(&mu_);
  inner_ = std::move(inner);
  return absl::OkStatus();
}

void ResilientHsm::RecoveryLoop() {
  using Clock = std::chrono::steady_clock;
  std::chrono::milliseconds backoff = options_.retry_initial;
  Clock::time_point next_attempt = Clock::now();
  MutexLock lock(&mu_);
  while (!stopping_) {
    const Clock::time_point now = Clock::now();
    // A call stuck in the module: stop admitting calls, never finalize under it.
    Clock::time_point oldest = now;
    for (const auto& [id, started] : in_flight_) oldest = std::min(oldest, started);
    const bool stuck = !in_flight_.empty() && now - oldest >= options_.stuck_after;
    if (stuck && state_ != HsmLinkState::kHung && !permanent_) {
      spdlog::error("HSM: a call has been inside the PKCS#11 module for {} ms; HSM marked hung",
                    std::chrono::duration_cast<std::chrono::milliseconds>(now - oldest).count());
      state_ = HsmLinkState::kHung;
      down_reason_ = absl::StrCat("a call has been inside the PKCS#11 module for more than ",
                                  options_.stuck_after.count(), " ms");
      recovery_requested_ = true;  // once it returns, start afresh
      cv_.notify_all();
    }
    if (permanent_ && !pin_file_.empty() && FileMtimeNs(pin_file_) != pin_file_mtime_ns_) {
      spdlog::info("HSM: the PIN file changed; trying to log in again");
      permanent_ = false;
      recovery_requested_ = true;
      next_attempt = now;
    }
    if (recovery_requested_ && !permanent_ && in_flight_.empty() && now >= next_attempt) {
      if (state_ == HsmLinkState::kUp) state_ = HsmLinkState::kRecovering;
      lock.Unlock();
      const Clock::time_point started = Clock::now();
      absl::Status reopened = Reopen();
      lock.Lock();
      if (reopened.ok()) {
        ++reinitializations_;
        ++generation_;
        recovery_requested_ = false;
        state_ = HsmLinkState::kUp;
        down_reason_.clear();
        backoff = options_.retry_initial;
        spdlog::info("HSM re-initialized in {} ms ({} KEK versions re-loaded)",
                     std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started)
                         .count(),
                     kek_blobs_.size());
      } else if (ClassifyHsmStatus(reopened) == RvClass::kPermanent) {
        lock.Unlock();
        MarkPermanent(reopened);
        lock.Lock();
      } else {
        state_ = HsmLinkState::kDown;
        down_reason_ = std::string(reopened.message());
        spdlog::warn("HSM re-initialization failed: {}; next try in {} ms",
                     std::string(reopened.message()), backoff.count());
        next_attempt = Clock::now() + backoff;
        backoff = std::min(backoff * 2, options_.retry_max);
      }
      cv_.notify_all();
      continue;
    }
    // Poll often enough to see a stuck call, a changed PIN file and the next attempt.
    mu_.WaitUntil(cv_, Clock::now() + std::chrono::milliseconds(50));
  }
}

absl::StatusOr<std::vector<uint8_t>> ResilientHsm::CreateKek(uint32_t kek_version) {
  absl::StatusOr<std::vector<uint8_t>> blob =
      Call([&](Pkcs11Hsm& h) { return h.CreateKek(kek_version); });
  if (blob.ok()) {
    MutexLock lock(&mu_);
    kek_blobs_[kek_version] = *blob;
  }
  return blob;
}

absl::Status ResilientHsm::LoadKek(uint32_t kek_version, std::span<const uint8_t> wrapped_kek) {
  absl::Status loaded = Call([&](Pkcs11Hsm& h) { return h.LoadKek(kek_version, wrapped_kek); });
  if (loaded.ok()) {
    MutexLock lock(&mu_);
    kek_blobs_.try_emplace(kek_version, wrapped_kek.begin(), wrapped_kek.end());
  }
  return loaded;
}

bool ResilientHsm::HasKek(uint32_t kek_version) const {
  // What the ring loaded: it stays loaded across re-initialisations.
  MutexLock lock(&mu_);
  return kek_blobs_.contains(kek_version);
}

absl::Status ResilientHsm::UnloadKek(uint32_t kek_version) {
  {
    MutexLock lock(&mu_);
    kek_blobs_.erase(kek_version);
  }
  absl::Status unloaded = Call([&](Pkcs11Hsm& h) { return h.UnloadKek(kek_version); });
  // While the HSM is down the session object is gone or goes with the next re-open.
  if (absl::IsUnavailable(unloaded)) return absl::OkStatus();
  return unloaded;
}

absl::StatusOr<std::vector<uint8_t>> ResilientHsm::Seal(uint32_t kek_version,
                                                        std::span<const uint8_t> plaintext,
                                                        std::span<const uint8_t> aad) {
  return Call([&](Pkcs11Hsm& h) { return h.Seal(kek_version, plaintext, aad); });
}

absl::StatusOr<SecretBytes> ResilientHsm::Open(uint32_t kek_version,
                                               std::span<const uint8_t> sealed,
                                               std::span<const uint8_t> aad) {
  return Call([&](Pkcs11Hsm& h) { return h.Open(kek_version, sealed, aad); });
}

absl::Status ResilientHsm::Ping() {
  return Call([&](Pkcs11Hsm& h) { return h.Ping(); });
}

std::string ResilientHsm::DescribeWrappedKek(std::span<const uint8_t> wrapped_kek) const {
  return std::string(WrappedKekMechanismName(wrapped_kek).value_or("unknown"));
}

HsmLinkState ResilientHsm::state() const {
  MutexLock lock(&mu_);
  return state_;
}

uint64_t ResilientHsm::reinitializations() const {
  MutexLock lock(&mu_);
  return reinitializations_;
}

bool ResilientHsm::permanent_failure() const {
  MutexLock lock(&mu_);
  return permanent_;
}

HsmStats ResilientHsm::stats() const {
  // Read through an admitted call so the inner HSM is not destroyed meanwhile.
  auto* self = const_cast<ResilientHsm*>(this);
  uint64_t generation = 0;
  absl::StatusOr<std::pair<Pkcs11Hsm*, uint64_t>> admitted = self->Admit(&generation);
  MutexLock lock(&self->mu_);
  if (admitted.ok()) {
    lock.Unlock();
    HsmStats current = admitted->first->stats();
    self->Leave(admitted->second);
    lock.Lock();
    self->last_stats_ = AddStats(self->retired_stats_, current);
  }  // else: the last reading (the inner HSM is being re-opened)
  return self->last_stats_;
}

}  // namespace kms::hsm
