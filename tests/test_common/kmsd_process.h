// KmsdProcess: a real kmsd process for end-to-end tests, started with its own
// arguments, awaited until it prints its "kmsd ready:" line, stopped with SIGTERM.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "kms/common/status.h"

namespace kms::test {

class KmsdProcess {
 public:
  // Runs `binary args...`, stderr to `log_path`. Waits up to `timeout` for readiness.
  static absl::StatusOr<std::unique_ptr<KmsdProcess>> Start(
      const std::string& binary, const std::vector<std::string>& args, const std::string& log_path,
      std::chrono::seconds timeout = std::chrono::seconds(90));
  ~KmsdProcess();

  int grpc_port() const { return grpc_port_; }
  int http_port() const { return http_port_; }
  int xks_port() const { return xks_port_; }  // 0 without the XKS door
  std::string grpc_addr() const { return "127.0.0.1:" + std::to_string(grpc_port_); }
  pid_t pid() const { return pid_; }
  const std::string& log_path() const { return log_path_; }
  // SIGTERM, then waits; returns the exit status (or -1 when killed by a signal).
  int Stop();
  // SIGKILL: a crash, not a shutdown.
  void Kill();
  bool Running();

 private:
  KmsdProcess() = default;
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  int grpc_port_ = 0;
  int http_port_ = 0;
  int xks_port_ = 0;
  std::string log_path_;
};

// Runs a command line through /bin/sh; returns its exit code and captures stdout.
struct CommandResult {
  int exit_code = -1;
  std::string out;
};
CommandResult RunCommand(const std::string& command_line, const std::string& stdin_data = "");

// Reads a whole file ("" when missing).
std::string ReadFileOrEmpty(const std::string& path);

}  // namespace kms::test
