#include "api/testing/api_handler_fixture.h"

namespace ringvm {
namespace {

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
