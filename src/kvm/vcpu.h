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
#include "kvm/vcpu_state.h"

namespace ringvm {

class KvmSystem;

// What a vCPU needs to know about its host for save_state()/restore_state(); KvmVm::create_vcpu
// fills it.
struct VcpuHost {
  const KvmSystem* system = nullptr;  // capabilities, KVM_GET_MSR_INDEX_LIST
  // KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2) on the VM fd: the bytes KVM_GET_XSAVE2 writes and
  // KVM_SET_XSAVE reads (at least 4096); 0 when the host lacks the capability.
  uint32_t xsave2_size = 0;
};

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
  KvmVcpu(UniqueFd fd, MappedRegion run, uint32_t id, VcpuHost host = {})
      : fd_(std::move(fd)), run_(std::move(run)), id_(id), host_(host) {}
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
  Result<std::vector<kvm_cpuid_entry2>> get_cpuid() const;  // KVM_GET_CPUID2
  Result<kvm_vcpu_events> get_vcpu_events() const;
  Result<void> set_vcpu_events(const kvm_vcpu_events& e) const;
  Result<kvm_debugregs> get_debugregs() const;
  Result<void> set_debugregs(const kvm_debugregs& d) const;
  Result<kvm_xcrs> get_xcrs() const;
  Result<void> set_xcrs(const kvm_xcrs& x) const;
  Result<kvm_sregs2> get_sregs2() const;
  Result<void> set_sregs2(const kvm_sregs2& s) const;
  // KVM_GET_TSC_KHZ / KVM_SET_TSC_KHZ (the latter needs KVM_CAP_TSC_CONTROL).
  Result<uint32_t> get_tsc_khz() const;
  Result<void> set_tsc_khz(uint32_t khz) const;
  // KVM_KVMCLOCK_CTRL: tells the guest, through its kvmclock page (PVCLOCK_GUEST_STOPPED), that
  // the VMM stopped it, so its soft-lockup and RCU-stall watchdogs discount the gap. Call on a
  // stopped vCPU before it runs again (after a pause, after a restore). A guest that has not
  // enabled kvmclock (KVM answers EINVAL) has nothing to be told: that is success.
  Result<void> kvmclock_ctrl() const;

  // The whole vCPU as a snapshot holds it (vcpu_state.h). The vCPU must not be running.
  Result<VcpuState> save_state() const;
  // Puts `s` into this vCPU. Call on a vCPU that has not run since KvmVm::create_vcpu, in a VM
  // whose irqchip exists and whose guest memory is mapped with the snapshot's contents (the
  // kvmclock MSRs make KVM write to guest memory). Order, and why:
  //   1. CPUID (KVM_SET_CPUID2): what KVM accepts in XSAVE, XCRs and MSRs depends on it, and
  //      KVM refuses a different CPUID once the vCPU has run.
  //   2. TSC frequency (KVM_SET_TSC_KHZ) if the saved one differs from this host's; refused,
  //      naming both, when the host cannot scale (no KVM_CAP_TSC_CONTROL). Before the TSC MSR,
  //      whose value is in the guest's TSC units.
  //   3. Special registers (SREGS2 or SREGS): CR0/CR4/EFER and the APIC base, which decides
  //      xAPIC or x2APIC mode for the LAPIC state below.
  //   4. General registers, XSAVE (or FPU), XCRs.
  //   5. LAPIC: before the MSRs, because KVM ignores a TSC_DEADLINE write unless the LAPIC
  //      timer is already in TSC-deadline mode.
  //   6. MSRs, IA32_TSC first and IA32_TSC_DEADLINE last (sort_msrs_for_restore), so the
  //      deadline timer is re-armed against the restored TSC.
  //   7. Debug registers.
  //   8. vCPU events (pending exception, NMI, interrupt shadow, SMM, latched INIT), then MP
  //      state last: KVM_SET_MP_STATE checks INIT/SIPI states against the SMM and latched-INIT
  //      state that the events carry, and both describe the vCPU's next entry, which nothing
  //      set after them may disturb (QEMU's order, and the one the KVM selftests use).
  // The VM's own state (KvmVm::restore_state: PIC, IOAPIC, PIT, kvmclock) goes after every
  // vCPU's; then kvmclock_ctrl() on each vCPU, then run.
  Result<void> restore_state(const VcpuState& s) const;
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
  VcpuHost host_;
};

}  // namespace ringvm
