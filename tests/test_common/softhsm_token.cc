#include "tests/test_common/softhsm_token.h"

#include <stdlib.h>

#include <atomic>
#include <cstdio>

#include <openssl/rand.h>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace kms::test {
namespace {

std::atomic<bool> g_token_alive{false};

// 16 random bytes as 32 hex digits.
absl::StatusOr<std::string> RandomPin() {
  unsigned char raw[16];
  if (RAND_bytes(raw, sizeof(raw)) != 1) return absl::InternalError("RAND_bytes failed");
  std::string pin;
  for (unsigned char b : raw) {
    char hex[3];
    std::snprintf(hex, sizeof(hex), "%02x", b);
    pin += hex;
  }
  return pin;
}

}  // namespace

std::string SoftHsmToken::DefaultModulePath() {
  const char* env = getenv("KMS_TEST_PKCS11_MODULE");
  return env != nullptr && *env != '\0' ? env : "/usr/lib/softhsm/libsofthsm2.so";
}

absl::StatusOr<std::unique_ptr<SoftHsmToken>> SoftHsmToken::Create(std::string label) {
  bool expected = false;
  if (!g_token_alive.compare_exchange_strong(expected, true)) {
    return absl::FailedPreconditionError(
        "another SoftHsmToken is alive in this process (SOFTHSM2_CONF is process-global)");
  }
  std::unique_ptr<SoftHsmToken> t(new SoftHsmToken());
  t->label_ = std::move(label);
  t->module_path_ = DefaultModulePath();
  t->token_dir_ = t->dir_.MakeDir("tokens");
  t->conf_path_ = t->dir_.Write("softhsm2.conf",
                                absl::StrCat("directories.tokendir = ", t->token_dir_,
                                             "\nobjectstore.backend = file\nlog.level = ERROR\n"),
                                0600);
  if (const char* prev = getenv("SOFTHSM2_CONF"); prev != nullptr) {
    t->had_previous_conf_ = true;
    t->previous_conf_ = prev;
  }
  setenv("SOFTHSM2_CONF", t->conf_path_.c_str(), 1);

  KMS_ASSIGN_OR_RETURN(std::string so_pin, RandomPin());
  KMS_ASSIGN_OR_RETURN(std::string user_pin, RandomPin());
  // A trailing newline, as an editor would leave it: Pkcs11Hsm trims it.
  t->pin_file_ = t->dir_.Write("user.pin", user_pin + "\n", 0600);
  KMS_RETURN_IF_ERROR(kms::hsm::Pkcs11Hsm::InitToken(t->module_path_, t->label_,
                                                     SecretBytes::CopyOf(so_pin),
                                                     SecretBytes::CopyOf(user_pin)));
  return t;
}

SoftHsmToken::~SoftHsmToken() {
  if (had_previous_conf_) {
    setenv("SOFTHSM2_CONF", previous_conf_.c_str(), 1);
  } else {
    unsetenv("SOFTHSM2_CONF");
  }
  g_token_alive.store(false);
}

kms::hsm::Pkcs11Options SoftHsmToken::Options(kms::hsm::MasterKeyKind kind) const {
  kms::hsm::Pkcs11Options o;
  o.module_path = module_path_;
  o.token_label = label_;
  o.pin_file = pin_file_;
  o.master_key_kind = kind;
  return o;
}

std::string SoftHsmToken::WritePinFile(const std::string& name, const std::string& pin) const {
  return dir_.Write(name, pin, 0600);
}

namespace {

class SharedTokenEnvironment : public ::testing::Environment {
 public:
  static std::unique_ptr<SoftHsmToken>& token() {
    static auto* t = new std::unique_ptr<SoftHsmToken>();
    return *t;
  }
  void TearDown() override { token().reset(); }
};

}  // namespace

absl::StatusOr<SoftHsmToken*> SharedSoftHsmToken(const std::string& label) {
  static const bool registered = [] {
    ::testing::AddGlobalTestEnvironment(new SharedTokenEnvironment);
    return true;
  }();
  (void)registered;
  std::unique_ptr<SoftHsmToken>& token = SharedTokenEnvironment::token();
  if (token == nullptr) {
    KMS_ASSIGN_OR_RETURN(token, SoftHsmToken::Create(label));
  }
  return token.get();
}

}  // namespace kms::test
