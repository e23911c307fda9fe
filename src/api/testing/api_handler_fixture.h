// ApiHandlerTest's fixture: a handler over a VmController of FakeMachines in any state, with
// the files its requests name. Shared by api_handler_test.cc and api_snapshot_test.cc.
#pragma once

#include "api/api_handler.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <array>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "base/log.h"
#include "vmm/config_json.h"
#include "vmm/testing/fake_machine.h"

namespace ringvm {
namespace {

using testing::FakeMachine;
using testing::FakeMachineLog;

// The states a request can meet, in the order of Expect's columns.
constexpr std::array kStates = {VmState::kNotStarted, VmState::kRunning, VmState::kPaused, VmState::kStopped};

class Files;
// The configuration a World is built with unless told otherwise: a kernel, a root drive "rootfs",
// an interface "eth0" and a metrics file.
VmConfig configured_config(const Files& f);

// Files the configurations name: a kernel, two disk images, a metrics file; and a snapshot
// (good.snap, good.mem) of a VM with configured_config, as a FakeMachine writes one.
class Files {
 public:
  Files() {
    std::string tmpl = ::testing::TempDir() + "ringvm_api_XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) std::abort();
    dir = tmpl;
    for (const char* f : {"vmlinux", "root.img", "data.img"}) std::ofstream(dir + "/" + f) << "x";
    kernel = dir + "/vmlinux";
    root = dir + "/root.img";
    data = dir + "/data.img";
    metrics = dir + "/metrics.json";
    snap = dir + "/good.snap";
    mem = dir + "/good.mem";
    FakeMachine m(std::make_shared<FakeMachineLog>(), configured_config(*this));
    auto written = m.snapshot(SnapshotCreateRequest{false, snap, mem});
    EXPECT_TRUE(written.ok()) << written.error().message();
  }
  ~Files() { std::filesystem::remove_all(dir); }
  // A PUT /snapshot/load body for `state_file` and `mem_file` (default: the good snapshot).
  std::string load_body(std::string state_file = {}, std::string mem_file = {}, Json extra = Json::object()) const {
    Json j{{"snapshot_path", state_file.empty() ? snap : state_file},
           {"mem_backend", {{"backend_type", "File"}, {"backend_path", mem_file.empty() ? mem : mem_file}}}};
    for (const auto& [k, v] : extra.items()) j[k] = v;
    return j.dump();
  }
  std::string dir, kernel, root, data, metrics, snap, mem;
};

VmConfig configured_config(const Files& f) {
  const Json file{
      {"boot-source", {{"kernel_image_path", f.kernel}, {"boot_args", "console=ttyS0"}}},
      {"machine-config", {{"vcpu_count", 1}, {"mem_size_mib", 128}}},
      {"drives", Json::array({{{"drive_id", "rootfs"}, {"path_on_host", f.root}, {"is_root_device", true}}})},
      {"network-interfaces", Json::array({{{"iface_id", "eth0"}, {"host_dev_name", "tap0"}}})},
      {"metrics", {{"metrics_path", f.metrics}}},
  };
  auto cfg = parse_config_file(file.dump());
  EXPECT_TRUE(cfg.ok()) << cfg.error().message();
  return cfg.ok() ? *cfg : VmConfig{};
}

// One VM behind an ApiHandler, driven into `state`: a kernel, a root drive "rootfs", an interface
// "eth0" and a metrics file are configured (as a command line would, not through the API: the VMM
// is still fresh for PUT /snapshot/load), or nothing with `configured` false.
class World {
 public:
  World(const Files& files, VmState state, bool configured = true)
      : vm_(configured ? configured_config(files) : VmConfig{}, FakeMachine::factory(log)), api(vm_) {
    runner_ = std::thread([this] { vm_.run(false); });
    if (state == VmState::kNotStarted) return;
    EXPECT_EQ(call("PUT", "/actions", R"({"action_type": "InstanceStart"})").status, 204);
    if (state == VmState::kPaused) {
      EXPECT_EQ(call("PATCH", "/vm", R"({"state": "Paused"})").status, 204);
    }
    if (state == VmState::kStopped) {
      vm_.request_stop(StopReason::kPowerOff);
      runner_.join();
    }
    EXPECT_EQ(vm_.state(), state);
  }
  ~World() {
    vm_.request_stop(StopReason::kQuit);
    if (runner_.joinable()) runner_.join();
  }

