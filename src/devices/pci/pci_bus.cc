#include "devices/pci/pci_bus.h"

#include <linux/pci_regs.h>

#include <cstring>

#include "base/log.h"
#include "base/state_codec.h"
#include "devices/pci/config_space.h"

namespace ringvm {
namespace {

// CONFIG_ADDRESS (0xCF8) fields, PCI Local Bus 3.0 §3.2.2.3.2.
constexpr uint32_t kAddrEnable = 1u << 31;        // config cycle enable
constexpr uint32_t kAddrBusShift = 16;            // bits 23:16 bus number
constexpr uint32_t kAddrDeviceShift = 11;         // bits 15:11 device (slot)
constexpr uint32_t kAddrFunctionShift = 8;        // bits 10:8 function
constexpr uint32_t kAddrRegisterMask = 0xFC;      // bits 7:2 DWORD register
constexpr uint64_t kDataPortOffset = 4;           // CONFIG_DATA at 0xCFC..0xCFF
constexpr uint32_t kClassHostBridge = 0x060000;   // bridge, host bridge, no programming interface
// BAR address bits (the UAPI masks are unsigned long; these are the 32-bit registers' own).
constexpr uint32_t kBarMemMask = 0xFFFFFFF0;
constexpr uint32_t kBarIoMask = 0xFFFFFFFC;

// What one BAR looks like on a Bus: accesses forwarded to the function with the BAR index.
class BarWindow final : public Device {
 public:
  BarWindow(std::shared_ptr<PciDevice> dev, int bar) : dev_(std::move(dev)), bar_(bar) {}
  std::string_view name() const override { return dev_->name(); }
  void read(uint64_t offset, std::span<uint8_t> data) override { dev_->bar_read(bar_, offset, data); }
  void write(uint64_t offset, std::span<const uint8_t> data) override { dev_->bar_write(bar_, offset, data); }

 private:
  std::shared_ptr<PciDevice> dev_;
  int bar_;
};

uint32_t load_le(std::span<const uint8_t> data) {
  uint32_t v = 0;
  std::memcpy(&v, data.data(), data.size());
  return v;
}

void store_le(std::span<uint8_t> data, uint32_t v) { std::memcpy(data.data(), &v, data.size()); }

bool valid_size(size_t n) { return n == 1 || n == 2 || n == 4; }

}  // namespace

// The host bridge: identity only, no BARs and no interrupt.
class PciBus::HostBridge final : public PciDevice {
 public:
  HostBridge() : cfg_(PciIds{kHostBridgeVendor, PciBus::kHostBridgeDevice, 0, kClassHostBridge, 0, 0}) {}
  std::string_view name() const override { return "pci-host-bridge"; }
  uint32_t config_read(uint16_t offset, uint8_t size) override { return cfg_.read(offset, size); }
  void config_write(uint16_t offset, uint8_t size, uint32_t value) override {
    cfg_.write(offset, size, value);
  }
  void bar_read(int, uint64_t, std::span<uint8_t> data) override {
    std::memset(data.data(), 0xFF, data.size());
  }
  void bar_write(int, uint64_t, std::span<const uint8_t>) override {}
  void bar_moved(int, uint64_t, uint64_t) override {}
  PciConfigSpace& config() { return cfg_; }

 private:
  PciConfigSpace cfg_;
};

// 0xCF8..0xCFF on the PIO bus.
class PciBus::ConfigIo final : public Device {
 public:
  explicit ConfigIo(std::shared_ptr<PciBus> bus) : bus_(std::move(bus)) {}
  std::string_view name() const override { return "pci-config-io"; }
  void read(uint64_t offset, std::span<uint8_t> data) override {
    if (!valid_size(data.size())) {
      std::memset(data.data(), 0xFF, data.size());
      return;
    }
    store_le(data, bus_->io_read(offset, static_cast<uint8_t>(data.size())));
  }
  void write(uint64_t offset, std::span<const uint8_t> data) override {
    if (valid_size(data.size())) bus_->io_write(offset, static_cast<uint8_t>(data.size()), load_le(data));
  }

