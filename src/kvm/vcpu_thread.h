// VcpuThread: runs a function on its own thread and can kick it out of KVM_RUN.
//
// Kicking sets kvm_run.immediate_exit (so a KVM_RUN about to start returns at once) and sends
// SIGUSR1 to the thread (so one already running returns with EINTR). The signal's handler does
// nothing; it exists only so the signal interrupts the ioctl instead of killing the process.
#pragma once

#include <pthread.h>

#include <atomic>
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

 private:
  KvmVcpu* vcpu_ = nullptr;
  std::thread thread_;
  std::atomic<bool> started_{false};
};

}  // namespace ringvm
