// Whole-VM snapshots on real KVM with a tiny PVH guest (tests/guests/counter_pvh.s prints a
// counter on COM1): a snapshot taken mid-loop, restored by `ringvm run --restore` in a new
// process, prints exactly the numbers that follow the last one printed before the snapshot.
// They skip where /dev/kvm is missing; the lab runs them in L1.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "kvm/system.h"
#include "kvm_test_util.h"
#include "vmm/snapshot_file.h"
#include "vmm/vm.h"

namespace ringvm {
namespace {

using namespace std::chrono_literals;
using kvm_test::TempDir;
using kvm_test::wait_for;

const std::string kCounter = RINGVM_GUESTS_DIR "/counter_pvh.elf";

std::string read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

size_t line_count(const std::string& path) {
  const std::string s = read_all(path);
  return static_cast<size_t>(std::count(s.begin(), s.end(), '\n'));
}

VmConfig counter_config(const std::string& console, uint32_t cpus) {
  VmConfig c;
  c.kernel = kCounter;
  c.cmdline = "counter";
  c.cpus = cpus;
  c.memory_bytes = 64ULL << 20;
  c.console.kind = ConsoleSpec::Kind::kFile;
  c.console.path = console;
  return c;
}

pid_t spawn(const std::vector<std::string>& args) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

// Boots the counter, lets it print `lines`, pauses and snapshots it; returns what it printed.
std::string boot_and_snapshot(const TempDir& dir, uint32_t cpus, size_t lines) {
  const std::string console = dir / "console1";
  auto vm = Vm::create(counter_config(console, cpus));
  EXPECT_TRUE(vm) << vm.error().message();
  if (!vm) return {};
  std::thread runner([&] { (*vm)->run(); });
  EXPECT_TRUE(wait_for([&] { return line_count(console) >= lines; }, 30s)) << "the guest never counted";
  EXPECT_TRUE((*vm)->pause());
  auto snap = (*vm)->snapshot({false, dir / "vm.snap", dir / "vm.mem"});
  EXPECT_TRUE(snap) << snap.error().message();
  (*vm)->request_stop(StopReason::kSignal);
  runner.join();
  return read_all(console);
}

// Every line of `text` is the counter in hex: 1, 2, 3, ... with no gap and no repeat.
void expect_consecutive(const std::string& all, uint32_t min_lines) {
  // The last line may be cut by the SIGTERM that ended the restored VM: only whole lines count.
  const std::string text = all.substr(0, all.rfind('\n') == std::string::npos ? 0 : all.rfind('\n') + 1);
  std::istringstream in(text);
  std::string line;
  uint32_t want = 1;
  while (std::getline(in, line)) {
    ASSERT_EQ(line.size(), 8u) << "line " << want << ": \"" << line << "\"";
    EXPECT_EQ(std::stoul(line, nullptr, 16), want) << "the count broke at line " << want;
    ++want;
  }
  EXPECT_GE(want - 1, min_lines) << "too few lines to judge";
}

TEST(SnapshotKvm, RestoredInANewProcessTheGuestCountsOnFromItsSnapshot) {
  SKIP_WITHOUT_KVM();
  TempDir dir;
  const std::string before = boot_and_snapshot(dir, 2, 5);
  ASSERT_FALSE(before.empty());
  auto state = read_snapshot_file(dir / "vm.snap");
  ASSERT_TRUE(state) << state.error().message();
  EXPECT_EQ(state->vcpus.size(), 2u);

  const std::string console = dir / "console2";
  const pid_t pid = spawn({RINGVM_BINARY, "run", "--force", "--restore", dir / "vm.snap", "--restore-mem",
                           dir / "vm.mem", "--console", "file:" + console});
  ASSERT_GT(pid, 0);
  const bool counted = wait_for([&] { return line_count(console) >= 5; }, 30s);
  ::kill(pid, SIGTERM);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(counted) << "the restored guest did not count on; ringvm exited with " << status;
  // What the guest printed before the snapshot, then after the restore: one unbroken count (a
  // line cut by the pause is finished by the restored guest).
  expect_consecutive(before + read_all(console), 10);
}

TEST(SnapshotKvm, TwoRestoresOfOneSnapshotBothCountOnFromIt) {
  SKIP_WITHOUT_KVM();
  TempDir dir;
  const std::string before = boot_and_snapshot(dir, 1, 3);
  ASSERT_FALSE(before.empty());
  std::vector<pid_t> pids;
  for (int i = 0; i < 2; ++i)
    pids.push_back(spawn({RINGVM_BINARY, "run", "--force", "--restore", dir / "vm.snap", "--restore-mem",
                          dir / "vm.mem", "--console", "file:" + dir / ("c" + std::to_string(i))}));
  const bool counted = wait_for([&] { return line_count(dir / "c0") >= 5 && line_count(dir / "c1") >= 5; }, 30s);
  for (pid_t p : pids) ::kill(p, SIGTERM);
  for (pid_t p : pids) ::waitpid(p, nullptr, 0);
  ASSERT_TRUE(counted);
  // 3 lines before the snapshot and 5 after each restore (a line cut by the pause counts once).
  expect_consecutive(before + read_all(dir / "c0"), 7);
  expect_consecutive(before + read_all(dir / "c1"), 7);
  // The memory file is the snapshot's still: restores map it copy-on-write.
  auto again = read_snapshot_file(dir / "vm.snap");
  EXPECT_TRUE(again);
}

TEST(SnapshotKvm, ACorruptStateFileIsRefusedAndNamed) {
  SKIP_WITHOUT_KVM();
  TempDir dir;
  ASSERT_FALSE(boot_and_snapshot(dir, 1, 2).empty());
  {
    std::fstream f(dir / "vm.snap", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('\x5a');
  }
  const std::string err = dir / "err";
  const pid_t pid = ::fork();
  if (pid == 0) {
    FILE* e = std::freopen(err.c_str(), "w", stderr);
    (void)e;
    ::execl(RINGVM_BINARY, RINGVM_BINARY, "run", "--force", "--restore", (dir / "vm.snap").c_str(), "--restore-mem",
            (dir / "vm.mem").c_str(), "--console", "none", static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << status;
  EXPECT_NE(read_all(err).find("checksum"), std::string::npos) << read_all(err);
}

}  // namespace
}  // namespace ringvm
