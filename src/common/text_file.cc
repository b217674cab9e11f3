#include "src/common/text_file.h"

#include <openssl/crypto.h>
#include <sys/stat.h>

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
  // Sized up front and the read buffer wiped afterwards: the file may hold a private key
  // (tls.key_file), and neither a grown string's old block nor the stack should keep it.
  std::string text;
  struct stat st {};
  if (fstat(fd, &st) == 0 && st.st_size > 0) text.reserve(static_cast<size_t>(st.st_size));
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
  OPENSSL_cleanse(buf, sizeof(buf));
  if (err != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(Av(what), " file ", path, ": cannot read: ", std::strerror(err)));
  }
  return text;
}

}  // namespace kms
