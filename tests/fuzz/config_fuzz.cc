// config::ParseConfig on arbitrary text, base directory "/nonexistent" (so a relative
// path never names a real file; seeds that should parse use absolute paths such as
// /etc/hostname). What parses must validate, carry the derived ciphertext limit and
// have only absolute paths.
#include <string>

#include "src/config/config.h"
#include "tests/fuzz/fuzz_targets.h"
#include "tests/fuzz/fuzz_util.h"

namespace kms::fuzz {

int FuzzConfig(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto config = config::ParseConfig(text, "/nonexistent");
  if (!config.ok()) {
    FUZZ_CHECK(config.status().code() == absl::StatusCode::kInvalidArgument);
    return 0;
  }
  FUZZ_CHECK(config::ValidateConfig(*config).ok());
  FUZZ_CHECK(config->limits.max_ciphertext_bytes ==
             config->limits.max_plaintext_bytes + config::kCiphertextOverheadBytes);
  for (const std::string* path :
       {&config->tls.cert_file, &config->tls.key_file, &config->tls.client_ca_file,
        &config->hsm.pin_file, &config->policy_file}) {
    FUZZ_CHECK(!path->empty() && path->front() == '/');
  }
  return 0;
}

}  // namespace kms::fuzz
