#include "src/common/secret_file.h"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "gtest/gtest.h"

namespace kms {
namespace {

namespace fs = std::filesystem;

std::string Text(const SecretBytes& s) {
  return std::string(reinterpret_cast<const char*>(s.data()), s.size());
}

class SecretFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SetSecretMemoryLocking(false);
    std::string tmpl = (fs::temp_directory_path() / "kmsd-secret-file-XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Write(std::string_view name, std::string_view contents) {
    const std::string path = (dir_ / name).string();
    std::ofstream out(path, std::ios::binary);
    out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
    return path;
  }

  fs::path dir_;
};

TEST_F(SecretFileTest, ReadsTheFileWithoutItsTrailingNewline) {
  const std::string path = Write("pin", "1234-abcd\n");
  absl::StatusOr<SecretBytes> secret = ReadSecretFile(path, "PIN", 64);
  ASSERT_TRUE(secret.ok()) << secret.status();
  EXPECT_EQ(Text(*secret), "1234-abcd");
}

TEST_F(SecretFileTest, ReadsAFileWithoutANewlineAsItIs) {
  absl::StatusOr<SecretBytes> secret = ReadSecretFile(Write("pin", "1234"), "PIN", 64);
  ASSERT_TRUE(secret.ok()) << secret.status();
  EXPECT_EQ(Text(*secret), "1234");
}

TEST_F(SecretFileTest, EachTrimModeDropsWhatItSays) {
  const std::string path = Write("pw", " \tpass word \t\r\n\n");
  struct Case {
    SecretFileTrim trim;
    std::string expected;
  };
  for (const Case& c : {Case{SecretFileTrim::kNone, " \tpass word \t\r\n\n"},
                        Case{SecretFileTrim::kTrailingLineBreaks, " \tpass word \t"},
                        Case{SecretFileTrim::kTrailingWhitespace, " \tpass word"},
                        Case{SecretFileTrim::kSurroundingWhitespace, "pass word"}}) {
    absl::StatusOr<SecretBytes> secret = ReadSecretFile(path, "password", 64, c.trim);
    ASSERT_TRUE(secret.ok()) << secret.status();
    EXPECT_EQ(Text(*secret), c.expected) << static_cast<int>(c.trim);
  }
}

TEST_F(SecretFileTest, KeepsInnerBytesIncludingNul) {
  const std::string contents("a\0b\nc", 5);
  absl::StatusOr<SecretBytes> secret =
      ReadSecretFile(Write("bin", contents), "key", 64, SecretFileTrim::kNone);
  ASSERT_TRUE(secret.ok()) << secret.status();
  EXPECT_EQ(Text(*secret), contents);
}

TEST_F(SecretFileTest, MissingFileIsNotFoundAndTheMessageNamesWhatAndPath) {
  const std::string path = (dir_ / "missing.pin").string();
  absl::Status status = ReadSecretFile(path, "PIN", 64).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;
  EXPECT_EQ(std::string(status.message()),
            "PIN file " + path + ": cannot read: No such file or directory");
}

TEST_F(SecretFileTest, EmptyFileIsInvalidArgument) {
  const std::string path = Write("empty", "");
  absl::Status status = ReadSecretFile(path, "PIN", 64).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_EQ(std::string(status.message()), "PIN file " + path + " is empty");
  EXPECT_EQ(ReadSecretFile(path, "key", 64, SecretFileTrim::kNone).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(SecretFileTest, FileOfOnlyWhitespaceIsEmptyAfterTrimming) {
  const std::string path = Write("blank", " \n");
  EXPECT_EQ(
      ReadSecretFile(path, "password", 64, SecretFileTrim::kSurroundingWhitespace).status().code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      ReadSecretFile(Write("newline", "\r\n"), "password", 64, SecretFileTrim::kTrailingLineBreaks)
          .status()
          .code(),
      absl::StatusCode::kInvalidArgument);
  // Without trimming, the same bytes are a secret.
  EXPECT_TRUE(ReadSecretFile(path, "password", 64, SecretFileTrim::kNone).ok());
}

TEST_F(SecretFileTest, FileOfExactlyTheLimitIsRead) {
  const std::string contents(100, 'k');
  absl::StatusOr<SecretBytes> secret =
      ReadSecretFile(Write("limit", contents), "key", 100, SecretFileTrim::kNone);
  ASSERT_TRUE(secret.ok()) << secret.status();
  EXPECT_EQ(Text(*secret), contents);
}

TEST_F(SecretFileTest, FileOverTheLimitIsRefusedWithoutItsContentsInTheMessage) {
  const std::string path = Write("big", std::string(100, 'k') + "hunter2");
  absl::Status status = ReadSecretFile(path, "key", 100, SecretFileTrim::kNone).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_EQ(std::string(status.message()), "key file " + path + ": larger than 100 bytes");
  // The limit applies to the file, before trimming.
  EXPECT_EQ(
      ReadSecretFile(Write("padded", "1234" + std::string(100, '\n')), "PIN", 100).status().code(),
      absl::StatusCode::kInvalidArgument);
}

TEST_F(SecretFileTest, DirectoryIsRefused) {
  absl::Status status = ReadSecretFile(dir_.string(), "PIN", 64).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_EQ(std::string(status.message()), "PIN file " + dir_.string() + ": not a regular file");
}

TEST_F(SecretFileTest, FifoIsRefusedWithoutWaitingForAWriter) {
  const std::string path = (dir_ / "fifo").string();
  ASSERT_EQ(mkfifo(path.c_str(), 0600), 0);
  // Without O_NONBLOCK this open would block forever: no writer ever comes.
  EXPECT_EQ(ReadSecretFile(path, "PIN", 64).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(SecretFileTest, DeviceIsRefused) {
  EXPECT_EQ(ReadSecretFile("/dev/zero", "PIN", 64).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(SecretFileTest, FileThatReportsNoSizeIsStillReadAndBounded) {
  // procfs files are regular and report st_size 0: the buffer grows while reading.
  absl::StatusOr<SecretBytes> comm = ReadSecretFile("/proc/self/comm", "comm", 64);
  ASSERT_TRUE(comm.ok()) << comm.status();
  EXPECT_FALSE(comm->empty());
  EXPECT_NE(Text(*comm).back(), '\n');
  // /proc/self/status is well over 200 bytes.
  EXPECT_EQ(ReadSecretFile("/proc/self/status", "status", 200).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(SecretFileTest, UnreadableFileIsPermissionDenied) {
  const std::string path = Write("locked", "1234");
  ASSERT_EQ(chmod(path.c_str(), 0), 0);
  if (geteuid() != 0) {
    EXPECT_EQ(ReadSecretFile(path, "PIN", 64).status().code(), absl::StatusCode::kPermissionDenied);
    return;
  }
  // Root reads any file: read it from a child that has dropped to nobody (65534), and
  // let its exit code carry the status code.
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    if (setgid(65534) != 0 || setuid(65534) != 0) _exit(100);
    _exit(static_cast<int>(ReadSecretFile(path, "PIN", 64).status().code()));
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), static_cast<int>(absl::StatusCode::kPermissionDenied));
}

}  // namespace
}  // namespace kms
