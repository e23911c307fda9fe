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

std::vector<Call> endpoint_calls(const Files& f) {
  const std::string drive =
      Json{{"drive_id", "data"}, {"path_on_host", f.data}, {"is_root_device", false}}.dump();
  return {
      {"GET", "/", "", kAll200},
      {"GET", "/version", "", kAll200},
      {"GET", "/vm/config", "", kAll200},
      {"GET", "/machine-config", "", kAll200},
      {"GET", "/metrics", "", kAll200},
      {"PUT", "/machine-config", R"({"vcpu_count": 2, "mem_size_mib": 256})", kPreBoot, "InstanceStart"},
      {"PATCH", "/machine-config", R"({"vcpu_count": 2})", kPreBoot, "InstanceStart"},
      {"PUT", "/boot-source", Json{{"kernel_image_path", f.kernel}}.dump(), kPreBoot, "InstanceStart"},
      {"PUT", "/drives/data", drive, kPreBoot, "InstanceStart"},
      {"PATCH", "/drives/rootfs", R"({"drive_id": "rootfs"})", kLive, "InstanceStart"},
      {"PUT", "/network-interfaces/eth1", R"({"iface_id": "eth1", "host_dev_name": "tap1"})", kPreBoot,
       "InstanceStart"},
      {"PATCH", "/network-interfaces/eth0", R"({"iface_id": "eth0"})", kLive, "InstanceStart"},
      {"PUT", "/vsock", R"({"guest_cid": 3, "uds_path": "/tmp/ringvm-test-v.sock"})", kPreBoot,
       "InstanceStart"},
      {"PUT", "/entropy", "{}", kPreBoot, "InstanceStart"},
      {"PUT", "/serial", Json{{"serial_out_path", f.dir + "/serial.log"}}.dump(), kPreBoot, "InstanceStart"},
      {"PUT", "/logger", R"({"level": "Warning"})", kPreBoot, "InstanceStart"},
      {"PUT", "/metrics", Json{{"metrics_path", f.dir + "/m2.json"}}.dump(), kPreBoot, "InstanceStart"},
      {"PUT", "/actions", R"({"action_type": "InstanceStart"})", kPreBoot, "already"},
      {"PUT", "/actions", R"({"action_type": "SendCtrlAltDel"})", {400, 204, 400, 400}, "SendCtrlAltDel"},
      {"PUT", "/actions", R"({"action_type": "FlushMetrics"})", {204, 204, 204, 204}},
      {"PATCH", "/vm", R"({"state": "Paused"})", kLive, "Paused"},
      {"PATCH", "/vm", R"({"state": "Resumed"})", kLive, "Resumed"},
      // A snapshot of a paused VM only; a load only into a VMM that has started nothing (the
      // World's configuration is the command line's, not the API's: the VMM is still fresh).
      {"PUT", "/snapshot/create",
       Json{{"snapshot_path", f.dir + "/t.snap"}, {"mem_file_path", f.dir + "/t.mem"}}.dump(),
       {400, 400, 204, 400}, "a snapshot is taken of a paused VM"},
      {"PUT", "/snapshot/load", f.load_body(), {204, 400, 400, 400}, "a snapshot loads only into a VMM"},
      // Firecracker's routes ringvm does not serve yet: 400, saying so.
      {"GET", "/balloon", "", kAll400, "not supported"},
      {"PUT", "/balloon", R"({"amount_mib": 1, "deflate_on_oom": false})", kAll400, "not supported"},
      {"PATCH", "/balloon", R"({"amount_mib": 1})", kAll400, "not supported"},
      {"GET", "/balloon/statistics", "", kAll400, "not supported"},
      {"PATCH", "/balloon/statistics", R"({"stats_polling_interval_s": 1})", kAll400, "not supported"},
      {"PATCH", "/balloon/hinting/start", "{}", kAll400, "not supported"},
      {"GET", "/balloon/hinting/status", "", kAll400, "not supported"},
      {"PATCH", "/balloon/hinting/stop", "{}", kAll400, "not supported"},
      {"GET", "/mmds", "", kAll400, "not supported"},
      {"PUT", "/mmds", "{}", kAll400, "not supported"},
      {"PATCH", "/mmds", "{}", kAll400, "not supported"},
      {"PUT", "/mmds/config", R"({"network_interfaces": ["eth0"]})", kAll400, "not supported"},
      {"PUT", "/cpu-config", "{}", kAll400, "not supported"},
      {"PUT", "/pmem/p0", "{}", kAll400, "not supported"},
      {"PATCH", "/pmem/p0", "{}", kAll400, "not supported"},
      {"PUT", "/hotplug/memory", "{}", kAll400, "not supported"},
      {"GET", "/hotplug/memory", "", kAll400, "not supported"},
      {"PATCH", "/hotplug/memory", "{}", kAll400, "not supported"},
      // Known paths, wrong methods.
      {"DELETE", "/", "", kAll405, "allowed: GET"},
      {"PUT", "/", "{}", kAll405, "allowed: GET"},
      {"POST", "/actions", R"({"action_type": "InstanceStart"})", kAll405, "allowed: PUT"},
      {"GET", "/actions", "", kAll405, "allowed: PUT"},
      {"GET", "/boot-source", "", kAll405, "allowed: PUT"},
      {"GET", "/drives/rootfs", "", kAll405, "allowed: PUT, PATCH"},
      {"PUT", "/vm/config", "{}", kAll405},
      {"GET", "/vm", "", kAll405, "allowed: PATCH"},
      {"DELETE", "/balloon", "", kAll405},
      {"get", "/", "", kAll405},
      // Unknown paths.
      {"GET", "/nope", "", kAll404, "/nope"},
      {"GET", "/drives", "", kAll404},
      {"PUT", "/drives/a/b", "{}", kAll404},
      {"GET", "/vm/config/x", "", kAll404},
      {"GET", "", "", kAll404},
      {"GET", "vm/config", "", kAll404},
      {"GET", "/vm//config", "", kAll404},
      {"PUT", "/drives/", "{}", kAll404},
      {"PUT", "/drives//", "{}", kAll404},
      {"GET", "/version/", "", kAll404},
  };
}

