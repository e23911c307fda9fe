#include "vmm/controller.h"

#include <gtest/gtest.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <future>
#include <thread>
#include <vector>

#include "vmm/testing/fake_machine.h"

namespace ringvm {
namespace {

using testing::FakeMachine;
using testing::FakeMachineLog;
using namespace std::chrono_literals;

VmConfig bootable() {
  VmConfig cfg;
  cfg.kernel = "/boot/vmlinuz-fake";  // the fake machine never reads it
  cfg.cmdline = "console=ttyS0";
  return cfg;
}

// A VmController over FakeMachines whose run() is on its own thread (it blocks until a stop).
class ControllerTest : public ::testing::Test {
 protected:
  explicit ControllerTest(VmConfig cfg = bootable()) : vm_(std::move(cfg), FakeMachine::factory(log_)) {}
  ~ControllerTest() override {
    vm_.request_stop(StopReason::kQuit);
    if (runner_.joinable()) runner_.join();
  }

  void run(bool boot_now = false) {
    runner_ = std::thread([this, boot_now] {
      result_.set_value(vm_.run(boot_now, [this](Machine&, StopReason r) { done_reasons_.push_back(r); }));
    });
  }
  // run()'s answer, within `timeout`.
  std::optional<StopReason> ended(std::chrono::milliseconds timeout = 5s) {
    if (future_.wait_for(timeout) != std::future_status::ready) return std::nullopt;
    return future_.get();
  }

