#include "vmm/vm.h"

#include <algorithm>
#include <csignal>
#include <sys/signalfd.h>

#include "base/log.h"
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
  for (auto& t : threads_) t->kick();
  for (auto& t : threads_) t->join();
  for (auto& hook : shutdown_hooks_) hook();
  std::reverse(owned_.begin(), owned_.end());
}

void Vm::request_stop(StopReason reason, std::string detail) {
  int expected = 0;
  if (stop_reason_.compare_exchange_strong(expected, static_cast<int>(reason))) {
    if (!detail.empty()) {
      std::lock_guard lock(detail_mu_);
      stop_detail_ = std::move(detail);
    }
  }
  if (loop_) loop_->stop();
}

std::string Vm::stop_detail() const {
  std::lock_guard lock(detail_mu_);
  return stop_detail_;
}

void Vm::vcpu_loop(size_t index) {
  KvmVcpu& vcpu = *vcpus_[index];
  BusExitHandler exits(pio_, mmio_);
  while (stop_reason() == StopReason::kNone) {
    auto r = vcpu.run(exits, &counters_);
    if (!r) {
      request_stop(StopReason::kError, r.error().message());
      return;
    }
    switch (r->kind) {
      case VcpuExitKind::kKicked: continue;
      case VcpuExitKind::kSystemEvent:
        switch (r->system_event_type) {
          case KVM_SYSTEM_EVENT_SHUTDOWN: request_stop(StopReason::kPowerOff); break;
          case KVM_SYSTEM_EVENT_RESET: request_stop(StopReason::kReboot); break;
          default:
            request_stop(StopReason::kCrash,
                         fmt::format("system event {} from vCPU {}\n{}", r->system_event_type, index,
                                     vcpu.dump_state()));
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
        request_stop(StopReason::kCrash, fmt::format("vCPU {}: hardware refused entry (reason {:#x})\n{}", index,
                                                     r->detail, vcpu.dump_state()));
        return;
      case VcpuExitKind::kInternalError:
        request_stop(StopReason::kCrash, fmt::format("vCPU {}: KVM internal error (suberror {})\n{}", index,
                                                     r->detail, vcpu.dump_state()));
        return;
      default:
        request_stop(StopReason::kCrash, fmt::format("vCPU {}: unexpected exit {} ({})\n{}", index, r->raw_reason,
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
  for (size_t i = 0; i < vcpus_.size(); ++i) {
    threads_.push_back(std::make_unique<VcpuThread>());
    threads_.back()->start(vcpus_[i].get(), [this, i] { vcpu_loop(i); });
  }
  while (stop_reason() == StopReason::kNone) {
    auto r = loop_->run();
    if (!r) request_stop(StopReason::kError, r.error().message());
  }
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
  if (!device_stats_.empty()) {
    out += "ringvm: device counters:\n";
    for (const auto& f : device_stats_) out += f();
  }
  return out;
}

}  // namespace ringvm
