#include "vmm/exit_probe.h"

#include <algorithm>
#include <array>
#include <chrono>

#include "devices/bus.h"
#include "kvm/system.h"
#include "kvm/vcpu.h"
#include "kvm/vm.h"
#include "memory/guest_memory.h"

namespace ringvm {
namespace {

constexpr uint64_t kRamBytes = 64 << 10;
constexpr uint64_t kCodeAddr = 0x1000;
constexpr uint16_t kProbePort = 0x510;

// Real mode at 0000:1000:  mov dx, kProbePort; mov cx, N; l: out dx, al; loop l; hlt
std::array<uint8_t, 10> probe_code(uint16_t n) {
  return {0xba, static_cast<uint8_t>(kProbePort), static_cast<uint8_t>(kProbePort >> 8),
          0xb9, static_cast<uint8_t>(n),          static_cast<uint8_t>(n >> 8),
          0xee, 0xe2, 0xfd, 0xf4};
}

// Runs the vCPU from the code's start until it halts; returns the wall time.
Result<uint64_t> run_once(KvmVcpu& vcpu, GuestMemory& mem, uint16_t n) {
  const auto code = probe_code(n);
  TRY(mem.write(kCodeAddr, code));
  TRY(vcpu.enter_real_mode(kCodeAddr));
  static const Bus kNoPorts("exit-probe ports"), kNoMmio("exit-probe mmio");
  const auto t0 = std::chrono::steady_clock::now();
  const VcpuExit e = TRY(vcpu.run(kNoPorts, kNoMmio, nullptr));
  const auto t1 = std::chrono::steady_clock::now();
  if (e.kind != VcpuExitKind::kHalt)
    return make_error(ErrorCode::kInternal, "the exit-cost probe's vCPU stopped with KVM exit {} instead of halting",
                      e.raw_reason);
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
}

}  // namespace

Result<ExitCost> measure_exit_cost(const KvmSystem& kvm, uint32_t exits) {
  exits = std::clamp<uint32_t>(exits, 1, 0xffff);
  KvmVm vm = TRY(kvm.create_vm());
  // Intel without unrestricted guest needs these for real mode; PVM rejects them and needs neither.
  (void)vm.set_tss_addr(0xfffb'd000);
  (void)vm.set_identity_map_addr(0xfffb'c000);
  GuestMemory mem;
  TRY(mem.add_region(0, kRamBytes));
  TRY(vm.map_memory(mem));
  KvmVcpu vcpu = TRY(vm.create_vcpu(0));
  // The first entry pays for building the vCPU's state and page tables; not an exit's cost.
  TRY(run_once(vcpu, mem, 2));
  const uint64_t ns = TRY(run_once(vcpu, mem, static_cast<uint16_t>(exits)));
  // n port writes and the halt: n + 1 exits.
  return ExitCost{ns / (exits + 1), exits};
}

uint32_t auto_batch_us(uint64_t round_trip_ns) {
  if (round_trip_ns < kBatchAutoMinExitNs) return 0;
  return static_cast<uint32_t>(std::min<uint64_t>(4 * round_trip_ns / 1000, kBatchAutoMaxUs));
}

}  // namespace ringvm