  std::shared_ptr<FakeMachineLog> log_ = std::make_shared<FakeMachineLog>();
  VmController vm_;
  std::promise<StopReason> result_;
  std::future<StopReason> future_ = result_.get_future();
  std::vector<StopReason> done_reasons_;  // written by run()'s thread before it ends
  std::thread runner_;
};

TEST_F(ControllerTest, StatesFollowFirecrackersRules) {
  run();
  EXPECT_EQ(vm_.state(), VmState::kNotStarted);
  EXPECT_STREQ(vm_state_name(vm_.state()), "Not started");
  ASSERT_TRUE(vm_.start().ok());
  EXPECT_EQ(vm_.state(), VmState::kRunning);
  EXPECT_STREQ(vm_state_name(vm_.state()), "Running");
  EXPECT_EQ(log_->built, 1);
  ASSERT_TRUE(vm_.pause().ok());
  EXPECT_EQ(vm_.state(), VmState::kPaused);
  EXPECT_STREQ(vm_state_name(vm_.state()), "Paused");
  ASSERT_TRUE(vm_.resume().ok());
  EXPECT_EQ(vm_.state(), VmState::kRunning);
  EXPECT_EQ(log_->pauses, 1);
  EXPECT_EQ(log_->resumes, 1);
  vm_.request_stop(StopReason::kPowerOff, "guest powered off");
  ASSERT_EQ(ended(), StopReason::kPowerOff);
  EXPECT_EQ(vm_.state(), VmState::kStopped);
  EXPECT_STREQ(vm_state_name(vm_.state()), "Stopped");
  EXPECT_EQ(vm_.stop_detail(), "guest powered off");
  ASSERT_EQ(done_reasons_.size(), 1u);
  EXPECT_EQ(done_reasons_[0], StopReason::kPowerOff);
  // A stopped VM takes nothing.
  EXPECT_FALSE(vm_.start().ok());
  EXPECT_FALSE(vm_.pause().ok());
  EXPECT_FALSE(vm_.resume().ok());
  EXPECT_FALSE(vm_.send_ctrl_alt_del().ok());
  EXPECT_FALSE(vm_.configure("machine-config", [](VmConfig&) -> Result<void> { return Ok(); }).ok());
  EXPECT_EQ(log_->built, 1);
}

TEST_F(ControllerTest, TheMachineGetsTheFinalizedConfiguration) {
  DiskSpec data, root;
  data.id = "data";
  data.path = "/dev/null";
  root.id = "root";
  root.path = "/dev/null";
  root.root = true;
  ASSERT_TRUE(vm_.configure("drives",
                            [&](VmConfig& c) -> Result<void> {
                              c.disks = {data, root};
                              c.cpus = 3;
                              return Ok();
                            })
                  .ok());
  run();
  ASSERT_TRUE(vm_.start().ok());
  std::lock_guard lock(log_->mu);
  EXPECT_EQ(log_->last_config.cpus, 3u);
  ASSERT_EQ(log_->last_config.disks.size(), 2u);
  EXPECT_EQ(log_->last_config.disks[0].id, "root");  // the root disk is /dev/vda
}

TEST_F(ControllerTest, ConfigureIsRefusedAfterStartAndFailedEditsChangeNothing) {
  ASSERT_TRUE(vm_.configure("machine-config",
                            [](VmConfig& c) -> Result<void> {
                              c.cpus = 2;
                              return Ok();
                            })
                  .ok());
  EXPECT_EQ(vm_.config().cpus, 2u);
  auto failed = vm_.configure("machine-config", [](VmConfig& c) -> Result<void> {
    c.cpus = 7;  // changed, then refused: the copy is thrown away
    return make_error(ErrorCode::kInvalidArgument, "no");
  });
  EXPECT_FALSE(failed.ok());
  EXPECT_EQ(vm_.config().cpus, 2u);
  // inspect_running is for a started VM only.
  auto early = vm_.inspect_running("PATCH drives/x", [](const VmConfig&) -> Result<void> { return Ok(); });
  ASSERT_FALSE(early.ok());
  EXPECT_NE(early.error().message().find("PATCH drives/x"), std::string::npos);

  run();
  ASSERT_TRUE(vm_.start().ok());
  bool called = false;
  auto late = vm_.configure("boot-source", [&](VmConfig& c) -> Result<void> {
    called = true;
    c.cpus = 9;
    return Ok();
  });
  ASSERT_FALSE(late.ok());
  EXPECT_FALSE(called);
  EXPECT_NE(late.error().message().find("boot-source"), std::string::npos) << late.error().message();
  EXPECT_NE(late.error().message().find("InstanceStart"), std::string::npos) << late.error().message();
  EXPECT_EQ(vm_.config().cpus, 2u);
  EXPECT_TRUE(
      vm_.inspect_running("PATCH drives/x", [](const VmConfig&) -> Result<void> { return Ok(); }).ok());
  ASSERT_TRUE(vm_.pause().ok());
  EXPECT_FALSE(vm_.configure("boot-source", [](VmConfig&) -> Result<void> { return Ok(); }).ok());
  EXPECT_TRUE(
      vm_.inspect_running("PATCH drives/x", [](const VmConfig&) -> Result<void> { return Ok(); }).ok());
}

TEST_F(ControllerTest, StartTwiceIsRefused) {
  run();
  ASSERT_TRUE(vm_.start().ok());
  auto again = vm_.start();
  ASSERT_FALSE(again.ok());
  EXPECT_NE(again.error().message().find("Running"), std::string::npos) << again.error().message();
  ASSERT_TRUE(vm_.pause().ok());
  EXPECT_FALSE(vm_.start().ok());
  EXPECT_EQ(log_->built, 1);
  EXPECT_EQ(vm_.state(), VmState::kPaused);
}

TEST_F(ControllerTest, StartWithoutAKernelIsRefusedAtOnce) {
  ASSERT_TRUE(vm_.configure("boot-source",
                            [](VmConfig& c) -> Result<void> {
                              c.kernel.clear();
                              return Ok();
                            })
                  .ok());
  // No run() thread: the check happens before the hand-over, so this cannot block.
  auto r = vm_.start();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("kernel"), std::string::npos);
  EXPECT_EQ(vm_.state(), VmState::kNotStarted);
  EXPECT_EQ(log_->built, 0);
}

TEST_F(ControllerTest, AFailedBuildIsTheStartsErrorAndTheVmStaysConfigurable) {
  log_->fail_build = "tap0: no such device";
  run();
  auto r = vm_.start();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("tap0: no such device"), std::string::npos) << r.error().message();
  EXPECT_EQ(vm_.state(), VmState::kNotStarted);
  EXPECT_EQ(log_->built, 0);
  ASSERT_TRUE(vm_.configure("network-interfaces/eth0",
                            [](VmConfig& c) -> Result<void> {
                              c.cpus = 2;
                              return Ok();
                            })
                  .ok());
  log_->fail_build.clear();
  ASSERT_TRUE(vm_.start().ok());
  EXPECT_EQ(vm_.state(), VmState::kRunning);
  EXPECT_EQ(log_->built, 1);
  std::lock_guard lock(log_->mu);
  EXPECT_EQ(log_->last_config.cpus, 2u);
}

