#include "vmm/vm.h"

#include <sys/ioctl.h>
#include <sys/signalfd.h>

#include <algorithm>
#include <csignal>
#include <cstring>

#include "base/log.h"
#include "devices/legacy/i8042.h"
#include "kvm/stats.h"
#include "vmm/bus_exit_handler.h"
#include "vmm/console.h"

namespace ringvm {

const char* stop_reason_name(StopReason r) {
  switch (r) {
    case StopReason::kNone: return "running";
    case StopReason::kPowerOff: return "guest powered off";
    case StopReason::kReboot: return "guest rebooted";
    case StopReason::kCrash: return "guest crashed";
    case StopReason::kSignal: return "stopped by a signal";
    case StopReason::kQuit: return "quit from the console";
    case StopReason::kError: return "ringvm error";
  }
  return "unknown";
}

sigset_t stop_signal_set() {
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGHUP);
  return sigs;
}

Vm::~Vm() {
  stop_prefault_.store(true);
  if (prefault_.joinable()) prefault_.join();
  request_stop(StopReason::kError);  // wakes parked vCPUs; a no-op after run() returned
  for (auto& t : threads_) t->kick();
  for (auto& t : threads_) t->join();
  devices_.stop_workers();
}

void Vm::request_stop(StopReason reason, std::string detail) {
  int expected = 0;
  if (stop_reason_.compare_exchange_strong(expected, static_cast<int>(reason))) {
    if (!detail.empty()) {
      std::lock_guard lock(detail_mu_);
      stop_detail_ = std::move(detail);
    }
  }
  {
    // Parked vCPUs (a paused VM) wake up and leave.
    std::lock_guard lock(pause_mu_);
    pause_cv_.notify_all();
  }
  if (loop_) loop_->stop();
}

void Vm::park_vcpu(size_t index) {
  {
    std::unique_lock lock(pause_mu_);
    if (!pause_requested_) return;
    ++parked_;
    pause_cv_.notify_all();
    pause_cv_.wait(lock, [this] { return !pause_requested_ || stop_reason() != StopReason::kNone; });
    --parked_;
  }
  // The guest's kvmclock page gets PVCLOCK_GUEST_STOPPED, so its soft-lockup and RCU-stall
  // detectors discount the time it was paused. EINVAL: the guest does not use kvmclock.
  // SAFETY: KVM_KVMCLOCK_CTRL takes no argument.
  if (::ioctl(vcpus_[index]->fd(), KVM_KVMCLOCK_CTRL, 0) != 0 && errno != EINVAL)
    RINGVM_LOG_RATELIMITED(warn, "vCPU {}: KVM_KVMCLOCK_CTRL: {}", index, std::strerror(errno));
}

size_t Vm::parked_vcpus() const {
  std::lock_guard lock(pause_mu_);
  return parked_;
}

Result<void> Vm::pause() {
  std::lock_guard op(pause_op_mu_);
  if (paused_) return Ok();
  {
    std::unique_lock lock(pause_mu_);
    // Right after InstanceStart the vCPU threads may still be starting.
    pause_cv_.wait_for(lock, kVcpuPauseTimeout,
                       [&] { return vcpus_started_ || stop_reason() != StopReason::kNone; });
    if (stop_reason() != StopReason::kNone)
      return make_error(ErrorCode::kInvalidArgument, "pause: the VM is stopping ({})",
                        stop_reason_name(stop_reason()));
    if (!vcpus_started_) return make_error(ErrorCode::kInvalidArgument, "pause: the VM is not running");
    pause_requested_ = true;
    pause_flag_.store(true);
    const auto deadline = std::chrono::steady_clock::now() + kVcpuPauseTimeout;
    for (;;) {
      for (auto& t : threads_) t->kick();
      // A kick the host lost is sent again every 100 ms.
      if (pause_cv_.wait_for(lock, std::chrono::milliseconds(100), [&] {
            return parked_ == threads_.size() || stop_reason() != StopReason::kNone;
          }))
        break;
      if (std::chrono::steady_clock::now() >= deadline) break;
    }
    if (parked_ != threads_.size() || stop_reason() != StopReason::kNone) {
      const size_t parked = parked_;
      pause_requested_ = false;
      pause_flag_.store(false);
      pause_cv_.notify_all();
      if (stop_reason() != StopReason::kNone)
        return make_error(ErrorCode::kInvalidArgument, "pause: the VM is stopping ({})",
                          stop_reason_name(stop_reason()));
      return make_error(ErrorCode::kInternal,
                        "pause: only {} of {} vCPUs left KVM_RUN within {} s; the VM keeps running", parked,
                        threads_.size(), kVcpuPauseTimeout.count());
    }
  }
  if (auto r = devices_.pause(); !r) {
    std::lock_guard lock(pause_mu_);
    pause_requested_ = false;
    pause_flag_.store(false);
    pause_cv_.notify_all();
    return r;
  }
  paused_ = true;
  return Ok();
}

