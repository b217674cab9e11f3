#include "src/common/text_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "src/common/strings.h"

namespace kms {

absl::StatusOr<std::string> ReadTextFile(const std::string& path, std::string_view what) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    int err = errno;
    std::string msg = absl::StrCat(Av(what), " file ", path, ": cannot read: ", std::strerror(err));
    return err == ENOENT ? absl::NotFoundError(msg) : absl::InvalidArgumentError(msg);
  }
  std::string text;
  char buf[16384];
  int err = 0;
  for (;;) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) err = errno;
    if (n <= 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  if (err != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(Av(what), " file ", path, ": cannot read: ", std::strerror(err)));
  }
  return text;
}

}  // namespace kms