TEST_F(ControllerTest, StartBeforeRunIsServedWhenRunBegins) {
  auto started = std::async(std::launch::async, [&] { return vm_.start(); });
  EXPECT_EQ(started.wait_for(100ms), std::future_status::timeout);  // nobody builds yet
  run();
  ASSERT_EQ(started.wait_for(5s), std::future_status::ready);
  EXPECT_TRUE(started.get().ok());
  EXPECT_EQ(vm_.state(), VmState::kRunning);
}

TEST_F(ControllerTest, PauseWhenPausedAndResumeWhenRunningAreHarmless) {
  run();
  ASSERT_TRUE(vm_.start().ok());
  ASSERT_TRUE(vm_.resume().ok());  // running already
  EXPECT_EQ(log_->resumes, 0);
  EXPECT_EQ(vm_.state(), VmState::kRunning);
  ASSERT_TRUE(vm_.pause().ok());
  ASSERT_TRUE(vm_.pause().ok());
  ASSERT_TRUE(vm_.pause().ok());
  EXPECT_EQ(log_->pauses, 1);
  EXPECT_EQ(vm_.state(), VmState::kPaused);
  ASSERT_TRUE(vm_.resume().ok());
  ASSERT_TRUE(vm_.resume().ok());
  EXPECT_EQ(log_->resumes, 1);
}

TEST_F(ControllerTest, PauseAndResumeBeforeStartAreRefused) {
  auto p = vm_.pause();
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.error().message().find("Not started"), std::string::npos) << p.error().message();
  EXPECT_FALSE(vm_.resume().ok());
  EXPECT_EQ(vm_.state(), VmState::kNotStarted);
}

TEST_F(ControllerTest, AFailedPauseLeavesTheVmRunning) {
  run();
  ASSERT_TRUE(vm_.start().ok());
  log_->fail_pause = "vCPU 1 did not park";
  auto r = vm_.pause();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("vCPU 1 did not park"), std::string::npos);
  EXPECT_EQ(vm_.state(), VmState::kRunning);
  log_->fail_pause.clear();
  ASSERT_TRUE(vm_.pause().ok());
  log_->fail_resume = "no";
  EXPECT_FALSE(vm_.resume().ok());
  EXPECT_EQ(vm_.state(), VmState::kPaused);
}

TEST_F(ControllerTest, CtrlAltDelNeedsARunningVm) {
  auto before = vm_.send_ctrl_alt_del();
  ASSERT_FALSE(before.ok());
  EXPECT_NE(before.error().message().find("Not started"), std::string::npos);
  run();
  ASSERT_TRUE(vm_.start().ok());
  ASSERT_TRUE(vm_.pause().ok());
  auto paused = vm_.send_ctrl_alt_del();
  ASSERT_FALSE(paused.ok());
  EXPECT_NE(paused.error().message().find("resume"), std::string::npos) << paused.error().message();
  EXPECT_EQ(log_->ctrl_alt_dels, 0);
  ASSERT_TRUE(vm_.resume().ok());
  ASSERT_TRUE(vm_.send_ctrl_alt_del().ok());
  EXPECT_EQ(log_->ctrl_alt_dels, 1);
}

TEST_F(ControllerTest, RequestStopBeforeStartEndsRunWithThatReason) {
  run();
  std::this_thread::sleep_for(20ms);  // run() is waiting for the start
  vm_.request_stop(StopReason::kQuit, "console quit");
  ASSERT_EQ(ended(), StopReason::kQuit);
  EXPECT_EQ(vm_.stop_detail(), "console quit");
  EXPECT_EQ(vm_.state(), VmState::kStopped);
  EXPECT_EQ(log_->built, 0);
  EXPECT_TRUE(done_reasons_.empty());  // there was no machine
  auto r = vm_.start();
  EXPECT_FALSE(r.ok());
}

