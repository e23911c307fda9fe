#include "devices/pci/config_space.h"

#include <gtest/gtest.h>
#include <linux/pci_regs.h>

#include <vector>

#include "base/state_codec.h"

namespace ringvm {
namespace {

PciConfigSpace make() { return PciConfigSpace(PciIds{0x1AF4, 0x1042, 1, 0x010000, 0x1AF4, 0x0002}); }

TEST(PciConfigSpace, IdentityRegistersAreReadOnly) {
  auto cfg = make();
  EXPECT_EQ(cfg.read(PCI_VENDOR_ID, 4), 0x10421AF4u);
  EXPECT_EQ(cfg.read(PCI_CLASS_REVISION, 4), 0x01000001u);
  EXPECT_EQ(cfg.read(PCI_SUBSYSTEM_VENDOR_ID, 4), 0x00021AF4u);
  EXPECT_EQ(cfg.read(PCI_DEVICE_ID, 2), 0x1042u);
  EXPECT_EQ(cfg.read(PCI_REVISION_ID, 1), 1u);
  cfg.write(PCI_VENDOR_ID, 4, 0x12345678);
  cfg.write(PCI_CLASS_REVISION, 4, 0xFFFFFFFF);
  cfg.write(PCI_HEADER_TYPE, 1, 0x80);
  EXPECT_EQ(cfg.read(PCI_VENDOR_ID, 4), 0x10421AF4u);
  EXPECT_EQ(cfg.read(PCI_CLASS_REVISION, 4), 0x01000001u);
  EXPECT_EQ(cfg.read(PCI_HEADER_TYPE, 1), 0u);
}

TEST(PciConfigSpace, CommandKeepsOnlyWritableBits) {
  auto cfg = make();
  cfg.write(PCI_COMMAND, 2, 0xFFFF);
  EXPECT_EQ(cfg.command(), PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER | PCI_COMMAND_PARITY |
                               PCI_COMMAND_SERR | PCI_COMMAND_INTX_DISABLE);
  // A DWORD write at 0x04 also hits status, which has no writable bits here.
  cfg.write(PCI_COMMAND, 4, 0xFFFF0002);
  EXPECT_EQ(cfg.read(PCI_COMMAND, 4), 0x00000002u);
  cfg.write(PCI_INTERRUPT_LINE, 1, 0x2B);
  EXPECT_EQ(cfg.read(PCI_INTERRUPT_LINE, 1), 0x2Bu);
}

TEST(PciConfigSpace, MisalignedOrOddSizedAccessesAreRejected) {
  auto cfg = make();
  EXPECT_EQ(cfg.read(1, 2), 0xFFFFFFFFu);
  EXPECT_EQ(cfg.read(2, 4), 0xFFFFFFFFu);
  EXPECT_EQ(cfg.read(0, 3), 0xFFFFFFFFu);
  EXPECT_EQ(cfg.read(0x100, 4), 0u);  // extended space: nothing there
  cfg.write(PCI_COMMAND + 1, 2, 0xFFFF);
  EXPECT_EQ(cfg.command(), 0u);
}

TEST(PciConfigSpace, MemoryBarSizing32) {
  auto cfg = make();
  ASSERT_TRUE(cfg.set_bar(1, PciBarInfo{0x1000, false, false, true}).ok());
  const uint16_t reg = PCI_BASE_ADDRESS_1;
  EXPECT_EQ(cfg.read(reg, 4), PCI_BASE_ADDRESS_MEM_PREFETCH);
  cfg.write(reg, 4, 0xFFFFFFFF);
  EXPECT_EQ(cfg.read(reg, 4), 0xFFFFF000u | PCI_BASE_ADDRESS_MEM_PREFETCH);
  cfg.write(reg, 4, 0xC0001234);  // low bits below the size are dropped
  EXPECT_EQ(cfg.read(reg, 4), 0xC0001000u | PCI_BASE_ADDRESS_MEM_PREFETCH);
  EXPECT_EQ(cfg.bar_address(1), 0xC0001000u);
  // A byte write merges into the register.
  cfg.write(reg + 3, 1, 0xD0);
  EXPECT_EQ(cfg.bar_address(1), 0xD0001000u);
  // Unused BARs stay zero whatever is written.
  cfg.write(PCI_BASE_ADDRESS_0, 4, 0xFFFFFFFF);
  EXPECT_EQ(cfg.read(PCI_BASE_ADDRESS_0, 4), 0u);
}

TEST(PciConfigSpace, MemoryBarSizing64) {
  auto cfg = make();
  ASSERT_TRUE(cfg.set_bar(4, PciBarInfo{0x8000, false, true, false}).ok());
  cfg.write(PCI_BASE_ADDRESS_4, 4, 0xFFFFFFFF);
  cfg.write(PCI_BASE_ADDRESS_5, 4, 0xFFFFFFFF);
  EXPECT_EQ(cfg.read(PCI_BASE_ADDRESS_4, 4), 0xFFFF8000u | PCI_BASE_ADDRESS_MEM_TYPE_64);
  EXPECT_EQ(cfg.read(PCI_BASE_ADDRESS_5, 4), 0xFFFFFFFFu);
  cfg.write(PCI_BASE_ADDRESS_4, 4, 0x40000000);
  cfg.write(PCI_BASE_ADDRESS_5, 4, 0x00000001);
  EXPECT_EQ(cfg.bar_address(4), 0x1'4000'0000u);
  EXPECT_EQ(cfg.read(PCI_BASE_ADDRESS_5, 4), 1u);
}

TEST(PciConfigSpace, HugeSixtyFourBitBarMasksTheUpperHalfToo) {
  auto cfg = make();
  ASSERT_TRUE(cfg.set_bar(0, PciBarInfo{uint64_t{1} << 33, false, true, true}).ok());
  cfg.write(PCI_BASE_ADDRESS_0, 4, 0xFFFFFFFF);
  cfg.write(PCI_BASE_ADDRESS_1, 4, 0xFFFFFFFF);
  EXPECT_EQ(cfg.read(PCI_BASE_ADDRESS_0, 4), 0x0000000Cu);
  EXPECT_EQ(cfg.read(PCI_BASE_ADDRESS_1, 4), 0xFFFFFFFEu);
}

TEST(PciConfigSpace, IoBarSizing) {
  auto cfg = make();
  ASSERT_TRUE(cfg.set_bar(0, PciBarInfo{0x20, true, false, false}).ok());
  cfg.write(PCI_BASE_ADDRESS_0, 4, 0xFFFFFFFF);
  EXPECT_EQ(cfg.read(PCI_BASE_ADDRESS_0, 4), 0x0000FFE1u);
  cfg.write(PCI_BASE_ADDRESS_0, 4, 0xC040);
  EXPECT_EQ(cfg.read(PCI_BASE_ADDRESS_0, 4), 0xC041u);
}

TEST(PciConfigSpace, RejectsBadBars) {
  auto cfg = make();
  EXPECT_FALSE(cfg.set_bar(5, PciBarInfo{0x1000, false, true, false}).ok());  // no upper half
  EXPECT_FALSE(cfg.set_bar(0, PciBarInfo{0x1800, false, false, false}).ok());  // not a power of two
  EXPECT_FALSE(cfg.set_bar(0, PciBarInfo{8, false, false, false}).ok());       // below 16 bytes
  EXPECT_FALSE(cfg.set_bar(0, PciBarInfo{0x200, true, false, false}).ok());    // I/O above 256
  EXPECT_FALSE(cfg.set_bar(6, PciBarInfo{0x1000, false, false, false}).ok());
  ASSERT_TRUE(cfg.set_bar(2, PciBarInfo{0x1000, false, true, false}).ok());
  EXPECT_FALSE(cfg.set_bar(3, PciBarInfo{0x1000, false, false, false}).ok());  // upper half of BAR 2
  EXPECT_FALSE(cfg.set_bar(2, PciBarInfo{0x1000, false, false, false}).ok());
}

TEST(PciConfigSpace, CapabilityChainWalks) {
  auto cfg = make();
  EXPECT_EQ(cfg.read(PCI_STATUS, 2) & PCI_STATUS_CAP_LIST, 0u);
  const std::vector<uint8_t> a = {0x09, 0xEE, 5, 1, 2};  // vendor-specific, 5 bytes
  const std::vector<uint8_t> b = {0x09, 0xEE, 8, 3, 0, 0, 0, 0};
  const std::vector<uint8_t> b_mask = {0, 0, 0, 0, 0xFF, 0x0F, 0, 0};
  auto off_a = cfg.add_capability(a);
  auto off_b = cfg.add_capability(b, b_mask);
  ASSERT_TRUE(off_a.ok());
  ASSERT_TRUE(off_b.ok());
  EXPECT_NE(cfg.read(PCI_STATUS, 2) & PCI_STATUS_CAP_LIST, 0u);

  std::vector<uint32_t> walked;
  for (uint32_t p = cfg.read(PCI_CAPABILITY_LIST, 1); p != 0; p = cfg.read(static_cast<uint16_t>(p + 1), 1)) {
    EXPECT_EQ(p % 4, 0u);
    walked.push_back(p);
    ASSERT_LT(walked.size(), 10u);
  }
  EXPECT_EQ(walked, (std::vector<uint32_t>{*off_a, *off_b}));
  EXPECT_EQ(cfg.read(*off_a + 2u, 1), 5u);
  // Writable bits follow the mask; ID and next pointer never change.
  cfg.write(*off_b, 4, 0xFFFFFFFF);
  cfg.write(static_cast<uint16_t>(*off_b + 4), 4, 0xFFFFFFFF);
  EXPECT_EQ(cfg.read(*off_b, 1), 0x09u);
  EXPECT_EQ(cfg.read(*off_b + 1u, 1), 0u);
  EXPECT_EQ(cfg.read(*off_b + 3u, 1), 3u);
  EXPECT_EQ(cfg.read(*off_b + 4u, 4), 0x0FFFu);
  cfg.write(static_cast<uint16_t>(*off_a + 4), 1, 0x77);
  EXPECT_EQ(cfg.read(*off_a + 4u, 1), 2u);
}

TEST(PciConfigSpace, CapabilitiesRunOutOfRoom) {
  auto cfg = make();
  std::vector<uint8_t> big(90, 0);
  big[0] = 0x09;
  EXPECT_TRUE(cfg.add_capability(big).ok());
  EXPECT_TRUE(cfg.add_capability(big).ok());
  EXPECT_FALSE(cfg.add_capability(big).ok());
}

// A function with a 64-bit memory BAR 0, a 32-bit BAR 2, an I/O BAR 4 and a capability with
// writable bytes.
PciConfigSpace make_with_bars(uint16_t device = 0x1042) {
  PciConfigSpace cfg(PciIds{0x1AF4, device, 1, 0x010000, 0x1AF4, 0x0002});
  EXPECT_TRUE(cfg.set_bar(0, PciBarInfo{0x4000, false, true, false}).ok());
  EXPECT_TRUE(cfg.set_bar(2, PciBarInfo{0x1000, false, false, false}).ok());
  EXPECT_TRUE(cfg.set_bar(4, PciBarInfo{0x20, true, false, false}).ok());
  cfg.set_interrupt_pin(1);
  const std::vector<uint8_t> body = {0x09, 0, 8, 1, 2, 3, 4, 5};
  const std::vector<uint8_t> mask = {0, 0, 0, 0, 0xFF, 0xFF, 0, 0};
  EXPECT_TRUE(cfg.add_capability(body, mask).ok());
  return cfg;
}

std::vector<uint8_t> save(const PciConfigSpace& cfg) {
  StateWriter w;
  cfg.save_state(w);
  return w.take();
}

Result<void> restore(PciConfigSpace& cfg, std::span<const uint8_t> data) {
  StateReader r(data, "cfg");
  auto s = TRY(cfg.read_state(r));
  RETURN_IF_ERROR(r.finish());
  cfg.restore_state(s);
  return Ok();
}

TEST(PciConfigSpace, SaveRestoreRoundTrip) {
  auto cfg = make_with_bars();
  cfg.write(PCI_BASE_ADDRESS_0, 4, 0xC0004000);
  cfg.write(PCI_BASE_ADDRESS_1, 4, 0x1);
  cfg.write(PCI_BASE_ADDRESS_2, 4, 0xD0000000);
  cfg.write(PCI_BASE_ADDRESS_4, 4, 0xC041);
  cfg.write(PCI_COMMAND, 2, PCI_COMMAND_MEMORY | PCI_COMMAND_IO | PCI_COMMAND_MASTER);
  cfg.write(PCI_INTERRUPT_LINE, 1, 11);
  cfg.write(0x44, 2, 0xBEEF);
  const auto bytes = save(cfg);
  ASSERT_EQ(bytes.size(), 256u + 6 * 8);

  auto fresh = make_with_bars();
  ASSERT_TRUE(restore(fresh, bytes).ok());
  for (uint16_t off = 0; off < 256; off += 4) EXPECT_EQ(fresh.read(off, 4), cfg.read(off, 4)) << off;
  EXPECT_EQ(fresh.bar_address(0), 0x1'C000'4000u);
  EXPECT_EQ(fresh.bar_address(2), 0xD000'0000u);
  EXPECT_EQ(fresh.bar_address(4), 0xC040u);
  EXPECT_EQ(fresh.command(), cfg.command());
  EXPECT_EQ(save(fresh), bytes);
  // Sizing still works on the restored BARs.
  fresh.write(PCI_BASE_ADDRESS_2, 4, 0xFFFFFFFF);
  EXPECT_EQ(fresh.read(PCI_BASE_ADDRESS_2, 4), 0xFFFFF000u);
}

TEST(PciConfigSpace, RestoreRefusesAnotherFunctionOrImpossibleBars) {
  auto cfg = make_with_bars();
  cfg.write(PCI_BASE_ADDRESS_2, 4, 0xD0000000);
  const auto good = save(cfg);
  auto fresh = make_with_bars();
  const auto before = save(fresh);
  const auto refused = [&](std::vector<uint8_t> bytes, const char* why) {
    auto r = restore(fresh, bytes);
    ASSERT_FALSE(r.ok()) << why;
    EXPECT_EQ(r.error().code, ErrorCode::kCorrupt) << why << ": " << r.error().message();
    EXPECT_EQ(save(fresh), before) << why;
  };
  const auto bar = [&](size_t i, uint64_t a) {
    auto b = good;
    for (size_t k = 0; k < 8; ++k) b[256 + 8 * i + k] = static_cast<uint8_t>(a >> (8 * k));
    return b;
  };
  auto other = make_with_bars(0x1043);
  refused(save(other), "another device ID");
  auto b = good;
  b[0x46] ^= 1;  // a read-only byte of the capability
  refused(b, "read-only capability byte");
  refused(bar(2, 0xD0000800), "misaligned BAR");
  refused(bar(2, 0x1'0000'0000), "32-bit BAR above 4 GiB");
  refused(bar(4, 0x1'0000), "I/O BAR above 64 KiB");
  refused(bar(1, 0x1000), "the upper half of a 64-bit BAR");
  refused(bar(3, 0x1000), "no BAR there");
  for (size_t n = 0; n < good.size(); n += 7)
    refused({good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n)}, "truncated");
  b = good;
  b.push_back(0);
  refused(b, "trailing byte");
  EXPECT_TRUE(restore(fresh, bar(0, 0xF'FFFF'C000)).ok()) << "a 64-bit BAR anywhere";
}

}  // namespace
}  // namespace ringvm
