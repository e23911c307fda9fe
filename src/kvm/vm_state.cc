#include "kvm/vm_state.h"

namespace ringvm {

void encode(const KvmVmState& s, StateWriter& w) {
  w.u16(KvmVmState::kFormatVersion);
  w.boolean(s.irqchip.has_value());
  if (s.irqchip) {
    w.pod(s.irqchip->pic_master);
    w.pod(s.irqchip->pic_slave);
    w.pod(s.irqchip->ioapic);
  }
  w.boolean(s.pit.has_value());
  if (s.pit) w.pod(*s.pit);
  w.u64(s.clock.clock);
  w.u32(s.clock.flags);
  w.u64(s.clock.realtime);
  w.u64(s.clock.host_tsc);
  w.u64(s.host_realtime_ns);
}

Result<KvmVmState> decode_vm_state(StateReader& r) {
  KvmVmState s;
  const uint16_t version = TRY(r.u16("vm format version"));
  if (version != KvmVmState::kFormatVersion)
    return r.corrupt(fmt::format("VM state format version {}; this ringvm reads version {}", version,
                                 KvmVmState::kFormatVersion));
  if (TRY(r.boolean("has_irqchip"))) {
    KvmVmState::Irqchip chips;
    chips.pic_master = TRY(r.pod<kvm_irqchip>("pic_master"));
    chips.pic_slave = TRY(r.pod<kvm_irqchip>("pic_slave"));
    chips.ioapic = TRY(r.pod<kvm_irqchip>("ioapic"));
    RETURN_IF_ERROR(r.check_range("pic_master.chip_id", chips.pic_master.chip_id, KVM_IRQCHIP_PIC_MASTER,
                                  KVM_IRQCHIP_PIC_MASTER));
    RETURN_IF_ERROR(r.check_range("pic_slave.chip_id", chips.pic_slave.chip_id, KVM_IRQCHIP_PIC_SLAVE,
                                  KVM_IRQCHIP_PIC_SLAVE));
    RETURN_IF_ERROR(
        r.check_range("ioapic.chip_id", chips.ioapic.chip_id, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_IOAPIC));
    s.irqchip = chips;
  }
  if (TRY(r.boolean("has_pit"))) s.pit = TRY(r.pod<kvm_pit_state2>("pit"));
  s.clock.clock = TRY(r.u64("clock"));
  s.clock.flags = TRY(r.u32("clock flags"));
  if ((s.clock.flags & ~KvmVmState::kClockFlags) != 0)
    return r.corrupt(fmt::format("`clock flags` is {:#x}; only {:#x} are defined", s.clock.flags,
                                 KvmVmState::kClockFlags));
  s.clock.realtime = TRY(r.u64("clock realtime"));
  s.clock.host_tsc = TRY(r.u64("clock host_tsc"));
  s.host_realtime_ns = TRY(r.u64("host_realtime_ns"));
  return s;
}

}  // namespace ringvm
