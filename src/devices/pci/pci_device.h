// PciDevice: the contract between a PCI function (virtio-pci, later VFIO) and the PCI bus that
// owns config cycles (CF8/CFC, ECAM) and maps BARs onto the port-I/O and MMIO buses.
//
// The bus calls config_read/config_write for every config cycle to this function; the function
// keeps its 256-byte (or 4 KiB) space, typically through PciConfigSpace (config_space.h), which
// implements the standard header, BAR sizing (write all-ones, read back the size mask), the
// capability list and MSI-X. When the guest moves or enables a BAR, the bus re-maps it and calls
// bar_moved(), so the device can re-register ioeventfds at the new address.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

namespace ringvm {

struct PciBarInfo {
  uint64_t size = 0;       // a power of two >= 16 (MMIO) or >= 4 (I/O); 0 = unused BAR
  bool io = false;         // I/O space BAR (else memory)
  bool is_64bit = false;   // memory BAR using two BAR slots
  bool prefetchable = false;
};

class PciDevice {
 public:
  virtual ~PciDevice() = default;
  virtual std::string_view name() const = 0;

  // Config space access: `offset` < 4096, `size` 1, 2 or 4, offset aligned to size.
  virtual uint32_t config_read(uint16_t offset, uint8_t size) = 0;
  virtual void config_write(uint16_t offset, uint8_t size, uint32_t value) = 0;

  // Accesses to BAR `bar` at `offset` within it (called by the bus-side adapter).
  virtual void bar_read(int bar, uint64_t offset, std::span<uint8_t> data) = 0;
  virtual void bar_write(int bar, uint64_t offset, std::span<const uint8_t> data) = 0;

  // The guest programmed BAR `bar` to `new_base` (0 = unmapped/decoding disabled).
  virtual void bar_moved(int bar, uint64_t old_base, uint64_t new_base) = 0;

  // The bus placed this function at device `slot` of bus 0; if it has an interrupt pin, that pin
  // raises `intx_gsi` (PciBusConfig::intx_gsi; 0 when INTx is not wired). Called once by
  // PciBus::add_device, before the guest runs.
  virtual void attached(uint8_t /*slot*/, uint32_t /*intx_gsi*/) {}
};

}  // namespace ringvm
