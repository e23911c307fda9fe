// Fuzzes the REST API's request handler (ApiHandler::handle) over a VmController whose machines
// are FakeMachines, with up to four requests per input. Input:
//   [flags u8] then requests separated by '\0', each "METHOD\nPATH\nBODY" (a missing part is empty).
// flags bit 0: InstanceStart before the requests; bit 1: then pause; bit 2: that start's build
// fails; bit 3: builds during the requests fail.
// Checks: every status is one ringvm answers; a refusal (>= 400) carries a JSON object with a
// string fault_message and changes neither the configuration (GET /vm/config) nor the state; a
// 200 is JSON; a 204 has no body.
// Files: PUT /logger, /metrics and /snapshot/create write only in a private directory, and
// /snapshot/load reads only from it (see confine_paths); a good snapshot (a FakeMachine's, of the
// base configuration) is there as "good.snap" and "good.mem" for loads to find.
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <thread>

#include "api/api_handler.h"
#include "base/log.h"
#include "vmm/config_json.h"
#include "vmm/testing/fake_machine.h"

namespace {

using ringvm::ApiHandler;
using ringvm::ApiResponse;
using ringvm::Json;
using ringvm::VmConfig;
using ringvm::VmController;
using ringvm::testing::FakeMachine;
using ringvm::testing::FakeMachineLog;

std::string g_dir;  // a private directory: the kernel, and where log/metrics files go
VmConfig g_base;    // a kernel, a root drive "rootfs", an interface "eth0"
std::string g_log, g_metrics;

void check(bool ok, const char* what, const ApiResponse& r) {
  if (ok) return;
  std::fprintf(stderr, "api_handler_fuzz: %s: status %d body %s\n", what, r.status, r.body.c_str());
  __builtin_trap();
}

// A snapshot file name in the private directory for whatever path the input gave: "snap-" and
// the last path component's letters, digits, '_', '-' and '.', so "/x/vm.snap" is "snap-vm.snap"
// wherever the input meant it. For a load (`reading`), "good.snap" and "good.mem" are the good
// snapshot, which a create can never overwrite. Empty stays empty (a refusal to exercise).
std::string confine_snapshot_file(const std::string& value, bool reading) {
  if (value.empty()) return value;
  std::string name;
  for (const char c : value.substr(value.rfind('/') + 1))
    if (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.') name += c;
  name.resize(std::min<size_t>(name.size(), 40));
  if (reading && (name == "good.snap" || name == "good.mem")) return g_dir + "/" + name;
  return g_dir + "/snap-" + name;
}

// PUT /logger, /metrics and /snapshot/create write files and /snapshot/load reads them: their
// paths go to the private directory, whatever the input says (the rest of the body stays the
// fuzzer's).
std::string confine_paths(std::string_view path, std::string_view body) {
  const bool create = path == "/snapshot/create", load = path == "/snapshot/load";
  const char* key = path == "/logger" ? "log_path" : path == "/metrics" ? "metrics_path" : nullptr;
  if (key == nullptr && !create && !load) return std::string(body);
  Json j = Json::parse(body.begin(), body.end(), nullptr, false);
  if (!j.is_object()) return std::string(body);
  if (create || load) {
    auto confine = [&](Json& obj, const char* field) {
      if (obj.is_object() && obj.contains(field) && obj[field].is_string())
        obj[field] = confine_snapshot_file(obj[field].get<std::string>(), load);
    };
    confine(j, "snapshot_path");
    confine(j, "mem_file_path");
    if (j.contains("mem_backend")) confine(j["mem_backend"], "backend_path");
    return j.dump();
  }
  if (!j.contains(key) || !j[key].is_string() || j[key].get<std::string>().empty()) return std::string(body);
  j[key] = path == "/logger" ? g_log : g_metrics;
  return j.dump();
}

// Removes what the requests of one input wrote.
void remove_written_files() {
  ::unlink(g_metrics.c_str());
  ::unlink(g_log.c_str());
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(g_dir, ec))
    if (e.path().filename().string().starts_with("snap-")) std::filesystem::remove(e.path(), ec);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  std::string tmpl = "/tmp/ringvm_api_fuzz_XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) __builtin_trap();
  g_dir = tmpl;
  std::atexit([] {
    std::error_code ec;
    std::filesystem::remove_all(g_dir, ec);
  });
  const std::string kernel = g_dir + "/vmlinux";
  std::ofstream(kernel) << "x";
  g_log = g_dir + "/ringvm.log";
  g_metrics = g_dir + "/metrics.json";
  const Json file{
      {"boot-source", {{"kernel_image_path", kernel}}},
      {"drives", Json::array({{{"drive_id", "rootfs"}, {"path_on_host", kernel}, {"is_root_device", true}}})},
      {"network-interfaces", Json::array({{{"iface_id", "eth0"}, {"host_dev_name", "tap0"}}})},
  };
  auto cfg = ringvm::parse_config_file(file.dump());
  if (!cfg.ok()) __builtin_trap();
  g_base = *cfg;
  // The good snapshot: what a paused VM of g_base writes (64 MiB of memory, a sparse file).
  VmConfig snap_cfg = g_base;
  snap_cfg.memory_bytes = 64ULL << 20;
  FakeMachine snapshotter(std::make_shared<FakeMachineLog>(), snap_cfg);
  if (!snapshotter.snapshot(ringvm::SnapshotCreateRequest{false, g_dir + "/good.snap", g_dir + "/good.mem"}).ok())
    __builtin_trap();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t flags = data[0];
  std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);

