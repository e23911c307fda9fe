#include "devices/pci/interrupt_controller.h"

#include "kvm/vm.h"

namespace ringvm {

Result<void> KvmInterruptController::set_irq_line(uint32_t gsi, bool level) {
  return vm_.set_irq_line(gsi, level);
}

Result<void> KvmInterruptController::set_gsi_routing(std::span<const kvm_irq_routing_entry> entries) {
  return vm_.set_gsi_routing(entries);
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
