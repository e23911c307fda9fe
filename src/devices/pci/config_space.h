// PciConfigSpace: a type-0 (endpoint) configuration header that PCI functions embed.
//
// It implements what every function needs and nothing device-specific: identity registers, a
// command register whose writable bits are masked, BARs with sizing semantics (the address bits
// below the size are read-only zero; the low type bits are read-only), the interrupt pin/line,
// a capability list built with add_capability(), and an MSI-X capability tied to an MsixTable.
// Every byte has a write mask, so the guest cannot change read-only fields.
//
// Not thread-safe: the owning device serializes config accesses (the PCI bus already does).
#pragma once

#include <array>
#include <cstdint>
#include <span>

#include "base/result.h"
#include "devices/pci/pci_device.h"

namespace ringvm {

class MsixTable;
class StateReader;
class StateWriter;

struct PciIds {
  uint16_t vendor = 0;
  uint16_t device = 0;
  uint8_t revision = 0;
  uint32_t class_code = 0;  // base class << 16 | subclass << 8 | programming interface
  uint16_t subsystem_vendor = 0;
  uint16_t subsystem_id = 0;
};

class PciConfigSpace final {
 public:
  static constexpr size_t kSize = 256;
  static constexpr int kNumBars = 6;

  explicit PciConfigSpace(const PciIds& ids);

  // Declares BAR `bar`. A 64-bit memory BAR also takes `bar + 1`. Sizes must be powers of two
  // (>= 16 bytes memory, >= 4 bytes I/O; I/O BARs are at most 256 bytes).
  Result<void> set_bar(int bar, const PciBarInfo& info);
  const PciBarInfo& bar_info(int bar) const { return bars_[static_cast<size_t>(bar)].info; }
  // The address currently programmed in `bar` (without the type bits).
  uint64_t bar_address(int bar) const { return bars_[static_cast<size_t>(bar)].address; }

  // INTx pin: 0 = none, 1 = INTA .. 4 = INTD (the register's encoding).
  void set_interrupt_pin(uint8_t pin);

  // Appends a capability. `body` starts with the capability ID; its byte 1 (next pointer) is
  // filled in here. `wmask` (same length, or empty for read-only) marks guest-writable bits.
  // Returns the capability's offset.
  Result<uint8_t> add_capability(std::span<const uint8_t> body, std::span<const uint8_t> wmask = {});
  // Adds the MSI-X capability for `table` (which must outlive this object), with the table and
  // PBA at the given offsets of BARs `table_bar` and `pba_bar`. Message Control writes go to
  // `table`.
  Result<uint8_t> add_msix_capability(MsixTable& table, int table_bar, uint32_t table_offset, int pba_bar,
                                      uint32_t pba_offset);

  // Config cycles: `size` 1, 2 or 4 with `offset` aligned to it; others read all ones / are
  // ignored. Offsets past the 256-byte header read zero.
  uint32_t read(uint16_t offset, uint8_t size) const;
  void write(uint16_t offset, uint8_t size, uint32_t value);

  uint16_t command() const;

  // --- Snapshot (base/state_codec.h) ---
  // The 256 bytes and the BAR addresses. The write masks, BAR sizes and capability layout are
  // structural (the function builds them the same way in every process) and not saved.
  struct State {
    std::array<uint8_t, kSize> regs{};
    std::array<uint64_t, kNumBars> bar_addresses{};
  };
  void save_state(StateWriter& w) const;
  // Reads and checks a state save_state() wrote; changes nothing. Refused (kCorrupt): a
  // read-only bit that differs from this function's (another device, another layout), a BAR
  // address where this function has no BAR (or in the upper half of a 64-bit one), or an address
  // a guest could not have programmed (not aligned to the BAR size, an I/O BAR above 64 KiB, a
  // 32-bit BAR above 4 GiB).
  Result<State> read_state(StateReader& r) const;
  // Takes `s` over. The MSI-X Message Control bits are the MsixTable's (restore it first): they
  // are read back from it, as after a guest write. Whoever maps the BARs (PciBus) must then
  // re-read them (PciBus::restore does).
  void restore_state(const State& s);

 private:
  struct Bar {
    PciBarInfo info;
    bool upper_half = false;  // second slot of a 64-bit BAR
    uint64_t address = 0;
  };
  uint32_t read_dword(uint16_t aligned) const;
  void write_dword(uint16_t aligned, uint32_t value);
  uint32_t bar_register(int slot) const;
  void write_bar_register(int slot, uint32_t value);

  std::array<uint8_t, kSize> regs_{};
  std::array<uint8_t, kSize> wmask_{};
  std::array<Bar, kNumBars> bars_{};
  uint8_t last_cap_ = 0;      // offset of the last capability, 0 if none
  uint16_t next_cap_ = 0x40;  // where the next capability goes
  MsixTable* msix_ = nullptr;
  uint8_t msix_cap_ = 0;
};

}  // namespace ringvm