 private:
  std::shared_ptr<PciBus> bus_;
};

// The PCI I/O window on the PIO bus, forwarding to the private bus of I/O BARs.
class PciBus::IoWindow final : public Device {
 public:
  explicit IoWindow(std::shared_ptr<PciBus> bus) : bus_(std::move(bus)) {}
  std::string_view name() const override { return "pci-io-window"; }
  void read(uint64_t offset, std::span<uint8_t> data) override {
    bus_->io_bars_.read(bus_->config_.io_base + offset, data);
  }
  void write(uint64_t offset, std::span<const uint8_t> data) override {
    bus_->io_bars_.write(bus_->config_.io_base + offset, data);
  }

 private:
  std::shared_ptr<PciBus> bus_;
};

PciBus::PciBus(Bus& pio, Bus& mmio, const PciBusConfig& config)
    : pio_(pio), mmio_(mmio), config_(config), next_mmio_(config.mmio_base), next_io_(config.io_base) {}

Result<std::shared_ptr<PciBus>> PciBus::create(Bus& pio, Bus& mmio, const PciBusConfig& config) {
  if (config.mmio_size == 0 || config.mmio_base + config.mmio_size < config.mmio_base ||
      uint64_t{config.io_base} + config.io_size > 0x10000)
    return make_error(ErrorCode::kInvalidArgument, "PCI bus: bad windows (MMIO {:#x}+{:#x}, I/O {:#x}+{:#x})",
                      config.mmio_base, config.mmio_size, config.io_base, config.io_size);
  std::shared_ptr<PciBus> bus(new PciBus(pio, mmio, config));
  {
    std::lock_guard lock(bus->mu_);
    bus->host_ = std::make_shared<HostBridge>();
    TRY(bus->add_locked(bus->host_, 0));
  }
  RETURN_IF_ERROR(pio.insert(config.config_port, kConfigPortSize, std::make_shared<ConfigIo>(bus)));
  if (config.io_size != 0)
    RETURN_IF_ERROR(pio.insert(config.io_base, config.io_size, std::make_shared<IoWindow>(bus)));
  return bus;
}

Result<uint8_t> PciBus::add_device(std::shared_ptr<PciDevice> dev) {
  std::lock_guard lock(mu_);
  for (uint8_t slot = 1; slot < kSlots; ++slot)
    if (!slots_[slot].dev) return add_locked(std::move(dev), slot);
  return make_error(ErrorCode::kResourceExhausted, "PCI bus: no free slot for {} (31 devices at most)",
                    dev->name());
}

Result<uint8_t> PciBus::add_locked(std::shared_ptr<PciDevice> dev, uint8_t slot) {
  Slot& s = slots_[slot];
  s = Slot{std::move(dev), {}};
  auto fail = [&](Error e) {
    s = Slot{};
    return e;
  };
  if (auto r = size_bars_locked(s); !r.ok()) return fail(std::move(r).error());
  if (auto r = assign_bars_locked(s); !r.ok()) return fail(std::move(r).error());
  const auto pin = static_cast<uint8_t>(s.dev->config_read(PCI_INTERRUPT_PIN, 1));
  uint32_t gsi = 0;
  if (pin >= 1 && pin <= 4 && config_.intx_gsi != nullptr) {
    gsi = config_.intx_gsi(slot, pin - 1u);
    s.dev->config_write(PCI_INTERRUPT_LINE, 1, gsi);  // what firmware reports to the OS
  }
  s.dev->attached(slot, gsi);
  update_mappings_locked(slot);
  return slot;
}

Result<void> PciBus::size_bars_locked(Slot& s) {
  // Exactly what firmware does: write all ones, read back the mask, restore.
  PciDevice& d = *s.dev;
  for (int bar = 0; bar < PciConfigSpace::kNumBars; ++bar) {
    const auto reg = static_cast<uint16_t>(PCI_BASE_ADDRESS_0 + 4 * bar);
    const uint32_t orig = d.config_read(reg, 4);
    d.config_write(reg, 4, 0xFFFFFFFF);
    const uint32_t mask = d.config_read(reg, 4);
    d.config_write(reg, 4, orig);
    if (mask == 0) continue;
    PciBarInfo info;
    info.io = (mask & PCI_BASE_ADDRESS_SPACE_IO) != 0;
    uint64_t mask64 = info.io ? (mask & kBarIoMask) | 0xFFFF0000u : mask & kBarMemMask;
    if (!info.io && (mask & PCI_BASE_ADDRESS_MEM_TYPE_MASK) == PCI_BASE_ADDRESS_MEM_TYPE_64) {
      if (bar == PciConfigSpace::kNumBars - 1)
        return make_error(ErrorCode::kInvalidArgument, "PCI {}: 64-bit BAR 5 has no upper half", d.name());
      const auto up = static_cast<uint16_t>(reg + 4);
      const uint32_t orig_up = d.config_read(up, 4);
      d.config_write(up, 4, 0xFFFFFFFF);
      mask64 |= uint64_t{d.config_read(up, 4)} << 32;
      d.config_write(up, 4, orig_up);
      info.is_64bit = true;
    } else {
      mask64 |= 0xFFFFFFFF'00000000u;
    }
    info.prefetchable = !info.io && (mask & PCI_BASE_ADDRESS_MEM_PREFETCH) != 0;
    info.size = ~mask64 + 1;
    if (info.size == 0 || (info.size & (info.size - 1)) != 0)
      return make_error(ErrorCode::kInvalidArgument, "PCI {}: BAR {} has a malformed size mask {:#x}", d.name(), bar,
                        mask64);
    s.bars[static_cast<size_t>(bar)].info = info;
    if (info.is_64bit) ++bar;
  }
  return Ok();
}

Result<void> PciBus::assign_bars_locked(Slot& s) {
  PciDevice& d = *s.dev;
  uint16_t command = 0;
  for (int bar = 0; bar < PciConfigSpace::kNumBars; ++bar) {
    const PciBarInfo& info = s.bars[static_cast<size_t>(bar)].info;
    if (info.size == 0) continue;
    uint64_t& next = info.io ? next_io_ : next_mmio_;
    const uint64_t end = info.io ? uint64_t{config_.io_base} + config_.io_size : config_.mmio_base + config_.mmio_size;
    const uint64_t base = (next + info.size - 1) & ~(info.size - 1);
    if (base < next || base + info.size > end)
      return make_error(ErrorCode::kResourceExhausted,
                        "PCI {}: BAR {} ({:#x} bytes, {}) does not fit in the PCI {} window{}", d.name(), bar,
                        info.size, info.io ? "I/O" : "memory", info.io ? "I/O" : "MMIO",
                        info.io && config_.io_size == 0 ? " (the bus has no I/O window)" : "");
    next = base + info.size;
    const auto reg = static_cast<uint16_t>(PCI_BASE_ADDRESS_0 + 4 * bar);
    d.config_write(reg, 4, static_cast<uint32_t>(base));
    if (info.is_64bit) d.config_write(static_cast<uint16_t>(reg + 4), 4, static_cast<uint32_t>(base >> 32));
    command |= info.io ? PCI_COMMAND_IO : PCI_COMMAND_MEMORY;
  }
  if (command != 0) d.config_write(PCI_COMMAND, 2, d.config_read(PCI_COMMAND, 2) | command);
  return Ok();
}

uint64_t PciBus::programmed_base_locked(const Slot& s, int bar, uint16_t command) const {
  const PciBarInfo& info = s.bars[static_cast<size_t>(bar)].info;
  if ((command & (info.io ? PCI_COMMAND_IO : PCI_COMMAND_MEMORY)) == 0) return 0;
  const auto reg = static_cast<uint16_t>(PCI_BASE_ADDRESS_0 + 4 * bar);
  const uint32_t low = s.dev->config_read(reg, 4);
  if (info.io) {
    const uint64_t base = low & kBarIoMask;
    // Only reachable through the I/O window; a sizing pattern lands outside it.
    if (base < config_.io_base || base + info.size > uint64_t{config_.io_base} + config_.io_size) return 0;
    return base;
  }
  const uint32_t low_addr = low & kBarMemMask;
  const uint32_t high = info.is_64bit ? s.dev->config_read(static_cast<uint16_t>(reg + 4), 4) : 0;
  // All address bits set in either half is the sizing pattern (written, not yet restored).
  if (low_addr == (static_cast<uint32_t>(~(info.size - 1)) & kBarMemMask) || high == 0xFFFFFFFF) return 0;
  const uint64_t base = (uint64_t{high} << 32) | low_addr;
  if (base == 0 || base + info.size < base) return 0;
  return base;
}

void PciBus::update_mappings_locked(uint8_t slot) {
  Slot& s = slots_[slot];
  const auto command = static_cast<uint16_t>(s.dev->config_read(PCI_COMMAND, 2));
  for (int bar = 0; bar < PciConfigSpace::kNumBars; ++bar) {
    BarState& b = s.bars[static_cast<size_t>(bar)];
    if (b.info.size == 0) continue;
    uint64_t base = programmed_base_locked(s, bar, command);
    if (base == b.mapped) continue;
    Bus& bus = b.info.io ? io_bars_ : mmio_;
    const uint64_t old = b.mapped;
    if (old != 0) (void)bus.remove(old);
    if (!b.window) b.window = std::make_shared<BarWindow>(s.dev, bar);
    if (base != 0) {
      if (auto r = bus.insert(base, b.info.size, b.window); !r.ok()) {
        RINGVM_LOG_RATELIMITED(warn, "PCI {}: BAR {} left unmapped: {}", s.dev->name(), bar, r.error().message());
        base = 0;
      }
    }
    b.mapped = base;
    if (base != old) s.dev->bar_moved(bar, old, base);
  }
}

uint32_t PciBus::config_read(uint8_t slot, uint16_t offset, uint8_t size) {
  std::lock_guard lock(mu_);
  if (slot >= kSlots || !slots_[slot].dev) return 0xFFFFFFFF;
  return slots_[slot].dev->config_read(offset, size);
}

void PciBus::config_write(uint8_t slot, uint16_t offset, uint8_t size, uint32_t value) {
  std::lock_guard lock(mu_);
  if (slot >= kSlots || !slots_[slot].dev) return;
  slots_[slot].dev->config_write(offset, size, value);
  // Only the command register and the BARs decide where BARs are mapped.
  const bool touches_command = offset < PCI_COMMAND + 2 && offset + size > PCI_COMMAND;
  const bool touches_bars = offset < PCI_BASE_ADDRESS_5 + 4 && offset + size > PCI_BASE_ADDRESS_0;
  if (touches_command || touches_bars) update_mappings_locked(slot);
}

uint64_t PciBus::bar_address(uint8_t slot, int bar) const {
  std::lock_guard lock(mu_);
  if (slot >= kSlots || bar < 0 || bar >= PciConfigSpace::kNumBars) return 0;
  return slots_[slot].bars[static_cast<size_t>(bar)].mapped;
}

// Returns the target slot and register of a data-port access, or false for a cycle that reaches
// no function (decoding off, another bus, a function other than 0).
static bool decode(uint32_t address, uint64_t port_offset, uint8_t& slot, uint16_t& reg) {
  if ((address & kAddrEnable) == 0) return false;
  if (((address >> kAddrBusShift) & 0xFF) != 0 || ((address >> kAddrFunctionShift) & 0x7) != 0) return false;
  slot = static_cast<uint8_t>((address >> kAddrDeviceShift) & 0x1F);
  reg = static_cast<uint16_t>((address & kAddrRegisterMask) + (port_offset - kDataPortOffset));
  return true;
}

uint32_t PciBus::io_read(uint64_t offset, uint8_t size) {
  if (offset == 0 && size == 4) {
    std::lock_guard lock(mu_);
    return address_;
  }
  if (offset < kDataPortOffset || offset % size != 0) return 0xFFFFFFFF;
  uint32_t address;
  {
    std::lock_guard lock(mu_);
    address = address_;
  }
  uint8_t slot;
  uint16_t reg;
  if (!decode(address, offset, slot, reg)) return 0xFFFFFFFF;
  return config_read(slot, reg, size);
}

void PciBus::io_write(uint64_t offset, uint8_t size, uint32_t value) {
  if (offset == 0 && size == 4) {
    std::lock_guard lock(mu_);
    address_ = value & (kAddrEnable | 0x00FFFFFC);  // reserved bits 30:24 and 1:0 read as zero
    return;
  }
  // Byte and word accesses to 0xCF8..0xCFB are not CONFIG_ADDRESS (e.g. 0xCF9 is reset control).
  if (offset < kDataPortOffset || offset % size != 0) return;
  uint32_t address;
  {
    std::lock_guard lock(mu_);
    address = address_;
  }
  uint8_t slot;
  uint16_t reg;
  if (decode(address, offset, slot, reg)) config_write(slot, reg, size, value);
}

uint32_t PciBus::occupied_locked() const {
  uint32_t mask = 0;
  for (size_t slot = 0; slot < kSlots; ++slot)
    if (slots_[slot].dev) mask |= 1u << slot;
  return mask;
}

Result<std::vector<uint8_t>> PciBus::save() const {
  StateWriter w;
  std::lock_guard lock(mu_);
  w.u32(occupied_locked());
  w.u32(address_);
  host_->config().save_state(w);
  return w.take();
}

Result<void> PciBus::restore(std::span<const uint8_t> data) {
  StateReader r(data, "pci-bus");
  std::lock_guard lock(mu_);
  const uint32_t occupied = TRY(r.u32("occupied slots"));
  if (occupied != occupied_locked())
    return r.corrupt(fmt::format("functions were in slots {:#010x}; this bus has them in {:#010x}", occupied,
                                 occupied_locked()));
  const uint32_t address = TRY(r.u32("CONFIG_ADDRESS"));
  if ((address & ~(kAddrEnable | 0x00FFFFFCu)) != 0)
    return r.corrupt(fmt::format("CONFIG_ADDRESS {:#x} has reserved bits set", address));
  const PciConfigSpace::State host = TRY(host_->config().read_state(r));
  RETURN_IF_ERROR(r.finish());
  address_ = address;
  host_->config().restore_state(host);
  // Two passes, so functions whose BARs traded places do not collide: first every BAR that moves
  // leaves its old place, then each is mapped at its new one.
  for (uint8_t slot = 0; slot < kSlots; ++slot) {
    Slot& s = slots_[slot];
    if (!s.dev) continue;
    const auto command = static_cast<uint16_t>(s.dev->config_read(PCI_COMMAND, 2));
    for (int bar = 0; bar < PciConfigSpace::kNumBars; ++bar) {
      BarState& b = s.bars[static_cast<size_t>(bar)];
      if (b.info.size == 0 || b.mapped == 0 || programmed_base_locked(s, bar, command) == b.mapped) continue;
      (void)(b.info.io ? io_bars_ : mmio_).remove(b.mapped);
      const uint64_t old = b.mapped;
      b.mapped = 0;
      s.dev->bar_moved(bar, old, 0);
    }
  }
  for (uint8_t slot = 0; slot < kSlots; ++slot)
    if (slots_[slot].dev) update_mappings_locked(slot);
  return Ok();
}

}  // namespace ringvm