TEST_F(ApiHandlerTest, EveryEndpointInEveryState) {
  for (const Call& c : endpoint_calls(files_)) check_in_every_state(c);
}

// The table above covers every route the handler serves, so a new route needs a row.
TEST_F(ApiHandlerTest, EveryRouteIsInTheStateTable) {
  const auto calls = endpoint_calls(files_);
  for (const ApiRoute& route : ApiHandler::routes()) {
    const std::string tmpl(route.path);
    const size_t brace = tmpl.find('{');
    const std::string prefix = tmpl.substr(0, brace);
    const bool found = std::any_of(calls.begin(), calls.end(), [&](const Call& c) {
      if (c.method != route.method) return false;
      if (brace == std::string::npos) return c.path == tmpl;
      return c.path.starts_with(prefix) && c.path.size() > prefix.size() &&
             c.path.find('/', prefix.size()) == std::string::npos;
    });
    EXPECT_TRUE(found) << route.method << " " << route.path << " has no row in endpoint_calls";
  }
}

// Every route the handler lists is handled: never the "routed but not handled" 500, never 404/405.
TEST_F(ApiHandlerTest, EveryListedRouteIsDispatched) {
  World w(files_, VmState::kNotStarted);
  for (const ApiRoute& route : ApiHandler::routes()) {
    std::string path(route.path);
    if (const size_t b = path.find('{'); b != std::string::npos) path = path.substr(0, b) + "x";
    const ApiResponse r = w.call(route.method, path, "");
    SCOPED_TRACE(fmt::format("{} {}", route.method, path));
    EXPECT_NE(r.status, 404) << r.body;
    EXPECT_NE(r.status, 405) << r.body;
    EXPECT_NE(r.status, 500) << r.body;
    if (!route.supported) {
      expect_fault(r, "not supported");
    }
  }
}

TEST_F(ApiHandlerTest, InstanceInfoStateStrings) {
  World w(files_, VmState::kNotStarted);
  auto info = [&] { return Json::parse(w.call("GET", "/").body); };
  EXPECT_EQ(info()["state"], "Not started");
  EXPECT_EQ(info()["id"], "ringvm");
  EXPECT_EQ(info()["app_name"], "ringvm");
  EXPECT_TRUE(info()["vmm_version"].is_string());
  ASSERT_EQ(w.call("PUT", "/actions", R"({"action_type": "InstanceStart"})").status, 204);
  EXPECT_EQ(info()["state"], "Running");
  ASSERT_EQ(w.call("PATCH", "/vm", R"({"state": "Paused"})").status, 204);
  EXPECT_EQ(info()["state"], "Paused");
  ASSERT_EQ(w.call("PATCH", "/vm", R"({"state": "Paused"})").status, 204);  // harmless
  EXPECT_EQ(w.log->pauses, 1);
  ASSERT_EQ(w.call("PATCH", "/vm", R"({"state": "Resumed"})").status, 204);
  EXPECT_EQ(info()["state"], "Running");
  ASSERT_EQ(w.call("PUT", "/actions", R"({"action_type": "SendCtrlAltDel"})").status, 204);
  EXPECT_EQ(w.log->ctrl_alt_dels, 1);

  auto version = Json::parse(w.call("GET", "/version").body);
  EXPECT_EQ(version["firecracker_api_version"], std::string(ApiHandler::kFirecrackerApiVersion));
  EXPECT_TRUE(version["firecracker_version"].is_string());
}

// Firecracker's getting-started flow, on an empty configuration.
TEST_F(ApiHandlerTest, GettingStartedFlowConfiguresAndBoots) {
  World w(files_, VmState::kNotStarted, /*configured=*/false);
  auto start = w.call("PUT", "/actions", R"({"action_type": "InstanceStart"})");
  ASSERT_EQ(start.status, 400);
  expect_fault(start, "kernel");
  EXPECT_EQ(w.state(), VmState::kNotStarted);
  ASSERT_EQ(w.call("PUT", "/machine-config", R"({"vcpu_count": 2, "mem_size_mib": 1024})").status, 204);
  ASSERT_EQ(w.call("PUT", "/boot-source",
                   Json{{"kernel_image_path", files_.kernel}, {"boot_args", "console=ttyS0 reboot=k"}}.dump())
                .status,
            204);
  ASSERT_EQ(w.call("PUT", "/drives/rootfs",
                   Json{{"drive_id", "rootfs"},
                        {"path_on_host", files_.root},
                        {"is_root_device", true},
                        {"is_read_only", false}}
                       .dump())
                .status,
            204);
  ASSERT_EQ(w.call("PUT", "/network-interfaces/net1",
                   R"({"iface_id": "net1", "guest_mac": "06:00:AC:10:00:02", "host_dev_name": "tap0"})")
                .status,
            204);
  const Json config = Json::parse(w.call("GET", "/vm/config").body);
  EXPECT_EQ(config["machine-config"]["vcpu_count"], 2);
  EXPECT_EQ(config["machine-config"]["mem_size_mib"], 1024);
  EXPECT_EQ(config["boot-source"]["kernel_image_path"], files_.kernel);
  EXPECT_EQ(config["drives"][0]["drive_id"], "rootfs");
  EXPECT_EQ(config["network-interfaces"][0]["iface_id"], "net1");
  EXPECT_EQ(Json::parse(w.call("GET", "/machine-config").body), config["machine-config"]);
  ASSERT_EQ(w.call("PUT", "/actions", R"({"action_type": "InstanceStart"})").status, 204);
  EXPECT_EQ(w.state(), VmState::kRunning);
  std::lock_guard lock(w.log->mu);
  EXPECT_EQ(w.log->last_config.cpus, 2u);
  EXPECT_EQ(w.log->last_config.memory_bytes, 1024ULL << 20);
  EXPECT_EQ(effective_cmdline(w.log->last_config), "console=ttyS0 reboot=k root=/dev/vda rw");
}