TEST_F(ControllerTest, RequestStopBeforeRunEndsRunAtOnce) {
  vm_.request_stop(StopReason::kSignal, "signal 15");
  auto start = vm_.start();  // shutting down: refused, not blocked
  ASSERT_FALSE(start.ok());
  EXPECT_NE(start.error().message().find("shutting down"), std::string::npos) << start.error().message();
  run();
  ASSERT_EQ(ended(), StopReason::kSignal);
  EXPECT_EQ(log_->built, 0);
}

TEST_F(ControllerTest, ABlockedSigtermPendingBeforeStartEndsRun) {
  runner_ = std::thread([this] {
    // As ringvm's main thread: the stop signals blocked, one pending for this thread.
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    ASSERT_EQ(::pthread_sigmask(SIG_BLOCK, &term, nullptr), 0);
    ASSERT_EQ(::pthread_kill(::pthread_self(), SIGTERM), 0);
    result_.set_value(vm_.run(false));
  });
  ASSERT_EQ(ended(), StopReason::kSignal);
  EXPECT_NE(vm_.stop_detail().find(std::to_string(SIGTERM)), std::string::npos) << vm_.stop_detail();
  EXPECT_EQ(vm_.state(), VmState::kStopped);
  EXPECT_EQ(log_->built, 0);
  EXPECT_FALSE(vm_.start().ok());
}

TEST_F(ControllerTest, BootNowBuildsWithoutAStartRequest) {
  run(/*boot_now=*/true);
  for (int i = 0; i < 500 && vm_.state() != VmState::kRunning; ++i) std::this_thread::sleep_for(1ms);
  ASSERT_EQ(vm_.state(), VmState::kRunning);
  EXPECT_EQ(log_->built, 1);
  EXPECT_FALSE(vm_.start().ok());
  vm_.request_stop(StopReason::kCrash, "triple fault");
  EXPECT_EQ(ended(), StopReason::kCrash);
  EXPECT_EQ(vm_.stop_detail(), "triple fault");
}

TEST_F(ControllerTest, BootNowWithAFailedBuildEndsRunWithTheError) {
  log_->fail_build = "kernel: bad magic";
  run(/*boot_now=*/true);
  ASSERT_EQ(ended(), StopReason::kError);
  EXPECT_NE(vm_.stop_detail().find("kernel: bad magic"), std::string::npos) << vm_.stop_detail();
  EXPECT_EQ(vm_.state(), VmState::kStopped);
}

class RestartingControllerTest : public ControllerTest {
 protected:
  static VmConfig restarting() {
    VmConfig c = bootable();
    c.on_reboot = OnReboot::kRestart;
    return c;
  }
  RestartingControllerTest() : ControllerTest(restarting()) {}
};

TEST_F(RestartingControllerTest, AGuestRebootRebuildsTheMachine) {
  run();
  ASSERT_TRUE(vm_.start().ok());
  vm_.request_stop(StopReason::kReboot);
  for (int i = 0; i < 2000 && log_->built < 2; ++i) std::this_thread::sleep_for(1ms);
  ASSERT_EQ(log_->built, 2);
  EXPECT_EQ(ended(20ms), std::nullopt);  // still running, on the new machine
  for (int i = 0; i < 500 && vm_.state() != VmState::kRunning; ++i) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(vm_.state(), VmState::kRunning);
  ASSERT_TRUE(vm_.pause().ok());  // the new machine is the one paused
  EXPECT_EQ(log_->pauses, 1);
  vm_.request_stop(StopReason::kPowerOff);
  ASSERT_EQ(ended(), StopReason::kPowerOff);
  ASSERT_EQ(done_reasons_.size(), 2u);
  EXPECT_EQ(done_reasons_[0], StopReason::kReboot);
  EXPECT_EQ(done_reasons_[1], StopReason::kPowerOff);
}

TEST_F(ControllerTest, WithoutRestartAGuestRebootEndsRun) {
  run();
  ASSERT_TRUE(vm_.start().ok());
  vm_.request_stop(StopReason::kReboot);
  ASSERT_EQ(ended(), StopReason::kReboot);
  EXPECT_EQ(log_->built, 1);
}

