#include "arch/x86_64/boot_cpu.h"

#include <gtest/gtest.h>
#include <sys/ioctl.h>

#include <memory>

#include "arch/x86_64/cpuid.h"
#include "arch/x86_64/layout.h"
#include "kvm/system.h"
#include "kvm/vm.h"

namespace ringvm::x86 {
namespace {

// Walks the guest's 4-level page tables like the MMU would; nullopt if unmapped.
std::optional<uint64_t> translate(const GuestMemory& mem, uint64_t cr3, uint64_t va) {
  const uint64_t pml4e = mem.read_obj<uint64_t>(cr3 + ((va >> 39) & 511) * 8).value();
  if (!(pml4e & 1)) return std::nullopt;
  const uint64_t pdpte = mem.read_obj<uint64_t>((pml4e & ~0xfffULL) + ((va >> 30) & 511) * 8).value();
  if (!(pdpte & 1)) return std::nullopt;
  const uint64_t pde = mem.read_obj<uint64_t>((pdpte & ~0xfffULL) + ((va >> 21) & 511) * 8).value();
  if (!(pde & 1) || !(pde & 0x80)) return std::nullopt;
  return (pde & ~0x1fffffULL) + (va & 0x1fffff);
}

TEST(BootCpu, PageTablesIdentityMapFirstFourGiB) {
  auto mem = GuestMemory::create_x86(64 * kMiB).value();
  ASSERT_TRUE(write_identity_page_tables(mem).ok());
  for (uint64_t va :
       {0ULL, 0x7000ULL, 0x1000200ULL, 0x3fffffffULL, 0xbfffffffULL, 0xfee00000ULL, 0xffffffffULL})
    EXPECT_EQ(translate(mem, kPml4Addr, va), va) << std::hex << va;
  EXPECT_EQ(translate(mem, kPml4Addr, 4 * kGiB), std::nullopt);
}

TEST(BootCpu, GdtMatchesLinuxBootSelectors) {
  const auto gdt = boot_gdt();
  EXPECT_EQ(gdt[0], 0u);
  const kvm_segment cs = segment_from_gdt(gdt[kBootCode64Selector / 8], kBootCode64Selector);
  EXPECT_EQ(cs.selector, 0x10);
  EXPECT_EQ(cs.l, 1);
  EXPECT_EQ(cs.db, 0);
  EXPECT_EQ(cs.type, 0xb);
  EXPECT_EQ(cs.present, 1);
  EXPECT_EQ(cs.s, 1);
  EXPECT_EQ(cs.limit, 0xffffffffu);
  EXPECT_EQ(cs.base, 0u);
  const kvm_segment ds = segment_from_gdt(gdt[kBootDataSelector / 8], kBootDataSelector);
  EXPECT_EQ(ds.selector, 0x18);
  EXPECT_EQ(ds.type, 0x3);
  EXPECT_EQ(ds.db, 1);
  EXPECT_EQ(ds.l, 0);
  const kvm_segment cs32 = segment_from_gdt(gdt[kBootCode32Selector / 8], kBootCode32Selector);
  EXPECT_EQ(cs32.l, 0);
  EXPECT_EQ(cs32.db, 1);
  const kvm_segment tr = segment_from_gdt(gdt[kBootTssSelector / 8], kBootTssSelector);
  EXPECT_EQ(tr.type, 0xb);
  EXPECT_EQ(tr.s, 0);
  EXPECT_EQ(tr.limit, 0x67u);
}

TEST(BootCpu, SregsForLongModeAndPvh) {
  kvm_sregs s{};
  s.apic_base = 0xfee00900;
  configure_boot_sregs(s, BootMode::kLinux64);
  EXPECT_EQ(s.cr0 & 0x80000011, 0x80000011u);  // PG, ET, PE
  EXPECT_EQ(s.cr4 & 0x20, 0x20u);
  EXPECT_EQ(s.efer, 0x500u);
  EXPECT_EQ(s.cr3, kPml4Addr);
  EXPECT_EQ(s.cs.selector, 0x10);
  EXPECT_EQ(s.ss.selector, 0x18);
  EXPECT_EQ(s.gdt.base, kBootGdtAddr);
  EXPECT_EQ(s.gdt.limit, kBootGdtEntries * 8 - 1);
  EXPECT_EQ(s.apic_base, 0xfee00900u) << "KVM's reset state is kept";
  configure_boot_sregs(s, BootMode::kPvh32);
  EXPECT_EQ(s.cr0 & 0x80000001, 0x1u);
  EXPECT_EQ(s.efer, 0u);
  EXPECT_EQ(s.cr4, 0u);
  EXPECT_EQ(s.cs.selector, kBootCode32Selector);
  EXPECT_EQ(s.cs.db, 1);
}

TEST(BootCpu, RegsFpuMsrs) {
  LoadedKernel k;
  k.entry = 0x1000200;
  k.zero_page = kZeroPageAddr;
  const kvm_regs r = boot_regs(k);
  EXPECT_EQ(r.rip, 0x1000200u);
  EXPECT_EQ(r.rsi, kZeroPageAddr);
  EXPECT_EQ(r.rflags, 2u);
  k.mode = BootMode::kPvh32;
  k.start_info = kPvhStartInfoAddr;
  EXPECT_EQ(boot_regs(k).rbx, kPvhStartInfoAddr);
  EXPECT_EQ(boot_fpu().fcw, 0x37f);
  EXPECT_EQ(boot_fpu().mxcsr, 0x1f80u);
  bool mtrr = false;
  for (const auto& m : boot_msrs())
    if (m.index == 0x2ff) mtrr = m.data == 0x806;
  EXPECT_TRUE(mtrr);
}

TEST(BootCpu, LintModes) {
  kvm_lapic_state l{};
  l.regs[0x350 + 2] = 0x01;  // a masked bit outside the delivery mode must survive
  set_lint_modes(l);
  EXPECT_EQ(static_cast<uint8_t>(l.regs[0x351]), 0x07);
  EXPECT_EQ(static_cast<uint8_t>(l.regs[0x352]), 0x01);
  EXPECT_EQ(static_cast<uint8_t>(l.regs[0x361]), 0x04);
}

// A one-vCPU VM on the host's KVM with 32 MiB of RAM and ringvm's CPUID; skips without KVM.
class BootCpuKvmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto sys = KvmSystem::open();
    if (!sys) GTEST_SKIP() << "host KVM unusable, skipping: " << sys.error().message();
    sys_ = std::make_unique<KvmSystem>(std::move(*sys));
    auto vm = sys_->create_vm();
    ASSERT_TRUE(vm.ok()) << vm.error().message();
    vm_ = std::make_unique<KvmVm>(std::move(*vm));
    auto mapped = vm_->map_memory(mem_);
    ASSERT_TRUE(mapped.ok()) << mapped.error().message();
    auto vcpu = vm_->create_vcpu(0);
    ASSERT_TRUE(vcpu.ok()) << vcpu.error().message();
    vcpu_ = std::make_unique<KvmVcpu>(std::move(*vcpu));
    auto supported = sys_->supported_cpuid();
    ASSERT_TRUE(supported.ok()) << supported.error().message();
    auto cpuid = build_cpuid(*supported, 0, 1);
    ASSERT_TRUE(cpuid.ok()) << cpuid.error().message();
    auto set = vcpu_->set_cpuid(*cpuid);
    ASSERT_TRUE(set.ok()) << set.error().message();
  }

