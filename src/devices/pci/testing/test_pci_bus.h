// A PciBusConfig for tests that need a whole bus: PC-like windows (memory BARs from 3 GiB, I/O
// BARs from port 0xC000) and the PC's INTx swizzle. Header-only, for test binaries; the VM's own
// values come from arch/x86_64/layout.h through the builder.
#pragma once

#include <cstdint>

#include "devices/pci/pci_bus.h"

namespace ringvm::testing {

// Slot s, pin p (0 = INTA) -> GSI 16 + (s + p) % 8.
constexpr uint32_t test_intx_gsi(uint32_t slot, uint32_t pin) { return 16 + (slot + pin) % 8; }

inline PciBusConfig test_pci_bus_config() {
  PciBusConfig c;
  c.mmio_base = 0xC000'0000;
  c.mmio_size = 0x2000'0000;
  c.io_base = 0xC000;
  c.io_size = 0x4000;
  c.intx_gsi = test_intx_gsi;
  return c;
}

}  // namespace ringvm::testing
