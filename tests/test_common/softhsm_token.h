// SoftHsmToken: a fresh SoftHSM2 token in a private temp dir, for integration tests.
//
// Create() writes <tmp>/softhsm2.conf (tokendir <tmp>/tokens, file backend, log level
// ERROR), points SOFTHSM2_CONF at it, initializes a token with random SO and user PINs
// through Pkcs11Hsm::InitToken, and writes the user PIN to a 0600 pin file.
//
// One token at a time per process. SOFTHSM2_CONF is process-global and SoftHSM2 reads it
// only in C_Initialize. kms_hsm initializes a module once per process and finalizes it
// when its last user (Pkcs11Hsm or InitToken) goes, so a new token is picked up as long as
// every Pkcs11Hsm of the previous token has been destroyed before the next Create(). The
// usual pattern (gtest runs all tests of a binary in one process): create the token in
// SetUpTestSuite, destroy it in TearDownTestSuite, and let each test open and destroy its
// own Pkcs11Hsm objects. Create() fails with FAILED_PRECONDITION while another
// SoftHsmToken is alive.
#pragma once

#include <memory>
#include <string>

#include "kms/common/status.h"
#include "kms/hsm/hsm.h"
#include "src/hsm/pkcs11_hsm.h"
#include "tests/test_common/temp_dir.h"

namespace kms::test {

class SoftHsmToken {
 public:
  // $KMS_TEST_PKCS11_MODULE, else /usr/lib/softhsm/libsofthsm2.so.
  static std::string DefaultModulePath();

  static absl::StatusOr<std::unique_ptr<SoftHsmToken>> Create(std::string label = "kmsd-test");
  ~SoftHsmToken();  // restores SOFTHSM2_CONF and removes the token directory
  SoftHsmToken(const SoftHsmToken&) = delete;
  SoftHsmToken& operator=(const SoftHsmToken&) = delete;

  const std::string& conf_path() const { return conf_path_; }
  const std::string& token_dir() const { return token_dir_; }
  const std::string& pin_file() const { return pin_file_; }
  const std::string& label() const { return label_; }
  std::string module_path() const { return module_path_; }
  const TempDir& dir() const { return dir_; }

  // Options for this token: module, label, pin file, master key label "kmsd-master".
  kms::hsm::Pkcs11Options Options(kms::hsm::MasterKeyKind kind) const;

  // Writes another (e.g. wrong) PIN to a 0600 file in the temp dir; returns its path.
  std::string WritePinFile(const std::string& name, const std::string& pin) const;

 private:
  SoftHsmToken() = default;

  TempDir dir_{"kmsd-softhsm-"};
  std::string conf_path_;
  std::string token_dir_;
  std::string pin_file_;
  std::string label_;
  std::string module_path_;
  bool had_previous_conf_ = false;
  std::string previous_conf_;
};

// One SoftHSM2 token per test process, created on first use and removed when the
// process's tests end (a gtest Environment). For suites that share a token because an
// RSA-4096 master key takes seconds to generate. Always the same label per process: the
// first call's.
absl::StatusOr<SoftHsmToken*> SharedSoftHsmToken(const std::string& label);

}  // namespace kms::test