Result<void> Vm::resume() {
  std::lock_guard op(pause_op_mu_);
  if (!paused_) return Ok();
  // A device that cannot go on keeps the whole VM paused (consistent with what the controller
  // reports; resume again to retry: every device's resume is idempotent).
  RETURN_IF_ERROR(devices_.resume());
  {
    std::lock_guard lock(pause_mu_);
    pause_requested_ = false;
    pause_flag_.store(false);
    pause_cv_.notify_all();
  }
  paused_ = false;
  return Ok();
}

Result<void> Vm::send_ctrl_alt_del() {
  I8042* kbd = devices_.i8042();
  if (kbd == nullptr)
    return make_error(ErrorCode::kUnsupported, "SendCtrlAltDel: this VM has no i8042 keyboard");
  if (!kbd->send_ctrl_alt_del())
    return make_error(
        ErrorCode::kInvalidArgument,
        "SendCtrlAltDel: the guest's keyboard is not taking keys (its driver disabled scanning, or "
        "has not read the last ones); try again once the guest has booted");
  return Ok();
}

nlohmann::json Vm::metrics() const {
  nlohmann::json exits = nlohmann::json::object();
  uint64_t total = 0;
  for (uint32_t i = 0; i < ExitCounters::kReasons; ++i) {
    const uint64_t n = counters_.by_reason[i].load();
    if (n == 0) continue;
    total += n;
    exits[kvm_exit_reason_name(i)] = n;
  }
  exits["total"] = total;
  nlohmann::json m = devices_.metrics();
  m["vcpu_exits"] = exits;
  // Start-up latency: building the VM (from a snapshot for a restore) and its first vCPU entry.
  m["start"] = {{"restored", restored_}, {"build_us", build_us_}, {"first_entry_us", first_entry_us_.load()}};
  m["vcpu"] = {{"count", vcpus_.size()}};
  return m;
}

std::string Vm::stop_detail() const {
  std::lock_guard lock(detail_mu_);
  return stop_detail_;
}

void Vm::vcpu_loop(size_t index) {
  KvmVcpu& vcpu = *vcpus_[index];
  BusExitHandler exits(pio_, mmio_);
  if (restored_) {
    // The guest was stopped since its snapshot: as after a pause (park_vcpu), its watchdogs
    // must not count that time. A VM restored paused parks first and says so when it wakes.
    if (pause_flag_.load()) {
      park_vcpu(index);
    } else if (::ioctl(vcpu.fd(), KVM_KVMCLOCK_CTRL, 0) != 0 && errno != EINVAL) {  // SAFETY: no argument
      RINGVM_LOG_RATELIMITED(warn, "vCPU {}: KVM_KVMCLOCK_CTRL: {}", index, std::strerror(errno));
    }
  }
  if (index == 0) {
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() -
                                                                          build_started_).count();
    int64_t unset = -1;
    if (first_entry_us_.compare_exchange_strong(unset, us))
      spdlog::debug("first vCPU entry {:.3f} ms after the build began (built in {:.3f} ms)", static_cast<double>(us) / 1000.0,
                    static_cast<double>(build_us_) / 1000.0);
  }
  while (stop_reason() == StopReason::kNone) {
    auto r = vcpu.run(exits, &counters_);
    if (!r) {
      request_stop(StopReason::kError, r.error().message());
      return;
    }
    switch (r->kind) {
      case VcpuExitKind::kKicked:
        if (pause_flag_.load()) park_vcpu(index);
        continue;
      case VcpuExitKind::kSystemEvent:
        switch (r->system_event_type) {
          case KVM_SYSTEM_EVENT_SHUTDOWN: request_stop(StopReason::kPowerOff); break;
          case KVM_SYSTEM_EVENT_RESET: request_stop(StopReason::kReboot); break;
          default:
            request_stop(StopReason::kCrash, fmt::format("system event {} from vCPU {}\n{}",
                                                         r->system_event_type, index, vcpu.dump_state()));
        }
        return;
      case VcpuExitKind::kShutdown:
        request_stop(StopReason::kCrash,
                     fmt::format("triple fault on vCPU {}\n{}", index, vcpu.dump_state()));
        return;
      case VcpuExitKind::kHalt:
        request_stop(StopReason::kCrash, fmt::format("vCPU {} halted with interrupts it can never get\n{}",
                                                     index, vcpu.dump_state()));
        return;
      case VcpuExitKind::kFailEntry:
        request_stop(StopReason::kCrash, fmt::format("vCPU {}: hardware refused entry (reason {:#x})\n{}",
                                                     index, r->detail, vcpu.dump_state()));
        return;
      case VcpuExitKind::kInternalError:
        request_stop(StopReason::kCrash, fmt::format("vCPU {}: KVM internal error (suberror {})\n{}", index,
                                                     r->detail, vcpu.dump_state()));
        return;
      default:
        request_stop(StopReason::kCrash,
                     fmt::format("vCPU {}: unexpected exit {} ({})\n{}", index, r->raw_reason,
                                 kvm_exit_reason_name(r->raw_reason), vcpu.dump_state()));
        return;
    }
  }
}

