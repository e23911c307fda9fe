// Vm: one running virtual machine — KVM objects, guest memory, buses, devices, vCPU threads and
// the event loop — and its life: run until the guest powers off, reboots or crashes, or the host
// asks it to stop. Vm::create (builder.cc) is the ONE place a VM is assembled.
#pragma once

#include <csignal>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "base/event_loop.h"
#include "base/result.h"
#include "devices/bus.h"
#include "kvm/system.h"
#include "kvm/vcpu.h"
#include "kvm/vcpu_thread.h"
#include "kvm/vm.h"
#include "memory/guest_memory.h"
#include "vmm/config.h"
#include "vmm/console.h"

namespace ringvm {

// Why a VM stopped. The CLI maps these to exit statuses (cli/app.h).
enum class StopReason : int {
  kNone = 0,
  kPowerOff,  // ACPI S5, or KVM_SYSTEM_EVENT_SHUTDOWN
  kReboot,    // i8042 reset, KVM_SYSTEM_EVENT_RESET
  kCrash,     // triple fault, entry failure, emulation failure
  kSignal,    // SIGTERM / SIGINT / SIGHUP
  kQuit,      // console escape Ctrl-a x
  kError,     // ringvm failed while running
};
const char* stop_reason_name(StopReason r);

// SIGTERM, SIGINT, SIGHUP: the signals that stop a VM. Block them before the first thread exists;
// Vm::run reads them from a signalfd.
sigset_t stop_signal_set();

class Vm {
 public:
  ~Vm();
  static Result<std::unique_ptr<Vm>> create(const VmConfig& cfg);

  // Starts the vCPUs and serves devices until something stops the VM. Returns why.
  StopReason run();
  // Thread-safe; the first reason wins.
  void request_stop(StopReason reason, std::string detail = {});
  StopReason stop_reason() const { return static_cast<StopReason>(stop_reason_.load()); }
  // What went wrong for kCrash / kError (registers, the error message).
  std::string stop_detail() const;

  // Exit counts by reason (ours and, where the host has binary stats, KVM's), for --stats.
  std::string stats_report() const;

  // How long run() waits, after the VM stopped, for every vCPU thread to leave KVM_RUN (kicking
  // each again every 100 ms).
  static constexpr std::chrono::seconds kVcpuStopTimeout{10};
  // The vCPUs whose threads were still inside KVM_RUN when run() gave up on them: stuck in the
  // host kernel. Such a Vm cannot be destroyed (its threads still use it); the caller reports
  // them and ends the process (cli/run_command.cc).
  const std::vector<size_t>& stuck_vcpus() const { return stuck_vcpus_; }

 private:
  friend class VmBuilder;
  Vm() = default;
  void vcpu_loop(size_t index);

  VmConfig cfg_;
  std::optional<KvmSystem> kvm_;
  std::optional<KvmVm> vm_;
  // Everything the VM owns that is only referenced through callbacks or buses. Declared before the
  // buses so it outlives the references they hold, and released newest first (~Vm): devices use
  // the interrupt controller and MSI router made before them until their destructors return.
  std::vector<std::shared_ptr<void>> owned_;
  GuestMemory mem_;
  Bus pio_{"port I/O"};
  Bus mmio_{"MMIO"};
  std::vector<std::unique_ptr<KvmVcpu>> vcpus_;
  std::vector<std::unique_ptr<VcpuThread>> threads_;
  std::optional<EventLoop> loop_;
  std::unique_ptr<Console> console_;
  // Where console input goes (the UART's receive FIFO); returns the bytes it accepted.
  std::function<size_t(std::span<const uint8_t>)> console_input_;
  ExitCounters counters_;
  // Per-device counter lines for --stats, one function per device.
  std::vector<std::function<std::string()>> device_stats_;
  // Functions that must run before devices are destroyed (stop worker threads).
  std::vector<std::function<void()>> shutdown_hooks_;

  std::vector<size_t> stuck_vcpus_;
  std::atomic<int> stop_reason_{0};
  mutable std::mutex detail_mu_;
  std::string stop_detail_;
};

}  // namespace ringvm
