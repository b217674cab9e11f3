// Pkcs11Hsm against a real, fresh SoftHSM2 token (one per test suite: RSA-4096 key
// generation costs seconds, so the master keys are shared by the tests of a suite).
// What every Hsm must do (KEK blobs, Seal/Open, the errors of the seam) is the Hsm
// contract (hsm_contract.h), run on SoftHSM2 by softhsm_contract_test.cc; this file
// holds what only Pkcs11Hsm has: master keys on the token, wrap mechanisms, key
// attributes, statistics, the session pool, and opening a token the wrong way.
#include "src/hsm/pkcs11_hsm.h"

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kms/hsm/hsm.h"
#include "tests/test_common/hsm_workload.h"
#include "tests/test_common/softhsm_token.h"

namespace kms::hsm {
namespace {

using ::kms::test::SoftHsmToken;

std::vector<uint8_t> Bytes(std::string_view s) { return {s.begin(), s.end()}; }

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

std::string ToString(const SecretBytes& b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

class Pkcs11HsmTest : public ::testing::TestWithParam<MasterKeyKind> {
 protected:
  static void SetUpTestSuite() {
    auto token = SoftHsmToken::Create("kmsd-hsm-test");
    ASSERT_TRUE(token.ok()) << token.status();
    token_ = std::move(*token);
  }
  static void TearDownTestSuite() { token_.reset(); }

  // Both kinds share the token, each under its own master key label.
  Pkcs11Options Options() const {
    Pkcs11Options o = token_->Options(GetParam());
    o.master_key_label = "kmsd-master-" + std::string(MasterKeyKindName(GetParam()));
    return o;
  }

  std::unique_ptr<Pkcs11Hsm> OpenOrDie(const Pkcs11Options& o) {
    auto hsm = Pkcs11Hsm::Open(o);
    EXPECT_TRUE(hsm.ok()) << hsm.status();
    return hsm.ok() ? std::move(*hsm) : nullptr;
  }
  std::unique_ptr<Pkcs11Hsm> OpenOrDie() { return OpenOrDie(Options()); }

  static inline std::unique_ptr<SoftHsmToken> token_;
};

TEST_P(Pkcs11HsmTest, MasterKeyIsCreatedOnFirstOpenAndFoundOnReopen) {
  Pkcs11Options o = Options();
  o.master_key_label = "created-once-" + std::string(MasterKeyKindName(GetParam()));
  {
    auto first = OpenOrDie(o);
    ASSERT_NE(first, nullptr);
    EXPECT_TRUE(first->created_master_key());
    EXPECT_EQ(first->master_key_kind(), GetParam());
  }
  o.create_master_key = false;  // must be found, not created
  auto second = OpenOrDie(o);
  ASSERT_NE(second, nullptr);
  EXPECT_FALSE(second->created_master_key());
  // And it is the same key: a KEK wrapped by one opens in the other.
  auto third = OpenOrDie(o);
  ASSERT_NE(third, nullptr);
  auto blob = second->CreateKek(1);
  ASSERT_TRUE(blob.ok()) << blob.status();
  EXPECT_TRUE(third->LoadKek(1, *blob).ok());
}

TEST_P(Pkcs11HsmTest, MissingMasterKeyWithoutCreateIsNotFound) {
  Pkcs11Options o = Options();
  o.master_key_label = "no-such-master-key";
  o.create_master_key = false;
  auto hsm = Pkcs11Hsm::Open(o);
  ASSERT_FALSE(hsm.ok());
  EXPECT_EQ(hsm.status().code(), absl::StatusCode::kNotFound) << hsm.status();
  EXPECT_NE(Msg(hsm.status()).find("no-such-master-key"), std::string::npos);
}

TEST_P(Pkcs11HsmTest, MasterKeyOfTheOtherKindFailsPrecondition) {
  ASSERT_NE(OpenOrDie(), nullptr);  // make sure this kind's master key exists
  Pkcs11Options o = Options();
  o.master_key_kind =
      GetParam() == MasterKeyKind::kRsa4096 ? MasterKeyKind::kAes256 : MasterKeyKind::kRsa4096;
  auto hsm = Pkcs11Hsm::Open(o);
  ASSERT_FALSE(hsm.ok());
  EXPECT_EQ(hsm.status().code(), absl::StatusCode::kFailedPrecondition) << hsm.status();
  EXPECT_NE(Msg(hsm.status()).find(std::string(MasterKeyKindName(GetParam()))), std::string::npos)
      << hsm.status();
  EXPECT_NE(Msg(hsm.status()).find(std::string(MasterKeyKindName(o.master_key_kind))),
            std::string::npos)
      << hsm.status();
}

TEST_P(Pkcs11HsmTest, CreateKekBlobRecordsTheWrappingMechanism) {
  auto hsm = OpenOrDie();
  ASSERT_NE(hsm, nullptr);
  auto blob = hsm->CreateKek(7);
  ASSERT_TRUE(blob.ok()) << blob.status();
  ASSERT_GT(blob->size(), 2u);
  EXPECT_EQ((*blob)[0], 0x01);
  EXPECT_EQ((*blob)[1], static_cast<uint8_t>(hsm->kek_wrap_mechanism()));
  auto name = WrappedKekMechanismName(*blob);
  ASSERT_TRUE(name.ok()) << name.status();
  if (GetParam() == MasterKeyKind::kRsa4096) {
    // SoftHSM2 2.6 refuses SHA-256 inside OAEP, so the probe falls back to SHA-1.
    EXPECT_EQ(*name, "rsa-oaep-sha1");
    EXPECT_EQ(blob->size(), 2u + 512u);
  } else {
    EXPECT_EQ(*name, "aes-key-wrap-pad");
    EXPECT_EQ(blob->size(), 2u + 40u);
  }
  EXPECT_EQ(*name, KekWrapMechanismName(hsm->kek_wrap_mechanism()));
  // The seam's view of the same blob, and of one that does not parse.
  EXPECT_EQ(hsm->DescribeWrappedKek(*blob), *name);
  EXPECT_EQ(hsm->DescribeWrappedKek(std::vector<uint8_t>{1, 4, 0xaa}), "unknown");
  EXPECT_TRUE(hsm->HasKek(7));
  EXPECT_FALSE(hsm->HasKek(8));
}

TEST_P(Pkcs11HsmTest, ErrorsNameTheFailingStepAndAreCounted) {
  auto hsm = OpenOrDie();
  ASSERT_NE(hsm, nullptr);
  ASSERT_TRUE(hsm->CreateKek(1).ok());
  const auto aad = Bytes("tenant=a");
  auto sealed = hsm->Seal(1, Bytes("secret"), aad);
  ASSERT_TRUE(sealed.ok());
  auto opened = hsm->Open(1, *sealed, Bytes("tenant=b"));
  ASSERT_FALSE(opened.ok());
  EXPECT_NE(Msg(opened.status()).find("unwrap failed"), std::string::npos) << opened.status();
  std::vector<uint8_t> too_short(sealed->begin(), sealed->begin() + 27);
  EXPECT_FALSE(hsm->Open(1, too_short, aad).ok());
  EXPECT_TRUE(hsm->Open(1, *sealed, aad).ok());
  HsmStats s = hsm->stats();
  EXPECT_EQ(s.errors, 2u);
  EXPECT_EQ(s.errors_by_operation[static_cast<size_t>(HsmOperation::kOpen)], 2u);
  EXPECT_EQ(s.errors_by_operation[static_cast<size_t>(HsmOperation::kSeal)], 0u);
  EXPECT_EQ(s.seals, 1u);
  EXPECT_EQ(s.opens, 1u);
  EXPECT_EQ(s.sessions_in_use, 0);  // every lease returned
  EXPECT_GE(s.sessions_max, 1);
}

TEST_P(Pkcs11HsmTest, ALoadedVersionIsNotUnwrappedAgain) {
  auto a = OpenOrDie();
  auto b = OpenOrDie();
  ASSERT_TRUE(a != nullptr && b != nullptr);
  auto blob = a->CreateKek(1);
  ASSERT_TRUE(blob.ok());
  EXPECT_EQ(a->stats().kek_loads, 1u);  // CreateKek unwraps its own blob once
  EXPECT_TRUE(a->LoadKek(1, *blob).ok());
  EXPECT_EQ(a->stats().kek_loads, 1u);
  ASSERT_TRUE(b->LoadKek(1, *blob).ok());
  ASSERT_TRUE(b->LoadKek(1, *blob).ok());
  EXPECT_EQ(b->stats().kek_loads, 1u);
}

// The blob header names a mechanism of the other kind of master key.
TEST_P(Pkcs11HsmTest, LoadKekRefusesABlobWrappedForTheOtherKindOfMasterKey) {
  auto hsm = OpenOrDie();
  ASSERT_NE(hsm, nullptr);
  auto blob = hsm->CreateKek(1);
  ASSERT_TRUE(blob.ok());
  std::vector<uint8_t> other_kind = *blob;
  other_kind[1] = GetParam() == MasterKeyKind::kRsa4096 ? 3 : 1;
  absl::Status s = hsm->LoadKek(2, other_kind);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(Msg(s).find(std::string(MasterKeyKindName(GetParam()))), std::string::npos) << s;
  EXPECT_FALSE(hsm->HasKek(2));
}

TEST_P(Pkcs11HsmTest, LoadedKekIsSensitiveAndNotExtractable) {
  auto hsm = OpenOrDie();
  ASSERT_NE(hsm, nullptr);
  ASSERT_TRUE(hsm->CreateKek(1).ok());
  auto p = hsm->DescribeKek(1);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_FALSE(p->token_object);
  EXPECT_TRUE(p->sensitive);
  EXPECT_FALSE(p->extractable);
  EXPECT_FALSE(p->value_readable);
  EXPECT_EQ(hsm->DescribeKek(2).status().code(), absl::StatusCode::kNotFound);
}

TEST_P(Pkcs11HsmTest, MasterKeyIsSensitiveAndNotExtractable) {
  auto hsm = OpenOrDie();
  ASSERT_NE(hsm, nullptr);
  auto p = hsm->DescribeMasterKey();
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(p->token_object);
  EXPECT_TRUE(p->sensitive);
  EXPECT_TRUE(p->always_sensitive);
  EXPECT_FALSE(p->extractable);
  EXPECT_TRUE(p->never_extractable);
  EXPECT_FALSE(p->value_readable);
}

TEST_P(Pkcs11HsmTest, SessionPoolServesMoreThreadsThanSessions) {
  Pkcs11Options o = Options();
  o.max_sessions = 4;
  auto hsm = OpenOrDie(o);
  ASSERT_NE(hsm, nullptr);
  ASSERT_TRUE(hsm->CreateKek(1).ok());
  ASSERT_TRUE(hsm->CreateKek(2).ok());

  constexpr int kThreads = 8;
  constexpr int kRounds = 300;
  EXPECT_EQ(test::RunConcurrentSealOpen(*hsm, kThreads, kRounds, /*ping_every=*/50), 0);
  HsmStats s = hsm->stats();
  EXPECT_EQ(s.seals, uint64_t{kThreads * kRounds});
  EXPECT_EQ(s.opens, uint64_t{kThreads * kRounds});
  EXPECT_EQ(s.errors, 0u);
}

INSTANTIATE_TEST_SUITE_P(Kinds, Pkcs11HsmTest,
                         ::testing::Values(MasterKeyKind::kRsa4096, MasterKeyKind::kAes256),
                         [](const ::testing::TestParamInfo<MasterKeyKind>& info) {
                           return info.param == MasterKeyKind::kRsa4096 ? "Rsa4096" : "Aes256";
                         });

// Opening a token the wrong way. Uses its own token, which also shows that a second
// SoftHSM2 token works in the same process once the first one's users are gone.
class Pkcs11HsmOpenTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto token = SoftHsmToken::Create("kmsd-open-test");
    ASSERT_TRUE(token.ok()) << token.status();
    token_ = std::move(*token);
  }
  static void TearDownTestSuite() { token_.reset(); }

