// The Hsm contract (hsm_contract.h) for Pkcs11Hsm on a real SoftHSM2 token, with each
// kind of master key. Pkcs11Hsm-only behaviour (mechanisms, key attributes, the PIN
// file, the session pool) is tested in pkcs11_hsm_test.cc.
//
// One token for the whole program, created on first use and removed when the program
// ends, with one master key per kind that every test reuses (RSA-4096 generation costs
// seconds). Every Pkcs11Hsm on it is a replica; each test destroys its own.
#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "src/hsm/pkcs11_hsm.h"
#include "tests/integration/hsm/hsm_contract.h"
#include "tests/test_common/softhsm_token.h"

namespace kms::hsm::contract {
namespace {

using ::kms::test::SoftHsmToken;


template <MasterKeyKind kKind>
absl::StatusOr<std::unique_ptr<Hsm>> MakePkcs11Hsm() {
  KMS_ASSIGN_OR_RETURN(SoftHsmToken * token, test::SharedSoftHsmToken("kmsd-hsm-contract"));
  Pkcs11Options options = token->Options(kKind);
  options.master_key_label = "kmsd-master-" + std::string(MasterKeyKindName(kKind));
  KMS_ASSIGN_OR_RETURN(std::unique_ptr<Pkcs11Hsm> hsm, Pkcs11Hsm::Open(options));
  return std::unique_ptr<Hsm>(std::move(hsm));
}

INSTANTIATE_TEST_SUITE_P(
    Softhsm, HsmContractTest,
    ::testing::Values(
        HsmBackend{"softhsm_rsa4096", MasterKeyKind::kRsa4096,
                   &MakePkcs11Hsm<MasterKeyKind::kRsa4096>},
        HsmBackend{"softhsm_aes256", MasterKeyKind::kAes256,
                   &MakePkcs11Hsm<MasterKeyKind::kAes256>}),
    HsmBackendName);

}  // namespace
}  // namespace kms::hsm::contract