TEST_F(ApiHandlerTest, BadInputIsRefusedBeforeBootAndChangesNothing) {
  const std::string missing = files_.dir + "/no-such-kernel";
  std::string just_fits = R"({"vcpu_count": 2, "mem_size_mib": 256})";
  just_fits.resize(ApiHandler::kMaxBodyBytes, ' ');
  const std::string too_big = just_fits + " ";
  const std::vector<std::pair<Call, int>> cases = {
      // malformed JSON
      {{"PUT", "/machine-config", "{", {}, "not valid JSON"}, 400},
      {{"PUT", "/machine-config", "", {}, "not valid JSON"}, 400},
      {{"PUT", "/machine-config", R"({"vcpu_count": 2, "mem_size_mib": 256} trailing)", {}, "JSON"}, 400},
      {{"PUT", "/boot-source", "\xff\xfe", {}, "JSON"}, 400},
      {{"PUT", "/actions", "{\"action_type\": \"InstanceStart\"", {}, "JSON"}, 400},
      {{"PATCH", "/vm", "Paused", {}, "JSON"}, 400},
      // wrong types
      {{"PUT", "/machine-config", R"({"vcpu_count": "2", "mem_size_mib": 256})", {}, "vcpu_count"}, 400},
      {{"PUT", "/machine-config", "[]", {}, "object"}, 400},
      {{"PUT",
        "/drives/d",
        R"({"drive_id": "d", "path_on_host": 7, "is_root_device": false})",
        {},
        "path_on_host"},
       400},
      {{"PUT", "/actions", R"({"action_type": 1})", {}, "action_type"}, 400},
      {{"PUT", "/actions", R"(["InstanceStart"])", {}, "action_type"}, 400},
      {{"PATCH", "/vm", R"({"state": true})", {}, "state"}, 400},
      // unknown fields
      {{"PUT", "/machine-config", R"({"vcpu_count": 2, "mem_size_mib": 256, "cpus": 2})", {}, "cpus"}, 400},
      {{"PUT", "/actions", R"({"action_type": "FlushMetrics", "when": "now"})", {}, "when"}, 400},
      {{"PATCH", "/vm", R"({"state": "Paused", "force": true})", {}, "force"}, 400},
      {{"PUT", "/entropy", R"({"rng": 1})", {}, "rng"}, 400},
      // missing required fields
      {{"PUT", "/machine-config", R"({"vcpu_count": 2})", {}, "mem_size_mib"}, 400},
      {{"PUT", "/boot-source", R"({"boot_args": "quiet"})", {}, "kernel_image_path"}, 400},
      {{"PUT", "/drives/d", R"({"drive_id": "d", "is_root_device": false})", {}, "path_on_host"}, 400},
      {{"PUT", "/network-interfaces/e", R"({"iface_id": "e"})", {}, "host_dev_name"}, 400},
      {{"PUT", "/vsock", R"({"guest_cid": 3})", {}, "uds_path"}, 400},
      {{"PUT", "/metrics", "{}", {}, "metrics_path"}, 400},
      {{"PUT", "/actions", "{}", {}, "action_type"}, 400},
      {{"PATCH", "/vm", "{}", {}, "state"}, 400},
      // out of range and unknown values
      {{"PUT", "/machine-config", R"({"vcpu_count": 0, "mem_size_mib": 256})", {}, "vcpu_count"}, 400},
      {{"PUT", "/machine-config", R"({"vcpu_count": 255, "mem_size_mib": 256})", {}, "vcpu_count"}, 400},
      {{"PUT", "/machine-config", R"({"vcpu_count": 1, "mem_size_mib": 15})", {}, "mem_size_mib"}, 400},
      {{"PATCH", "/machine-config", R"({"mem_size_mib": 99999999999999999999})", {}, "mem_size_mib"}, 400},
      {{"PUT", "/machine-config", R"({"vcpu_count": 1, "mem_size_mib": 256, "smt": true})", {}, "smt"}, 400},
      {{"PUT", "/vsock", R"({"guest_cid": 2, "uds_path": "/tmp/v"})", {}, "guest_cid"}, 400},
      {{"PUT", "/actions", R"({"action_type": "Reboot"})", {}, "Reboot"}, 400},
      {{"PATCH", "/vm", R"({"state": "Running"})", {}, "Running"}, 400},
      {{"PUT", "/logger", R"({"level": "Loud"})", {}, "level"}, 400},
      {{"PUT",
        "/drives/rootfs",
        Json{{"drive_id", "rootfs"},
             {"path_on_host", files_.root},
             {"is_root_device", true},
             {"rate_limiter", {{"bandwidth", {{"size", 1}, {"refill_time", 1}}}}}}
            .dump(),
        {},
        "rate_limiter"},
       400},
      {{"PUT",
        "/network-interfaces/eth0",
        R"({"iface_id": "eth0", "host_dev_name": "tap0", "mtu": 9000})",
        {},
        "mtu"},
       400},
      // a second root device
      {{"PUT",
        "/drives/other",
        Json{{"drive_id", "other"}, {"path_on_host", files_.data}, {"is_root_device", true}}.dump(),
        {},
        "is_root_device"},
       400},
      // files that do not exist, or are directories
      {{"PUT", "/boot-source", Json{{"kernel_image_path", missing}}.dump(), {}, missing}, 400},
      {{"PUT",
        "/boot-source",
        Json{{"kernel_image_path", files_.kernel}, {"initrd_path", missing}}.dump(),
        {},
        "initrd_path"},
       400},
      {{"PUT", "/boot-source", Json{{"kernel_image_path", files_.dir}}.dump(), {}, "directory"}, 400},
      {{"PUT",
        "/drives/d",
        Json{{"drive_id", "d"}, {"path_on_host", missing}, {"is_root_device", false}}.dump(),
        {},
        "path_on_host"},
       400},
      // ids: the body's differs from the path's; percent-encoded; not letters and digits
      {{"PUT",
        "/drives/d1",
        Json{{"drive_id", "d2"}, {"path_on_host", files_.data}, {"is_root_device", false}}.dump(),
        {},
        "drive_id"},
       400},
      {{"PUT",
        "/drives/d%31",
        Json{{"drive_id", "d1"}, {"path_on_host", files_.data}, {"is_root_device", false}}.dump(),
        {},
        "d%31"},
       400},
      {{"PUT", "/drives/a%2Fb", "{}", {}, "a%2Fb"}, 400},
      {{"PUT",
        "/network-interfaces/eth%30",
        R"({"iface_id": "eth0", "host_dev_name": "tap9"})",
        {},
        "eth%30"},
       400},
      {{"PUT",
        "/drives/a$b",
        Json{{"drive_id", "a$b"}, {"path_on_host", files_.data}, {"is_root_device", false}}.dump(),
        {},
        "a$b"},
       400},
      {{"PUT", "/drives/" + std::string(65, 'd'), "{}", {}, "64"}, 400},
      // query strings and fragments
      {{"GET", "/?pretty=1", "", {}, "query"}, 400},
      {{"GET", "/vm/config?x", "", {}, "query"}, 400},
      {{"PUT", "/machine-config?vcpu_count=2", R"({"vcpu_count": 2, "mem_size_mib": 256})", {}, "query"},
       400},
      {{"GET", "/#top", "", {}, "query"}, 400},
      // a GET with a body
      {{"GET", "/", "{}", {}, "body"}, 400},
      // wrong state
      {{"PATCH", "/vm", R"({"state": "Paused"})", {}, "Not started"}, 400},
      {{"PATCH", "/vm", R"({"state": "Resumed"})", {}, "Not started"}, 400},
      {{"PUT", "/actions", R"({"action_type": "SendCtrlAltDel"})", {}, "Not started"}, 400},
      {{"PATCH", "/drives/rootfs", R"({"drive_id": "rootfs"})", {}, "InstanceStart"}, 400},
      {{"PATCH", "/network-interfaces/eth0", R"({"iface_id": "eth0"})", {}, "InstanceStart"}, 400},
      // bodies over the limit, whatever the route
      {{"PUT", "/machine-config", too_big, {}, "51200"}, 413},
      {{"GET", "/", too_big, {}, "51200"}, 413},
      {{"PUT", "/nope", too_big, {}, "51200"}, 413},
  };
  World w(files_, VmState::kNotStarted);
  for (const auto& [c, status] : cases) check_refused(w, c, status, VmState::kNotStarted);
  // The limit itself is accepted.
  EXPECT_EQ(w.call("PUT", "/machine-config", just_fits).status, 204);
}

