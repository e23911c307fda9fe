// KvmVcpu: one vCPU fd and its shared kvm_run area; the KVM_RUN loop that hands port I/O and
// MMIO exits to an ExitHandler and returns on every other exit.
#pragma once

#include <linux/kvm.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "base/mmap.h"
#include "base/result.h"
#include "base/unique_fd.h"
#include "kvm/exit_handler.h"

namespace ringvm {

// Why run() returned.
enum class VcpuExitKind {
  kHalt,          // HLT with no in-kernel LAPIC (tiny guests)
  kShutdown,      // triple fault
  kSystemEvent,   // KVM_EXIT_SYSTEM_EVENT (see system_event_type)
  kKicked,        // immediate_exit / EINTR: someone asked this vCPU to stop
  kFailEntry,     // hardware refused to enter the guest
  kInternalError, // KVM could not emulate something
  kStopRequested, // a device asked the VM to stop (see StopReason in vmm)
  kOther,
};

struct VcpuExit {
  VcpuExitKind kind = VcpuExitKind::kOther;
  uint32_t raw_reason = 0;        // KVM_EXIT_*
  uint32_t system_event_type = 0; // KVM_SYSTEM_EVENT_* for kSystemEvent
  uint64_t detail = 0;            // hardware_entry_failure_reason / suberror
};

// Counts of exits by KVM_EXIT_* reason, for --stats.
struct ExitCounters {
  static constexpr size_t kReasons = 64;
  std::array<std::atomic<uint64_t>, kReasons> by_reason{};
  std::atomic<uint64_t> pio_unclaimed{0}, mmio_unclaimed{0};
};

const char* kvm_exit_reason_name(uint32_t reason);

class KvmVcpu {
 public:
  KvmVcpu(UniqueFd fd, MappedRegion run, uint32_t id) : fd_(std::move(fd)), run_(std::move(run)), id_(id) {}
  int fd() const { return fd_.get(); }
  uint32_t id() const { return id_; }
  kvm_run* run_area() const {
    // SAFETY: the mapping is the vCPU's kvm_run area, at least sizeof(kvm_run) bytes.
    return reinterpret_cast<kvm_run*>(run_.data());
  }

  Result<kvm_regs> get_regs() const;
  Result<void> set_regs(const kvm_regs& r) const;
  Result<kvm_sregs> get_sregs() const;
  Result<void> set_sregs(const kvm_sregs& s) const;
  Result<kvm_fpu> get_fpu() const;
  Result<void> set_fpu(const kvm_fpu& f) const;
  Result<void> set_cpuid(const std::vector<kvm_cpuid_entry2>& entries) const;
  Result<void> set_msrs(const std::vector<kvm_msr_entry>& msrs) const;
  Result<std::vector<kvm_msr_entry>> get_msrs(const std::vector<uint32_t>& indices) const;
  Result<kvm_lapic_state> get_lapic() const;
  Result<void> set_lapic(const kvm_lapic_state& l) const;
  Result<kvm_mp_state> get_mp_state() const;
  Result<void> set_mp_state(const kvm_mp_state& s) const;
  // Points the vCPU at real-mode code: CS base and selector 0, RIP = `rip` (below 64 KiB), RAX =
  // `rax`, every other general register 0, RFLAGS with only its reserved bit. For tiny guests
  // (ringvm check's probe, the exit-cost probe, tests).
  Result<void> enter_real_mode(uint64_t rip, uint64_t rax = 0) const;

  // Enters the guest until an exit that is not port I/O or MMIO (those go to `exits`, one call
  // per access, and the loop continues). `counters` may be null.
  Result<VcpuExit> run(ExitHandler& exits, ExitCounters* counters);

  // Makes a run() in progress return kKicked soon. Call from any thread, then signal the vCPU
  // thread (VcpuThread does both) so a blocked KVM_RUN returns with EINTR.
  void request_exit() const { run_area()->immediate_exit = 1; }
  void clear_exit_request() const { run_area()->immediate_exit = 0; }

  // Registers and segment state as text, for crash reports.
  std::string dump_state() const;

 private:
  UniqueFd fd_;
  MappedRegion run_;
  uint32_t id_;
};

}  // namespace ringvm
