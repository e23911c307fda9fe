// `ringvm run` as a process on the host's /dev/kvm: SIGTERM and SIGINT stop a running VM cleanly
// with exit status 5, whatever the guest is doing. The guest is the host's stock kernel, which on
// a PVM host only spins in KVM's instruction emulator: exactly the "guest that will never stop by
// itself" case.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>

namespace {

std::string newest_kernel() {
  std::string best;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/boot", ec)) {
    const std::string p = e.path().string();
    if (e.path().filename().string().starts_with("vmlinuz-") && p > best) best = p;
  }
  return best;
}

// Starts `ringvm run` with stdin from /dev/null, waits until it has created its console file (it
// has then blocked its stop signals and is building or running the VM; a signal before that takes
// the default action, as for any process that has not started yet), sends `sig` after `delay`, and
// returns the exit status (or -1 when it did not exit within 20 s, after which it is killed).
int run_and_signal(const std::string& kernel, int sig, std::chrono::milliseconds delay, std::string* console) {
  char dir[] = "/tmp/ringvm-signal-test-XXXXXX";
  if (mkdtemp(dir) == nullptr) return -3;
  const std::string log_path = std::string(dir) + "/console.log";
  const char* log = log_path.c_str();
  const pid_t pid = fork();
  if (pid == 0) {
    const int in = open("/dev/null", O_RDONLY);
    dup2(in, STDIN_FILENO);
    const std::string console_arg = std::string("file:") + log;
    execl(RINGVM_BINARY, "ringvm", "run", "--force", "--kernel", kernel.c_str(), "--memory", "128M", "--console",
          console_arg.c_str(), "--cmdline", "console=ttyS0", static_cast<char*>(nullptr));
    _exit(127);
  }
  const auto started = std::chrono::steady_clock::now();
  while (!std::filesystem::exists(log) && std::chrono::steady_clock::now() - started < std::chrono::seconds(20))
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  std::this_thread::sleep_for(delay);
  kill(pid, sig);
  int ws = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (waitpid(pid, &ws, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &ws, 0);
      std::filesystem::remove_all(dir);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  *console = std::filesystem::exists(log) ? "exists" : "";
  std::filesystem::remove_all(dir);
  return WIFEXITED(ws) ? WEXITSTATUS(ws) : -2;
}

class RunSignal : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    const int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (fd < 0) GTEST_SKIP() << "/dev/kvm: " << std::strerror(errno);
    close(fd);
    kernel_ = newest_kernel();
    if (kernel_.empty()) GTEST_SKIP() << "no /boot/vmlinuz-* (scripts/setup.sh installs linux-image-amd64)";
  }
  std::string kernel_;
};

TEST_P(RunSignal, StopsTheVmWithStatus5) {
  std::string console;
  const int status = run_and_signal(kernel_, GetParam(), std::chrono::milliseconds(500), &console);
  EXPECT_EQ(status, 5) << "signal " << GetParam() << ": -1 means ringvm did not stop within 20 s";
  EXPECT_EQ(console, "exists") << "the --console file was not created";
}

INSTANTIATE_TEST_SUITE_P(TermAndInt, RunSignal, ::testing::Values(SIGTERM, SIGINT),
                         [](const auto& p) { return p.param == SIGTERM ? "SIGTERM" : "SIGINT"; });

}  // namespace