TEST_F(ApiHandlerTest, BadInputIsRefusedAfterBootAndChangesNothing) {
  const std::vector<std::pair<Call, int>> cases = {
      {{"PUT", "/actions", R"({"action_type": "InstanceStart"})", {}, "Running"}, 400},
      {{"PUT", "/machine-config", R"({"vcpu_count": 2, "mem_size_mib": 256})", {}, "InstanceStart"}, 400},
      {{"PUT", "/boot-source", Json{{"kernel_image_path", files_.kernel}}.dump(), {}, "InstanceStart"}, 400},
      {{"PUT", "/metrics", Json{{"metrics_path", files_.dir + "/m"}}.dump(), {}, "InstanceStart"}, 400},
      {{"PATCH", "/drives/nope", R"({"drive_id": "nope"})", {}, "no such drive"}, 400},
      {{"PATCH", "/drives/rootfs", R"({"drive_id": "other"})", {}, "drive_id"}, 400},
      {{"PATCH", "/drives/rootfs", R"({"drive_id": "rootfs", "path_on_host": "/tmp/x"})", {}, "path_on_host"},
       400},
      {{"PATCH", "/drives/rootfs", R"({"drive_id": "rootfs", "rate_limiter": {}})", {}, "rate_limiter"}, 400},
      {{"PATCH", "/drives/rootfs", R"({"drive_id": "rootfs", "is_read_only": true})", {}, "is_read_only"},
       400},
      {{"PATCH", "/drives/rootfs", "{", {}, "JSON"}, 400},
      {{"PATCH", "/drives/r%6Fotfs", R"({"drive_id": "rootfs"})", {}, "r%6Fotfs"}, 400},
      {{"PATCH", "/network-interfaces/nope", R"({"iface_id": "nope"})", {}, "no such interface"}, 400},
      {{"PATCH",
        "/network-interfaces/eth0",
        R"({"iface_id": "eth0", "tx_rate_limiter": {}})",
        {},
        "tx_rate_limiter"},
       400},
      {{"PATCH",
        "/network-interfaces/eth0",
        R"({"iface_id": "eth0", "host_dev_name": "tap1"})",
        {},
        "host_dev_name"},
       400},
      {{"PATCH", "/vm", R"({"state": "Stopped"})", {}, "Stopped"}, 400},
      {{"PUT",
        "/snapshot/create",
        Json{{"snapshot_path", files_.dir + "/r.snap"}, {"mem_file_path", files_.dir + "/r.mem"}}.dump(),
        {},
        "the VM is Running"},
       400},
      {{"PUT", "/snapshot/load", files_.load_body(), {}, "the VM is Running"}, 400},
      {{"PUT", "/snapshot/load", files_.load_body({}, {}, {{"resume_vm", true}}), {}, "Running"}, 400},
  };
  World w(files_, VmState::kRunning);
  for (const auto& [c, status] : cases) check_refused(w, c, status, VmState::kRunning);
  EXPECT_FALSE(std::filesystem::exists(files_.dir + "/r.snap"));
  EXPECT_FALSE(std::filesystem::exists(files_.dir + "/r.mem"));
  ASSERT_EQ(w.call("PATCH", "/vm", R"({"state": "Paused"})").status, 204);
  check_refused(w, {"PUT", "/actions", R"({"action_type": "SendCtrlAltDel"})", {}, "resume"}, 400,
                VmState::kPaused);
  check_refused(w, {"PUT", "/entropy", "{}", {}, "Paused"}, 400, VmState::kPaused);
  check_refused(w, {"PUT", "/snapshot/load", files_.load_body(), {}, "the VM is Paused"}, 400, VmState::kPaused);
  EXPECT_EQ(w.log->ctrl_alt_dels, 0);
  EXPECT_EQ(w.log->snapshots, 0);
  EXPECT_EQ(w.log->built, 1);
}

