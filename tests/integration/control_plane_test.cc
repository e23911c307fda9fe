// The control plane on real KVM with a tiny PVH guest (tests/guests/ticker_pvh.s writes 't' to
// COM1 every few million instructions): pause stops the counter and resume continues it, the
// REST API drives the same VM, and 200 create-boot-stop cycles through the API leak neither file
// descriptors nor memory. They skip where /dev/kvm is missing; the lab runs them in L1.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "api/api_client.h"
#include "api/api_handler.h"
#include "api/api_server.h"
#include "kvm/system.h"
#include "kvm_test_util.h"
#include "vmm/controller.h"
#include "vmm/vm.h"

namespace ringvm {
namespace {

using namespace std::chrono_literals;
using kvm_test::TempDir;
using kvm_test::wait_for;

const std::string kTicker = RINGVM_GUESTS_DIR "/ticker_pvh.elf";

uint64_t file_size(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
}

VmConfig ticker_config(const std::string& console, uint32_t cpus) {
  VmConfig c;
  c.kernel = kTicker;
  c.cmdline = "ticker";
  c.cpus = cpus;
  c.memory_bytes = 64ULL << 20;
  c.console.kind = ConsoleSpec::Kind::kFile;
  c.console.path = console;
  return c;
}

TEST(ControlPlaneKvm, PausedGuestStopsCountingAndResumesWhereItLeftOff) {
  SKIP_WITHOUT_KVM();
  TempDir dir;
  const std::string console = dir / "console";
  auto vm = Vm::create(ticker_config(console, 2));
  ASSERT_TRUE(vm.ok()) << vm.error().message();
  StopReason reason = StopReason::kNone;
  std::thread runner([&] { reason = (*vm)->run(); });
  ASSERT_TRUE(wait_for([&] { return file_size(console) >= 3; }, 20s)) << "the guest never ticked";

  ASSERT_TRUE((*vm)->pause().ok());
  EXPECT_EQ((*vm)->parked_vcpus(), 2u) << "every vCPU thread parks";
  EXPECT_TRUE((*vm)->pause().ok()) << "pausing a paused VM is harmless";
  std::this_thread::sleep_for(50ms);  // the console flushes what the guest wrote before the pause
  const uint64_t at_pause = file_size(console);
  std::this_thread::sleep_for(400ms);
  EXPECT_EQ(file_size(console), at_pause) << "a paused guest must not run";

  ASSERT_TRUE((*vm)->resume().ok());
  EXPECT_TRUE(wait_for([&] { return file_size(console) >= at_pause + 3; }, 20s)) << "the guest did not go on";
  EXPECT_EQ((*vm)->parked_vcpus(), 0u);
  EXPECT_TRUE((*vm)->resume().ok()) << "resuming a running VM is harmless";

  (*vm)->request_stop(StopReason::kSignal);
  runner.join();
  EXPECT_EQ(reason, StopReason::kSignal);
}

// Firecracker's clients pause right after InstanceStart: the vCPU threads may still be starting.
TEST(ControlPlaneKvm, PauseRightAfterTheStartParksEveryVcpu) {
  SKIP_WITHOUT_KVM();
  TempDir dir;
  auto vm = Vm::create(ticker_config(dir / "console", 2));
  ASSERT_TRUE(vm.ok()) << vm.error().message();
  StopReason reason = StopReason::kNone;
  std::thread runner([&] { reason = (*vm)->run(); });
  auto paused = (*vm)->pause();
  ASSERT_TRUE(paused.ok()) << paused.error().message();
  EXPECT_EQ((*vm)->parked_vcpus(), 2u);
  ASSERT_TRUE((*vm)->resume().ok());
  (*vm)->request_stop(StopReason::kSignal);
  runner.join();
  EXPECT_EQ(reason, StopReason::kSignal);
}

TEST(ControlPlaneKvm, StopWhilePausedEndsTheVm) {
  SKIP_WITHOUT_KVM();
  TempDir dir;
  const std::string console = dir / "console";
  auto vm = Vm::create(ticker_config(console, 1));
  ASSERT_TRUE(vm.ok()) << vm.error().message();
  StopReason reason = StopReason::kNone;
  std::thread runner([&] { reason = (*vm)->run(); });
  ASSERT_TRUE(wait_for([&] { return file_size(console) >= 1; }, 20s));
  ASSERT_TRUE((*vm)->pause().ok());
  (*vm)->request_stop(StopReason::kSignal);
  runner.join();
  EXPECT_EQ(reason, StopReason::kSignal);
  EXPECT_TRUE((*vm)->stuck_vcpus().empty());
}

// One VM's life through the REST API, in this process: a real server on a socket, a real Vm.
struct ApiVm {
  explicit ApiVm(const std::string& socket)
      : controller(VmConfig{},
                   [](const VmConfig& c) -> Result<std::unique_ptr<Machine>> {
                     auto vm = Vm::create(c);
                     if (!vm) return std::move(vm).error();
                     return std::unique_ptr<Machine>(std::move(*vm));
                   }),
        handler(controller) {
    auto s = ApiServer::start(socket, handler);
    if (s) server = std::move(*s);
    runner = std::thread([this] { reason = controller.run(false); });
  }
  ~ApiVm() {
    controller.request_stop(StopReason::kSignal);
    runner.join();
    if (server) server->stop();
  }
  VmController controller;
  ApiHandler handler;
  std::unique_ptr<ApiServer> server;
  StopReason reason = StopReason::kNone;
  std::thread runner;
};

std::string state_of(ApiClient& c) {
  auto r = c.request("GET", "/");
  if (!r || r->status != 200) return "?";
  return nlohmann::json::parse(r->body).value("state", "?");
}

TEST(ControlPlaneKvm, TheApiConfiguresStartsPausesAndResumesARealVm) {
  SKIP_WITHOUT_KVM();
  TempDir dir;
  const std::string sock = dir / "api.sock", console = dir / "console";
  ApiVm vm(sock);
  ASSERT_TRUE(vm.server);
  auto client = ApiClient::connect(sock);
  ASSERT_TRUE(client.ok()) << client.error().message();
  auto put = [&](const char* method, const char* path, const nlohmann::json& body) {
    auto r = client->request(method, path, body.dump());
    return r ? r->status : -1;
  };
  EXPECT_EQ(state_of(*client), "Not started");
  EXPECT_EQ(put("PUT", "/machine-config", {{"vcpu_count", 2}, {"mem_size_mib", 64}}), 204);
  EXPECT_EQ(put("PUT", "/boot-source", {{"kernel_image_path", kTicker}, {"boot_args", "ticker"}}), 204);
  EXPECT_EQ(put("PUT", "/serial", {{"serial_out_path", console}}), 204);
  EXPECT_EQ(put("PUT", "/actions", {{"action_type", "InstanceStart"}}), 204);
  EXPECT_EQ(state_of(*client), "Running");
  EXPECT_EQ(put("PUT", "/machine-config", {{"vcpu_count", 1}, {"mem_size_mib", 64}}), 400) << "pre-boot only";
  ASSERT_TRUE(wait_for([&] { return file_size(console) >= 2; }, 20s)) << "the guest never ticked";

  EXPECT_EQ(put("PATCH", "/vm", {{"state", "Paused"}}), 204);
  EXPECT_EQ(state_of(*client), "Paused");
  std::this_thread::sleep_for(50ms);
  const uint64_t at_pause = file_size(console);
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(file_size(console), at_pause);
  EXPECT_EQ(put("PATCH", "/vm", {{"state", "Resumed"}}), 204);
  EXPECT_EQ(state_of(*client), "Running");
  EXPECT_TRUE(wait_for([&] { return file_size(console) > at_pause; }, 20s));

  auto m = client->request("GET", "/metrics");
  ASSERT_TRUE(m.ok());
  const auto metrics = nlohmann::json::parse(m->body);
  EXPECT_GT(metrics["vcpu_exits"].value("io", 0), 0) << m->body;
}

size_t open_fds() {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

uint64_t rss_kib() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6));
  return 0;
}

