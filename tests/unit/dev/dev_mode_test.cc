// The parts of dev mode that need no SoftHSM2 token (PrepareDevState itself runs in the
// e2e suites, which start kmsd --dev).
#include "src/dev/dev_mode.h"

#include "gtest/gtest.h"

namespace kms::dev {
namespace {

TEST(HostOfTest, AWildcardListenerIsReachedOverLoopback) {
  EXPECT_EQ(HostOf("0.0.0.0:8443"), "127.0.0.1");
  EXPECT_EQ(HostOf(":8443"), "127.0.0.1");
  EXPECT_EQ(HostOf("[::]:8443"), "[::1]");
}

TEST(HostOfTest, ANamedHostIsKept) {
  EXPECT_EQ(HostOf("127.0.0.1:0"), "127.0.0.1");
  EXPECT_EQ(HostOf("[::1]:8443"), "[::1]");
  EXPECT_EQ(HostOf("kms.internal:8443"), "kms.internal");
}

TEST(RunIssueClientCertTest, ABadNameIsRefusedBeforeAnyFileIsRead) {
  for (const char* name : {"", "Operator", "a/b", "../ca"}) {
    absl::StatusOr<std::string> issued = RunIssueClientCert("/nonexistent-state-dir", name);
    EXPECT_EQ(issued.status().code(), absl::StatusCode::kInvalidArgument) << name;
  }
}

TEST(RunIssueClientCertTest, AStateDirWithoutADevCaIsAnError) {
  absl::StatusOr<std::string> issued = RunIssueClientCert("/nonexistent-state-dir", "billing");
  EXPECT_FALSE(issued.ok());
}

}  // namespace
}  // namespace kms::dev
