// PciBus: PCI bus 0 of a PC — configuration mechanism #1 (ports 0xCF8/0xCFC), a host bridge at
// slot 0, up to 31 functions, and their BARs mapped onto the port-I/O and MMIO buses.
//
// Like firmware, add_device() sizes the function's BARs through config cycles, assigns them
// addresses in the PCI windows (aligned to their size) and enables decoding, so Linux keeps the
// assignment (it lies in the root bridge's _CRS). When the guest later re-programs a BAR or
// toggles decoding, the bus re-maps it and calls PciDevice::bar_moved(). A BAR in sizing state
// (all ones written) or with decoding off is unmapped.
//
// Locking: config cycles arrive from the PIO bus (its shared lock held) and change the MMIO bus
// (exclusive lock): different buses, so no deadlock.
//
// Snapshots: the bus is Stateful ("pci-bus"): its state is the CONFIG_ADDRESS latch (a vCPU may
// be parked between its 0xCF8 and 0xCFC accesses), the host bridge's config space and which
// slots hold a function. Where BARs are mapped is not saved: it follows from each function's
// config space, so restore() must come after every function's own restore; it then maps every
// BAR where its config space says, as if the guest had just written it (bar_moved()). I/O BARs cannot be
// re-mapped on the PIO bus from inside its own handler, so they live on a private Bus behind one window
// device that the PIO bus maps once.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>

#include "base/result.h"
#include "base/stateful.h"
#include "devices/bus.h"
#include "devices/pci/pci_device.h"

namespace ringvm {

// Where the platform puts the bus. The builder fills it from arch/x86_64/layout.h, which this
// module does not see: the windows must agree with the ACPI tables, so they come from one place.
struct PciBusConfig {
  uint16_t config_port = 0xCF8;  // PciBus::kConfigPortSize ports: address at +0, data at +4..+7
  uint64_t mmio_base = 0;        // memory BARs are assigned here; mmio_size must not be 0
  uint64_t mmio_size = 0;
  uint16_t io_base = 0;  // I/O BARs are assigned here; io_size 0 = no I/O BARs allowed
  uint32_t io_size = 0;
  // The GSI that pin `pin` (0 = INTA) of the function in `slot` raises; the platform's routing
  // table (the DSDT's _PRT) must agree. Null: INTx is not wired (functions are attached to GSI 0).
  uint32_t (*intx_gsi)(uint32_t slot, uint32_t pin) = nullptr;
};

class PciBus final : public Stateful {
 public:
  static constexpr int kSlots = 32;
  static constexpr uint16_t kConfigPortSize = 8;  // CONFIG_ADDRESS and CONFIG_DATA, 4 bytes each
  // The host bridge's identity (as Cloud Hypervisor and Firecracker use: no Linux quirks).
  static constexpr uint16_t kHostBridgeVendor = 0x8086;
  static constexpr uint16_t kHostBridgeDevice = 0x0D57;

  // Creates the bus with its host bridge at slot 0 and maps the config ports (and the I/O window,
  // if any) on `pio`. `pio` and `mmio` must outlive every use of the bus; the bus itself lives as
  // long as the PIO bus holds its config-port device.
  static Result<std::shared_ptr<PciBus>> create(Bus& pio, Bus& mmio, const PciBusConfig& config);
  PciBus(const PciBus&) = delete;
  PciBus& operator=(const PciBus&) = delete;

  // Puts `dev` in the first free slot, assigns and maps its BARs, enables decoding and wires its
  // interrupt pin. Returns the slot.
  Result<uint8_t> add_device(std::shared_ptr<PciDevice> dev);

  // A config cycle to function 0 of `slot` (what a CF8/CFC or ECAM access becomes). Absent
  // functions read all ones.
  uint32_t config_read(uint8_t slot, uint16_t offset, uint8_t size);
  void config_write(uint8_t slot, uint16_t offset, uint8_t size, uint32_t value);

  // Where BAR `bar` of `slot` is mapped now; 0 when unmapped.
  uint64_t bar_address(uint8_t slot, int bar) const;

  // Stateful. No thread: pause() and resume() have nothing to do. restore() refuses (kCorrupt,
  // nothing changed) a state whose occupied slots differ from this bus's or whose host bridge
  // state is not one; otherwise it re-maps every function's BARs (see above).
  std::string_view state_name() const override { return "pci-bus"; }
  Result<void> pause() override { return Ok(); }
  Result<void> resume() override { return Ok(); }
  Result<std::vector<uint8_t>> save() const override;
  Result<void> restore(std::span<const uint8_t> data) override;

 private:
  class ConfigIo;
  class HostBridge;
  class IoWindow;
  struct BarState {
    PciBarInfo info;
    uint64_t mapped = 0;  // base currently on a bus; 0 = unmapped
    std::shared_ptr<Device> window;
  };
  struct Slot {
    std::shared_ptr<PciDevice> dev;
    std::array<BarState, 6> bars;
  };

  PciBus(Bus& pio, Bus& mmio, const PciBusConfig& config);
  Result<uint8_t> add_locked(std::shared_ptr<PciDevice> dev, uint8_t slot);
  Result<void> size_bars_locked(Slot& s);
  Result<void> assign_bars_locked(Slot& s);
  // Re-reads BARs and the command register of `slot` and re-maps whatever changed.
  void update_mappings_locked(uint8_t slot);
  // Bit n set: slot n holds a function.
  uint32_t occupied_locked() const;
  uint64_t programmed_base_locked(const Slot& s, int bar, uint16_t command) const;
  // The 0xCF8 latch and the data ports.
  uint32_t io_read(uint64_t offset, uint8_t size);
  void io_write(uint64_t offset, uint8_t size, uint32_t value);

  Bus& pio_;
  Bus& mmio_;
  const PciBusConfig config_;
  Bus io_bars_{"pci-io-bars"};
  mutable std::mutex mu_;  // config cycles, the address latch, slots and allocators
  uint32_t address_ = 0;   // CONFIG_ADDRESS (0xCF8)
  std::array<Slot, kSlots> slots_;
  std::shared_ptr<HostBridge> host_;  // slot 0
  uint64_t next_mmio_;
  uint64_t next_io_;
};

}  // namespace ringvm
