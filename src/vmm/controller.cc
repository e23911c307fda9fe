#include "vmm/controller.h"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <ctime>

#include "base/log.h"
#include "base/unique_fd.h"
#include "vmm/snapshot.h"

namespace ringvm {

const char* vm_state_name(VmState s) {
  switch (s) {
    case VmState::kNotStarted: return "Not started";
    case VmState::kRunning: return "Running";
    case VmState::kPaused: return "Paused";
    case VmState::kStopped: return "Stopped";
  }
  return "Unknown";
}

VmController::VmController(VmConfig initial, MachineFactory factory)
    : factory_(std::move(factory)), cfg_(std::move(initial)) {}

VmState VmController::state() const {
  std::lock_guard lock(mu_);
  return state_;
}

VmConfig VmController::config() const {
  std::lock_guard lock(mu_);
  return cfg_;
}

std::string VmController::id() const {
  std::lock_guard lock(mu_);
  return cfg_.id;
}

Result<void> VmController::configure(std::string_view what,
                                     const std::function<Result<void>(VmConfig&)>& edit) {
  std::lock_guard lock(mu_);
  if (state_ != VmState::kNotStarted || start_requested_ || building_)
    return make_error(ErrorCode::kInvalidArgument,
                      "{}: the VM is {}; this can only be set before InstanceStart", what,
                      start_requested_ || building_ ? "starting" : vm_state_name(state_));
  VmConfig next = cfg_;
  RETURN_IF_ERROR(edit(next));
  cfg_ = std::move(next);
  // Where output goes (Firecracker: logger and metrics; ringvm: the serial console too) belongs
  // to this process and may be set before a snapshot load; anything about the VM may not.
  if (what != "logger" && what != "metrics" && what != "serial") configured_ = true;
  return Ok();
}

Result<void> VmController::inspect_running(std::string_view what,
                                           const std::function<Result<void>(const VmConfig&)>& check) const {
  std::lock_guard lock(mu_);
  if (state_ != VmState::kRunning && state_ != VmState::kPaused)
    return make_error(ErrorCode::kInvalidArgument,
                      "{}: the VM is {}; this can only be changed after InstanceStart", what,
                      vm_state_name(state_));
  return check(cfg_);
}

Result<void> VmController::start() {
  std::unique_lock lock(mu_);
  if (state_ != VmState::kNotStarted)
    return make_error(ErrorCode::kInvalidArgument, "InstanceStart: the VM is {} already",
                      vm_state_name(state_));
  if (start_requested_)
    return make_error(ErrorCode::kInvalidArgument, "InstanceStart: the VM is starting already");
  if (early_stop_ != StopReason::kNone)
    return make_error(ErrorCode::kInvalidArgument, "InstanceStart: ringvm is shutting down ({})",
                      stop_reason_name(early_stop_));
  // Checked here too, so the common mistake is a clear 400 without a round trip.
  VmConfig probe = cfg_;
  RETURN_IF_ERROR(finalize_config(probe));
  return request_build_locked(lock);
}

Result<void> VmController::request_build_locked(std::unique_lock<std::mutex>& lock) {
  start_requested_ = true;
  start_result_.reset();
  const uint64_t gen = ++start_generation_;
  cv_.notify_all();
  cv_.wait(lock,
           [&] { return (start_result_.has_value() && start_generation_ == gen) || !start_requested_; });
  if (!start_result_)
    return make_error(ErrorCode::kInvalidArgument, "InstanceStart: ringvm is shutting down");
  Result<void> r = std::move(*start_result_);
  start_result_.reset();
  return r;
}

Result<void> VmController::snapshot_create(const SnapshotCreateRequest& req) {
  std::lock_guard op(op_mu_);
  {
    std::lock_guard lock(mu_);
    if (state_ != VmState::kPaused || !machine_)
      return make_error(ErrorCode::kInvalidArgument,
                        "snapshot/create: the VM is {}; a snapshot is taken of a paused VM (PATCH /vm "
                        "{{\"state\": \"Paused\"}} first)", vm_state_name(state_));
  }
  return machine_->snapshot(req);
}

Result<void> VmController::snapshot_load(const SnapshotLoadRequest& req) {
  VmConfig base;
  {
    std::lock_guard lock(mu_);
    if (state_ != VmState::kNotStarted || start_requested_ || building_)
      return make_error(ErrorCode::kInvalidArgument,
                        "snapshot/load: the VM is {}; a snapshot loads only into a VMM that has not started one",
                        start_requested_ || building_ ? "starting" : vm_state_name(state_));
    if (configured_)
      return make_error(ErrorCode::kInvalidArgument,
                        "snapshot/load: this VMM was configured already (machine-config, boot-source, drives, ...); "
                        "a snapshot carries its own configuration, so load it into a fresh ringvm");
    base = cfg_;
  }
  // The files are read and checked without the lock (they may be large).
  VmConfig restored = TRY(prepare_restore(req, base));
  std::unique_lock lock(mu_);
  if (state_ != VmState::kNotStarted || start_requested_ || building_ || configured_)
    return make_error(ErrorCode::kInvalidArgument, "snapshot/load: the VM changed while the snapshot was read");
  if (early_stop_ != StopReason::kNone)
    return make_error(ErrorCode::kInvalidArgument, "snapshot/load: ringvm is shutting down ({})",
                      stop_reason_name(early_stop_));
  cfg_ = std::move(restored);
  auto r = request_build_locked(lock);
  if (!r) {
    // Nothing was built: this VMM stays fresh for another load (or a configuration).
    cfg_ = std::move(base);
    return wrap(std::move(r).error(), "snapshot/load");
  }
  return Ok();
}

Result<void> VmController::pause() {
  std::lock_guard op(op_mu_);
  {
    std::lock_guard lock(mu_);
    if (state_ == VmState::kPaused) return Ok();
    if (state_ != VmState::kRunning || !machine_)
      return make_error(ErrorCode::kInvalidArgument, "Paused: the VM is {}; only a running VM can be paused",
                        vm_state_name(state_));
  }
  RETURN_IF_ERROR(machine_->pause());
  std::lock_guard lock(mu_);
  state_ = VmState::kPaused;
  return Ok();
}

Result<void> VmController::resume() {
  std::lock_guard op(op_mu_);
  {
    std::lock_guard lock(mu_);
    if (state_ == VmState::kRunning) return Ok();
    if (state_ != VmState::kPaused || !machine_)
      return make_error(ErrorCode::kInvalidArgument, "Resumed: the VM is {}; only a paused VM can be resumed",
                        vm_state_name(state_));
  }
  // A Machine whose resume failed is still paused (Vm::resume keeps the vCPUs parked then).
  RETURN_IF_ERROR(machine_->resume());
  std::lock_guard lock(mu_);
  state_ = VmState::kRunning;
  return Ok();
}

Result<void> VmController::send_ctrl_alt_del() {
  std::lock_guard op(op_mu_);
  {
    std::lock_guard lock(mu_);
    if (state_ != VmState::kRunning || !machine_)
      return make_error(ErrorCode::kInvalidArgument, "SendCtrlAltDel: the VM is {}; it needs a running VM{}",
                        vm_state_name(state_), state_ == VmState::kPaused ? " (resume it first)" : "");
  }
  return machine_->send_ctrl_alt_del();
}

Result<nlohmann::json> VmController::metrics() const {
  std::lock_guard op(op_mu_);
  nlohmann::json m = machine_ ? machine_->metrics() : nlohmann::json::object();
  std::lock_guard lock(mu_);
  m["utc_timestamp_ms"] = std::chrono::duration_cast<std::chrono::milliseconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count();
  m["state"] = vm_state_name(state_);
  return m;
}

Result<void> VmController::flush_metrics() {
  const std::string path = config().metrics_path;
  if (path.empty())
    return make_error(
        ErrorCode::kInvalidArgument,
        "FlushMetrics: no metrics file; set one first with PUT /metrics {{\"metrics_path\": ...}}");
  const std::string line = TRY(metrics()).dump() + "\n";
  // Non-blocking: a named pipe nobody reads is an error, not a hang of the API.
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NONBLOCK, 0600));
  if (!fd) return sys_error(fmt::format("FlushMetrics: metrics_path {}", path));
  if (::write(fd.get(), line.data(), line.size()) != static_cast<ssize_t>(line.size()))
    return sys_error(fmt::format("FlushMetrics: writing {}", path));
  return Ok();
}

