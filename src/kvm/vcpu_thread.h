// VcpuThread: runs a function on its own thread and can kick it out of KVM_RUN.
//
// Kicking sets kvm_run.immediate_exit (so a KVM_RUN about to start returns at once) and sends
// SIGUSR1 to the thread (so one already running returns with EINTR). The signal's handler does
// nothing; it exists only so the signal interrupts the ioctl instead of killing the process.
#pragma once

#include <pthread.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <thread>

#include "kvm/vcpu.h"

namespace ringvm {

class VcpuThread {
 public:
  // Installs the kick signal handler once per process. Called by start().
  static void install_kick_handler();

  VcpuThread() = default;
  VcpuThread(const VcpuThread&) = delete;
  VcpuThread& operator=(const VcpuThread&) = delete;
  ~VcpuThread() { join(); }

  void start(KvmVcpu* vcpu, std::function<void()> body);
  // Asks the vCPU to leave KVM_RUN; safe from any thread, any number of times.
  void kick();
  void join();
  // Kicks the thread again every `rekick` until its body has returned (then joins it, true) or
  // `deadline` passes (false: the thread is still inside its body, typically stuck in KVM_RUN in
  // the host kernel; a kick whose wakeup the host lost is resent, so only a thread the host
  // kernel never returns stays). A thread never started counts as stopped.
  bool stop_by(std::chrono::steady_clock::time_point deadline,
               std::chrono::milliseconds rekick = std::chrono::milliseconds(100));
  // How many kicks were sent (for tests and diagnostics).
  uint64_t kicks() const { return kicks_.load(std::memory_order_relaxed); }

 private:
  KvmVcpu* vcpu_ = nullptr;
  std::thread thread_;
  std::atomic<bool> started_{false};
  std::atomic<bool> finished_{false};
  std::atomic<uint64_t> kicks_{0};
};

}  // namespace ringvm
