#include "src/cli/secret_files.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iostream>
#include <iomanip>
#include <sstream>

#include "openssl/crypto.h"
#include "src/common/base64.h"

namespace kms::cli {

namespace {

absl::Status CreateError(const std::string& path, int err) {
  if (err == EEXIST) return absl::AlreadyExistsError(path + " exists; refusing to overwrite it");
  return absl::InternalError("cannot create " + path + ": " + std::strerror(err));
}

absl::Status WriteAll(int fd, const uint8_t* data, size_t size, const std::string& what) {
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::write(fd, data + done, size - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return absl::InternalError("cannot write " + what + ": " + std::strerror(errno));
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::Status SyncAndClose(int fd, const std::string& what) {
  // fsync fails with EINVAL on a pipe or terminal: that is not an error here.
  if (::fsync(fd) != 0 && errno != EINVAL && errno != EROFS) {
    const int err = errno;
    ::close(fd);
    return absl::InternalError("cannot write " + what + ": " + std::strerror(err));
  }
  if (::close(fd) != 0) return absl::InternalError("cannot write " + what + ": " + std::strerror(errno));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<KeyFormat> ParseKeyFormat(const std::string& name) {
  if (name == "hex") return KeyFormat::kHex;
  if (name == "base64") return KeyFormat::kBase64;
  if (name == "raw") return KeyFormat::kRaw;
  return absl::InvalidArgumentError("--format must be hex, base64 or raw");
}

SecretBytes FormatKey(const SecretBytes& key, KeyFormat format) {
  switch (format) {
    case KeyFormat::kRaw:
      return SecretBytes::CopyOf(key.span());
    case KeyFormat::kHex: {
      static constexpr char kDigits[] = "0123456789abcdef";
      SecretBytes out(key.size() * 2 + 1);
      for (size_t i = 0; i < key.size(); ++i) {
        out.data()[2 * i] = static_cast<uint8_t>(kDigits[key.data()[i] >> 4]);
        out.data()[2 * i + 1] = static_cast<uint8_t>(kDigits[key.data()[i] & 0xf]);
      }
      out.data()[key.size() * 2] = '\n';
      return out;
    }
    case KeyFormat::kBase64: {
      std::string b64 = Base64Encode(key.span());
      b64.push_back('\n');
      SecretBytes out = SecretBytes::CopyOf(b64);
      OPENSSL_cleanse(b64.data(), b64.size());
      return out;
    }
  }
  return SecretBytes();
}

absl::StatusOr<ExclusiveFile> ExclusiveFile::Open(const std::string& path) {
  if (path == "-") return ExclusiveFile(path, STDOUT_FILENO);
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return CreateError(path, errno);
  // The umask cannot widen 0600, but make the mode exact.
  ::fchmod(fd, 0600);
  return ExclusiveFile(path, fd);
}

ExclusiveFile::ExclusiveFile(ExclusiveFile&& other) noexcept
    : path_(std::move(other.path_)), fd_(other.fd_), committed_(other.committed_) {
  other.fd_ = -1;
}

ExclusiveFile::~ExclusiveFile() {
  if (fd_ < 0 || path_ == "-") return;
  if (!committed_) {
    ::close(fd_);
    ::unlink(path_.c_str());
  }
}

absl::Status ExclusiveFile::Write(const SecretBytes& bytes) {
  return WriteAll(fd_, bytes.data(), bytes.size(), path_);
}

absl::Status ExclusiveFile::Commit() {
  if (path_ == "-") {
    committed_ = true;
    return absl::OkStatus();
  }
  committed_ = true;
  const int fd = fd_;
  fd_ = -1;
  absl::Status closed = SyncAndClose(fd, path_);
  if (!closed.ok()) ::unlink(path_.c_str());
  return closed;
}

absl::StatusOr<AtomicOutput> AtomicOutput::Open(const std::string& path) {
  if (path == "-") return AtomicOutput(path, "", STDOUT_FILENO);
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) return CreateError(path, EEXIST);
  std::string temp = path + ".kmsctl-XXXXXX";
  const int fd = ::mkstemp(temp.data());
  if (fd < 0) return CreateError(path, errno);
  return AtomicOutput(path, temp, fd);
}

AtomicOutput::AtomicOutput(AtomicOutput&& other) noexcept
    : path_(std::move(other.path_)),
      temp_(std::move(other.temp_)),
      fd_(other.fd_),
      committed_(other.committed_) {
  other.fd_ = -1;
  other.temp_.clear();
}

AtomicOutput::~AtomicOutput() {
  if (is_stdout() || temp_.empty() || committed_) return;
  if (fd_ >= 0) ::close(fd_);
  ::unlink(temp_.c_str());
}

absl::Status AtomicOutput::Commit() {
  committed_ = true;
  if (is_stdout()) return absl::OkStatus();
  const int fd = fd_;
  fd_ = -1;
  absl::Status closed = SyncAndClose(fd, path_);
  // link() refuses an existing target, so a file that appeared meanwhile is kept.
  if (closed.ok() && ::link(temp_.c_str(), path_.c_str()) != 0) closed = CreateError(path_, errno);
  ::unlink(temp_.c_str());
  return closed;
}

std::string HumanBytes(uint64_t bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = static_cast<double>(bytes);
  int unit = 0;
  while (v >= 1024 && unit < 5) {
    v /= 1024;
    ++unit;
  }
  std::ostringstream out;
  if (unit == 0) {
    out << bytes << " B";
  } else {
    out << std::fixed << std::setprecision(1) << v << " " << kUnits[unit];
  }
  return out.str();
}

ProgressBar::ProgressBar(bool enabled, std::optional<uint64_t> total)
    : enabled_(enabled), total_(total), start_(std::chrono::steady_clock::now()), last_() {}

void ProgressBar::Update(uint64_t done) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_ < std::chrono::milliseconds(100)) return;
  last_ = now;
  Draw(done);
}

void ProgressBar::Finish(uint64_t done) {
  if (!enabled_) return;
  Draw(done);
  std::cerr << "\n" << std::flush;
}

void ProgressBar::Draw(uint64_t done) {
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const uint64_t rate = seconds > 0 ? static_cast<uint64_t>(static_cast<double>(done) / seconds) : 0;
  std::ostringstream line;
  line << "\r";
  if (total_.has_value() && *total_ > 0) {
    constexpr int kWidth = 30;
    const double frac = std::min(1.0, static_cast<double>(done) / static_cast<double>(*total_));
    const int filled = static_cast<int>(frac * kWidth);
    line << "[" << std::string(filled, '#') << std::string(kWidth - filled, '.') << "] "
         << static_cast<int>(frac * 100) << "% " << HumanBytes(done) << " of "
         << HumanBytes(*total_);
  } else {
    line << HumanBytes(done);
  }
  line << ", " << HumanBytes(rate) << "/s\x1b[K";
  std::cerr << line.str() << std::flush;
}

}  // namespace kms::cli