Result<void> VmController::build_locked(std::unique_lock<std::mutex>& lock) {
  VmConfig cfg = cfg_;
  building_ = true;  // configure() and start() refuse while the VM is built from `cfg`
  lock.unlock();
  auto built = [&]() -> Result<std::unique_ptr<Machine>> {
    RETURN_IF_ERROR(finalize_config(cfg));
    return factory_(cfg);
  }();
  // Lock order: op_mu_, then mu_.
  std::lock_guard op(op_mu_);
  lock.lock();
  building_ = false;
  if (!built) return std::move(built).error();
  machine_ = std::move(*built);
  return Ok();
}

void VmController::wait_for_start(std::unique_lock<std::mutex>& lock) {
  // The stop signals are blocked in every thread (they reach a running VM through its
  // signalfd); before there is a VM, look for them here.
  const sigset_t sigs = stop_signal_set();
  while (!start_requested_ && early_stop_ == StopReason::kNone) {
    cv_.wait_for(lock, std::chrono::milliseconds(50));
    timespec zero{};
    if (const int sig = ::sigtimedwait(&sigs, nullptr, &zero); sig > 0) {
      early_stop_ = StopReason::kSignal;
      early_detail_ = fmt::format("signal {}", sig);
    }
  }
}

StopReason VmController::run(bool boot_now, const std::function<void(Machine&, StopReason)>& machine_done) {
  std::unique_lock lock(mu_);
  if (!boot_now) wait_for_start(lock);
  for (;;) {
    if (early_stop_ != StopReason::kNone) {
      state_ = VmState::kStopped;
      start_requested_ = false;
      cv_.notify_all();
      return early_stop_;
    }
    auto built = build_locked(lock);
    if (!built) {
      if (!start_requested_) {
        early_detail_ = built.error().message();
        state_ = VmState::kStopped;
        return StopReason::kError;
      }
      // The API's InstanceStart gets the error; the VM stays configurable (fix it and retry).
      start_result_ = std::move(built).error();
      start_requested_ = false;
      state_ = VmState::kNotStarted;
      cv_.notify_all();
      wait_for_start(lock);
      continue;
    }
    // A VM restored with resume_vm false comes up paused (Vm::restore_from_snapshot).
    state_ = cfg_.restore && !cfg_.restore->resume ? VmState::kPaused : VmState::kRunning;
    if (start_requested_) {
      start_result_ = Ok();
      start_requested_ = false;
      cv_.notify_all();
    }
    if (early_stop_ != StopReason::kNone) machine_->request_stop(early_stop_, early_detail_);
    Machine* m = machine_.get();
    lock.unlock();
    const StopReason reason = m->run();
    std::unique_lock op(op_mu_);
    lock.lock();
    state_ = VmState::kStopped;
    const bool restart = reason == StopReason::kReboot && cfg_.on_reboot == OnReboot::kRestart;
    lock.unlock();
    if (machine_done) machine_done(*m, reason);
    lock.lock();
    if (!restart) {
      early_detail_ = m->stop_detail();
      return reason;
    }
    spdlog::info("guest rebooted; restarting");
    // A reboot boots the kernel: the snapshot was the first start only.
    cfg_.restore.reset();
    // Running (no Machine for a moment): a rebuilt VM takes no new configuration.
    state_ = VmState::kRunning;
    lock.unlock();
    machine_.reset();
    op.unlock();
    lock.lock();
  }
}

void VmController::request_stop(StopReason reason, std::string detail) {
  std::lock_guard op(op_mu_);
  std::lock_guard lock(mu_);
  if (machine_ && state_ != VmState::kStopped) {
    machine_->request_stop(reason, std::move(detail));
    return;
  }
  if (early_stop_ == StopReason::kNone) {
    early_stop_ = reason;
    early_detail_ = std::move(detail);
  }
  cv_.notify_all();
}

std::string VmController::stop_detail() const {
  std::lock_guard lock(mu_);
  return early_detail_;
}

}  // namespace ringvm
