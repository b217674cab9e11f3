#include "src/common/secret_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "src/common/strings.h"

namespace kms {
namespace {

// Closes the descriptor on every path out of ReadSecretFile.
class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  ~FdCloser() { close(fd_); }
  FdCloser(const FdCloser&) = delete;
  FdCloser& operator=(const FdCloser&) = delete;

 private:
  int fd_;
};

std::string Prefix(const std::string& path, std::string_view what) {
  return absl::StrCat(Av(what), " file ", path);
}

absl::Status ErrnoError(const std::string& path, std::string_view what, int err) {
  std::string msg = absl::StrCat(Prefix(path, what), ": cannot read: ", std::strerror(err));
  if (err == ENOENT) return absl::NotFoundError(msg);
  if (err == EACCES) return absl::PermissionDeniedError(msg);
  return absl::FailedPreconditionError(msg);
}

bool IsLineBreak(uint8_t c) { return c == '\n' || c == '\r'; }
bool IsSpace(uint8_t c) { return absl::ascii_isspace(c); }

// Moves the kept bytes of `secret` to its front and drops the rest (wiped by Truncate).
void Trim(SecretBytes& secret, SecretFileTrim trim) {
  if (trim == SecretFileTrim::kNone) return;
  uint8_t* data = secret.data();
  size_t begin = 0;
  size_t end = secret.size();
  bool (*drop)(uint8_t) = trim == SecretFileTrim::kTrailingLineBreaks ? IsLineBreak : IsSpace;
  while (end > begin && drop(data[end - 1])) --end;
  if (trim == SecretFileTrim::kSurroundingWhitespace) {
    while (begin < end && drop(data[begin])) ++begin;
    if (begin > 0) std::memmove(data, data + begin, end - begin);
  }
  secret.Truncate(end - begin);
}

}  // namespace

absl::StatusOr<SecretBytes> ReadSecretFile(const std::string& path, std::string_view what,
                                           size_t max_bytes, SecretFileTrim trim) {
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer; the fstat
  // below refuses it (and any device) before anything is read.
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) return ErrnoError(path, what, errno);
  FdCloser closer(fd);
  struct stat st {};
  if (fstat(fd, &st) != 0) return ErrnoError(path, what, errno);
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(Prefix(path, what), ": not a regular file"));
  }
  const size_t limit = std::min(max_bytes, std::numeric_limits<size_t>::max() - 1);
  auto too_large = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat(Prefix(path, what), ": larger than ", limit, " bytes"));
  };
  if (static_cast<uint64_t>(st.st_size) > limit) return too_large();

  // Sized from the file, one byte more so that growth past the limit is seen; grown (into
  // a new zeroizing buffer, the old one wiped) only for files that grow while read or
  // report no size (procfs-like).
  SecretBytes buf(static_cast<size_t>(st.st_size) + 1);
  size_t len = 0;
  for (;;) {
    if (len == buf.size()) {
      if (len > limit) return too_large();
      SecretBytes bigger(std::min(std::max<size_t>(2 * len, 64), limit + 1));
      std::memcpy(bigger.data(), buf.data(), len);
      buf = std::move(bigger);
    }
    ssize_t n = read(fd, buf.data() + len, buf.size() - len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError(path, what, errno);
    if (n == 0) break;
    len += static_cast<size_t>(n);
  }
  if (len > limit) return too_large();
  buf.Truncate(len);
  Trim(buf, trim);
  if (buf.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(Prefix(path, what), " is empty"));
  }
  return buf;
}

}  // namespace kms
