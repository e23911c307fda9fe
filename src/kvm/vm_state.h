// KvmVmState: what KVM holds for a whole x86 VM, outside its vCPUs, that a snapshot must keep
// (the in-kernel PICs and IOAPIC, the PIT and the kvmclock), and its byte encoding
// (base/state_codec.h). Named apart from vmm's VmState, the VM's run state.
// KvmVm::save_state() fills one; KvmVm::restore_state() puts it back.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <optional>

#include "base/result.h"
#include "base/state_codec.h"

namespace ringvm {

struct KvmVmState {
  static constexpr uint16_t kFormatVersion = 1;
  // The KVM_GET_CLOCK flags a state may carry.
  static constexpr uint32_t kClockFlags = KVM_CLOCK_TSC_STABLE | KVM_CLOCK_REALTIME | KVM_CLOCK_HOST_TSC;

  // KVM_GET_IRQCHIP of chips 0, 1 and 2. Absent for a VM without an in-kernel irqchip.
  struct Irqchip {
    kvm_irqchip pic_master{};  // chip_id KVM_IRQCHIP_PIC_MASTER
    kvm_irqchip pic_slave{};   // chip_id KVM_IRQCHIP_PIC_SLAVE
    kvm_irqchip ioapic{};      // chip_id KVM_IRQCHIP_IOAPIC
  };
  std::optional<Irqchip> irqchip;
  // KVM_GET_PIT2. Absent for a VM without an in-kernel PIT (PVM hosts cannot create one).
  std::optional<kvm_pit_state2> pit;
  // KVM_GET_CLOCK: the kvmclock in ns; `realtime` (and `host_tsc`) are the host's CLOCK_REALTIME
  // (and TSC) at the same instant when flags has KVM_CLOCK_REALTIME (KVM_CLOCK_HOST_TSC), which
  // Linux 5.16+ sets when the host clock is TSC-based.
  kvm_clock_data clock{};
  // This process's CLOCK_REALTIME read just after KVM_GET_CLOCK, in ns: how much real time
  // passed is measured from it when the clock carries no `realtime` of its own.
  uint64_t host_realtime_ns = 0;
};

void encode(const KvmVmState& s, StateWriter& w);
// Reads what encode() wrote, checking chip ids and clock flags; errors are kCorrupt and name the
// field. Does not call r.finish().
Result<KvmVmState> decode_vm_state(StateReader& r);

}  // namespace ringvm