  auto log = std::make_shared<FakeMachineLog>();
  VmController vm(g_base, FakeMachine::factory(log));
  ApiHandler api(vm);
  std::thread runner([&] { vm.run(false); });
  if (flags & 1) {
    if (flags & 4) log->fail_build = "fuzz: the build fails";
    api.handle("PUT", "/actions", R"({"action_type": "InstanceStart"})");
    if (flags & 2) api.handle("PATCH", "/vm", R"({"state": "Paused"})");
    log->fail_build.clear();
  }
  if (flags & 8) log->fail_build = "fuzz: the build fails";  // an InstanceStart below fails

  for (int n = 0; n < 4 && !rest.empty(); ++n) {
    const size_t end = rest.find('\0');
    std::string_view req = rest.substr(0, end);
    rest = end == std::string_view::npos ? std::string_view{} : rest.substr(end + 1);
    const size_t nl1 = req.find('\n');
    const std::string_view method = req.substr(0, nl1);
    std::string_view path, body;
    if (nl1 != std::string_view::npos) {
      const std::string_view tail = req.substr(nl1 + 1);
      const size_t nl2 = tail.find('\n');
      path = tail.substr(0, nl2);
      if (nl2 != std::string_view::npos) body = tail.substr(nl2 + 1);
    }
    const std::string safe_body = confine_paths(path, body);

    const std::string config_before = ringvm::config_to_json(vm.config()).dump();
    const ringvm::VmState state_before = vm.state();
    const ApiResponse r = api.handle(method, path, safe_body);
    switch (r.status) {
      case 200: {
        check(Json::parse(r.body, nullptr, false).is_object(), "200 without a JSON object", r);
        break;
      }
      case 204: check(r.body.empty(), "204 with a body", r); break;
      case 400:
      case 404:
      case 405:
      case 413:
      case 500: {
        const Json j = Json::parse(r.body, nullptr, false);
        check(j.is_object() && j.contains("fault_message") && j["fault_message"].is_string() &&
                  !j["fault_message"].get<std::string>().empty(),
              "a refusal without a fault_message", r);
        check(ringvm::config_to_json(vm.config()).dump() == config_before, "a refusal changed the config", r);
        check(vm.state() == state_before, "a refusal changed the state", r);
        break;
      }
      default: check(false, "an unexpected status", r);
    }
  }

  vm.request_stop(ringvm::StopReason::kQuit);
  runner.join();
  spdlog::set_level(spdlog::level::off);  // a PUT /logger may have turned logging on
  remove_written_files();
  return 0;
}
