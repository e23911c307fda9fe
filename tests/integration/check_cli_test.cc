// Runs the built `ringvm check` as a process: on this host (its verdict must match the backend
// that /sys/module says serves /dev/kvm, and the probe guest must have run) and against fixture
// hosts (exit statuses and the one-line problems on stderr).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

namespace {

struct ProcessRun {
  int status = -1;  // exit status, or -1 if it did not exit normally
  std::string out, err;
};

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Runs `ringvm <args>` with stdin from /dev/null (CI has no terminal) and captures both streams.
ProcessRun run_ringvm(const std::string& args) {
  char err_path[] = "/tmp/ringvm-check-test-XXXXXX";
  const int fd = mkstemp(err_path);
  EXPECT_GE(fd, 0);
  if (fd >= 0) close(fd);
  const std::string cmd = std::string(RINGVM_BINARY) + " " + args + " </dev/null 2>" + err_path;
  ProcessRun r;
  FILE* p = popen(cmd.c_str(), "r");
  EXPECT_NE(p, nullptr) << cmd;
  if (p == nullptr) return r;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) r.out.append(buf, n);
  const int ws = pclose(p);
  r.status = WIFEXITED(ws) ? WEXITSTATUS(ws) : -1;
  r.err = slurp(err_path);
  unlink(err_path);
  return r;
}

bool kvm_usable(std::string* why) {
  const int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    *why = std::string("/dev/kvm: ") + std::strerror(errno);
    return false;
  }
  close(fd);
  return true;
}

const std::string kFixtures = std::string(RINGVM_SOURCE_DIR) + "/tests/fixtures/check";

TEST(CheckCli, JsonOnThisHostNamesTheBackendAndRanTheProbe) {
  std::string why;
  if (!kvm_usable(&why)) GTEST_SKIP() << "host KVM unusable, skipping: " << why;
  const ProcessRun r = run_ringvm("check --json");
  const auto j = nlohmann::json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(j.is_discarded()) << "not JSON:\n" << r.out;
  EXPECT_EQ(j["exit_status"], r.status);
  ASSERT_TRUE(j["probe"].is_object());
  EXPECT_EQ(j["probe"]["ok"], true) << j["probe"].dump();
  EXPECT_EQ(j["kvm"]["api_version"], 12);
  if (std::filesystem::exists("/sys/module/kvm_pvm")) {
    EXPECT_EQ(j["backend"]["module"], "kvm_pvm");
    EXPECT_EQ(j["verdict"], "pvm-only");
    EXPECT_EQ(r.status, 10);
  } else if (std::filesystem::exists("/sys/module/kvm_intel") ||
             std::filesystem::exists("/sys/module/kvm_amd")) {
    EXPECT_EQ(j["verdict"], "hardware");
    EXPECT_EQ(r.status, 0);
  }
  EXPECT_TRUE(r.err.empty()) << "a usable host has no problems to report:\n" << r.err;
}

TEST(CheckCli, TextOnThisHostEndsWithTheSameVerdict) {
  std::string why;
  if (!kvm_usable(&why)) GTEST_SKIP() << "host KVM unusable, skipping: " << why;
  const ProcessRun text = run_ringvm("check");
  const ProcessRun as_json = run_ringvm("check --json");
  EXPECT_EQ(text.status, as_json.status);
  const auto j = nlohmann::json::parse(as_json.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded());
  EXPECT_NE(text.out.find("Verdict    " + j["verdict_text"].get<std::string>()), std::string::npos)
      << text.out;
  EXPECT_NE(text.out.find("/dev/kvm"), std::string::npos);
}

TEST(CheckCli, MissingDeviceOnFixtureHost) {
  const ProcessRun r = run_ringvm("check --json --dev /nonexistent/kvm --procfs-root " + kFixtures +
                                  "/novirt/proc --sysfs-root " + kFixtures + "/novirt/sys");
  EXPECT_EQ(r.status, 11);
  const auto j = nlohmann::json::parse(r.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r.out;
  EXPECT_EQ(j["verdict"], "no-kvm");
  EXPECT_EQ(j["cpu"]["model_name"], "Intel(R) Celeron(R) CPU  N2840  @ 2.16GHz");
  // Exactly one line on stderr, naming the path and the fix.
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find("/nonexistent/kvm does not exist"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("firmware"), std::string::npos) << r.err;
}

TEST(CheckCli, NonKvmDeviceIsUnusable) {
  const ProcessRun r = run_ringvm("check --dev /dev/null");
  EXPECT_EQ(r.status, 12);
  EXPECT_NE(r.err.find("/dev/null does not answer KVM_GET_API_VERSION"), std::string::npos) << r.err;
}

TEST(CheckCli, HelpDocumentsExitStatusesAndBadOptionsAreUsageErrors) {
  const ProcessRun help = run_ringvm("check --help");
  EXPECT_EQ(help.status, 0);
  for (const char* s :
       {"10  only PVM", "11  no KVM", "12  KVM present but unusable", "--sysfs-root", "--dev"})
    EXPECT_NE(help.out.find(s), std::string::npos) << s << " missing from:\n" << help.out;
  EXPECT_EQ(run_ringvm("check --no-such-option").status, 2);
}

}  // namespace