// PUT /snapshot/create in every state but Paused: 400 naming the state, no file written. Paused:
// 204, both files, still Paused, nothing changed.
TEST_F(ApiHandlerTest, SnapshotCreateNeedsAPausedVmAndNamesTheState) {
  const std::string body =
      Json{{"snapshot_type", "Full"}, {"snapshot_path", files_.dir + "/c.snap"}, {"mem_file_path", files_.dir + "/c.mem"}}
          .dump();
  for (const VmState s : {VmState::kNotStarted, VmState::kRunning, VmState::kStopped}) {
    SCOPED_TRACE(vm_state_name(s));
    World w(files_, s);
    check_refused(w, {"PUT", "/snapshot/create", body, {}, fmt::format("the VM is {}", vm_state_name(s))}, 400, s);
    EXPECT_EQ(w.log->snapshots, 0);
    EXPECT_FALSE(std::filesystem::exists(files_.dir + "/c.snap"));
    EXPECT_FALSE(std::filesystem::exists(files_.dir + "/c.mem"));
  }
  World w(files_, VmState::kPaused);
  const std::string config_before = w.call("GET", "/vm/config").body;
  const ApiResponse r = w.call("PUT", "/snapshot/create", body);
  EXPECT_EQ(r.status, 204) << r.body;
  EXPECT_TRUE(r.body.empty());
  EXPECT_EQ(w.log->snapshots, 1);
  EXPECT_EQ(w.state(), VmState::kPaused);
  EXPECT_EQ(w.call("GET", "/vm/config").body, config_before);
  EXPECT_TRUE(std::filesystem::is_regular_file(files_.dir + "/c.snap"));
  EXPECT_EQ(std::filesystem::file_size(files_.dir + "/c.mem"), 128u << 20);
  // Again over the same files (a newer snapshot replaces the older), and a Diff.
  EXPECT_EQ(w.call("PUT", "/snapshot/create", body).status, 204);
  EXPECT_EQ(w.call("PUT", "/snapshot/create",
                   Json{{"snapshot_type", "Diff"},
                        {"snapshot_path", files_.dir + "/d.snap"},
                        {"mem_file_path", files_.dir + "/d.mem"}}
                       .dump())
                .status,
            204);
  EXPECT_EQ(w.log->snapshots, 3);
  // And the VM resumes afterwards.
  EXPECT_EQ(w.call("PATCH", "/vm", R"({"state": "Resumed"})").status, 204);
  EXPECT_EQ(w.state(), VmState::kRunning);
}

TEST_F(ApiHandlerTest, BadSnapshotCreateBodiesAreRefusedWhilePaused) {
  const std::string snap = files_.dir + "/b.snap", mem = files_.dir + "/b.mem";
  auto body = [&](Json extra) {
    Json j{{"snapshot_path", snap}, {"mem_file_path", mem}};
    for (const auto& [k, v] : extra.items()) j[k] = v;
    return j.dump();
  };
  World w(files_, VmState::kPaused);
  const std::vector<Call> cases = {
      {"PUT", "/snapshot/create", "{", {}, "JSON"},
      {"PUT", "/snapshot/create", "[]", {}, "object"},
      {"PUT", "/snapshot/create", Json{{"snapshot_path", snap}}.dump(), {}, "mem_file_path"},
      {"PUT", "/snapshot/create", Json{{"mem_file_path", mem}}.dump(), {}, "snapshot_path"},
      {"PUT", "/snapshot/create", body({{"snapshot_path", 7}}), {}, "snapshot_path"},
      {"PUT", "/snapshot/create", body({{"snapshot_path", ""}}), {}, "snapshot_path"},
      {"PUT", "/snapshot/create", body({{"mem_file_path", snap}}), {}, "same file"},
      {"PUT", "/snapshot/create", body({{"snapshot_type", "Incremental"}}), {}, "snapshot_type"},
      {"PUT", "/snapshot/create", body({{"snapshot_type", "full"}}), {}, "snapshot_type"},
      {"PUT", "/snapshot/create", body({{"version", "1.0.0"}}), {}, "version"},
      {"PUT", "/snapshot/create", body({{"compress", true}}), {}, "unknown field \"compress\""},
      // Nowhere to write.
      {"PUT", "/snapshot/create", body({{"snapshot_path", files_.dir + "/no-such-dir/s"}}), {}, "no-such-dir"},
  };
  for (const Call& c : cases) check_refused(w, c, 400, VmState::kPaused);
  EXPECT_EQ(w.log->snapshots, 0);
  EXPECT_FALSE(std::filesystem::exists(snap));
  // The machine's own failure (a full disk): a fault naming it, still Paused.
  w.log->fail_snapshot = "No space left on device";
  check_refused(w, {"PUT", "/snapshot/create", body({}), {}, "No space left on device"}, 400, VmState::kPaused);
  w.log->fail_snapshot.clear();
  EXPECT_EQ(w.call("PUT", "/snapshot/create", body({})).status, 204);
  EXPECT_EQ(w.log->snapshots, 1);
}

