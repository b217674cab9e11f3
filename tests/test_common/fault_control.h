// FaultControl: drives the fault-injecting PKCS#11 module (tests/fault_pkcs11) of a test:
// sets the environment a process needs to load it (so set it up before the module is
// loaded, in this process or a kmsd started after), and rewrites its control file
// atomically. The module's commands are documented in tests/fault_pkcs11/fault_pkcs11.c.
#pragma once

#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "tests/test_common/softhsm_token.h"

namespace kms::test {

class FaultControl {
 public:
  // The module built by the tree (libkms_fault_pkcs11.so next to the test binaries).
  static std::string ModulePath() { return KMS_FAULT_PKCS11_PATH; }

  // `control` is the control file's path (created empty). Exports
  // KMS_FAULT_PKCS11_CONTROL and KMS_FAULT_PKCS11_TARGET (the real SoftHSM2 module).
  explicit FaultControl(std::string control) : path_(std::move(control)) {
    Set("");
    setenv("KMS_FAULT_PKCS11_CONTROL", path_.c_str(), 1);
    setenv("KMS_FAULT_PKCS11_TARGET", SoftHsmToken::DefaultModulePath().c_str(), 1);
  }

  // Replaces every rule ("fail C_Encrypt CKR_DEVICE_ERROR\n...", "" for none).
  void Set(const std::string& rules) {
    const std::string tmp = path_ + ".tmp";
    {
      std::ofstream out(tmp, std::ios::trunc);
      out << rules;
    }
    std::rename(tmp.c_str(), path_.c_str());
  }

  // Closes every session of the token once (an HSM restart), with `rules` as the only
  // other rules.
  void Restart(const std::string& rules = "") {
    // Any generation the module has not seen: unique per process and call.
    static long next = static_cast<long>(getpid()) * 1000;
    Set(rules + "restart " + std::to_string(++next) + "\n");
  }

  // Calls per PKCS#11 function, as the module last wrote them (after every C_Initialize,
  // C_Finalize and C_Login).
  std::map<std::string, long> Counts() const {
    std::map<std::string, long> counts;
    std::ifstream in(path_ + ".counts");
    std::string name;
    long n = 0;
    while (in >> name >> n) counts[name] = n;
    return counts;
  }
  long Count(const std::string& fn) const {
    auto counts = Counts();
    auto it = counts.find(fn);
    return it == counts.end() ? 0 : it->second;
  }

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace kms::test