  // Runs until the guest's OUT to COM1 and then its HLT; returns the byte written.
  uint8_t run_to_halt() {
    kvm_run* run = vcpu_->run_area();
    EXPECT_EQ(::ioctl(vcpu_->fd(), KVM_RUN, 0), 0) << vcpu_->dump_state();
    EXPECT_EQ(run->exit_reason, KVM_EXIT_IO) << vcpu_->dump_state();
    EXPECT_EQ(run->io.port, kCom1Port);
    // SAFETY: io.data_offset points into the kvm_run mapping for an IO exit.
    const uint8_t out = reinterpret_cast<uint8_t*>(run)[run->io.data_offset];
    EXPECT_EQ(::ioctl(vcpu_->fd(), KVM_RUN, 0), 0);
    EXPECT_EQ(run->exit_reason, KVM_EXIT_HLT) << vcpu_->dump_state();
    return out;
  }

  std::unique_ptr<KvmSystem> sys_;
  std::unique_ptr<KvmVm> vm_;
  std::unique_ptr<KvmVcpu> vcpu_;
  GuestMemory mem_ = GuestMemory::create_x86(32 * kMiB).value();
};

// A long-mode "kernel" writes 'K' to COM1 and to the byte rsi points at (the zero page), then
// halts: the GDT, page tables, sregs and MSRs that setup_boot_cpu wrote are accepted by KVM.
TEST_F(BootCpuKvmTest, EntersLongMode) {
  // mov dx, 0x3f8; mov al, 'K'; out dx, al; mov [rsi], al; hlt
  const std::vector<uint8_t> code = {0x66, 0xba, 0xf8, 0x03, 0xb0, 0x4b, 0xee, 0x88, 0x06, 0xf4};
  ASSERT_TRUE(mem_.write(0x100000, code).ok());
  LoadedKernel k;
  k.entry = 0x100000;
  k.zero_page = kZeroPageAddr;
  auto r = setup_boot_cpu(*vcpu_, mem_, k);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(run_to_halt(), 'K');
  EXPECT_EQ(mem_.read_obj<uint8_t>(kZeroPageAddr).value(), 'K');
  EXPECT_EQ(vcpu_->get_sregs().value().efer & 0x400, 0x400u) << "long mode active";
  auto msrs = vcpu_->get_msrs({static_cast<uint32_t>(Msr::kMtrrDefType)});
  ASSERT_TRUE(msrs.ok()) << msrs.error().message();
  ASSERT_EQ(msrs->size(), 1u);
  EXPECT_EQ((*msrs)[0].data, kMtrrDefTypeEnabledWriteBack);
}