// Create in one ringvm, load in a fresh one: the same configuration, Paused or Running as asked.
TEST_F(ApiHandlerTest, SnapshotCreateThenLoadInAFreshVmm) {
  const std::string snap = files_.dir + "/rt.snap", mem = files_.dir + "/rt.mem";
  std::string config;
  {
    World a(files_, VmState::kPaused);
    // Where output goes (metrics, logger, serial) is the restoring process's, not the snapshot's.
    Json j = Json::parse(a.call("GET", "/vm/config").body);
    ASSERT_TRUE(j.contains("metrics"));
    j.erase("metrics");
    config = j.dump();
    ASSERT_EQ(a.call("PUT", "/snapshot/create", Json{{"snapshot_path", snap}, {"mem_file_path", mem}}.dump()).status,
              204);
  }
  for (const bool resume : {false, true}) {
    SCOPED_TRACE(resume ? "resume_vm true" : "resume_vm false");
    World b(files_, VmState::kNotStarted, /*configured=*/false);
    const ApiResponse r = b.call("PUT", "/snapshot/load", files_.load_body(snap, mem, {{"resume_vm", resume}}));
    ASSERT_EQ(r.status, 204) << r.body;
    const VmState want = resume ? VmState::kRunning : VmState::kPaused;
    EXPECT_EQ(b.state(), want);
    EXPECT_EQ(Json::parse(b.call("GET", "/").body)["state"], vm_state_name(want));
    EXPECT_EQ(b.call("GET", "/vm/config").body, config);
    EXPECT_EQ(b.log->built, 1);
    {
      std::lock_guard lock(b.log->mu);
      ASSERT_TRUE(b.log->last_config.restore.has_value());
      EXPECT_EQ(b.log->last_config.restore->snapshot_path, snap);
      EXPECT_EQ(b.log->last_config.restore->mem_path, mem);
      EXPECT_EQ(b.log->last_config.restore->resume, resume);
      EXPECT_FALSE(b.log->last_config.restore->clock_realtime);
    }
    // Loaded once: a second load, InstanceStart and configuration are refused.
    check_refused(b, {"PUT", "/snapshot/load", files_.load_body(snap, mem), {}, vm_state_name(want)}, 400, want);
    check_refused(b, {"PUT", "/actions", R"({"action_type": "InstanceStart"})", {}, vm_state_name(want)}, 400,
                  want);
    check_refused(b, {"PUT", "/machine-config", R"({"vcpu_count": 2, "mem_size_mib": 256})", {}, "InstanceStart"},
                  400, want);
    // The restored VM pauses, resumes and snapshots like a booted one.
    if (resume) {
      ASSERT_EQ(b.call("PATCH", "/vm", R"({"state": "Paused"})").status, 204);
    } else {
      ASSERT_EQ(b.call("PATCH", "/vm", R"({"state": "Resumed"})").status, 204);
      ASSERT_EQ(b.call("PATCH", "/vm", R"({"state": "Paused"})").status, 204);
    }
    EXPECT_EQ(b.call("PUT", "/snapshot/create",
                     Json{{"snapshot_path", files_.dir + "/again.snap"}, {"mem_file_path", files_.dir + "/again.mem"}}
                         .dump())
                  .status,
              204);
  }
}

// The extension and override fields reach the restored configuration.
TEST_F(ApiHandlerTest, SnapshotLoadOverridesReachTheRestoredVm) {
  World w(files_, VmState::kNotStarted, /*configured=*/false);
  const ApiResponse r = w.call(
      "PUT", "/snapshot/load",
      Json{{"snapshot_path", files_.snap},
           {"mem_file_path", files_.mem},
           {"enable_diff_snapshots", true},
           {"clock_realtime", true},
           {"network_overrides", Json::array({{{"iface_id", "eth0"}, {"host_dev_name", "tap9"}}})}}
          .dump());
  ASSERT_EQ(r.status, 204) << r.body;
  EXPECT_EQ(w.state(), VmState::kPaused);
  const Json config = Json::parse(w.call("GET", "/vm/config").body);
  EXPECT_EQ(config["network-interfaces"][0]["host_dev_name"], "tap9");
  EXPECT_EQ(config["machine-config"]["track_dirty_pages"], true);
  std::lock_guard lock(w.log->mu);
  ASSERT_TRUE(w.log->last_config.restore.has_value());
  EXPECT_TRUE(w.log->last_config.restore->clock_realtime);
  EXPECT_TRUE(w.log->last_config.track_dirty_pages);
}

// After any configuration through the API, a load is refused: the snapshot carries its own.
TEST_F(ApiHandlerTest, SnapshotLoadAfterAnyConfigurationIsRefused) {
  const std::vector<Call> configure = {
      {"PUT", "/machine-config", R"({"vcpu_count": 1, "mem_size_mib": 128})", {}},
      {"PUT", "/boot-source", Json{{"kernel_image_path", files_.kernel}}.dump(), {}},
      {"PUT", "/entropy", "{}", {}},
      {"PUT", "/drives/data",
       Json{{"drive_id", "data"}, {"path_on_host", files_.data}, {"is_root_device", false}}.dump(), {}},
  };
  for (const Call& c : configure) {
    SCOPED_TRACE(c.path);
    World w(files_, VmState::kNotStarted, /*configured=*/false);
    ASSERT_EQ(w.call(c.method, c.path, c.body).status, 204);
    check_refused(w, {"PUT", "/snapshot/load", files_.load_body(), {}, "configured already"}, 400,
                  VmState::kNotStarted);
    EXPECT_EQ(w.log->built, 0);
    // It still boots what was configured... or says what is missing.
    EXPECT_NE(w.call("PUT", "/actions", R"({"action_type": "InstanceStart"})").status, 500);
  }
  // A refused configuration changes nothing, so the load is still allowed.
  World w(files_, VmState::kNotStarted, /*configured=*/false);
  ASSERT_EQ(w.call("PUT", "/machine-config", R"({"vcpu_count": 0, "mem_size_mib": 128})").status, 400);
  EXPECT_EQ(w.call("PUT", "/snapshot/load", files_.load_body()).status, 204);
  EXPECT_EQ(w.state(), VmState::kPaused);
}

