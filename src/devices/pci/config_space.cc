#include "devices/pci/config_space.h"

#include <linux/pci_regs.h>

#include <bit>
#include <cstring>

#include "base/state_codec.h"
#include "devices/pci/msix.h"

namespace ringvm {
namespace {

// Command bits a guest may set: decode enables, bus mastering, parity/SERR reporting, INTx off.
constexpr uint16_t kCommandWritable = PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER |
                                      PCI_COMMAND_PARITY | PCI_COMMAND_SERR | PCI_COMMAND_INTX_DISABLE;
constexpr uint16_t kBarFirst = PCI_BASE_ADDRESS_0;  // 0x10
constexpr uint16_t kBarEnd = PCI_BASE_ADDRESS_5 + 4;  // 0x28
constexpr uint32_t kIoAddressMask = 0xFFFC;         // I/O space is 64 KiB; bits 1:0 are type
constexpr uint32_t kMemLowMask = 0xFFFFFFF0;        // bits 3:0 are type and prefetchable

bool valid_access(uint16_t offset, uint8_t size) {
  return (size == 1 || size == 2 || size == 4) && offset % size == 0;
}

}  // namespace

PciConfigSpace::PciConfigSpace(const PciIds& ids) {
  auto put16 = [this](size_t off, uint16_t v) {
    regs_[off] = static_cast<uint8_t>(v);
    regs_[off + 1] = static_cast<uint8_t>(v >> 8);
  };
  put16(PCI_VENDOR_ID, ids.vendor);
  put16(PCI_DEVICE_ID, ids.device);
  regs_[PCI_REVISION_ID] = ids.revision;
  regs_[PCI_CLASS_PROG] = static_cast<uint8_t>(ids.class_code);
  regs_[PCI_CLASS_DEVICE] = static_cast<uint8_t>(ids.class_code >> 8);
  regs_[PCI_CLASS_DEVICE + 1] = static_cast<uint8_t>(ids.class_code >> 16);
  regs_[PCI_HEADER_TYPE] = PCI_HEADER_TYPE_NORMAL;
  put16(PCI_SUBSYSTEM_VENDOR_ID, ids.subsystem_vendor);
  put16(PCI_SUBSYSTEM_ID, ids.subsystem_id);
  wmask_[PCI_COMMAND] = static_cast<uint8_t>(kCommandWritable);
  wmask_[PCI_COMMAND + 1] = static_cast<uint8_t>(kCommandWritable >> 8);
  wmask_[PCI_CACHE_LINE_SIZE] = 0xFF;
  wmask_[PCI_LATENCY_TIMER] = 0xFF;
  wmask_[PCI_INTERRUPT_LINE] = 0xFF;  // scratch for the OS; we never use its value
}

Result<void> PciConfigSpace::set_bar(int bar, const PciBarInfo& info) {
  const int slots = info.is_64bit ? 2 : 1;
  if (bar < 0 || bar + slots > kNumBars)
    return make_error(ErrorCode::kInvalidArgument, "PCI BAR {}: index out of range", bar);
  for (int i = bar; i < bar + slots; ++i) {
    const Bar& b = bars_[static_cast<size_t>(i)];
    if (b.info.size != 0 || b.upper_half)
      return make_error(ErrorCode::kInvalidArgument, "PCI BAR {}: slot {} already in use", bar, i);
  }
  if (!std::has_single_bit(info.size) || info.size < (info.io ? 4u : 16u) || (info.io && info.size > 256) ||
      (!info.is_64bit && !info.io && info.size > (uint64_t{1} << 31)))
    return make_error(ErrorCode::kInvalidArgument, "PCI BAR {}: size {:#x} is not a valid {} BAR size", bar,
                      info.size, info.io ? "I/O" : "memory");
  if (info.io && (info.is_64bit || info.prefetchable))
    return make_error(ErrorCode::kInvalidArgument, "PCI BAR {}: an I/O BAR is neither 64-bit nor prefetchable",
                      bar);
  bars_[static_cast<size_t>(bar)].info = info;
  if (info.is_64bit) bars_[static_cast<size_t>(bar) + 1].upper_half = true;
  return Ok();
}

void PciConfigSpace::set_interrupt_pin(uint8_t pin) { regs_[PCI_INTERRUPT_PIN] = pin; }

Result<uint8_t> PciConfigSpace::add_capability(std::span<const uint8_t> body, std::span<const uint8_t> wmask) {
  if (body.size() < 2 || (!wmask.empty() && wmask.size() != body.size()))
    return make_error(ErrorCode::kInvalidArgument, "PCI capability: bad body ({} bytes, mask {} bytes)",
                      body.size(), wmask.size());
  if (body.size() > kSize - next_cap_)
    return make_error(ErrorCode::kResourceExhausted, "PCI capability {:#x}: no room left in config space",
                      body[0]);
  const auto off = static_cast<uint8_t>(next_cap_);
  std::memcpy(&regs_[off], body.data(), body.size());
  regs_[off + 1u] = 0;
  if (!wmask.empty()) std::memcpy(&wmask_[off], wmask.data(), wmask.size());
  wmask_[off] = wmask_[off + 1u] = 0;  // ID and next pointer are never writable
  if (last_cap_ == 0) {
    regs_[PCI_CAPABILITY_LIST] = off;
    regs_[PCI_STATUS] |= PCI_STATUS_CAP_LIST;
  } else {
    regs_[last_cap_ + 1u] = off;
  }
  last_cap_ = off;
  next_cap_ = static_cast<uint16_t>((off + body.size() + 3) & ~size_t{3});
  return off;
}

Result<uint8_t> PciConfigSpace::add_msix_capability(MsixTable& table, int table_bar, uint32_t table_offset,
                                                    int pba_bar, uint32_t pba_offset) {
  if (msix_ != nullptr) return make_error(ErrorCode::kInvalidArgument, "PCI: MSI-X capability added twice");
  if (table_bar < 0 || table_bar >= kNumBars || pba_bar < 0 || pba_bar >= kNumBars || table_offset % 8 != 0 ||
      pba_offset % 8 != 0)
    return make_error(ErrorCode::kInvalidArgument, "PCI MSI-X: table/PBA location must be 8-byte aligned in a BAR");
  const uint16_t control = table.message_control();
  const uint32_t table_reg = table_offset | static_cast<uint32_t>(table_bar);
  const uint32_t pba_reg = pba_offset | static_cast<uint32_t>(pba_bar);
  uint8_t body[PCI_CAP_MSIX_SIZEOF] = {PCI_CAP_ID_MSIX, 0, static_cast<uint8_t>(control),
                                       static_cast<uint8_t>(control >> 8)};
  std::memcpy(&body[PCI_MSIX_TABLE], &table_reg, 4);
  std::memcpy(&body[PCI_MSIX_PBA], &pba_reg, 4);
  uint8_t mask[PCI_CAP_MSIX_SIZEOF] = {};
  mask[PCI_MSIX_FLAGS + 1] = (PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL) >> 8;
  const uint8_t off = TRY(add_capability(body, mask));
  msix_ = &table;
  msix_cap_ = off;
  return off;
}

uint32_t PciConfigSpace::read(uint16_t offset, uint8_t size) const {
  if (!valid_access(offset, size)) return 0xFFFFFFFF;
  if (offset >= kSize) return 0;
  const uint32_t dword = read_dword(static_cast<uint16_t>(offset & ~3u));
  const uint32_t shifted = dword >> ((offset & 3u) * 8);
  return size == 4 ? shifted : shifted & ((1u << (size * 8)) - 1);
}

void PciConfigSpace::write(uint16_t offset, uint8_t size, uint32_t value) {
  if (!valid_access(offset, size) || offset >= kSize) return;
  const auto aligned = static_cast<uint16_t>(offset & ~3u);
  const uint32_t shift = (offset & 3u) * 8;
  const uint32_t bytes = size == 4 ? 0xFFFFFFFFu : ((1u << (size * 8)) - 1) << shift;
  // Sub-DWORD writes merge with the current register, as the hardware's byte enables do.
  write_dword(aligned, (read_dword(aligned) & ~bytes) | ((value << shift) & bytes));
}

uint16_t PciConfigSpace::command() const {
  return static_cast<uint16_t>(regs_[PCI_COMMAND] | (regs_[PCI_COMMAND + 1] << 8));
}

uint32_t PciConfigSpace::read_dword(uint16_t aligned) const {
  if (aligned >= kBarFirst && aligned < kBarEnd) return bar_register((aligned - kBarFirst) / 4);
  uint32_t v;
  std::memcpy(&v, &regs_[aligned], 4);
  return v;
}

void PciConfigSpace::write_dword(uint16_t aligned, uint32_t value) {
  if (aligned >= kBarFirst && aligned < kBarEnd) {
    write_bar_register((aligned - kBarFirst) / 4, value);
    return;
  }
  for (size_t i = 0; i < 4; ++i) {
    const auto b = static_cast<uint8_t>(value >> (i * 8));
    regs_[aligned + i] = static_cast<uint8_t>((regs_[aligned + i] & ~wmask_[aligned + i]) | (b & wmask_[aligned + i]));
  }
  if (msix_ != nullptr && aligned == msix_cap_) {
    const uint16_t flags = static_cast<uint16_t>(regs_[msix_cap_ + PCI_MSIX_FLAGS] |
                                                 (regs_[msix_cap_ + PCI_MSIX_FLAGS + 1] << 8));
    msix_->write_message_control(flags);
    const uint16_t now = msix_->message_control();
    regs_[msix_cap_ + PCI_MSIX_FLAGS] = static_cast<uint8_t>(now);
    regs_[msix_cap_ + PCI_MSIX_FLAGS + 1] = static_cast<uint8_t>(now >> 8);
  }
}

uint32_t PciConfigSpace::bar_register(int slot) const {
  const Bar& b = bars_[static_cast<size_t>(slot)];
  if (b.upper_half) return static_cast<uint32_t>(bars_[static_cast<size_t>(slot) - 1].address >> 32);
  if (b.info.size == 0) return 0;
  if (b.info.io) return (static_cast<uint32_t>(b.address) & kIoAddressMask) | PCI_BASE_ADDRESS_SPACE_IO;
  uint32_t v = static_cast<uint32_t>(b.address) & kMemLowMask;
  if (b.info.is_64bit) v |= PCI_BASE_ADDRESS_MEM_TYPE_64;
  if (b.info.prefetchable) v |= PCI_BASE_ADDRESS_MEM_PREFETCH;
  return v;
}

void PciConfigSpace::write_bar_register(int slot, uint32_t value) {
  Bar& b = bars_[static_cast<size_t>(slot)];
  if (b.upper_half) {
    Bar& low = bars_[static_cast<size_t>(slot) - 1];
    low.address = ((uint64_t{value} << 32) | (low.address & 0xFFFFFFFF)) & ~(low.info.size - 1);
    return;
  }
  if (b.info.size == 0) return;
  const uint32_t type_mask = b.info.io ? kIoAddressMask : kMemLowMask;
  // Address bits below the size are hard-wired to zero: that is how the guest sizes the BAR.
  b.address = ((b.address & ~uint64_t{0xFFFFFFFF}) | (value & type_mask)) & ~(b.info.size - 1);
}

void PciConfigSpace::save_state(StateWriter& w) const {
  w.raw(regs_);
  for (const Bar& b : bars_) w.u64(b.address);
}

Result<PciConfigSpace::State> PciConfigSpace::read_state(StateReader& r) const {
  State s;
  RETURN_IF_ERROR(r.raw("PCI config space", s.regs));
  for (auto& a : s.bar_addresses) a = TRY(r.u64("PCI BAR address"));
  for (size_t i = 0; i < kSize; ++i) {
    if (((s.regs[i] ^ regs_[i]) & ~wmask_[i]) != 0)
      return r.corrupt(
          fmt::format("PCI config space byte {:#x} is {:#04x}; its read-only bits are {:#04x} on this "
                      "function (another device?)",
                      i, s.regs[i], regs_[i] & ~wmask_[i]));
  }
  for (size_t i = 0; i < kNumBars; ++i) {
    const Bar& b = bars_[i];
    const uint64_t a = s.bar_addresses[i];
    if (b.info.size == 0 || b.upper_half) {
      if (a != 0)
        return r.corrupt(fmt::format("PCI BAR {} has address {:#x} but the function has no BAR there", i, a));
      continue;
    }
    const uint64_t limit = b.info.io ? kIoAddressMask : b.info.is_64bit ? ~uint64_t{0} : uint64_t{0xFFFFFFFF};
    if ((a & (b.info.size - 1)) != 0 || a > limit)
      return r.corrupt(fmt::format("PCI BAR {} address {:#x} cannot be programmed into a {:#x}-byte {} BAR",
                                   i, a, b.info.size,
                                   b.info.io         ? "I/O"
                                   : b.info.is_64bit ? "64-bit"
                                                     : "32-bit"));
  }
  return s;
}

void PciConfigSpace::restore_state(const State& s) {
  regs_ = s.regs;
  for (size_t i = 0; i < kNumBars; ++i) bars_[i].address = s.bar_addresses[i];
  if (msix_ != nullptr) {
    const uint16_t now = msix_->message_control();
    regs_[msix_cap_ + PCI_MSIX_FLAGS] = static_cast<uint8_t>(now);
    regs_[msix_cap_ + PCI_MSIX_FLAGS + 1] = static_cast<uint8_t>(now >> 8);
  }
}

}  // namespace ringvm
