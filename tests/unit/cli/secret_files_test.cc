#include "src/cli/secret_files.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <vector>

#include "gtest/gtest.h"
#include "tests/test_common/temp_dir.h"

namespace kms::cli {
namespace {

std::string Read(const std::string& path) {
  FILE* f = fopen(path.c_str(), "rb");
  if (f == nullptr) return "<missing>";
  std::string s;
  char buf[256];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), f)) > 0) s.append(buf, n);
  fclose(f);
  return s;
}

SecretBytes Key() {
  SecretBytes key(32);
  for (size_t i = 0; i < 32; ++i) key.data()[i] = static_cast<uint8_t>(i * 9);
  return key;
}

std::string Str(const SecretBytes& s) { return std::string(s.span().begin(), s.span().end()); }

TEST(FormatKeyTest, HexBase64AndRaw) {
  EXPECT_EQ(Str(FormatKey(Key(), KeyFormat::kHex)),
            "0009121b242d363f48515a636c757e879099a2abb4bdc6cfd8e1eaf3fc050e17\n");
  EXPECT_EQ(Str(FormatKey(Key(), KeyFormat::kBase64)),
            "AAkSGyQtNj9IUVpjbHV+h5CZoqu0vcbP2OHq8/wFDhc=\n");
  EXPECT_EQ(FormatKey(Key(), KeyFormat::kRaw).size(), 32u);
  EXPECT_FALSE(ParseKeyFormat("pem").ok());
  EXPECT_EQ(*ParseKeyFormat("hex"), KeyFormat::kHex);
}

TEST(ExclusiveFileTest, CreatesAPrivateFileAndNeverReplacesOne) {
  test::TempDir dir("kmsctl-files-");
  const std::string path = dir.Join("k");
  {
    auto f = ExclusiveFile::Open(path);
    ASSERT_TRUE(f.ok()) << f.status();
    ASSERT_TRUE(f->Write(FormatKey(Key(), KeyFormat::kRaw)).ok());
    ASSERT_TRUE(f->Commit().ok());
  }
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(Read(path).size(), 32u);
  EXPECT_EQ(ExclusiveFile::Open(path).status().code(), absl::StatusCode::kAlreadyExists);
  // A dangling symbolic link is not followed either.
  const std::string link = dir.Join("link");
  ASSERT_EQ(symlink(dir.Join("target").c_str(), link.c_str()), 0);
  EXPECT_FALSE(ExclusiveFile::Open(link).ok());
  EXPECT_NE(access(dir.Join("target").c_str(), F_OK), 0);
}

TEST(ExclusiveFileTest, AnUncommittedFileIsRemoved) {
  test::TempDir dir("kmsctl-files-");
  const std::string path = dir.Join("k");
  {
    auto f = ExclusiveFile::Open(path);
    ASSERT_TRUE(f.ok());
    EXPECT_EQ(access(path.c_str(), F_OK), 0);
  }
  EXPECT_NE(access(path.c_str(), F_OK), 0);
}

TEST(AtomicOutputTest, AppearsUnderItsNameOnlyWhenCommitted) {
  test::TempDir dir("kmsctl-files-");
  const std::string path = dir.Join("out");
  {
    auto out = AtomicOutput::Open(path);
    ASSERT_TRUE(out.ok());
    ASSERT_EQ(write(out->fd(), "abc", 3), 3);
    EXPECT_NE(access(path.c_str(), F_OK), 0);  // not yet
    ASSERT_TRUE(out->Commit().ok());
  }
  EXPECT_EQ(Read(path), "abc");
  EXPECT_EQ(AtomicOutput::Open(path).status().code(), absl::StatusCode::kAlreadyExists);
  const std::string failed = dir.Join("failed");
  {
    auto out = AtomicOutput::Open(failed);
    ASSERT_TRUE(out.ok());
    ASSERT_EQ(write(out->fd(), "half", 4), 4);
  }  // dropped: a failed decryption
  EXPECT_NE(access(failed.c_str(), F_OK), 0);
  // No temporary file is left behind either: only "out" remains.
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir.Join(""))) {
    names.push_back(e.path().filename().string());
  }
  EXPECT_EQ(names, std::vector<std::string>{"out"});
}

TEST(HumanBytesTest, BinaryUnits) {
  EXPECT_EQ(HumanBytes(0), "0 B");
  EXPECT_EQ(HumanBytes(1536), "1.5 KiB");
  EXPECT_EQ(HumanBytes(uint64_t{3} << 30), "3.0 GiB");
}

}  // namespace
}  // namespace kms::cli
