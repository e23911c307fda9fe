#include "devices/pci/config_space.h"

#include <gtest/gtest.h>
#include <linux/pci_regs.h>

#include <vector>

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

}  // namespace
}  // namespace ringvm
