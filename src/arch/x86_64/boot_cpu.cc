#include "arch/x86_64/boot_cpu.h"

#include <cstring>

#include "arch/x86_64/layout.h"

namespace ringvm::x86 {

namespace {

// Descriptor flags as the 16 bits at 40..55 of an entry: G, D/B, L, AVL, limit[19:16] gap, P,
// DPL, S, type.
constexpr uint16_t kCode32Flags = 0xc09b;  // G, D, P, S, type execute/read accessed
constexpr uint16_t kCode64Flags = 0xa09b;  // G, L, P, S, type execute/read accessed
constexpr uint16_t kDataFlags = 0xc093;    // G, B, P, S, type read/write accessed
constexpr uint16_t kTssFlags = 0x008b;     // P, type busy TSS
constexpr uint32_t kTssLimit = 0x67;       // the smallest TSS

constexpr uint64_t gdt_entry(uint16_t flags, uint32_t base, uint32_t limit) {
  return ((uint64_t{base} & 0xff00'0000) << 32) | ((uint64_t{flags} & 0xf0ff) << 40) |
         ((uint64_t{limit} & 0x000f'0000) << 32) | ((uint64_t{base} & 0x00ff'ffff) << 16) |
         (uint64_t{limit} & 0x0000'ffff);
}

constexpr uint64_t kCr0Pe = 1u << 0;     // protected mode
constexpr uint64_t kCr0Et = 1u << 4;     // extension type (always 1 since the 486)
constexpr uint64_t kCr0Ne = 1u << 5;     // native x87 error reporting
constexpr uint64_t kCr0Pg = 1u << 31;    // paging
constexpr uint64_t kCr4Pae = 1u << 5;    // physical address extension, required for long mode
constexpr uint64_t kEferLme = 1u << 8;   // long mode enable
constexpr uint64_t kEferLma = 1u << 10;  // long mode active

constexpr uint64_t kPtePresentWrite = 0x3;
constexpr uint64_t kPtePageSize = 0x80;  // a 2 MiB page in a PD entry
constexpr uint64_t kPdPages = 4;         // 4 PDs * 512 * 2 MiB = 4 GiB
constexpr uint64_t kPage = 4096;

constexpr uint32_t kLapicLvtLint0 = 0x350;
constexpr uint32_t kLapicLvtLint1 = 0x360;
constexpr uint32_t kLvtDeliveryModeMask = 0x700;
constexpr uint32_t kLvtDeliveryExtInt = 0x700;
constexpr uint32_t kLvtDeliveryNmi = 0x400;

constexpr uint16_t kFpuControlWord = 0x37f;  // all exceptions masked, extended precision (FNINIT)
constexpr uint32_t kMxcsrDefault = 0x1f80;   // all SSE exceptions masked
constexpr uint64_t kRflagsReserved = 0x2;    // bit 1 is always set

}  // namespace

std::array<uint64_t, kBootGdtEntries> boot_gdt() {
  return {0, gdt_entry(kCode32Flags, 0, 0xfffff), gdt_entry(kCode64Flags, 0, 0xfffff),
          gdt_entry(kDataFlags, 0, 0xfffff), gdt_entry(kTssFlags, 0, kTssLimit)};
}

kvm_segment segment_from_gdt(uint64_t e, uint16_t selector) {
  kvm_segment s{};
  s.base = ((e >> 16) & 0xff'ffff) | (((e >> 56) & 0xff) << 24);
  const uint32_t limit = static_cast<uint32_t>((e & 0xffff) | (((e >> 48) & 0xf) << 16));
  s.g = static_cast<uint8_t>((e >> 55) & 1);
  s.limit = s.g ? (limit << 12) | 0xfff : limit;
  s.selector = selector;
  s.type = static_cast<uint8_t>((e >> 40) & 0xf);
  s.s = static_cast<uint8_t>((e >> 44) & 1);
  s.dpl = static_cast<uint8_t>((e >> 45) & 3);
  s.present = static_cast<uint8_t>((e >> 47) & 1);
  s.avl = static_cast<uint8_t>((e >> 52) & 1);
  s.l = static_cast<uint8_t>((e >> 53) & 1);
  s.db = static_cast<uint8_t>((e >> 54) & 1);
  s.unusable = s.present ? 0 : 1;
  return s;
}

Result<void> write_boot_gdt(const GuestMemory& mem) {
  const auto gdt = boot_gdt();
  static_assert(kBootGdtAddr + sizeof(gdt) <= kBootIdtAddr);
  RETURN_IF_ERROR(mem.write_obj(kBootGdtAddr, gdt));
  return mem.write_obj<uint64_t>(kBootIdtAddr, 0);
}

Result<void> write_identity_page_tables(const GuestMemory& mem) {
  static_assert(kPml4Addr + kPage == kPdptAddr && kPdptAddr + kPage == kPdAddr);
  RETURN_IF_ERROR(mem.fill(kPml4Addr, 0, 2 * kPage));
  RETURN_IF_ERROR(mem.write_obj<uint64_t>(kPml4Addr, kPdptAddr | kPtePresentWrite));
  for (uint64_t i = 0; i < kPdPages; ++i)
    RETURN_IF_ERROR(mem.write_obj<uint64_t>(kPdptAddr + i * 8, (kPdAddr + i * kPage) | kPtePresentWrite));
  std::array<uint64_t, 512 * kPdPages> pd{};
  for (uint64_t j = 0; j < pd.size(); ++j) pd[j] = (j << 21) | kPtePageSize | kPtePresentWrite;
  return mem.write_obj(kPdAddr, pd);
}

void configure_boot_sregs(kvm_sregs& s, BootMode mode) {
  const auto gdt = boot_gdt();
  const bool long_mode = mode == BootMode::kLinux64;
  const uint16_t cs_sel = long_mode ? kBootCode64Selector : kBootCode32Selector;
  s.cs = segment_from_gdt(gdt[cs_sel / 8], cs_sel);
  s.ds = s.es = s.fs = s.gs = s.ss = segment_from_gdt(gdt[kBootDataSelector / 8], kBootDataSelector);
  s.tr = segment_from_gdt(gdt[kBootTssSelector / 8], kBootTssSelector);
  s.gdt.base = kBootGdtAddr;
  s.gdt.limit = static_cast<uint16_t>(sizeof(gdt) - 1);
  s.idt.base = kBootIdtAddr;
  s.idt.limit = 0;
  if (long_mode) {
    s.cr0 = kCr0Pe | kCr0Et | kCr0Ne | kCr0Pg;
    s.cr3 = kPml4Addr;
    s.cr4 = kCr4Pae;
    s.efer = kEferLme | kEferLma;
  } else {
    // PVH: protected mode, paging off, no long mode (the kernel's pvh_start_xen sets it up).
    s.cr0 = kCr0Pe | kCr0Et | kCr0Ne;
    s.cr3 = 0;
    s.cr4 = 0;
    s.efer = 0;
  }
}

kvm_regs boot_regs(const LoadedKernel& k) {
  kvm_regs r{};
  r.rflags = kRflagsReserved;
  r.rip = k.entry;
  if (k.mode == BootMode::kLinux64) {
    r.rsi = k.zero_page;
    r.rsp = r.rbp = kBootStackTop;
  } else {
    r.rbx = k.start_info;
  }
  return r;
}

kvm_fpu boot_fpu() {
  kvm_fpu f{};
  f.fcw = kFpuControlWord;
  f.mxcsr = kMxcsrDefault;
  return f;
}

std::vector<kvm_msr_entry> boot_msrs() {
  auto e = [](Msr m, uint64_t v) { return kvm_msr_entry{static_cast<uint32_t>(m), 0, v}; };
  return {e(Msr::kSysenterCs, 0),
          e(Msr::kSysenterEsp, 0),
          e(Msr::kSysenterEip, 0),
          e(Msr::kStar, 0),
          e(Msr::kLstar, 0),
          e(Msr::kCstar, 0),
          e(Msr::kSyscallMask, 0),
          e(Msr::kKernelGsBase, 0),
          e(Msr::kTsc, 0),
          e(Msr::kMiscEnable, kMiscEnableFastString),
          e(Msr::kMtrrDefType, kMtrrDefTypeEnabledWriteBack)};
}

void set_lint_modes(kvm_lapic_state& lapic) {
  auto update = [&](uint32_t off, uint32_t mode) {
    uint32_t v;
    std::memcpy(&v, lapic.regs + off, sizeof(v));
    v = (v & ~kLvtDeliveryModeMask) | mode;
    std::memcpy(lapic.regs + off, &v, sizeof(v));
  };
  update(kLapicLvtLint0, kLvtDeliveryExtInt);
  update(kLapicLvtLint1, kLvtDeliveryNmi);
}

Result<void> setup_cpu_msrs(const KvmVcpu& vcpu) { return vcpu.set_msrs(boot_msrs()); }

Result<void> setup_lapic(const KvmVcpu& vcpu) {
  kvm_lapic_state lapic = TRY(vcpu.get_lapic());
  set_lint_modes(lapic);
  return vcpu.set_lapic(lapic);
}

Result<void> setup_boot_cpu(const KvmVcpu& vcpu, const GuestMemory& mem, const LoadedKernel& k) {
  RETURN_IF_ERROR(write_boot_gdt(mem));
  if (k.mode == BootMode::kLinux64) RETURN_IF_ERROR(write_identity_page_tables(mem));
  kvm_sregs s = TRY(vcpu.get_sregs());
  configure_boot_sregs(s, k.mode);
  RETURN_IF_ERROR(vcpu.set_sregs(s));
  RETURN_IF_ERROR(vcpu.set_regs(boot_regs(k)));
  RETURN_IF_ERROR(vcpu.set_fpu(boot_fpu()));
  return setup_cpu_msrs(vcpu);
}

}  // namespace ringvm::x86