class MetricsTest : public ControllerTest {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "ringvm_ctl_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::vector<std::string> lines(const std::string& path) {
    std::vector<std::string> out;
    std::ifstream in(path);
    for (std::string l; std::getline(in, l);) out.push_back(l);
    return out;
  }
  std::string dir_;
};

TEST_F(MetricsTest, FlushMetricsWritesOneJsonLinePerFlush) {
  auto none = vm_.flush_metrics();
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.error().message().find("metrics"), std::string::npos) << none.error().message();

  const std::string path = dir_ + "/metrics.json";
  ASSERT_TRUE(vm_.configure("metrics",
                            [&](VmConfig& c) -> Result<void> {
                              c.metrics_path = path;
                              return Ok();
                            })
                  .ok());
  ASSERT_TRUE(vm_.flush_metrics().ok());
  auto l = lines(path);
  ASSERT_EQ(l.size(), 1u);
  auto first = nlohmann::json::parse(l[0], nullptr, false);
  ASSERT_TRUE(first.is_object()) << l[0];
  EXPECT_EQ(first["state"], "Not started");
  EXPECT_TRUE(first["utc_timestamp_ms"].is_number_integer());

  run();
  ASSERT_TRUE(vm_.start().ok());
  ASSERT_TRUE(vm_.flush_metrics().ok());
  l = lines(path);
  ASSERT_EQ(l.size(), 2u);
  auto second = nlohmann::json::parse(l[1], nullptr, false);
  ASSERT_TRUE(second.is_object()) << l[1];
  EXPECT_EQ(second["state"], "Running");
  EXPECT_EQ(second["fake"], true);  // the machine's own counters
  EXPECT_GE(second["utc_timestamp_ms"].get<int64_t>(), first["utc_timestamp_ms"].get<int64_t>());
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(MetricsTest, FlushMetricsToAnUnwritablePathFailsNamingIt) {
  const std::string path = dir_ + "/no-such-dir/metrics.json";
  ASSERT_TRUE(vm_.configure("metrics",
                            [&](VmConfig& c) -> Result<void> {
                              c.metrics_path = path;
                              return Ok();
                            })
                  .ok());
  auto r = vm_.flush_metrics();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find(path), std::string::npos) << r.error().message();
}


// Snapshots through the controller, over FakeMachines (which write a real, loadable state file
// and a memory file of the right size).
class SnapshotControllerTest : public ::testing::Test {
 protected:
  // One ringvm: a controller with its run() thread.
  struct Vmm {
    explicit Vmm(VmConfig cfg) : vm(std::move(cfg), FakeMachine::factory(log)) {
      runner = std::thread([this] { vm.run(false); });
    }
    ~Vmm() {
      vm.request_stop(StopReason::kQuit);
      runner.join();
    }
    std::string config_json() const { return config_to_json(vm.config()).dump(); }
    std::shared_ptr<FakeMachineLog> log = std::make_shared<FakeMachineLog>();
    VmController vm;
    std::thread runner;
  };

  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "ringvm_snapctl_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    kernel_ = dir_ + "/vmlinux";
    std::ofstream(kernel_) << "x";  // a snapshot's configuration names files that exist
    snap_ = dir_ + "/vm.snap";
    mem_ = dir_ + "/vm.mem";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  VmConfig config() const {
    VmConfig cfg;
    cfg.kernel = kernel_;
    cfg.cmdline = "console=ttyS0";
    cfg.cpus = 2;
    cfg.memory_bytes = 64ULL << 20;
    return cfg;
  }
  SnapshotLoadRequest load(bool resume, std::string state_file = {}) const {
    SnapshotLoadRequest r;
    r.snapshot_path = state_file.empty() ? snap_ : state_file;
    r.mem_path = mem_;
    r.resume = resume;
    return r;
  }
  // A paused VM of config() writes snap_ and mem_.
  void take_snapshot(bool diff = false) {
    Vmm a(config());
    ASSERT_TRUE(a.vm.start().ok());
    ASSERT_TRUE(a.vm.pause().ok());
    auto r = a.vm.snapshot_create(SnapshotCreateRequest{diff, snap_, mem_});
    ASSERT_TRUE(r.ok()) << r.error().message();
    EXPECT_EQ(a.log->snapshots, 1);
    EXPECT_EQ(a.vm.state(), VmState::kPaused);
  }