// Bad bodies and bad files: 400 naming the problem, nothing changed, and the same ringvm then
// loads the good snapshot.
TEST_F(ApiHandlerTest, BadSnapshotLoadsAreRefusedAndChangeNothing) {
  const std::string& d = files_.dir;
  auto bytes = [](const std::string& path) {
    std::string out(std::filesystem::file_size(path), '\0');
    std::ifstream(path, std::ios::binary).read(out.data(), static_cast<std::streamsize>(out.size()));
    return out;
  };
  auto write = [&](const std::string& name, const std::string& content) {
    std::ofstream(d + "/" + name, std::ios::binary | std::ios::trunc) << content;
    return d + "/" + name;
  };
  const std::string good = bytes(files_.snap);
  ASSERT_GT(good.size(), 64u);
  std::string flipped = good;
  flipped[good.size() / 2] = static_cast<char>(flipped[good.size() / 2] ^ 0x40);
  std::string newer = good;
  newer[8] = 2;  // the format version, little-endian
  const std::string corrupt = write("corrupt.snap", flipped);
  const std::string truncated = write("truncated.snap", good.substr(0, good.size() - 7));
  const std::string header_only = write("header.snap", good.substr(0, 20));
  const std::string newer_file = write("newer.snap", newer);
  const std::string foreign = write("foreign.snap", std::string(4096, 'Z'));
  const std::string empty = write("empty.snap", "");
  const std::string small_mem = write("small.mem", std::string(4096, '\0'));
  // Well-formed state files that contradict themselves.
  auto encoded = [&](const std::string& name, auto&& edit) {
    SnapshotState s;
    s.config_json = config_to_json(configured_config(files_)).dump();
    s.memory_bytes = 128ULL << 20;
    s.vcpus.assign(1, {});
    edit(s);
    EXPECT_TRUE(write_snapshot_file(d + "/" + name, s).ok());
    return d + "/" + name;
  };
  const std::string two_vcpus = encoded("vcpus.snap", [](SnapshotState& s) { s.vcpus.assign(2, {}); });
  const std::string bad_memory = encoded("memory.snap", [](SnapshotState& s) { s.memory_bytes = 64ULL << 20; });
  const std::string bad_config = encoded("config.snap", [](SnapshotState& s) { s.config_json = "{\"nope\": 1}"; });
  const std::string missing = d + "/no-such.snap";
  const Json backend{{"backend_type", "File"}, {"backend_path", files_.mem}};
  auto load = [&](Json j) { return j.dump(); };

  const std::vector<Call> cases = {
      // malformed bodies
      {"PUT", "/snapshot/load", "{", {}, "JSON"},
      {"PUT", "/snapshot/load", "", {}, "JSON"},
      {"PUT", "/snapshot/load", "[]", {}, "object"},
      {"PUT", "/snapshot/load", load({{"mem_backend", backend}}), {}, "snapshot_path is required"},
      {"PUT", "/snapshot/load", load({{"snapshot_path", files_.snap}}), {}, "exactly one of mem_backend"},
      {"PUT", "/snapshot/load", load({{"snapshot_path", files_.snap}, {"mem_backend", backend}, {"mem_file_path", files_.mem}}),
       {}, "exactly one of mem_backend"},
      {"PUT", "/snapshot/load", load({{"snapshot_path", 1}, {"mem_backend", backend}}), {}, "snapshot_path"},
      {"PUT", "/snapshot/load", files_.load_body({}, {}, {{"zz", 1}}), {}, "unknown field \"zz\""},
      {"PUT", "/snapshot/load", files_.load_body({}, {}, {{"resume_vm", "yes"}}), {}, "resume_vm"},
      {"PUT", "/snapshot/load", files_.load_body({}, {}, {{"track_dirty_pages", 1}}), {}, "track_dirty_pages"},
      {"PUT", "/snapshot/load", files_.load_body({}, {}, {{"clock_realtime", "now"}}), {}, "clock_realtime"},
      {"PUT", "/snapshot/load", load({{"snapshot_path", files_.snap}, {"mem_backend", "File"}}), {}, "mem_backend"},
      {"PUT", "/snapshot/load",
       load({{"snapshot_path", files_.snap}, {"mem_backend", {{"backend_type", "Uffd"}, {"backend_path", "/tmp/uffd.sock"}}}}),
       {}, "Uffd"},
      {"PUT", "/snapshot/load",
       load({{"snapshot_path", files_.snap}, {"mem_backend", {{"backend_type", "file"}, {"backend_path", files_.mem}}}}),
       {}, "backend_type"},
      {"PUT", "/snapshot/load", load({{"snapshot_path", files_.snap}, {"mem_backend", {{"backend_type", "File"}}}}), {},
       "backend_path"},
      {"PUT", "/snapshot/load",
       load({{"snapshot_path", files_.snap},
             {"mem_backend", {{"backend_type", "File"}, {"backend_path", files_.mem}, {"offset", 0}}}}),
       {}, "unknown field \"offset\""},
      {"PUT", "/snapshot/load", files_.load_body({}, {}, {{"network_overrides", {{"eth0", "tap1"}}}}), {},
       "network_overrides"},
      {"PUT", "/snapshot/load", files_.load_body({}, {}, {{"network_overrides", "eth0"}}), {}, "network_overrides"},
      {"PUT", "/snapshot/load",
       files_.load_body({}, {}, {{"network_overrides", Json::array({{{"iface_id", "eth0"}, {"host_dev_name", "tap0-is-too-long"}}})}}),
       {}, "host_dev_name"},
      {"PUT", "/snapshot/load",
       files_.load_body({}, {}, {{"network_overrides", Json::array({{{"iface_id", "eth0"}, {"host_dev_name", "tap1"}},
                                                                    {{"iface_id", "eth0"}, {"host_dev_name", "tap2"}}})}}),
       {}, "given twice"},
      {"PUT", "/snapshot/load",
       files_.load_body({}, {}, {{"network_overrides", Json::array({{{"iface_id", "eth9"}, {"host_dev_name", "tap1"}}})}}),
       {}, "eth9"},
      // files that are not there, or not files
      {"PUT", "/snapshot/load", files_.load_body(missing), {}, missing},
      {"PUT", "/snapshot/load", files_.load_body({}, d + "/no-such.mem"), {}, "no-such.mem"},
      {"PUT", "/snapshot/load", files_.load_body(d), {}, "directory"},
      {"PUT", "/snapshot/load", files_.load_body({}, d), {}, "directory"},
      // hostile state files
      {"PUT", "/snapshot/load", files_.load_body(foreign), {}, "not a ringvm snapshot"},
      {"PUT", "/snapshot/load", files_.load_body(empty), {}, "not a ringvm snapshot"},
      {"PUT", "/snapshot/load", files_.load_body(files_.kernel), {}, "not a ringvm snapshot"},
      {"PUT", "/snapshot/load", files_.load_body(header_only), {}, "not a ringvm snapshot"},
      {"PUT", "/snapshot/load", files_.load_body(corrupt), {}, "checksum"},
      {"PUT", "/snapshot/load", files_.load_body(truncated), {}, "truncated"},
      {"PUT", "/snapshot/load", files_.load_body(newer_file), {}, "newer ringvm"},
      {"PUT", "/snapshot/load", files_.load_body(two_vcpus), {}, "vCPU"},
      {"PUT", "/snapshot/load", files_.load_body(bad_memory), {}, "memory"},
      {"PUT", "/snapshot/load", files_.load_body(bad_config), {}, "its configuration"},
      // a memory file that is not this snapshot's
      {"PUT", "/snapshot/load", files_.load_body({}, small_mem), {}, "4096 bytes"},
      {"PUT", "/snapshot/load", files_.load_body({}, files_.snap), {}, "memory file"},
  };
  World w(files_, VmState::kNotStarted, /*configured=*/false);
  for (const Call& c : cases) check_refused(w, c, 400, VmState::kNotStarted);
  EXPECT_EQ(w.log->built, 0);
  // The refusing ringvm is still fresh: the good snapshot loads.
  const ApiResponse r = w.call("PUT", "/snapshot/load", files_.load_body({}, {}, {{"resume_vm", true}}));
  EXPECT_EQ(r.status, 204) << r.body;
  EXPECT_EQ(w.state(), VmState::kRunning);
  EXPECT_EQ(w.log->built, 1);
}

