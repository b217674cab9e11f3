// The libFuzzer entry point of one fuzz executable (KMS_BUILD_FUZZERS=ON, clang):
// CMake compiles this file once per target with KMS_FUZZ_TARGET set to the target's
// function, e.g. -DKMS_FUZZ_TARGET=FuzzBase64.
#include <cstddef>
#include <cstdint>

#include "tests/fuzz/fuzz_targets.h"

#ifndef KMS_FUZZ_TARGET
#error "define KMS_FUZZ_TARGET to one of the functions of fuzz_targets.h"
#endif

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return kms::fuzz::KMS_FUZZ_TARGET(data, size);
}