  std::string dir_, kernel_, snap_, mem_;
};

TEST_F(SnapshotControllerTest, CreateNeedsAPausedVmAndNamesTheState) {
  Vmm a(config());
  const SnapshotCreateRequest req{false, snap_, mem_};
  auto refused = [&](const char* state) {
    auto r = a.vm.snapshot_create(req);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message().find(fmt::format("the VM is {}", state)), std::string::npos)
        << r.error().message();
    EXPECT_FALSE(std::filesystem::exists(snap_));
    EXPECT_FALSE(std::filesystem::exists(mem_));
  };
  refused("Not started");
  ASSERT_TRUE(a.vm.start().ok());
  refused("Running");
  ASSERT_TRUE(a.vm.pause().ok());
  ASSERT_TRUE(a.vm.snapshot_create(req).ok());
  EXPECT_EQ(a.log->snapshots, 1);
  EXPECT_EQ(a.vm.state(), VmState::kPaused);
  EXPECT_EQ(std::filesystem::file_size(mem_), 64u << 20);
  auto state = read_snapshot_file(snap_);
  ASSERT_TRUE(state.ok()) << state.error().message();
  EXPECT_EQ(state->kind, SnapshotKind::kFull);
  EXPECT_EQ(state->vcpus.size(), 2u);
  std::filesystem::remove(snap_);
  std::filesystem::remove(mem_);
  ASSERT_TRUE(a.vm.resume().ok());
  refused("Running");
  a.vm.request_stop(StopReason::kPowerOff);
  for (int i = 0; i < 2000 && a.vm.state() != VmState::kStopped; ++i) std::this_thread::sleep_for(1ms);
  ASSERT_EQ(a.vm.state(), VmState::kStopped);
  refused("Stopped");
}

TEST_F(SnapshotControllerTest, LoadInAFreshControllerBuildsFromTheSnapshot) {
  take_snapshot();
  if (HasFatalFailure()) return;
  for (const bool resume : {false, true}) {
    SCOPED_TRACE(resume ? "resume_vm true" : "resume_vm false");
    Vmm b(VmConfig{});
    auto r = b.vm.snapshot_load(load(resume));
    ASSERT_TRUE(r.ok()) << r.error().message();
    EXPECT_EQ(b.vm.state(), resume ? VmState::kRunning : VmState::kPaused);
    EXPECT_EQ(b.log->built, 1);
    {
      std::lock_guard lock(b.log->mu);
      const VmConfig& built = b.log->last_config;
      ASSERT_TRUE(built.restore.has_value());
      EXPECT_EQ(built.restore->snapshot_path, snap_);
      EXPECT_EQ(built.restore->mem_path, mem_);
      EXPECT_EQ(built.restore->resume, resume);
      ASSERT_NE(built.restore->state, nullptr);
      EXPECT_EQ(built.restore->state->memory_bytes, 64u << 20);
      // The snapshot's configuration, not the fresh controller's defaults.
      EXPECT_EQ(built.cpus, 2u);
      EXPECT_EQ(built.memory_bytes, 64ULL << 20);
      EXPECT_EQ(built.kernel, kernel_);
    }
    EXPECT_TRUE(b.vm.config().restore.has_value());
    // Once loaded, the VM is past its start: no second load, start or configuration.
    const std::string before = b.config_json();
    auto again = b.vm.snapshot_load(load(resume));
    ASSERT_FALSE(again.ok());
    EXPECT_NE(again.error().message().find(resume ? "Running" : "Paused"), std::string::npos)
        << again.error().message();
    EXPECT_FALSE(b.vm.start().ok());
    EXPECT_FALSE(b.vm.configure("machine-config", [](VmConfig& c) -> Result<void> {
                      c.cpus = 1;
                      return Ok();
                    }).ok());
    EXPECT_EQ(b.config_json(), before);
    EXPECT_EQ(b.log->built, 1);
    // And it pauses, resumes and snapshots like a booted one.
    ASSERT_TRUE(b.vm.pause().ok());
    EXPECT_TRUE(b.vm.snapshot_create(SnapshotCreateRequest{false, dir_ + "/b.snap", dir_ + "/b.mem"}).ok());
    ASSERT_TRUE(b.vm.resume().ok());
    EXPECT_EQ(b.vm.state(), VmState::kRunning);
  }
}

