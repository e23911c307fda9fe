// VcpuState: everything KVM holds for one x86 vCPU that a snapshot must keep, and its byte
// encoding (base/state_codec.h). KvmVcpu::save_state() fills one; KvmVcpu::restore_state() puts
// it into a fresh vCPU (kvm/vcpu.h says in which order, and why).
//
// The KVM structs are kept as the host ABI defines them (<linux/kvm.h>) and encoded as their
// bytes: a snapshot is restored by the same ringvm build on an x86-64 host. Everything of
// variable size (MSRs, CPUID, XSAVE) carries a count that decode_vcpu_state() checks against the
// limits below before it allocates anything.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "base/result.h"
#include "base/state_codec.h"

namespace ringvm {

// MSRs this layer treats specially (Intel SDM vol. 4; KVM's paravirtual MSRs from
// Documentation/virt/kvm/x86/msr.rst).
enum class KvmMsr : uint32_t {
  kTsc = 0x10,                     // IA32_TIME_STAMP_COUNTER
  kApicBase = 0x1b,                // IA32_APIC_BASE: restored through the special registers
  kTscAdjust = 0x3b,               // IA32_TSC_ADJUST
  kTscDeadline = 0x6e0,            // IA32_TSC_DEADLINE: meaningful only after TSC and LAPIC
  kKvmWallClock = 0x11,            // MSR_KVM_WALL_CLOCK (old kvmclock ABI)
  kKvmSystemTime = 0x12,           // MSR_KVM_SYSTEM_TIME (old kvmclock ABI)
  kKvmWallClockNew = 0x4b564d00,   // MSR_KVM_WALL_CLOCK_NEW
  kKvmSystemTimeNew = 0x4b564d01,  // MSR_KVM_SYSTEM_TIME_NEW: the kvmclock page
  kKvmAsyncPfEn = 0x4b564d02,      // MSR_KVM_ASYNC_PF_EN
  kKvmStealTime = 0x4b564d03,      // MSR_KVM_STEAL_TIME
  kKvmPvEoiEn = 0x4b564d04,        // MSR_KVM_PV_EOI_EN
  kKvmPollControl = 0x4b564d05,    // MSR_KVM_POLL_CONTROL
  kKvmAsyncPfInt = 0x4b564d06,     // MSR_KVM_ASYNC_PF_INT
  kKvmAsyncPfAck = 0x4b564d07,     // MSR_KVM_ASYNC_PF_ACK
  kHyperVFirst = 0x40000000,       // Hyper-V's synthetic MSRs: ringvm offers no Hyper-V
  kHyperVLast = 0x400000ff,        // enlightenments, so none of these is saved
};

struct VcpuState {
  // Limits decode_vcpu_state() enforces on hostile input. KVM's own limits are lower or equal:
  // KVM_MAX_CPUID_ENTRIES is 256, KVM_MAX_XCRS 16, and KVM_GET_MSR_INDEX_LIST lists a few
  // hundred MSRs at most.
  static constexpr uint32_t kMaxCpuidEntries = 256;
  static constexpr uint32_t kMaxMsrs = 1024;
  // An XSAVE area is 4 KiB (struct kvm_xsave) or KVM_CAP_XSAVE2's size, which grows with
  // dynamic features (AMX tiles: about 11 KiB). 64 KiB leaves room for future features.
  static constexpr uint32_t kMinXsaveBytes = 4096;
  static constexpr uint32_t kMaxXsaveBytes = 64 * 1024;
  static constexpr uint16_t kFormatVersion = 1;

  uint32_t vcpu_id = 0;  // the id the vCPU was created with; a restore checks it matches
  kvm_regs regs{};
  kvm_sregs sregs{};
  // KVM_GET_SREGS2 (KVM_CAP_SREGS2, Linux 5.14+): adds the PAE PDPTRs that kvm_sregs cannot
  // carry. Preferred on restore when present and the host has the capability.
  std::optional<kvm_sregs2> sregs2;
  // FPU/SSE/AVX state: the XSAVE area (KVM_GET_XSAVE2 or KVM_GET_XSAVE; a multiple of 4 bytes,
  // at least 4 KiB) when the host has KVM_CAP_XSAVE, else the legacy FPU state.
  std::vector<uint8_t> xsave;
  std::optional<kvm_fpu> fpu;
  std::optional<kvm_xcrs> xcrs;  // KVM_CAP_XCRS
  // Every MSR of KVM_GET_MSR_INDEX_LIST (plus KVM's paravirtual ones) that KVM_GET_MSRS returned
  // for this vCPU, in restore order (sort_msrs_for_restore).
  std::vector<kvm_msr_entry> msrs;
  kvm_lapic_state lapic{};  // the in-kernel LAPIC's register page
  kvm_mp_state mp_state{};
  std::optional<kvm_vcpu_events> events;   // KVM_CAP_VCPU_EVENTS
  std::optional<kvm_debugregs> debugregs;  // KVM_CAP_DEBUGREGS
  std::vector<kvm_cpuid_entry2> cpuid;     // KVM_GET_CPUID2: what the guest was shown
  uint32_t tsc_khz = 0;                    // KVM_GET_TSC_KHZ; 0 when the host could not say
};

// Orders MSRs for KVM_SET_MSRS: IA32_TSC first (every other TSC-relative MSR is interpreted
// against it), IA32_TSC_DEADLINE last (KVM arms the deadline timer against the restored TSC
// and LAPIC mode), the rest by index. Duplicates keep their first entry.
void sort_msrs_for_restore(std::vector<kvm_msr_entry>& msrs);

void encode(const VcpuState& s, StateWriter& w);
// Reads what encode() wrote. Every count and size is checked before use; errors are kCorrupt and
// name the field. Does not call r.finish(): the state may be followed by more.
Result<VcpuState> decode_vcpu_state(StateReader& r);

}  // namespace ringvm
