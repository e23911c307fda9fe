// InterruptController: the few VM-level interrupt and doorbell operations PCI devices need
// (INTx lines, GSI routing, irqfd, ioeventfd), behind an interface so the PCI bus, MSI-X and
// virtio-pci are testable without /dev/kvm. KvmInterruptController forwards to a KvmVm.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <span>

#include "base/result.h"

namespace ringvm {

class KvmVm;

class InterruptController {
 public:
  virtual ~InterruptController() = default;
  // Drives a level-triggered interrupt input (IOAPIC/PIC pin of `gsi`).
  virtual Result<void> set_irq_line(uint32_t gsi, bool level) = 0;
  // Replaces the whole GSI routing table (KVM_SET_GSI_ROUTING semantics).
  virtual Result<void> set_gsi_routing(std::span<const kvm_irq_routing_entry> entries) = 0;
  // Signalling `eventfd` injects `gsi` without a userspace exit.
  virtual Result<void> register_irqfd(int eventfd, uint32_t gsi) = 0;
  virtual Result<void> unregister_irqfd(int eventfd, uint32_t gsi) = 0;
  // A guest write of `len` bytes at `addr` signals `eventfd` in the kernel, without an exit.
  virtual Result<void> register_ioeventfd(int eventfd, uint64_t addr, uint32_t len, bool pio) = 0;
  virtual Result<void> unregister_ioeventfd(int eventfd, uint64_t addr, uint32_t len, bool pio) = 0;
};

class KvmInterruptController final : public InterruptController {
 public:
  // `vm` must outlive this object and already have its in-kernel irqchip.
  explicit KvmInterruptController(KvmVm& vm) : vm_(vm) {}
  Result<void> set_irq_line(uint32_t gsi, bool level) override;
  Result<void> set_gsi_routing(std::span<const kvm_irq_routing_entry> entries) override;
  Result<void> register_irqfd(int eventfd, uint32_t gsi) override;
  Result<void> unregister_irqfd(int eventfd, uint32_t gsi) override;
  Result<void> register_ioeventfd(int eventfd, uint64_t addr, uint32_t len, bool pio) override;
  Result<void> unregister_ioeventfd(int eventfd, uint64_t addr, uint32_t len, bool pio) override;

 private:
  KvmVm& vm_;
};

}  // namespace ringvm
