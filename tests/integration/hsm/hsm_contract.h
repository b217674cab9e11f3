// The Hsm contract: one suite of behaviour every implementation of the HSM seam
// (include/kms/hsm/hsm.h) must show, in the manner of SoftHSM's p11test: FakeHsm holds
// to it as Pkcs11Hsm on SoftHSM2 does, and a vendor's PKCS#11 module could run it too.
//
// hsm_contract.cc holds the TEST_Ps and nothing backend-specific. A backend joins by
// instantiating the suite with a factory, in its own <backend>_contract_test.cc:
//
//   INSTANTIATE_TEST_SUITE_P(Fake, HsmContractTest,
//                            ::testing::Values(HsmBackend{"fake", kAes256, &MakeFake}),
//                            HsmBackendName);
//
// `make` opens a new instance. Every instance `make` returns within one test plays a
// replica on the same token: they share the master key (so a KEK blob one creates loads
// in another), but no session object (a KEK one loads is unknown to the others until
// they load its blob). Master keys may outlive a test (SoftHSM2 keeps one per kind for
// the whole suite: RSA-4096 generation takes seconds); KEKs do not.
#pragma once

#include <functional>
#include <memory>
#include <ostream>
#include <string>

#include "gtest/gtest.h"
#include "kms/common/status.h"
#include "kms/hsm/hsm.h"

namespace kms::hsm::contract {

struct HsmBackend {
  std::string name;  // a test-name fragment: letters, digits, '_'
  MasterKeyKind kind = MasterKeyKind::kAes256;  // what master_key_kind() must say
  std::function<absl::StatusOr<std::unique_ptr<Hsm>>()> make;
};

void PrintTo(const HsmBackend& backend, std::ostream* os);
std::string HsmBackendName(const ::testing::TestParamInfo<HsmBackend>& info);

class HsmContractTest : public ::testing::TestWithParam<HsmBackend> {
 protected:
  // A new instance (a replica); nullptr, with a test failure, when it cannot be opened.
  std::unique_ptr<Hsm> Make();
};

}  // namespace kms::hsm::contract