StopReason Vm::run() {
  // SIGTERM/SIGINT/SIGHUP arrive through a signalfd on the event loop; block them in every thread
  // (vCPU threads inherit the mask) so no thread is interrupted at random.
  const sigset_t sigs = stop_signal_set();
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  UniqueFd sfd(::signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!sfd) {
    request_stop(StopReason::kError, sys_error("signalfd").message());
    return stop_reason();
  }
  auto added = loop_->add(sfd.get(), EPOLLIN, [this, &sfd](uint32_t) {
    signalfd_siginfo si{};
    if (::read(sfd.get(), &si, sizeof si) == static_cast<ssize_t>(sizeof si))
      request_stop(StopReason::kSignal, fmt::format("signal {}", si.ssi_signo));
  });
  if (!added) {
    request_stop(StopReason::kError, added.error().message());
    return stop_reason();
  }
  if (console_ && console_input_) {
    auto started = console_->start_input(console_input_, [this] { request_stop(StopReason::kQuit); });
    if (!started) {
      request_stop(StopReason::kError, started.error().message());
      return stop_reason();
    }
  }
  {
    // A pause may arrive as soon as the controller says Running: it waits for vcpus_started_.
    std::lock_guard lock(pause_mu_);

    for (size_t i = 0; i < vcpus_.size(); ++i) {
      threads_.push_back(std::make_unique<VcpuThread>());
      threads_.back()->start(vcpus_[i].get(), [this, i] { vcpu_loop(i); });
    }
    vcpus_started_ = true;
    pause_cv_.notify_all();
  }
  while (stop_reason() == StopReason::kNone) {
    auto r = loop_->run();
    if (!r) request_stop(StopReason::kError, r.error().message());
  }
  // A pause in progress sees the stop and returns before the threads are joined under it.
  std::lock_guard op(pause_op_mu_);
  for (auto& t : threads_) t->kick();
  const auto deadline = std::chrono::steady_clock::now() + kVcpuStopTimeout;
  for (size_t i = 0; i < threads_.size(); ++i) {
    if (!threads_[i]->stop_by(deadline)) stuck_vcpus_.push_back(i);
  }
  (void)loop_->remove(sfd.get());
  if (console_) console_->flush();
  return stop_reason();
}

std::string Vm::stats_report() const {
  std::string out = "ringvm: VM exits to userspace (all vCPUs):\n";
  uint64_t total = 0;
  for (uint32_t i = 0; i < ExitCounters::kReasons; ++i) {
    const uint64_t n = counters_.by_reason[i].load();
    if (n == 0) continue;
    total += n;
    out += fmt::format("  {:<16} {:>10}\n", kvm_exit_reason_name(i), n);
  }
  out += fmt::format("  {:<16} {:>10}\n", "total", total);
  out += fmt::format("  unclaimed port I/O {}, unclaimed MMIO {}\n", counters_.pio_unclaimed.load(),
                     counters_.mmio_unclaimed.load());
  // KVM's own counters include the exits handled in the kernel.
  std::map<std::string, uint64_t> kernel;
  bool have_kernel = false;
  for (const auto& v : vcpus_) {
    auto st = KvmStats::open(v->fd());
    if (!st) break;
    auto vals = st->read();
    if (!vals) break;
    have_kernel = true;
    for (const auto& [k, n] : *vals) kernel[k] += n;
  }
  if (have_kernel) {
    out += "ringvm: KVM's exit counters (all vCPUs, including exits handled in the kernel):\n";
    for (const char* k : {"exits", "io_exits", "mmio_exits", "halt_exits", "irq_exits", "signal_exits",
                          "request_irq_exits", "irq_window_exits", "nmi_window_exits", "insn_emulation",
                          "hypercalls", "pf_taken", "halt_attempted_poll", "halt_successful_poll",
                          "halt_wakeup", "halt_poll_success_ns", "halt_poll_fail_ns"}) {
      auto it = kernel.find(k);
      if (it != kernel.end()) out += fmt::format("  {:<21} {:>12}\n", k, it->second);
    }
  }
  if (const std::string devices = devices_.stats_text(); !devices.empty())
    out += "ringvm: device counters:\n" + devices;
  return out;
}

}  // namespace ringvm
