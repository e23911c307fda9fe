// FakeMachine: a Machine for tests of the controller and the API without KVM. It records what
// it was asked, can be told to fail, and runs until request_stop().
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>

#include <fcntl.h>
#include <unistd.h>

#include "vmm/config_json.h"
#include "vmm/controller.h"
#include "vmm/snapshot_file.h"

namespace ringvm::testing {

struct FakeMachineLog {
  std::atomic<int> built{0}, pauses{0}, resumes{0}, ctrl_alt_dels{0}, snapshots{0};
  // Set to make the next operation fail with this message.
  std::string fail_build, fail_pause, fail_resume, fail_snapshot;
  VmConfig last_config;
  std::mutex mu;
};

class FakeMachine final : public Machine {
 public:
  FakeMachine(std::shared_ptr<FakeMachineLog> log, VmConfig cfg) : log_(std::move(log)), cfg_(std::move(cfg)) {}
  StopReason run() override {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return reason_ != StopReason::kNone; });
    return reason_;
  }
  void request_stop(StopReason reason, std::string detail = {}) override {
    std::lock_guard lock(mu_);
    if (reason_ == StopReason::kNone) {
      reason_ = reason;
      detail_ = std::move(detail);
    }
    cv_.notify_all();
  }
  std::string stop_detail() const override {
    std::lock_guard lock(mu_);
    return detail_;
  }
  Result<void> pause() override {
    if (!log_->fail_pause.empty()) return make_error(ErrorCode::kInternal, "{}", log_->fail_pause);
    ++log_->pauses;
    return Ok();
  }
  Result<void> resume() override {
    if (!log_->fail_resume.empty()) return make_error(ErrorCode::kInternal, "{}", log_->fail_resume);
    ++log_->resumes;
    return Ok();
  }
  Result<void> send_ctrl_alt_del() override {
    ++log_->ctrl_alt_dels;
    return Ok();
  }
  nlohmann::json metrics() const override { return {{"fake", true}}; }
  // A real state file (its configuration, one empty state per vCPU) and a memory file of the
  // right size (a hole), so a load of what the fake wrote goes through prepare_restore.
  Result<void> snapshot(const SnapshotCreateRequest& req) override {
    if (!log_->fail_snapshot.empty()) return make_error(ErrorCode::kIo, "{}", log_->fail_snapshot);
    SnapshotState s;
    s.kind = req.diff ? SnapshotKind::kDiff : SnapshotKind::kFull;
    s.config_json = config_to_json(cfg_).dump();
    s.memory_bytes = cfg_.memory_bytes;
    s.vcpus.assign(cfg_.cpus, {});
    RETURN_IF_ERROR(write_snapshot_file(req.snapshot_path, s));
    if (::truncate(req.mem_path.c_str(), 0) != 0 && errno != ENOENT) return sys_error(req.mem_path);
    const int fd = ::open(req.mem_path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return sys_error(req.mem_path);
    const int r = ::ftruncate(fd, static_cast<off_t>(cfg_.memory_bytes));
    ::close(fd);
    if (r != 0) return sys_error(req.mem_path);
    ++log_->snapshots;
    return Ok();
  }

  // A factory for VmController that builds FakeMachines reporting to `log`.
  static MachineFactory factory(std::shared_ptr<FakeMachineLog> log) {
    return [log](const VmConfig& cfg) -> Result<std::unique_ptr<Machine>> {
      {
        std::lock_guard lock(log->mu);
        log->last_config = cfg;
      }
      if (!log->fail_build.empty()) return make_error(ErrorCode::kInvalidArgument, "{}", log->fail_build);
      ++log->built;
      return std::unique_ptr<Machine>(new FakeMachine(log, cfg));
    };
  }

 private:
  std::shared_ptr<FakeMachineLog> log_;
  VmConfig cfg_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  StopReason reason_ = StopReason::kNone;
  std::string detail_;
};

}  // namespace ringvm::testing
