// How kmsctl writes data keys and encrypted or decrypted files, apart from main.cc so
// that it is unit-tested without a server (tests/unit/cli):
//   - a key file is created exclusively (O_CREAT|O_EXCL, never through a link) with mode
//     0600 before kmsd is asked for the key, so an existing file stops the command with
//     nothing done; on failure the empty file is removed;
//   - a file output is written under a temporary name in the same directory and renamed
//     into place only when complete, so a failed or refused decryption leaves nothing
//     half-written under the requested name;
//   - a progress bar on a terminal.
// Not thread-safe (one command at a time).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "kms/common/secret.h"
#include "kms/common/status.h"

namespace kms::cli {

enum class KeyFormat { kHex, kBase64, kRaw };
// "hex", "base64", "raw"; INVALID_ARGUMENT otherwise.
absl::StatusOr<KeyFormat> ParseKeyFormat(const std::string& name);
// The key in that format; hex and base64 end with a newline (ClickHouse's key_hex,
// openssl's -K and shell variables read them as a line).
SecretBytes FormatKey(const SecretBytes& key, KeyFormat format);

// A file created exclusively with mode 0600, or stdout for "-". Open() before anything
// else happens; Write() then Commit() (fsync, close), or drop it uncommitted: a created
// file is removed.
class ExclusiveFile {
 public:
  // ALREADY_EXISTS when `path` exists (file, link, directory); INTERNAL with the
  // system's reason when it cannot be created.
  static absl::StatusOr<ExclusiveFile> Open(const std::string& path);
  ExclusiveFile(ExclusiveFile&& other) noexcept;
  ExclusiveFile& operator=(ExclusiveFile&&) = delete;
  ~ExclusiveFile();

  absl::Status Write(const SecretBytes& bytes);
  absl::Status Commit();

 private:
  ExclusiveFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  std::string path_;
  int fd_ = -1;
  bool committed_ = false;
};

// An output that appears under its name only when complete: "-" is stdout (written as
// it goes; a failure cannot be taken back, the caller must say so), anything else a
// temporary file "<path>.kmsctl-XXXXXX" (mode 0600) renamed to `path` by Commit().
// ALREADY_EXISTS when `path` exists: nothing is ever replaced.
class AtomicOutput {
 public:
  static absl::StatusOr<AtomicOutput> Open(const std::string& path);
  AtomicOutput(AtomicOutput&& other) noexcept;
  AtomicOutput& operator=(AtomicOutput&&) = delete;
  ~AtomicOutput();

  int fd() const { return fd_; }
  bool is_stdout() const { return path_ == "-"; }
  // fsync, close, and link the temporary file to `path` (refusing an existing path).
  absl::Status Commit();

 private:
  AtomicOutput(std::string path, std::string temp, int fd)
      : path_(std::move(path)), temp_(std::move(temp)), fd_(fd) {}
  std::string path_, temp_;
  int fd_ = -1;
  bool committed_ = false;
};

// "12.3 MiB" (binary units).
std::string HumanBytes(uint64_t bytes);

// Draws "\r[#####.....] 45% 1.2 GiB of 2.5 GiB, 310.4 MiB/s" (or without a total,
// "1.2 GiB, 310.4 MiB/s") on stderr when it is a terminal, at most 10 times a second.
class ProgressBar {
 public:
  // `total` when the input's size is known (a regular file).
  ProgressBar(bool enabled, std::optional<uint64_t> total);
  void Update(uint64_t done);
  void Finish(uint64_t done);  // the final line and a newline

 private:
  void Draw(uint64_t done);
  bool enabled_;
  std::optional<uint64_t> total_;
  std::chrono::steady_clock::time_point start_, last_;
};

}  // namespace kms::cli
