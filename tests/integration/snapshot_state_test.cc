// Snapshot state through ringvm's KVM layer on the host's /dev/kvm: a tiny real-mode guest that
// counts in EAX runs for a while; its vCPU and VM state are saved and passed through the byte
// encoding a snapshot file carries; a second VM with a copy of the guest's memory takes them;
// registers, MSRs (the armed TSC deadline among them), LAPIC, irqchip and kvmclock read back as
// saved, and the guest counts on from where it stopped. Skips where /dev/kvm is missing.
#include <gtest/gtest.h>
#include <linux/kvm.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <future>
#include <memory>
#include <thread>
#include <vector>

#include "base/state_codec.h"
#include "kvm/exit_handler.h"
#include "kvm/system.h"
#include "kvm/vcpu.h"
#include "kvm/vcpu_state.h"
#include "kvm/vcpu_thread.h"
#include "kvm/vm.h"
#include "kvm/vm_state.h"
#include "memory/guest_memory.h"

namespace ringvm {
namespace {

using namespace std::chrono_literals;

constexpr uint64_t kLoadAddr = 0x1000;
constexpr uint64_t kRamBytes = 1 << 20;
constexpr uint64_t kKvmclockPage = 0x9000;  // where the guest's kvmclock (pvclock) page is
// 16-bit real mode at kLoadAddr, no exits:   1: inc %eax (66 40); jmp 1b (eb fc)
constexpr uint8_t kCounterGuest[] = {0x66, 0x40, 0xeb, 0xfc};
constexpr auto kRunTime = 200ms;

constexpr uint32_t kMsrTsc = 0x10;
constexpr uint32_t kMsrSysenterCs = 0x174;
constexpr uint32_t kMsrTscDeadline = 0x6e0;
constexpr uint32_t kMsrKvmSystemTimeNew = 0x4b564d01;
constexpr uint32_t kLapicSvr = 0xf0;     // spurious vector register; bit 8 enables the APIC
constexpr uint32_t kLapicLvtt = 0x320;   // LVT timer
constexpr uint32_t kLapicTmcct = 0x390;  // current count: computed when read, so not compared
constexpr uint32_t kLvttTscDeadline = 2u << 17;
constexpr uint32_t kLvtMasked = 1u << 16;
constexpr uint32_t kCpuid1EcxTscDeadline = 1u << 24;

// The counter guest causes no port I/O or MMIO.
class NoExits final : public ExitHandler {
 public:
  bool pio_read(uint16_t, std::span<uint8_t>) override { return false; }
  bool pio_write(uint16_t, std::span<const uint8_t>) override { return false; }
  bool mmio_read(uint64_t, std::span<uint8_t>) override { return false; }
  bool mmio_write(uint64_t, std::span<const uint8_t>) override { return false; }
};

uint32_t lapic_reg(const kvm_lapic_state& l, uint32_t off) {
  uint32_t v;
  std::memcpy(&v, l.regs + off, sizeof v);
  return v;
}
void set_lapic_reg(kvm_lapic_state& l, uint32_t off, uint32_t v) { std::memcpy(l.regs + off, &v, sizeof v); }

template <typename T>
bool same(const T& a, const T& b) {
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}

const kvm_msr_entry* find_msr(const std::vector<kvm_msr_entry>& msrs, uint32_t index) {
  auto it = std::find_if(msrs.begin(), msrs.end(), [&](const kvm_msr_entry& e) { return e.index == index; });
  return it == msrs.end() ? nullptr : &*it;
}

// Members in this order so the vCPU goes first and the memory last.
struct TestVm {
  GuestMemory mem;
  std::unique_ptr<KvmVm> vm;
  std::unique_ptr<KvmVcpu> vcpu;
};

class SnapshotStateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto sys = KvmSystem::open();
    if (!sys) GTEST_SKIP() << "host KVM unusable, skipping: " << sys.error().message();
    sys_ = std::make_unique<KvmSystem>(std::move(*sys));
  }

