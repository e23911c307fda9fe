// PUT /snapshot/create and /snapshot/load through the handler (ApiHandlerTest's fixture).
#include "api/testing/api_handler_fixture.h"

namespace ringvm {
namespace {

// Its own suite name: the fixture lives in an anonymous namespace per file.
class ApiSnapshotTest : public ApiHandlerTest {};

TEST_F(ApiSnapshotTest, SnapshotCreateNeedsAPausedVmAndNamesTheState) {
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

TEST_F(ApiSnapshotTest, BadSnapshotCreateBodiesAreRefusedWhilePaused) {
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
TEST_F(ApiSnapshotTest, SnapshotCreateThenLoadInAFreshVmm) {
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
TEST_F(ApiSnapshotTest, SnapshotLoadOverridesReachTheRestoredVm) {
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
TEST_F(ApiSnapshotTest, SnapshotLoadAfterAnyConfigurationIsRefused) {
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
TEST_F(ApiSnapshotTest, BadSnapshotLoadsAreRefusedAndChangeNothing) {
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
TEST_F(ApiSnapshotTest, AFailedRestoreBuildLeavesTheVmmFresh) {
  World w(files_, VmState::kNotStarted, /*configured=*/false);
  w.log->fail_build = "tap0: Operation not permitted";
  check_refused(w, {"PUT", "/snapshot/load", files_.load_body(), {}, "tap0: Operation not permitted"}, 400,
                VmState::kNotStarted);
  w.log->fail_build.clear();
  const ApiResponse r = w.call("PUT", "/snapshot/load", files_.load_body());
  EXPECT_EQ(r.status, 204) << r.body;
  EXPECT_EQ(w.state(), VmState::kPaused);
}

}  // namespace
}  // namespace ringvm
