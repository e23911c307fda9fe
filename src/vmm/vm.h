// Vm: one running virtual machine — KVM objects, guest memory, buses, devices, vCPU threads and
// the event loop — and its life: run until the guest powers off, reboots or crashes, or the host
// asks it to stop. Vm::create (builder.cc) is the ONE place a VM is assembled.
#pragma once

#include <csignal>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
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
#include "vmm/controller.h"
#include "vmm/device_manager.h"
#include "vmm/console.h"
#include "vmm/stop_reason.h"

namespace ringvm {



class Vm final : public Machine {
 public:
  ~Vm() override;
  static Result<std::unique_ptr<Vm>> create(const VmConfig& cfg);
  // The checks of a configuration's inputs that need no KVM (files, sizes, limits, fds), so bad
  // input is named before anything about the host is.
  static Result<void> preflight(const VmConfig& cfg);

  // Starts the vCPUs and serves devices until something stops the VM. Returns why.
  StopReason run() override;
  // Thread-safe; the first reason wins.
  void request_stop(StopReason reason, std::string detail = {}) override;
  StopReason stop_reason() const { return static_cast<StopReason>(stop_reason_.load()); }
  // What went wrong for kCrash / kError (registers, the error message).
  std::string stop_detail() const override;

  // From any thread while run() runs: every vCPU leaves KVM_RUN and parks, then every device
  // finishes what it has in flight and parks (DeviceManager::pause). Idempotent.
  Result<void> pause() override;
  // Devices first, then the vCPUs; each vCPU tells KVM its guest was stopped
  // (KVM_KVMCLOCK_CTRL) before it enters the guest again, so the guest's watchdogs do not take
  // the pause for a lockup.
  Result<void> resume() override;
  Result<void> send_ctrl_alt_del() override;
  nlohmann::json metrics() const override;
  // vmm/snapshot_vm.cc: only while paused.
  Result<void> snapshot(const SnapshotCreateRequest& req) override;
  // How many vCPU threads are parked (tests, the pause benchmark).
  size_t parked_vcpus() const;

  // Exit counts by reason (ours and, where the host has binary stats, KVM's), for --stats.
  std::string stats_report() const;

  // How long run() waits, after the VM stopped, for every vCPU thread to leave KVM_RUN (kicking
  // each again every 100 ms).
  static constexpr std::chrono::seconds kVcpuStopTimeout{10};
  // How long pause() waits for every vCPU to park (kicking again every 100 ms).
  static constexpr std::chrono::seconds kVcpuPauseTimeout{5};
  // The vCPUs whose threads were still inside KVM_RUN when run() gave up on them: stuck in the
  // host kernel. Such a Vm cannot be destroyed (its threads still use it); the caller reports
  // them and ends the process (cli/run_command.cc).
  const std::vector<size_t>& stuck_vcpus() const { return stuck_vcpus_; }

 private:
  friend class VmBuilder;
  Vm() = default;
  void vcpu_loop(size_t index);
  // After the builder made every device and vCPU: their states from cfg_.restore's snapshot.
  Result<void> restore_from_snapshot();
  // On vCPU `index`'s thread after a kick: waits while a pause is asked for.
  void park_vcpu(size_t index);

  VmConfig cfg_;
  std::optional<KvmSystem> kvm_;
  std::optional<KvmVm> vm_;
  // Every device, owned with its type. Declared before the buses so it outlives the references
  // they hold; it stops device threads before releasing anything they use.
  DeviceManager devices_;
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

  std::vector<size_t> stuck_vcpus_;
  std::atomic<int> stop_reason_{0};
  mutable std::mutex detail_mu_;
  std::string stop_detail_;

  // Pause: pause_mu_ guards the flag and the count; pause_op_mu_ serializes pause and resume.
  std::mutex pause_op_mu_;
  mutable std::mutex pause_mu_;
  std::condition_variable pause_cv_;
  bool pause_requested_ = false;
  std::atomic<bool> pause_flag_{false};  // read by vCPU threads on every kick
  size_t parked_ = 0;
  bool vcpus_started_ = false;  // run() made every vCPU thread (threads_ fixed from then on)
  bool paused_ = false;
  // Built from a snapshot: each vCPU tells KVM its guest was stopped before its first entry.
  bool restored_ = false;
  // When the build began, and how long until the first vCPU entered the guest (µs, set once):
  // a restore's latency, in the metrics ("restore") and the log.
  std::chrono::steady_clock::time_point build_started_{};
  std::atomic<int64_t> first_entry_us_{-1};
  // A restore maps the memory file's data extents into the page tables on this thread while the
  // vCPUs start (MADV_POPULATE_READ), so the guest's first touches cost a stage-2 fault only, not
  // a host page fault as well (lab, 2026-12-07: first tick after restore 1321/2034/6614 ms against
  // 1887/4119/7116 without, interleaved). Joined before the memory goes; stop_prefault_ ends it early.
  std::thread prefault_;
  std::atomic<bool> stop_prefault_{false};
  int64_t build_us_ = -1;
  std::shared_ptr<class CmosRtc> rtc_;        // clock_realtime sets it to now after a restore
};

}  // namespace ringvm