  // A VM with an in-kernel irqchip (and a PIT when `want_pit` and the host can), kRamBytes of
  // RAM at 0 and vCPU 0.
  void make_vm(TestVm& t, bool want_pit) {
    auto vm = sys_->create_vm();
    ASSERT_TRUE(vm.ok()) << vm.error().message();
    t.vm = std::make_unique<KvmVm>(std::move(*vm));
    // Intel without unrestricted guest needs these for real mode; PVM rejects them and needs neither.
    (void)t.vm->set_tss_addr(0xfffb'd000);
    (void)t.vm->set_identity_map_addr(0xfffb'c000);
    auto irq = t.vm->create_irqchip();
    ASSERT_TRUE(irq.ok()) << irq.error().message();
    if (want_pit) (void)t.vm->create_pit2();  // optional, as in the builder (PVM has none)
    ASSERT_TRUE(t.mem.add_region(0, kRamBytes).ok());
    ASSERT_TRUE(t.vm->map_memory(t.mem).ok());
    auto vcpu = t.vm->create_vcpu(0);
    ASSERT_TRUE(vcpu.ok()) << vcpu.error().message();
    t.vcpu = std::make_unique<KvmVcpu>(std::move(*vcpu));
  }

  // Runs the vCPU for `d`, then kicks it out of KVM_RUN.
  Result<VcpuExit> run_for(KvmVcpu& vcpu, std::chrono::milliseconds d) {
    std::promise<Result<VcpuExit>> done;
    auto fut = done.get_future();
    VcpuThread thread;
    thread.start(&vcpu, [&] { done.set_value(vcpu.run(exits_, nullptr)); });
    if (fut.wait_for(d) == std::future_status::ready) {
      thread.join();
      return fut.get();  // the guest stopped by itself: the caller's kind check reports it
    }
    if (!thread.stop_by(std::chrono::steady_clock::now() + 10s)) {
      ADD_FAILURE() << "the vCPU did not leave KVM_RUN within 10 s of being kicked";
      while (!thread.stop_by(std::chrono::steady_clock::now() + 10s)) {
      }
    }
    return fut.get();
  }

  // The host's CPUID, with the TSC-deadline timer shown when KVM emulates it.
  std::vector<kvm_cpuid_entry2> guest_cpuid(bool tsc_deadline) {
    auto cpuid = sys_->supported_cpuid();
    EXPECT_TRUE(cpuid.ok()) << cpuid.error().message();
    if (!cpuid) return {};
    if (tsc_deadline)
      for (auto& e : *cpuid)
        if (e.function == 1) e.ecx |= kCpuid1EcxTscDeadline;
    return *cpuid;
  }

  std::unique_ptr<KvmSystem> sys_;
  NoExits exits_;
};

TEST_F(SnapshotStateTest, GuestContinuesInASecondVmFromTheSavedState) {
  TestVm src;
  ASSERT_NO_FATAL_FAILURE(make_vm(src, true));
  ASSERT_TRUE(src.mem.write(kLoadAddr, kCounterGuest).ok());
  const bool deadline = sys_->check_extension(KVM_CAP_TSC_DEADLINE_TIMER) > 0;
  ASSERT_TRUE(src.vcpu->set_cpuid(guest_cpuid(deadline)).ok());
  ASSERT_TRUE(src.vcpu->enter_real_mode(kLoadAddr, 0).ok());
  // State a snapshot must carry beyond the registers: an ordinary MSR, the paravirtual kvmclock
  // MSR, and (where KVM emulates it) an armed, masked TSC-deadline timer far in the future.
  {
    auto r = src.vcpu->set_msrs({{kMsrSysenterCs, 0, 0x10}, {kMsrKvmSystemTimeNew, 0, kKvmclockPage | 1}});
    ASSERT_TRUE(r.ok()) << r.error().message();
  }
  uint64_t armed_deadline = 0;
  if (deadline) {
    auto lapic = src.vcpu->get_lapic();
    ASSERT_TRUE(lapic.ok()) << lapic.error().message();
    set_lapic_reg(*lapic, kLapicSvr, 0x1ff);
    set_lapic_reg(*lapic, kLapicLvtt, kLvttTscDeadline | kLvtMasked | 0xec);
    ASSERT_TRUE(src.vcpu->set_lapic(*lapic).ok());
    auto tsc = src.vcpu->get_msrs({kMsrTsc});
    ASSERT_TRUE(tsc.ok() && tsc->size() == 1);
    armed_deadline = (*tsc)[0].data + (1ull << 44);  // hours away at any TSC frequency
    ASSERT_TRUE(src.vcpu->set_msrs({{kMsrTscDeadline, 0, armed_deadline}}).ok());
  }

  auto first = run_for(*src.vcpu, kRunTime);
  ASSERT_TRUE(first.ok()) << first.error().message();
  ASSERT_EQ(first->kind, VcpuExitKind::kKicked) << kvm_exit_reason_name(first->raw_reason) << "\n"
                                                << src.vcpu->dump_state();
  auto before = src.vcpu->get_regs();
  ASSERT_TRUE(before.ok());
  const uint32_t count_at_save = static_cast<uint32_t>(before->rax);
  ASSERT_GT(count_at_save, 0u) << "the guest did not count";

  auto saved_vcpu = src.vcpu->save_state();
  ASSERT_TRUE(saved_vcpu.ok()) << saved_vcpu.error().message();
  auto saved_vm = src.vm->save_state();
  ASSERT_TRUE(saved_vm.ok()) << saved_vm.error().message();

  // Through the byte encoding, as a snapshot file carries them.
  StateWriter w;
  encode(*saved_vcpu, w);
  encode(*saved_vm, w);
  const auto bytes = w.take();
  StateReader r(bytes, "snapshot");
  auto vcpu_state = decode_vcpu_state(r);
  ASSERT_TRUE(vcpu_state.ok()) << vcpu_state.error().message();
  auto vm_state = decode_vm_state(r);
  ASSERT_TRUE(vm_state.ok()) << vm_state.error().message();
  ASSERT_TRUE(r.finish().ok());

  EXPECT_EQ(static_cast<uint32_t>(vcpu_state->regs.rax), count_at_save);
  EXPECT_FALSE(vcpu_state->cpuid.empty());
  EXPECT_TRUE(vcpu_state->xsave.empty() != !vcpu_state->fpu.has_value());
  ASSERT_NE(find_msr(vcpu_state->msrs, kMsrTsc), nullptr);
  EXPECT_EQ(vcpu_state->msrs.front().index, kMsrTsc) << "IA32_TSC is restored first";
  const auto* kvmclock = find_msr(vcpu_state->msrs, kMsrKvmSystemTimeNew);
  ASSERT_NE(kvmclock, nullptr) << "the kvmclock MSR is saved";
  EXPECT_EQ(kvmclock->data, kKvmclockPage | 1);
  if (deadline) {
    const auto* d = find_msr(vcpu_state->msrs, kMsrTscDeadline);
    ASSERT_NE(d, nullptr) << "IA32_TSC_DEADLINE is saved";
    EXPECT_EQ(d->data, armed_deadline);
    EXPECT_EQ(vcpu_state->msrs.back().index, kMsrTscDeadline) << "IA32_TSC_DEADLINE is restored last";
  }
  ASSERT_TRUE(vm_state->irqchip.has_value());

  // The second VM: same shape, a copy of the memory, then vCPU state, VM state, kvmclock_ctrl.
  TestVm dst;
  ASSERT_NO_FATAL_FAILURE(make_vm(dst, src.vm->has_pit()));
  ASSERT_EQ(dst.vm->has_pit(), src.vm->has_pit());
  {
    std::vector<uint8_t> ram(kRamBytes);
    ASSERT_TRUE(src.mem.read(0, ram).ok());
    ASSERT_TRUE(dst.mem.write(0, ram).ok());
  }
  {
    auto rv = dst.vcpu->restore_state(*vcpu_state);
    ASSERT_TRUE(rv.ok()) << rv.error().message();
    auto rm = dst.vm->restore_state(*vm_state, /*clock_realtime=*/false);
    ASSERT_TRUE(rm.ok()) << rm.error().message();
    auto kc = dst.vcpu->kvmclock_ctrl();
    EXPECT_TRUE(kc.ok()) << kc.error().message();
  }

  // Read back before the guest runs again.
  auto regs = dst.vcpu->get_regs();
  ASSERT_TRUE(regs.ok());
  EXPECT_TRUE(same(*regs, vcpu_state->regs))
      << "general registers differ; rip " << regs->rip << " vs " << vcpu_state->regs.rip;
  auto sregs = dst.vcpu->get_sregs();
  ASSERT_TRUE(sregs.ok());
  const kvm_sregs& s0 = vcpu_state->sregs;
  EXPECT_EQ(sregs->cr0, s0.cr0);
  EXPECT_EQ(sregs->cr3, s0.cr3);
  EXPECT_EQ(sregs->cr4, s0.cr4);
  EXPECT_EQ(sregs->efer, s0.efer);
  EXPECT_EQ(sregs->apic_base, s0.apic_base);
  EXPECT_TRUE(same(sregs->cs, s0.cs));
  EXPECT_TRUE(same(sregs->ds, s0.ds));
  EXPECT_TRUE(same(sregs->ss, s0.ss));
  EXPECT_TRUE(same(sregs->gdt, s0.gdt));
  EXPECT_TRUE(same(sregs->idt, s0.idt));

  std::vector<uint32_t> indices;
  for (const auto& m : vcpu_state->msrs) indices.push_back(m.index);
  auto msrs = dst.vcpu->get_msrs(indices);
  ASSERT_TRUE(msrs.ok()) << msrs.error().message();
  ASSERT_EQ(msrs->size(), indices.size()) << "the restored vCPU cannot read MSR " << std::hex
                                          << indices[std::min(msrs->size(), indices.size() - 1)];
  for (size_t i = 0; i < indices.size(); ++i) {
    const auto& saved = vcpu_state->msrs[i];
    const auto& now = (*msrs)[i];
    if (saved.index == kMsrTsc) {
      // Restored, then ticking: at or after the saved value, and not by more than a minute.
      EXPECT_GE(now.data, saved.data);
      if (vcpu_state->tsc_khz != 0) {
        EXPECT_LT(now.data - saved.data, uint64_t{vcpu_state->tsc_khz} * 1000 * 60);
      }
      continue;
    }
    EXPECT_EQ(now.data, saved.data) << "MSR " << std::hex << saved.index;
  }

  auto lapic = dst.vcpu->get_lapic();
  ASSERT_TRUE(lapic.ok());
  for (uint32_t off = 0; off < sizeof(lapic->regs); off += 4) {
    if (off == kLapicTmcct) continue;
    EXPECT_EQ(lapic_reg(*lapic, off), lapic_reg(vcpu_state->lapic, off))
        << "LAPIC register " << std::hex << off;
  }
  if (deadline) {
    EXPECT_EQ(lapic_reg(*lapic, kLapicLvtt) & (3u << 17), kLvttTscDeadline);
  }

  auto mp = dst.vcpu->get_mp_state();
  ASSERT_TRUE(mp.ok());
  EXPECT_EQ(mp->mp_state, vcpu_state->mp_state.mp_state);

  auto vm_now = dst.vm->save_state();
  ASSERT_TRUE(vm_now.ok()) << vm_now.error().message();
  ASSERT_TRUE(vm_now->irqchip.has_value());
  EXPECT_TRUE(same(vm_now->irqchip->pic_master, vm_state->irqchip->pic_master));
  EXPECT_TRUE(same(vm_now->irqchip->pic_slave, vm_state->irqchip->pic_slave));
  EXPECT_TRUE(same(vm_now->irqchip->ioapic, vm_state->irqchip->ioapic));
  EXPECT_EQ(vm_now->pit.has_value(), vm_state->pit.has_value());
  // The guest's clock continues from the snapshot (clock_realtime false): no jump.
  EXPECT_GE(vm_now->clock.clock, vm_state->clock.clock);
  EXPECT_LT(vm_now->clock.clock - vm_state->clock.clock, 5'000'000'000u);

  // The guest counts on from where it was saved.
  auto second = run_for(*dst.vcpu, kRunTime);
  ASSERT_TRUE(second.ok()) << second.error().message();
  ASSERT_EQ(second->kind, VcpuExitKind::kKicked) << kvm_exit_reason_name(second->raw_reason) << "\n"
                                                 << dst.vcpu->dump_state();
  auto after = dst.vcpu->get_regs();
  ASSERT_TRUE(after.ok());
  EXPECT_GT(static_cast<uint32_t>(after->rax), count_at_save) << "the restored guest did not count on";
  EXPECT_GE(after->rip, kLoadAddr);
  EXPECT_LT(after->rip, kLoadAddr + sizeof(kCounterGuest));
  if (deadline) {
    auto d = dst.vcpu->get_msrs({kMsrTscDeadline});
    ASSERT_TRUE(d.ok() && d->size() == 1);
    EXPECT_EQ((*d)[0].data, armed_deadline) << "the TSC-deadline timer is still armed after the guest ran";
  }
}

TEST_F(SnapshotStateTest, ClockRealtimeAdvancesTheGuestClockByTheTimeAway) {
  TestVm a;
  ASSERT_NO_FATAL_FAILURE(make_vm(a, false));
  auto saved = a.vm->save_state();
  ASSERT_TRUE(saved.ok()) << saved.error().message();
  std::this_thread::sleep_for(300ms);

  TestVm now_vm;
  ASSERT_NO_FATAL_FAILURE(make_vm(now_vm, false));
  auto r = now_vm.vm->restore_state(*saved, /*clock_realtime=*/true);
  ASSERT_TRUE(r.ok()) << r.error().message();
  auto advanced = now_vm.vm->save_state();
  ASSERT_TRUE(advanced.ok());
  EXPECT_GE(advanced->clock.clock, saved->clock.clock + 250'000'000u) << "the 300 ms away were not added";
  EXPECT_LT(advanced->clock.clock, saved->clock.clock + 30'000'000'000u);

  TestVm frozen_vm;
  ASSERT_NO_FATAL_FAILURE(make_vm(frozen_vm, false));
  r = frozen_vm.vm->restore_state(*saved, /*clock_realtime=*/false);
  ASSERT_TRUE(r.ok()) << r.error().message();
  auto frozen = frozen_vm.vm->save_state();
  ASSERT_TRUE(frozen.ok());
  EXPECT_GE(frozen->clock.clock, saved->clock.clock);
  EXPECT_LT(frozen->clock.clock, saved->clock.clock + 250'000'000u) << "the time away was added";
}

TEST_F(SnapshotStateTest, PitStateOntoAVmWithoutPitIsRefused) {
  TestVm a;
  ASSERT_NO_FATAL_FAILURE(make_vm(a, true));
  if (!a.vm->has_pit()) GTEST_SKIP() << "this host cannot create an in-kernel PIT (PVM)";
  auto saved = a.vm->save_state();
  ASSERT_TRUE(saved.ok()) << saved.error().message();
  ASSERT_TRUE(saved->pit.has_value());
  TestVm b;
  ASSERT_NO_FATAL_FAILURE(make_vm(b, false));
  auto r = b.vm->restore_state(*saved, false);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("PIT"), std::string::npos) << r.error().message();
}

TEST_F(SnapshotStateTest, ADifferentTscFrequencyIsScaledOrRefusedByName) {
  TestVm a;
  ASSERT_NO_FATAL_FAILURE(make_vm(a, false));
  auto saved = a.vcpu->save_state();
  ASSERT_TRUE(saved.ok()) << saved.error().message();
  if (saved->tsc_khz == 0) GTEST_SKIP() << "KVM_GET_TSC_KHZ gives no frequency on this host";
  // Higher than the host's, by more than KVM's 250 ppm tolerance.
  const uint32_t other = saved->tsc_khz + saved->tsc_khz / 100;
  saved->tsc_khz = other;
  TestVm b;
  ASSERT_NO_FATAL_FAILURE(make_vm(b, false));
  auto r = b.vcpu->restore_state(*saved);
  if (sys_->check_extension(KVM_CAP_TSC_CONTROL) > 0) {
    ASSERT_TRUE(r.ok()) << r.error().message();
    auto khz = b.vcpu->get_tsc_khz();
    ASSERT_TRUE(khz.ok());
    EXPECT_EQ(*khz, other);
  } else {
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, ErrorCode::kUnsupported);
    EXPECT_NE(r.error().message().find(std::to_string(other)), std::string::npos) << r.error().message();
  }
}

// Diff snapshots come from the dirty log: a guest that stores to one page shows that page dirty,
// and the log reads empty again once it has been read.
TEST_F(SnapshotStateTest, DirtyLogShowsThePageTheGuestWrites) {
  auto vm = sys_->create_vm();
  ASSERT_TRUE(vm.ok()) << vm.error().message();
  TestVm t;
  t.vm = std::make_unique<KvmVm>(std::move(*vm));
  (void)t.vm->set_tss_addr(0xfffb'd000);
  (void)t.vm->set_identity_map_addr(0xfffb'c000);
  ASSERT_TRUE(t.mem.add_region(0, kRamBytes).ok());
  ASSERT_TRUE(t.vm->map_memory(t.mem, 0, KVM_MEM_LOG_DIRTY_PAGES).ok());
  ASSERT_EQ(t.vm->memory_slots().size(), 1u);
  const MemorySlot slot = t.vm->memory_slots()[0];
  EXPECT_EQ(slot.slot, 0u);
  EXPECT_EQ(slot.gpa, 0u);
  EXPECT_EQ(slot.size, kRamBytes);
  EXPECT_EQ(slot.flags, static_cast<uint32_t>(KVM_MEM_LOG_DIRTY_PAGES));
  // 16-bit real mode at kLoadAddr:  1: inc %eax (66 40); mov %ax, 0x2000 (a3 00 20); jmp 1b (eb f9)
  constexpr uint8_t kStoringGuest[] = {0x66, 0x40, 0xa3, 0x00, 0x20, 0xeb, 0xf9};
  constexpr uint64_t kStoredPage = 0x2000 / KvmVm::kDirtyPageSize;
  ASSERT_TRUE(t.mem.write(kLoadAddr, kStoringGuest).ok());
  auto vcpu = t.vm->create_vcpu(0);
  ASSERT_TRUE(vcpu.ok()) << vcpu.error().message();
  t.vcpu = std::make_unique<KvmVcpu>(std::move(*vcpu));
  ASSERT_TRUE(t.vcpu->enter_real_mode(kLoadAddr, 0).ok());

  auto wrong = t.vm->get_dirty_log(0, kRamBytes / 2);
  ASSERT_FALSE(wrong.ok()) << "a size other than the slot's would let KVM overrun the bitmap";
  EXPECT_EQ(wrong.error().code, ErrorCode::kInvalidArgument);

  auto cleared = t.vm->get_dirty_log(0, kRamBytes);  // starts the interval
  ASSERT_TRUE(cleared.ok()) << cleared.error().message();
  ASSERT_EQ(cleared->size(), kRamBytes / KvmVm::kDirtyPageSize / 64);

  auto exit = run_for(*t.vcpu, kRunTime);
  ASSERT_TRUE(exit.ok()) << exit.error().message();
  ASSERT_EQ(exit->kind, VcpuExitKind::kKicked) << kvm_exit_reason_name(exit->raw_reason);

  auto dirty = t.vm->get_dirty_log(0, kRamBytes);
  ASSERT_TRUE(dirty.ok()) << dirty.error().message();
  EXPECT_TRUE(((*dirty)[kStoredPage / 64] >> (kStoredPage % 64)) & 1) << "the page the guest stores to";
  size_t pages = 0;
  for (uint64_t w : *dirty) pages += static_cast<size_t>(__builtin_popcountll(w));
  EXPECT_LE(pages, 4u) << "the guest writes one page (KVM may add its own, e.g. the real-mode TSS)";

  // Manual protection is not enabled here, so reading the log cleared it.
  auto again = t.vm->get_dirty_log(0, kRamBytes);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(std::all_of(again->begin(), again->end(), [](uint64_t w) { return w == 0; }))
      << "reading the log clears it";
}

}  // namespace
}  // namespace ringvm
