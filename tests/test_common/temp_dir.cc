#include "tests/test_common/temp_dir.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <vector>

namespace kms::test {
namespace {

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "TempDir: %s: %s\n", what.c_str(), std::strerror(errno));
  std::abort();
}

}  // namespace

TempDir::TempDir(std::string_view prefix) {
  std::string tmpl = "/tmp/" + std::string(prefix) + "XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (mkdtemp(buf.data()) == nullptr) Die("mkdtemp " + tmpl);
  path_ = buf.data();
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string TempDir::Join(std::string_view name) const { return path_ + "/" + std::string(name); }

std::string TempDir::Write(std::string_view name, std::string_view contents, mode_t mode) const {
  std::string p = Join(name);
  int fd = open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) Die("open " + p);
  size_t off = 0;
  while (off < contents.size()) {
    ssize_t n = write(fd, contents.data() + off, contents.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) Die("write " + p);
    off += static_cast<size_t>(n);
  }
  if (fchmod(fd, mode) != 0) Die("fchmod " + p);
  if (close(fd) != 0) Die("close " + p);
  return p;
}

std::string TempDir::MakeDir(std::string_view name) const {
  std::string p = Join(name);
  if (mkdir(p.c_str(), 0700) != 0) Die("mkdir " + p);
  return p;
}

}  // namespace kms::test