// The PVH entry: 32-bit protected mode with paging off, ebx = hvm_start_info.
TEST_F(BootCpuKvmTest, EntersPvhProtectedMode) {
  // mov dx, 0x3f8; mov al, 'P'; out dx, al; mov [ebx], al; hlt
  const std::vector<uint8_t> code = {0x66, 0xba, 0xf8, 0x03, 0xb0, 0x50, 0xee, 0x88, 0x03, 0xf4};
  ASSERT_TRUE(mem_.write(0x100000, code).ok());
  LoadedKernel k;
  k.mode = BootMode::kPvh32;
  k.entry = 0x100000;
  k.start_info = kPvhStartInfoAddr;
  auto r = setup_boot_cpu(*vcpu_, mem_, k);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(run_to_halt(), 'P');
  EXPECT_EQ(mem_.read_obj<uint8_t>(kPvhStartInfoAddr).value(), 'P');
  const auto s = vcpu_->get_sregs().value();
  EXPECT_EQ(s.cr0 & 0x80000001, 1u) << "protected mode, paging off";
  EXPECT_EQ(s.efer & 0x400, 0u);
}

// With an in-kernel irqchip, setup_lapic leaves LINT0 as ExtINT and LINT1 as NMI.
TEST(BootCpuKvm, LapicLintModes) {
  auto sys = KvmSystem::open();
  if (!sys) GTEST_SKIP() << "host KVM unusable, skipping: " << sys.error().message();
  auto vm = sys->create_vm();
  ASSERT_TRUE(vm.ok()) << vm.error().message();
  auto chip = vm->create_irqchip();
  ASSERT_TRUE(chip.ok()) << chip.error().message();
  auto vcpu = vm->create_vcpu(0);
  ASSERT_TRUE(vcpu.ok()) << vcpu.error().message();
  auto r = setup_lapic(*vcpu);
  ASSERT_TRUE(r.ok()) << r.error().message();
  const kvm_lapic_state l = vcpu->get_lapic().value();
  EXPECT_EQ(static_cast<uint8_t>(l.regs[0x351]) & 7, 7) << "LINT0 ExtINT";
  EXPECT_EQ(static_cast<uint8_t>(l.regs[0x361]) & 7, 4) << "LINT1 NMI";
}

}  // namespace
}  // namespace ringvm::x86