  ApiResponse call(std::string_view method, std::string_view path, std::string_view body = {}) {
    return api.handle(method, path, body);
  }
  VmState state() const { return vm_.state(); }
  VmController& vm() { return vm_; }

  std::shared_ptr<FakeMachineLog> log = std::make_shared<FakeMachineLog>();

 private:
  VmController vm_;
  std::thread runner_;

 public:
  ApiHandler api;
};

// A refusal: 4xx/5xx with a JSON object holding a non-empty fault_message.
void expect_fault(const ApiResponse& r, std::string_view contains = {}) {
  auto j = Json::parse(r.body, nullptr, false);
  ASSERT_TRUE(j.is_object()) << r.status << " " << r.body;
  ASSERT_TRUE(j.contains("fault_message") && j["fault_message"].is_string()) << r.body;
  const std::string msg = j["fault_message"];
  EXPECT_FALSE(msg.empty());
  if (!contains.empty()) {
    EXPECT_NE(msg.find(contains), std::string::npos) << msg << " lacks " << contains;
  }
}

struct Call {
  std::string method, path, body;
  std::array<int, 4> status;  // in NotStarted, Running, Paused, Stopped
  std::string contains = {};  // in the fault_message of a refusal
};

class ApiHandlerTest : public ::testing::Test {
 protected:
  // Every state a call meets: the status, a fault for refusals, and nothing changed by them.
  void check_in_every_state(const Call& c) {
    for (size_t s = 0; s < kStates.size(); ++s) {
      SCOPED_TRACE(fmt::format("{} {} {} in state {}", c.method, c.path, c.body.substr(0, 80),
                               vm_state_name(kStates[s])));
      World w(files_, kStates[s]);
      const std::string config_before = w.call("GET", "/vm/config").body;
      const ApiResponse r = w.call(c.method, c.path, c.body);
      EXPECT_EQ(r.status, c.status[s]) << r.body;
      if (r.status >= 400) {
        expect_fault(r, c.contains);
        EXPECT_EQ(w.call("GET", "/vm/config").body, config_before);
        EXPECT_EQ(w.state(), kStates[s]);
      } else if (r.status == 204) {
        EXPECT_TRUE(r.body.empty()) << r.body;
      } else {
        EXPECT_TRUE(Json::parse(r.body, nullptr, false).is_object()) << r.body;
      }
    }
  }

  // A refused request in `state`: `status`, a fault naming `contains`, and GET /vm/config and the
  // state byte-identical afterwards.
  void check_refused(World& w, const Call& c, int status, VmState state) {
    SCOPED_TRACE(fmt::format("{} {} {}", c.method, c.path.substr(0, 80), c.body.substr(0, 80)));
    const std::string config_before = w.call("GET", "/vm/config").body;
    const std::string info_before = w.call("GET", "/").body;
    const ApiResponse r = w.call(c.method, c.path, c.body);
    EXPECT_EQ(r.status, status) << r.body;
    expect_fault(r, c.contains);
    EXPECT_EQ(w.call("GET", "/vm/config").body, config_before);
    EXPECT_EQ(w.call("GET", "/").body, info_before);
    EXPECT_EQ(w.state(), state);
  }

  Files files_;
};

constexpr std::array<int, 4> kAll200{200, 200, 200, 200};
constexpr std::array<int, 4> kPreBoot{204, 400, 400, 400};
constexpr std::array<int, 4> kLive{400, 204, 204, 400};
constexpr std::array<int, 4> kAll400{400, 400, 400, 400};
constexpr std::array<int, 4> kAll404{404, 404, 404, 404};
constexpr std::array<int, 4> kAll405{405, 405, 405, 405};


}  // namespace
}  // namespace ringvm