TEST_F(SnapshotControllerTest, LoadAfterConfigureOrStartIsRefusedAndChangesNothing) {
  take_snapshot();
  if (HasFatalFailure()) return;
  {
    Vmm b(config());  // the command line's configuration: still fresh
    ASSERT_TRUE(b.vm.configure("machine-config", [](VmConfig& c) -> Result<void> {
                      c.cpus = 1;
                      return Ok();
                    }).ok());
    const std::string before = b.config_json();
    auto r = b.vm.snapshot_load(load(true));
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message().find("configured already"), std::string::npos) << r.error().message();
    EXPECT_EQ(b.vm.state(), VmState::kNotStarted);
    EXPECT_EQ(b.config_json(), before);
    EXPECT_FALSE(b.vm.config().restore.has_value());
    EXPECT_EQ(b.log->built, 0);
    // What was configured still boots.
    ASSERT_TRUE(b.vm.start().ok());
    std::lock_guard lock(b.log->mu);
    EXPECT_FALSE(b.log->last_config.restore.has_value());
    EXPECT_EQ(b.log->last_config.cpus, 1u);
  }
  {
    // A failed configure() changes nothing, so it does not count.
    Vmm b(VmConfig{});
    EXPECT_FALSE(b.vm.configure("machine-config", [](VmConfig&) -> Result<void> {
                      return make_error(ErrorCode::kInvalidArgument, "no");
                    }).ok());
    EXPECT_TRUE(b.vm.snapshot_load(load(false)).ok());
  }
  {
    Vmm b(config());
    ASSERT_TRUE(b.vm.start().ok());
    auto r = b.vm.snapshot_load(load(true));
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message().find("Running"), std::string::npos) << r.error().message();
    EXPECT_EQ(b.vm.state(), VmState::kRunning);
    EXPECT_EQ(b.log->built, 1);
  }
  {
    // ringvm is shutting down (a stop before run() picked up anything): refused, not a hang.
    VmController c(VmConfig{}, FakeMachine::factory(std::make_shared<FakeMachineLog>()));
    c.request_stop(StopReason::kQuit);
    auto r = c.snapshot_load(load(true));
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message().find("shutting down"), std::string::npos) << r.error().message();
  }
}

TEST_F(SnapshotControllerTest, ACorruptStateFileIsRefusedAndTheGoodOneThenLoads) {
  take_snapshot();
  if (HasFatalFailure()) return;
  std::string bytes(std::filesystem::file_size(snap_), '\0');
  std::ifstream(snap_, std::ios::binary).read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_GT(bytes.size(), 40u);
  bytes[bytes.size() - 3] = static_cast<char>(bytes[bytes.size() - 3] ^ 1);  // in the payload
  const std::string corrupt = dir_ + "/corrupt.snap";
  std::ofstream(corrupt, std::ios::binary) << bytes;

  Vmm b(VmConfig{});
  const std::string before = b.config_json();
  auto r = b.vm.snapshot_load(load(true, corrupt));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("checksum mismatch"), std::string::npos) << r.error().message();
  EXPECT_NE(r.error().message().find(corrupt), std::string::npos) << r.error().message();
  EXPECT_EQ(b.vm.state(), VmState::kNotStarted);
  EXPECT_EQ(b.config_json(), before);
  EXPECT_FALSE(b.vm.config().restore.has_value());
  EXPECT_EQ(b.log->built, 0);
  // A memory file of another size: refused too.
  std::filesystem::resize_file(mem_, 32u << 20);
  r = b.vm.snapshot_load(load(true));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find(mem_), std::string::npos) << r.error().message();
  std::filesystem::resize_file(mem_, 64u << 20);
  // The same controller then loads the good file.
  r = b.vm.snapshot_load(load(true));
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(b.vm.state(), VmState::kRunning);
  EXPECT_EQ(b.log->built, 1);
}

