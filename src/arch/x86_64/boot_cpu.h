// The boot vCPU's initial state for the Linux 64-bit boot protocol (long mode, identity-mapped
// page tables, __BOOT_CS/__BOOT_DS flat segments, rsi = zero page) or for PVH (32-bit protected
// mode, paging off, ebx = hvm_start_info), plus the MSRs and LAPIC set-up every vCPU needs.
//
// The pure builders (gdt, page tables, register images) are separate from the ioctls so they
// can be unit-tested without /dev/kvm.
#pragma once

#include <linux/kvm.h>

#include <array>
#include <cstdint>
#include <vector>

#include "arch/x86_64/linux_loader.h"
#include "base/result.h"
#include "kvm/vcpu.h"
#include "memory/guest_memory.h"

namespace ringvm::x86 {

// GDT selectors. 0x10/0x18 are what Linux's 64-bit boot protocol names __BOOT_CS/__BOOT_DS.
inline constexpr uint16_t kBootCode32Selector = 0x08;  // flat 32-bit code, for PVH entry
inline constexpr uint16_t kBootCode64Selector = 0x10;  // __BOOT_CS: 64-bit code
inline constexpr uint16_t kBootDataSelector = 0x18;    // __BOOT_DS: flat data
inline constexpr uint16_t kBootTssSelector = 0x20;     // a busy TSS so TR is valid for VM entry

// Model-specific registers ringvm initializes.
enum class Msr : uint32_t {
  kTsc = 0x10,                  // IA32_TIME_STAMP_COUNTER
  kSysenterCs = 0x174,          // IA32_SYSENTER_CS
  kSysenterEsp = 0x175,         // IA32_SYSENTER_ESP
  kSysenterEip = 0x176,         // IA32_SYSENTER_EIP
  kMiscEnable = 0x1a0,          // IA32_MISC_ENABLE; bit 0 enables fast string operations
  kMtrrDefType = 0x2ff,         // IA32_MTRR_DEF_TYPE: default memory type and MTRR enable
  kStar = 0xc000'0081,          // STAR: SYSCALL/SYSRET segment selectors
  kLstar = 0xc000'0082,         // LSTAR: 64-bit SYSCALL entry
  kCstar = 0xc000'0083,         // CSTAR: compatibility-mode SYSCALL entry
  kSyscallMask = 0xc000'0084,   // SFMASK: RFLAGS bits cleared on SYSCALL
  kKernelGsBase = 0xc000'0102,  // KERNEL_GS_BASE: swapped in by SWAPGS
};
inline constexpr uint64_t kMiscEnableFastString = 1;
// MTRRs enabled (bit 11) with write-back (6) as the default type: without it Linux sees MTRRs
// disabled and treats all memory as uncached.
inline constexpr uint64_t kMtrrDefTypeEnabledWriteBack = (1u << 11) | 6;

inline constexpr size_t kBootGdtEntries = 5;
// The boot GDT: null, code32, code64, data, tss (indices = selector / 8).
std::array<uint64_t, kBootGdtEntries> boot_gdt();
// Decodes a GDT entry into the hidden segment state KVM loads.
kvm_segment segment_from_gdt(uint64_t entry, uint16_t selector);

// Writes the GDT at kBootGdtAddr and the identity map of [0, 4 GiB) with 2 MiB pages at
// kPml4Addr.
Result<void> write_boot_gdt(const GuestMemory& mem);
Result<void> write_identity_page_tables(const GuestMemory& mem);

// Fills the control registers, segments, GDT/IDT of `s` for `mode`, keeping the rest (APIC base,
// pending interrupts) as KVM reset it.
void configure_boot_sregs(kvm_sregs& s, BootMode mode);
kvm_regs boot_regs(const LoadedKernel& k);
kvm_fpu boot_fpu();
std::vector<kvm_msr_entry> boot_msrs();
// LVT LINT0 = ExtINT (the 8259 behind the LAPIC), LVT LINT1 = NMI, as firmware leaves them.
void set_lint_modes(kvm_lapic_state& lapic);

// Every vCPU: the boot MSRs. Call after KVM_SET_CPUID2.
Result<void> setup_cpu_msrs(const KvmVcpu& vcpu);
// Every vCPU, when the VM has an in-kernel irqchip: LINT0/LINT1 delivery modes.
Result<void> setup_lapic(const KvmVcpu& vcpu);
// The boot vCPU only: GDT, page tables, sregs, regs, FPU and MSRs for `k`'s entry.
Result<void> setup_boot_cpu(const KvmVcpu& vcpu, const GuestMemory& mem, const LoadedKernel& k);

}  // namespace ringvm::x86
