// ResilientHsm (the self-healing HSM layer) against SoftHSM2 behind the fault-injecting
// PKCS#11 module (tests/fault_pkcs11): an HSM restart, device errors, dead sessions, a
// PIN the token refuses, a call stuck in the module, serialized calls.
#include "src/hsm/resilient_hsm.h"

#include <atomic>
#include <chrono>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/test_common/fault_control.h"
#include "tests/test_common/softhsm_token.h"

namespace kms::hsm {
namespace {

using ::kms::test::FaultControl;
using ::kms::test::SoftHsmToken;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

std::vector<uint8_t> Bytes(std::string_view s) { return {s.begin(), s.end()}; }

int64_t MsSince(steady_clock::time_point t) {
  return std::chrono::duration_cast<milliseconds>(steady_clock::now() - t).count();
}

// Waits up to `limit` for `pred`.
template <typename Pred>
bool Eventually(Pred pred, milliseconds limit = milliseconds(5000)) {
  const auto end = steady_clock::now() + limit;
  while (steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(milliseconds(10));
  }
  return pred();
}

class ResilientHsmTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto token = SoftHsmToken::Create("kmsd-faults-test");
    ASSERT_TRUE(token.ok()) << token.status();
    token_ = std::move(*token);
    faults_ = std::make_unique<FaultControl>(token_->dir().path() + "/faults");
  }
  static void TearDownTestSuite() {
    faults_.reset();
    token_.reset();
  }
  void SetUp() override { faults_->Set(""); }
  void TearDown() override { faults_->Set(""); }

  static Pkcs11Options Options() {
    Pkcs11Options o = token_->Options(MasterKeyKind::kAes256);
    o.module_path = FaultControl::ModulePath();
    o.max_sessions = 4;
    return o;
  }

  std::unique_ptr<ResilientHsm> OpenOrDie(ResilienceOptions r = {}) {
    const Pkcs11Options o = Options();
    auto hsm = ResilientHsm::Open([o] { return Pkcs11Hsm::Open(o); }, o.pin_file, r);
    EXPECT_TRUE(hsm.ok()) << hsm.status();
    return hsm.ok() ? std::move(*hsm) : nullptr;
  }

  static inline std::unique_ptr<SoftHsmToken> token_;
  static inline std::unique_ptr<FaultControl> faults_;
};

TEST_F(ResilientHsmTest, AnHsmRestartIsRecoveredWithoutARestartOfKmsd) {
  auto hsm = OpenOrDie();
  ASSERT_NE(hsm, nullptr);
  ASSERT_TRUE(hsm->CreateKek(1).ok());
  auto sealed = hsm->Seal(1, Bytes("dek"), Bytes("aad"));
  ASSERT_TRUE(sealed.ok()) << sealed.status();
  const long finalizes = faults_->Count("C_Finalize");

  faults_->Restart();  // every session closed: the KEK session objects and the login go

  // The next call sees a dead session, then a dead KEK handle: the layer re-initializes
  // (C_Finalize, C_Initialize, login, master key, KEK version 1 unwrapped again) and the
  // call goes through.
  auto again = hsm->Seal(1, Bytes("dek2"), Bytes("aad"));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(hsm->reinitializations(), 1u);
  EXPECT_EQ(hsm->state(), HsmLinkState::kUp);
  EXPECT_EQ(faults_->Count("C_Finalize"), finalizes + 1);
  // What was sealed before the restart opens under the re-loaded KEK.
  auto opened = hsm->Open(1, *sealed, Bytes("aad"));
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(opened->data()), opened->size()), "dek");
  EXPECT_TRUE(hsm->Ping().ok());
}

TEST_F(ResilientHsmTest, DeviceErrorReinitializesAndTheCallIsRetried) {
  for (const char* rv : {"CKR_DEVICE_ERROR", "CKR_DEVICE_REMOVED", "CKR_TOKEN_NOT_PRESENT",
                         "CKR_USER_NOT_LOGGED_IN", "CKR_CRYPTOKI_NOT_INITIALIZED"}) {
    SCOPED_TRACE(rv);
    auto hsm = OpenOrDie();
    ASSERT_NE(hsm, nullptr);
    ASSERT_TRUE(hsm->CreateKek(1).ok());
    faults_->Set(std::string("fail C_Encrypt ") + rv + " 1\n");
    auto sealed = hsm->Seal(1, Bytes("x"), Bytes("a"));
    EXPECT_TRUE(sealed.ok()) << sealed.status();
    EXPECT_EQ(hsm->reinitializations(), 1u);
    faults_->Set("");
  }
}

TEST_F(ResilientHsmTest, ADeadSessionIsRetriedOnANewSessionWithoutReinitializing) {
  auto hsm = OpenOrDie();
  ASSERT_NE(hsm, nullptr);
  ASSERT_TRUE(hsm->CreateKek(1).ok());
  faults_->Set("fail C_Encrypt CKR_SESSION_HANDLE_INVALID 1\n");
  auto sealed = hsm->Seal(1, Bytes("x"), Bytes("a"));
  EXPECT_TRUE(sealed.ok()) << sealed.status();
  EXPECT_EQ(hsm->reinitializations(), 0u);
}

