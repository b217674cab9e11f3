// Runs every file of the checked-in corpus (tests/fuzz/corpus/<target>/) through its
// fuzz target, in every build, so CI replays the seeds and every input a fuzzer once
// found. A target aborts on a broken invariant; the test also fails when a target's
// corpus has fewer than kMinFilesPerTarget files (an empty or misplaced corpus).
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <ostream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/fuzz/fuzz_targets.h"

namespace kms::fuzz {
namespace {

constexpr size_t kMinFilesPerTarget = 4;

struct Target {
  const char* name;  // the corpus subdirectory
  int (*fn)(const uint8_t*, size_t);
};

constexpr Target kTargets[] = {
    {"base64", FuzzBase64},          {"field", FuzzField},        {"config", FuzzConfig},
    {"policy", FuzzPolicy},          {"jwt_token", FuzzJwtToken}, {"jwt_claims", FuzzJwtClaims},
    {"wrapped_dek", FuzzWrappedDek},
    {"grpc_request", FuzzGrpcRequest}, {"invalidation", FuzzInvalidationEvent},
    {"wrapped_kek", FuzzWrappedKek},   {"jwk", FuzzJwk},
    {"http_request", FuzzHttpRequest}, {"encrypted_file", FuzzEncryptedFile},
    {"sigv4", FuzzSigV4},
};

// So that test names and ctest show "base64", not the struct's bytes.
void PrintTo(const Target& target, std::ostream* os) { *os << target.name; }

class FuzzCorpusTest : public ::testing::TestWithParam<Target> {};

TEST_P(FuzzCorpusTest, EveryCorpusFileRunsCleanly) {
  const std::filesystem::path dir = std::filesystem::path(KMS_FUZZ_CORPUS_DIR) / GetParam().name;
  ASSERT_TRUE(std::filesystem::is_directory(dir)) << dir;
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.is_regular_file()) files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  for (const auto& file : files) {
    std::ifstream in(file, std::ios::binary);
    ASSERT_TRUE(in) << file;
    const std::vector<char> bytes((std::istreambuf_iterator<char>(in)),
                                  std::istreambuf_iterator<char>());
    // Named on stderr first: a broken invariant aborts the whole test binary.
    std::fprintf(stderr, "[fuzz corpus] %s\n", file.c_str());
    EXPECT_EQ(GetParam().fn(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()), 0)
        << file;
  }
  EXPECT_GE(files.size(), kMinFilesPerTarget) << "corpus too small: " << dir;
}

INSTANTIATE_TEST_SUITE_P(AllTargets, FuzzCorpusTest, ::testing::ValuesIn(kTargets),
                         [](const ::testing::TestParamInfo<Target>& info) {
                           return std::string(info.param.name);
                         });

}  // namespace
}  // namespace kms::fuzz