TEST_F(SnapshotControllerTest, AFailedRestoreBuildLeavesTheControllerFresh) {
  take_snapshot();
  if (HasFatalFailure()) return;
  Vmm b(VmConfig{});
  const std::string before = b.config_json();
  b.log->fail_build = "tap0: Operation not permitted";
  auto r = b.vm.snapshot_load(load(true));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("tap0: Operation not permitted"), std::string::npos) << r.error().message();
  EXPECT_EQ(b.vm.state(), VmState::kNotStarted);
  EXPECT_EQ(b.config_json(), before);
  EXPECT_FALSE(b.vm.config().restore.has_value());
  b.log->fail_build.clear();
  ASSERT_TRUE(b.vm.snapshot_load(load(false)).ok());
  EXPECT_EQ(b.vm.state(), VmState::kPaused);
}

// Whether a Diff snapshot is possible (track_dirty_pages) is the machine's to say (Vm::snapshot);
// the fake does not check it. The controller's part: a Diff is refused like a Full one unless
// Paused, reaches the machine as a Diff, and a machine's refusal is the request's error with the
// VM still Paused.
TEST_F(SnapshotControllerTest, DiffCreateWithoutTrackDirtyPagesIsTheMachinesCall) {
  VmConfig cfg = config();
  ASSERT_FALSE(cfg.track_dirty_pages);
  Vmm a(cfg);
  const SnapshotCreateRequest diff{true, snap_, mem_};
  ASSERT_TRUE(a.vm.start().ok());
  auto r = a.vm.snapshot_create(diff);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("the VM is Running"), std::string::npos) << r.error().message();
  ASSERT_TRUE(a.vm.pause().ok());
  a.log->fail_snapshot = "snapshot/create: a Diff snapshot needs dirty page tracking";
  r = a.vm.snapshot_create(diff);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message(), "snapshot/create: a Diff snapshot needs dirty page tracking");
  EXPECT_EQ(a.vm.state(), VmState::kPaused);
  EXPECT_EQ(a.log->snapshots, 0);
  EXPECT_FALSE(std::filesystem::exists(snap_));
  a.log->fail_snapshot.clear();
  ASSERT_TRUE(a.vm.snapshot_create(diff).ok());
  auto state = read_snapshot_file(snap_);
  ASSERT_TRUE(state.ok()) << state.error().message();
  EXPECT_EQ(state->kind, SnapshotKind::kDiff);
  ASSERT_TRUE(a.vm.snapshot_create(SnapshotCreateRequest{false, snap_, mem_}).ok());
  state = read_snapshot_file(snap_);
  ASSERT_TRUE(state.ok());
  EXPECT_EQ(state->kind, SnapshotKind::kFull);
  ASSERT_TRUE(a.vm.resume().ok());
  EXPECT_EQ(a.vm.state(), VmState::kRunning);
}

}  // namespace
}  // namespace ringvm

namespace ringvm {
namespace {

// Where output goes may be set before a snapshot load (Firecracker allows logger and metrics);
// what the VM is may not.
TEST(ControllerOutputBeforeLoadTest, LoggerMetricsAndSerialDoNotCountAsConfiguration) {
  auto log = std::make_shared<testing::FakeMachineLog>();
  VmController vm(VmConfig{}, testing::FakeMachine::factory(log));
  for (const char* what : {"logger", "metrics", "serial"})
    ASSERT_TRUE(vm.configure(what, [](VmConfig&) { return Ok(); }));
  // A load now fails only on the missing file, not on "configured already".
  SnapshotLoadRequest req;
  req.snapshot_path = "/nonexistent/vm.snap";
  req.mem_path = "/nonexistent/vm.mem";
  auto r = vm.snapshot_load(req);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message().find("configured already"), std::string::npos) << r.error().message();
  ASSERT_TRUE(vm.configure("machine-config", [](VmConfig&) { return Ok(); }));
  r = vm.snapshot_load(req);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("configured already"), std::string::npos) << r.error().message();
}

}  // namespace
}  // namespace ringvm
