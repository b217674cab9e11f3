// TempDir: a private directory under /tmp for one test, removed (recursively) with it.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>

namespace kms::test {

class TempDir {
 public:
  // Creates /tmp/<prefix>XXXXXX (mode 0700). Aborts the test binary if it cannot.
  explicit TempDir(std::string_view prefix = "kmsd-test-");
  ~TempDir();  // removes the tree
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // path()/name
  std::string Join(std::string_view name) const;
  // Writes `contents` to path()/name with `mode` (exactly, regardless of umask) and
  // returns the full path. Aborts on failure.
  std::string Write(std::string_view name, std::string_view contents, mode_t mode = 0600) const;
  // Creates path()/name (mode 0700) and returns it. Aborts on failure.
  std::string MakeDir(std::string_view name) const;

 private:
  std::string path_;
};

}  // namespace kms::test
