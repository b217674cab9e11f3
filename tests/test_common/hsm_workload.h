// A concurrent workload on the Hsm seam, shared by the HSM contract suite and the
// PKCS#11 session-pool test: `threads` threads each seal and open `rounds` messages,
// alternating between KEK versions 1 and 2 (both must be loaded), and ping every
// `ping_every` rounds. Returns how many operations failed or gave the wrong plaintext.
#pragma once

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kms/hsm/hsm.h"

namespace kms::test {

inline int RunConcurrentSealOpen(hsm::Hsm& hsm, int threads, int rounds, int ping_every) {
  auto bytes = [](const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); };
  std::atomic<int> failures{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      for (int i = 0; i < rounds; ++i) {
        const uint32_t v = 1 + (i + t) % 2;
        const std::string msg = absl::StrCat("thread ", t, " round ", i);
        const std::vector<uint8_t> aad = bytes(absl::StrCat("aad-", t));
        auto sealed = hsm.Seal(v, bytes(msg), aad);
        if (!sealed.ok()) {
          ++failures;
          continue;
        }
        auto opened = hsm.Open(v, *sealed, aad);
        if (!opened.ok() || std::string(reinterpret_cast<const char*>(opened->data()),
                                        opened->size()) != msg) {
          ++failures;
        }
        if (i % ping_every == 0 && (!hsm.HasKek(v) || !hsm.Ping().ok())) ++failures;
      }
    });
  }
  for (auto& w : workers) w.join();
  return failures.load();
}

}  // namespace kms::test