TEST(ControlPlaneKvm, TwoHundredCreateBootStopCyclesLeakNothing) {
  SKIP_WITHOUT_KVM();
  TempDir dir;
  size_t fds_after_warmup = 0;
  uint64_t rss_after_warmup = 0;
  constexpr int kCycles = 200, kWarmup = 20;
  for (int i = 0; i < kCycles; ++i) {
    const std::string sock = dir / "api.sock", console = dir / fmt::format("console{}", i);
    {
      ApiVm vm(sock);
      ASSERT_TRUE(vm.server) << "cycle " << i;
      auto r = api_request(sock, "PUT", "/boot-source",
                           nlohmann::json{{"kernel_image_path", kTicker}, {"boot_args", "ticker"}}.dump());
      ASSERT_TRUE(r.ok() && r->status == 204) << "cycle " << i;
      r = api_request(sock, "PUT", "/machine-config", R"({"vcpu_count": 1, "mem_size_mib": 32})");
      ASSERT_TRUE(r.ok() && r->status == 204) << "cycle " << i;
      r = api_request(sock, "PUT", "/serial", nlohmann::json{{"serial_out_path", console}}.dump());
      ASSERT_TRUE(r.ok() && r->status == 204) << "cycle " << i;
      r = api_request(sock, "PUT", "/actions", R"({"action_type": "InstanceStart"})");
      ASSERT_TRUE(r.ok() && r->status == 204) << "cycle " << i << ": " << (r ? r->body : r.error().message());
      ASSERT_TRUE(wait_for([&] { return file_size(console) >= 1; }, 20s)) << "cycle " << i << ": no tick";
    }
    std::filesystem::remove(console);
    if (i + 1 == kWarmup) {
      fds_after_warmup = open_fds();
      rss_after_warmup = rss_kib();
    }
  }
  EXPECT_EQ(open_fds(), fds_after_warmup)
      << "file descriptors leaked over " << kCycles - kWarmup << " cycles";
  EXPECT_LT(rss_kib(), rss_after_warmup + 16 * 1024)
      << "RSS grew from " << rss_after_warmup << " KiB to " << rss_kib() << " KiB";
}

}  // namespace
}  // namespace ringvm