TEST_F(ResilientHsmTest, AnHsmThatStaysDownFailsFastAndComesBackByItself) {
  auto hsm = OpenOrDie(ResilienceOptions{.recovery_wait = milliseconds(200)});
  ASSERT_NE(hsm, nullptr);
  ASSERT_TRUE(hsm->CreateKek(1).ok());
  // Down: every call fails, C_Initialize too (the re-initialisation retries with backoff).
  faults_->Set("fail * CKR_DEVICE_REMOVED\n");
  EXPECT_TRUE(absl::IsUnavailable(hsm->Seal(1, Bytes("x"), Bytes("a")).status()));
  ASSERT_TRUE(Eventually([&] { return hsm->state() == HsmLinkState::kDown; }));
  const auto started = steady_clock::now();
  absl::Status fast = hsm->Ping();
  EXPECT_TRUE(absl::IsUnavailable(fast)) << fast;
  EXPECT_LT(MsSince(started), 100);
  // Back: recovered by the background re-initialisation, KEK re-loaded.
  faults_->Set("");
  ASSERT_TRUE(Eventually([&] { return hsm->state() == HsmLinkState::kUp; }));
  EXPECT_TRUE(hsm->Seal(1, Bytes("x"), Bytes("a")).ok());
  EXPECT_TRUE(hsm->HasKek(1));
}

TEST_F(ResilientHsmTest, APinTheTokenRefusesIsNotRetriedUntilThePinFileChanges) {
  auto hsm = OpenOrDie();
  ASSERT_NE(hsm, nullptr);
  ASSERT_TRUE(hsm->CreateKek(1).ok());
  faults_->Restart("fail C_Login CKR_PIN_INCORRECT\n");
  EXPECT_TRUE(absl::IsUnavailable(hsm->Seal(1, Bytes("x"), Bytes("a")).status()));
  ASSERT_TRUE(Eventually([&] { return hsm->permanent_failure(); }));
  EXPECT_EQ(hsm->state(), HsmLinkState::kDown);
  const long logins = faults_->Count("C_Login");
  std::this_thread::sleep_for(milliseconds(1000));
  // No login storm: a wrong PIN is never tried again (the token would lock it).
  EXPECT_EQ(faults_->Count("C_Login"), logins);
  EXPECT_TRUE(absl::IsUnavailable(hsm->Ping()));
  // The operator fixes the PIN file: one new login, and the HSM is back.
  faults_->Set("");
  std::this_thread::sleep_for(milliseconds(20));  // a new mtime
  {
    std::ifstream in(token_->pin_file());
    std::string pin((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::ofstream out(token_->pin_file(), std::ios::trunc);
    out << pin;
  }
  ASSERT_TRUE(Eventually([&] { return hsm->state() == HsmLinkState::kUp; }));
  EXPECT_FALSE(hsm->permanent_failure());
  EXPECT_TRUE(hsm->Seal(1, Bytes("x"), Bytes("a")).ok());
}

TEST_F(ResilientHsmTest, AStuckCallMarksTheHsmHungAndTheModuleIsNeverFinalizedUnderIt) {
  auto hsm = OpenOrDie(ResilienceOptions{.stuck_after = milliseconds(300)});
  ASSERT_NE(hsm, nullptr);
  ASSERT_TRUE(hsm->CreateKek(1).ok());
  const long finalizes = faults_->Count("C_Finalize");
  faults_->Set("hang C_Encrypt\n");
  std::atomic<bool> done{false};
  std::thread stuck([&] {
    (void)hsm->Seal(1, Bytes("x"), Bytes("a"));
    done = true;
  });
  ASSERT_TRUE(Eventually([&] { return hsm->state() == HsmLinkState::kHung; }));
  // New calls fail fast while one is stuck; nothing finalizes the module under it.
  const auto started = steady_clock::now();
  EXPECT_TRUE(absl::IsUnavailable(hsm->Ping()));
  EXPECT_LT(MsSince(started), 100);
  std::this_thread::sleep_for(milliseconds(300));
  EXPECT_EQ(faults_->Count("C_Finalize"), finalizes);
  EXPECT_FALSE(done.load());
  // The module answers again: the stuck call returns, then the layer starts afresh.
  faults_->Set("");
  stuck.join();
  ASSERT_TRUE(Eventually([&] { return hsm->state() == HsmLinkState::kUp && hsm->reinitializations() == 1; }));
  EXPECT_EQ(faults_->Count("C_Finalize"), finalizes + 1);
  EXPECT_TRUE(hsm->Seal(1, Bytes("x"), Bytes("a")).ok());
}

TEST_F(ResilientHsmTest, SerializeCallsLetsOneCallIntoTheModuleAtATime) {
  auto run = [&](bool serialize) {
    auto hsm = OpenOrDie(ResilienceOptions{.serialize_calls = serialize});
    EXPECT_TRUE(hsm->CreateKek(1).ok());
    faults_->Set("delay C_Encrypt 150\n");
    const auto started = steady_clock::now();
    std::vector<std::thread> threads;
    for (int i = 0; i < 4; ++i) {
      threads.emplace_back([&] { EXPECT_TRUE(hsm->Seal(1, Bytes("x"), Bytes("a")).ok()); });
    }
    for (auto& t : threads) t.join();
    faults_->Set("");
    return MsSince(started);
  };
  EXPECT_GE(run(true), 4 * 150 - 20);  // one after the other
  EXPECT_LT(run(false), 4 * 150 - 20);  // side by side (4 sessions)
}

TEST_F(ResilientHsmTest, TheStartUpSelfTestRuns) {
  // C_Encrypt failing for good: the known-answer test cannot complete, so Open fails
  // with the module's error (a down HSM), not a wrong answer.
  faults_->Set("fail C_Encrypt CKR_DEVICE_ERROR\n");
  const Pkcs11Options o = Options();
  auto hsm = ResilientHsm::Open([o] { return Pkcs11Hsm::Open(o); }, o.pin_file, {});
  ASSERT_FALSE(hsm.ok());
  EXPECT_TRUE(absl::IsUnavailable(hsm.status())) << hsm.status();
  EXPECT_NE(hsm.status().message().find("self-test"), std::string_view::npos) << hsm.status();
}

}  // namespace
}  // namespace kms::hsm