  static Pkcs11Options AesOptions() { return token_->Options(MasterKeyKind::kAes256); }

  static inline std::unique_ptr<SoftHsmToken> token_;
};

TEST_F(Pkcs11HsmOpenTest, OpensWithTheRightPin) {
  auto hsm = Pkcs11Hsm::Open(AesOptions());
  ASSERT_TRUE(hsm.ok()) << hsm.status();
  EXPECT_TRUE((*hsm)->Ping().ok());
}

TEST_F(Pkcs11HsmOpenTest, WrongPinIsPermissionDenied) {
  Pkcs11Options o = AesOptions();
  o.pin_file = token_->WritePinFile("wrong.pin", "not-the-pin-0000\n");
  auto hsm = Pkcs11Hsm::Open(o);
  ASSERT_FALSE(hsm.ok());
  EXPECT_EQ(hsm.status().code(), absl::StatusCode::kPermissionDenied) << hsm.status();
  EXPECT_NE(Msg(hsm.status()).find("CKR_PIN_INCORRECT"), std::string::npos);
  EXPECT_EQ(Msg(hsm.status()).find("not-the-pin"), std::string::npos);
}

TEST_F(Pkcs11HsmOpenTest, UnknownTokenLabelIsNotFound) {
  Pkcs11Options o = AesOptions();
  o.token_label = "no-such-token";
  auto hsm = Pkcs11Hsm::Open(o);
  ASSERT_FALSE(hsm.ok());
  EXPECT_EQ(hsm.status().code(), absl::StatusCode::kNotFound) << hsm.status();
  EXPECT_NE(Msg(hsm.status()).find("no-such-token"), std::string::npos);
}

TEST_F(Pkcs11HsmOpenTest, BadOptionsAreRejectedClearly) {
  Pkcs11Options o = AesOptions();
  o.token_label = std::string(33, 'x');
  EXPECT_EQ(Pkcs11Hsm::Open(o).status().code(), absl::StatusCode::kInvalidArgument);

  o = AesOptions();
  o.pin_file = token_->dir().Join("missing.pin");
  EXPECT_EQ(Pkcs11Hsm::Open(o).status().code(), absl::StatusCode::kNotFound);

  o = AesOptions();
  o.pin_file = token_->WritePinFile("empty.pin", "\n");
  EXPECT_EQ(Pkcs11Hsm::Open(o).status().code(), absl::StatusCode::kInvalidArgument);

  o = AesOptions();
  o.module_path = "/nonexistent/libpkcs11.so";
  auto hsm = Pkcs11Hsm::Open(o);
  EXPECT_EQ(hsm.status().code(), absl::StatusCode::kNotFound) << hsm.status();

  o = AesOptions();
  o.module_path = token_->conf_path();  // not a shared object
  EXPECT_EQ(Pkcs11Hsm::Open(o).status().code(), absl::StatusCode::kFailedPrecondition);

  o = AesOptions();
  o.max_sessions = 0;
  EXPECT_EQ(Pkcs11Hsm::Open(o).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(Pkcs11HsmOpenTest, InitTokenRefusesADuplicateLabel) {
  absl::Status s = Pkcs11Hsm::InitToken(token_->module_path(), token_->label(),
                                        SecretBytes::CopyOf(std::string_view("so-pin-1234")),
                                        SecretBytes::CopyOf(std::string_view("user-pin-1234")));
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists) << s;
}

TEST_F(Pkcs11HsmOpenTest, ASecondTokenIsRefusedWhileOneIsAlive) {
  auto second = SoftHsmToken::Create("other");
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(HsmNamesTest, MasterKeyKindNamesRoundTrip) {
  for (MasterKeyKind k : {MasterKeyKind::kRsa4096, MasterKeyKind::kAes256}) {
    auto parsed = ParseMasterKeyKind(MasterKeyKindName(k));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, k);
  }
  EXPECT_EQ(MasterKeyKindName(MasterKeyKind::kRsa4096), "rsa-4096");
  EXPECT_EQ(MasterKeyKindName(MasterKeyKind::kAes256), "aes-256");
  EXPECT_EQ(ParseMasterKeyKind("rsa-2048").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(HsmNamesTest, WrappedKekMechanismNameReadsTheHeader) {
  EXPECT_EQ(*WrappedKekMechanismName(std::vector<uint8_t>{1, 1, 0xaa}), "rsa-oaep-sha1");
  EXPECT_EQ(*WrappedKekMechanismName(std::vector<uint8_t>{1, 2, 0xaa}), "rsa-oaep-sha256");
  EXPECT_EQ(*WrappedKekMechanismName(std::vector<uint8_t>{1, 3, 0xaa}), "aes-key-wrap-pad");
  EXPECT_FALSE(WrappedKekMechanismName(std::vector<uint8_t>{1, 4, 0xaa}).ok());
  EXPECT_FALSE(WrappedKekMechanismName(std::vector<uint8_t>{2, 1, 0xaa}).ok());
  EXPECT_FALSE(WrappedKekMechanismName(std::vector<uint8_t>{1, 1}).ok());
  EXPECT_FALSE(WrappedKekMechanismName(std::vector<uint8_t>{}).ok());
}

}  // namespace
}  // namespace kms::hsm
