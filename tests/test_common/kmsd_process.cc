#include "tests/test_common/kmsd_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"

namespace kms::test {

absl::StatusOr<std::unique_ptr<KmsdProcess>> KmsdProcess::Start(const std::string& binary,
                                                                const std::vector<std::string>& args,
                                                                const std::string& log_path,
                                                                std::chrono::seconds timeout) {
  int out[2];
  if (pipe(out) != 0) return absl::InternalError("pipe failed");
  pid_t pid = fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    dup2(out[1], STDOUT_FILENO);
    int log = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (log >= 0) dup2(log, STDERR_FILENO);
    close(out[0]);
    close(out[1]);
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(binary.c_str()));
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(binary.c_str(), argv.data());
    _exit(127);
  }
  close(out[1]);
  std::unique_ptr<KmsdProcess> p(new KmsdProcess());
  p->pid_ = pid;
  p->stdout_fd_ = out[0];
  p->log_path_ = log_path;

  std::string buffer;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  static const std::regex kReady(R"(kmsd ready: grpc=[^ ]*:(\d+)(?: https=[^ ]*:(\d+))?(?: xks=[^ ]*:(\d+))?\n)");
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd pfd{p->stdout_fd_, POLLIN, 0};
    int r = poll(&pfd, 1, 200);
    if (r > 0) {
      char chunk[512];
      ssize_t n = read(p->stdout_fd_, chunk, sizeof(chunk));
      if (n <= 0) break;  // stdout closed: the process ended
      buffer.append(chunk, static_cast<size_t>(n));
      std::smatch m;
      if (std::regex_search(buffer, m, kReady)) {
        p->grpc_port_ = std::stoi(m[1]);
        if (m[2].matched) p->http_port_ = std::stoi(m[2]);
        if (m[3].matched) p->xks_port_ = std::stoi(m[3]);
        return p;
      }
    }
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      p->pid_ = -1;
      return absl::FailedPreconditionError(absl::StrCat(
          "kmsd exited before ready (status ", status, "); log:\n", ReadFileOrEmpty(log_path)));
    }
  }
  return absl::DeadlineExceededError(
      absl::StrCat("kmsd not ready in time; log:\n", ReadFileOrEmpty(log_path)));
}

KmsdProcess::~KmsdProcess() {
  if (Running()) Kill();
  if (stdout_fd_ >= 0) close(stdout_fd_);
}

bool KmsdProcess::Running() {
  if (pid_ <= 0) return false;
  int status = 0;
  if (waitpid(pid_, &status, WNOHANG) == pid_) {
    pid_ = -1;
    return false;
  }
  return true;
}

int KmsdProcess::Stop() {
  if (pid_ <= 0) return -1;
  kill(pid_, SIGTERM);
  int status = 0;
  for (int i = 0; i < 200; ++i) {  // up to 20 s
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  Kill();
  return -1;
}

void KmsdProcess::Kill() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

CommandResult RunCommand(const std::string& command_line, const std::string& stdin_data) {
  CommandResult result;
  char in_path[] = "/tmp/kmsd-cmd-in-XXXXXX";
  int fd = mkstemp(in_path);
  if (fd < 0) return result;
  if (!stdin_data.empty()) {
    ssize_t ignored = write(fd, stdin_data.data(), stdin_data.size());
    (void)ignored;
  }
  close(fd);
  std::string full = absl::StrCat("(", command_line, ") < ", in_path);
  FILE* pipe = popen(full.c_str(), "r");
  if (pipe) {
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) result.out.append(buf, n);
    int status = pclose(pipe);
    result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  unlink(in_path);
  return result;
}

std::string ReadFileOrEmpty(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace kms::test
