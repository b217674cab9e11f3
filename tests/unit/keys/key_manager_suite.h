// The KeyManager suite: KeyManager's behaviour written once and run on two rigs,
// the fakes (FakeKekRing over FakeHsm, SQLite ":memory:"; key_manager_test.cc here) and
// the real parts (HsmKekRing over Pkcs11Hsm on SoftHSM2, a SQLite file;
// tests/integration/keys/key_manager_test.cc). What only one rig can show (mocked calls,
// an HSM outage; KEK blobs on a real token) stays in that rig's file.
//
// A rig joins by instantiating the suite with a factory:
//
//   INSTANTIATE_TEST_SUITE_P(Fakes, KeyManagerSuiteTest,
//                            ::testing::Values(KeyManagerRigMaker{"fakes", &MakeFakeRig}),
//                            KeyManagerRigName);
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/test_common/simulated_clock.h"
#include "kms/common/status.h"
#include "kms/keys/kek_ring.h"
#include "kms/store/key_store.h"
#include "src/keys/key_manager.h"
#include "tests/fakes/injecting_key_store.h"

namespace kms::keys::suite {

// What a KeyManager runs on: a loaded KEK ring and a store, plus the handles the suite
// needs to play other replicas and restarts. Made fresh (empty store, a ring holding KEK
// version 1) for every test.
class KeyManagerRig {
 public:
  virtual ~KeyManagerRig() = default;

  virtual KekRing& ring() = 0;
  // The store the KeyManager uses: the rig's store behind an InjectingKeyStore.
  virtual testing::InjectingKeyStore& store() = 0;
  // The same store without the injector, for the test's own reads.
  virtual store::KeyStore& raw_store() = 0;
  // Makes a new KEK version primary on ring() (an operator's rotation on this node);
  // returns the version.
  virtual absl::StatusOr<uint32_t> RotateKek() = 0;
  // Another replica, on the same HSM token and store, rotates the KEK; ring() is not
  // told. Returns the new version.
  virtual absl::StatusOr<uint32_t> RotateKekOnAnotherReplica() = 0;
  // Seal/Open calls the HSM has served so far.
  virtual uint64_t hsm_opens() const = 0;
  // A process restart: a new HSM session and ring (ring() changes) over the same token
  // and the same stored data.
  virtual absl::Status Restart() = 0;
};

struct KeyManagerRigMaker {
  std::string name;  // a test-name fragment: letters, digits, '_'
  std::function<absl::StatusOr<std::unique_ptr<KeyManagerRig>>(const Clock* clock)> make;
};

void PrintTo(const KeyManagerRigMaker& maker, std::ostream* os);
std::string KeyManagerRigName(const ::testing::TestParamInfo<KeyManagerRigMaker>& info);

// Test helpers shared with the rigs' own tests.
std::span<const uint8_t> Bytes(const std::string& s);
TenantId T(const std::string& id);
EncryptionContext Ctx(const std::vector<ContextPair>& pairs);

class KeyManagerSuiteTest : public ::testing::TestWithParam<KeyManagerRigMaker> {
 protected:
  void SetUp() override;
  void TearDown() override;

  // A new KeyManager on the rig's ring and store (the previous one is dropped).
  void Open(bool auto_create = false, uint64_t budget = uint64_t{1} << 31);
  // Restarts the rig and opens a new KeyManager on it.
  void Restart();
  // Another KeyManager on the same ring and store: a second replica's DEK cache.
  std::unique_ptr<KeyManager> AnotherReplica();

  std::string Encrypt(const std::string& tenant, const std::string& plaintext,
                      std::vector<ContextPair> context = {});
  absl::StatusOr<std::string> Decrypt(const std::string& tenant, const std::string& ct,
                                      std::vector<ContextPair> context = {});
  // The DEK version an Encrypt for `tenant` uses now.
  uint32_t EncryptingVersion(KeyManager& keys, const std::string& tenant);
  // The KEK version the stored DEK `version` of `tenant` is sealed under.
  uint32_t StoredKekVersion(const std::string& tenant, uint32_t version);

  testing::SimulatedClock clock_;
  std::unique_ptr<KeyManagerRig> rig_;
  std::unique_ptr<KeyManager> keys_;
};

}  // namespace kms::keys::suite
