#include "devices/pci/interrupt_controller.h"

#include <cstring>
#include <memory>

#include "kvm/vm.h"

namespace ringvm {

Result<void> KvmInterruptController::set_irq_line(uint32_t gsi, bool level) {
  return vm_.set_irq_line(gsi, level);
}

Result<void> KvmInterruptController::set_gsi_routing(std::span<const kvm_irq_routing_entry> entries) {
  // kvm_irq_routing is a header followed by a flexible array: build it in a buffer of entries
  // (same alignment) with one spare element for the header.
  static_assert(sizeof(kvm_irq_routing) <= sizeof(kvm_irq_routing_entry));
  static_assert(alignof(kvm_irq_routing) <= alignof(kvm_irq_routing_entry));
  auto buf = std::make_unique<kvm_irq_routing_entry[]>(entries.size() + 1);
  // SAFETY: `buf` is suitably aligned (static_asserts above) and large enough for the header plus
  // entries.size() entries starting at offsetof(kvm_irq_routing, entries).
  auto* table = reinterpret_cast<kvm_irq_routing*>(buf.get());
  table->nr = static_cast<uint32_t>(entries.size());
  table->flags = 0;
  if (!entries.empty()) std::memcpy(table->entries, entries.data(), entries.size_bytes());
  return vm_.set_gsi_routing(table);
}

Result<void> KvmInterruptController::register_irqfd(int eventfd, uint32_t gsi) {
  return vm_.register_irqfd(eventfd, gsi);
}

Result<void> KvmInterruptController::unregister_irqfd(int eventfd, uint32_t gsi) {
  return vm_.unregister_irqfd(eventfd, gsi);
}

Result<void> KvmInterruptController::register_ioeventfd(int eventfd, uint64_t addr, uint32_t len, bool pio) {
  return vm_.register_ioeventfd(eventfd, addr, len, pio);
}

Result<void> KvmInterruptController::unregister_ioeventfd(int eventfd, uint64_t addr, uint32_t len, bool pio) {
  return vm_.unregister_ioeventfd(eventfd, addr, len, pio);
}

}  // namespace ringvm
