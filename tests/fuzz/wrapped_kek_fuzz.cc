// A wrapped-KEK blob as read back from the store: hsm::WrappedKekMechanismName parses
// its header (format version, mechanism id) before any byte reaches the HSM.
// Invariant: it accepts exactly the blobs of format 1 with a known mechanism id and at
// least one wrapped byte, and names the mechanism of byte 1; a refusal is
// INVALID_ARGUMENT.
#include "src/hsm/pkcs11_hsm.h"
#include "tests/fuzz/fuzz_targets.h"
#include "tests/fuzz/fuzz_util.h"

namespace kms::fuzz {

int FuzzWrappedKek(const uint8_t* data, size_t size) {
  auto name = hsm::WrappedKekMechanismName({data, size});
  const bool well_formed = size > 2 && data[0] == 1 && data[1] >= 1 && data[1] <= 3;
  if (!well_formed) {
    FUZZ_CHECK(!name.ok() && name.status().code() == absl::StatusCode::kInvalidArgument);
    return 0;
  }
  FUZZ_CHECK(name.ok());
  FUZZ_CHECK(*name == hsm::KekWrapMechanismName(static_cast<hsm::KekWrapMechanism>(data[1])));
  return 0;
}

}  // namespace kms::fuzz