// A build that fails after the files were checked (a tap that cannot be opened): the load's 400,
// and the VMM stays fresh for another load.
TEST_F(ApiHandlerTest, AFailedRestoreBuildLeavesTheVmmFresh) {
  World w(files_, VmState::kNotStarted, /*configured=*/false);
  w.log->fail_build = "tap0: Operation not permitted";
  check_refused(w, {"PUT", "/snapshot/load", files_.load_body(), {}, "tap0: Operation not permitted"}, 400,
                VmState::kNotStarted);
  w.log->fail_build.clear();
  const ApiResponse r = w.call("PUT", "/snapshot/load", files_.load_body());
  EXPECT_EQ(r.status, 204) << r.body;
  EXPECT_EQ(w.state(), VmState::kPaused);
}

TEST_F(ApiHandlerTest, AFailedBuildIsA400AndTheVmStaysConfigurable) {
  World w(files_, VmState::kNotStarted);
  w.log->fail_build = "tap0: Operation not permitted";
  check_refused(
      w, {"PUT", "/actions", R"({"action_type": "InstanceStart"})", {}, "tap0: Operation not permitted"}, 400,
      VmState::kNotStarted);
  ASSERT_EQ(
      w.call("PUT", "/network-interfaces/eth0", R"({"iface_id": "eth0", "host_dev_name": "tap7"})").status,
      204);
  w.log->fail_build.clear();
  ASSERT_EQ(w.call("PUT", "/actions", R"({"action_type": "InstanceStart"})").status, 204);
  EXPECT_EQ(w.state(), VmState::kRunning);
}

TEST_F(ApiHandlerTest, AFailedPauseIsA500WithAFaultMessage) {
  World w(files_, VmState::kRunning);
  w.log->fail_pause = "vCPU 0 did not park";
  check_refused(w, {"PATCH", "/vm", R"({"state": "Paused"})", {}, "vCPU 0 did not park"}, 500,
                VmState::kRunning);
}

TEST_F(ApiHandlerTest, FlushMetricsWithoutAMetricsFileIsRefused) {
  World w(files_, VmState::kNotStarted, /*configured=*/false);
  check_refused(w, {"PUT", "/actions", R"({"action_type": "FlushMetrics"})", {}, "metrics"}, 400,
                VmState::kNotStarted);
  ASSERT_EQ(w.call("PUT", "/metrics", Json{{"metrics_path", files_.metrics}}.dump()).status, 204);
  ASSERT_EQ(w.call("PUT", "/actions", R"({"action_type": "FlushMetrics"})").status, 204);
  std::ifstream in(files_.metrics);
  std::string line;
  ASSERT_TRUE(std::getline(in, line));
  EXPECT_EQ(Json::parse(line)["state"], "Not started");
}

// A logger whose file cannot be opened is refused, and the refused logger must not stay in the
// configuration (GET /vm/config).
TEST_F(ApiHandlerTest, ALoggerThatCannotOpenItsFileChangesNothing) {
  World w(files_, VmState::kNotStarted);
  // Below a regular file: no directory can be made there, so the log file cannot be opened.
  const std::string bad = files_.kernel + "/ringvm.log";
  check_refused(w, {"PUT", "/logger", Json{{"log_path", bad}, {"level", "Info"}}.dump(), {}, "log_path"}, 400,
                VmState::kNotStarted);
}

// Paths and methods are raw bytes from the client: ones that are not UTF-8 must still get a JSON
// fault (not an exception out of the JSON writer, which would end the API thread and ringvm).
TEST_F(ApiHandlerTest, BytesThatAreNotUtf8GetAJsonFault) {
  World w(files_, VmState::kNotStarted);
  const std::vector<std::pair<Call, int>> cases = {
      {{"GET", "/\xff", "", {}}, 404},
      {{"PUT",
        "/drives/\xc3",
        R"({"drive_id": "x", "path_on_host": "/dev/null", "is_root_device": false})",
        {}},
       400},
      {{"PUT", "/network-interfaces/\xfe", "{}", {}}, 400},
      {{"G\xffT", "/", "", {}}, 405},
      {{"PUT", "/\xff\xfftropy", "{}", {}}, 404},
  };
  for (const auto& [c, status] : cases) {
    ApiResponse r;
    EXPECT_NO_THROW(r = w.call(c.method, c.path, c.body)) << c.method << " " << c.path;
    EXPECT_EQ(r.status, status) << r.body;
    expect_fault(r);
  }
  EXPECT_EQ(w.call("GET", "/").status, 200);
  // A file name from the command line need not be UTF-8 either (Linux names are bytes).
  ASSERT_TRUE(w.vm()
                  .configure("cli",
                             [](VmConfig& c) -> Result<void> {
                               c.kernel = "/boot/vmlinuz-\xff";
                               return Ok();
                             })
                  .ok());
  ApiResponse config;
  EXPECT_NO_THROW(config = w.call("GET", "/vm/config"));
  EXPECT_EQ(config.status, 200);
  EXPECT_TRUE(Json::parse(config.body, nullptr, false).is_object()) << config.body;
}

}  // namespace
}  // namespace ringvm
