#include "devices/pci/msix.h"

#include <gtest/gtest.h>
#include <linux/pci_regs.h>
#include <unistd.h>

#include <array>
#include <cstring>

#include "base/state_codec.h"
#include "devices/pci/config_space.h"
#include "devices/pci/msi.h"
#include "devices/pci/testing/fake_interrupt_controller.h"

namespace ringvm {
namespace {

using testing::FakeInterruptController;

// Reads and clears an eventfd's counter; 0 when it was not signalled.
uint64_t drain(int fd) {
  uint64_t v = 0;
  if (::read(fd, &v, sizeof(v)) != sizeof(v)) return 0;
  return v;
}

void write32(MsixTable& t, uint64_t off, uint32_t v) {
  std::array<uint8_t, 4> b;
  std::memcpy(b.data(), &v, 4);
  t.table_write(off, b);
}

uint32_t read32(const MsixTable& t, uint64_t off) {
  std::array<uint8_t, 4> b{};
  t.table_read(off, b);
  uint32_t v;
  std::memcpy(&v, b.data(), 4);
  return v;
}

uint64_t pba(const MsixTable& t) {
  std::array<uint8_t, 8> b{};
  t.pba_read(0, b);
  uint64_t v;
  std::memcpy(&v, b.data(), 8);
  return v;
}

TEST(MsiRouter, KeepsIrqchipRoutesAndAddsMsi) {
  FakeInterruptController ic;
  MsiRouter router(ic);
  ASSERT_TRUE(router.install().ok());
  // 24 IOAPIC pins plus 16 PIC pins.
  ASSERT_EQ(ic.routing.size(), 40u);
  int pic = 0;
  for (const auto& e : ic.routing) {
    ASSERT_EQ(e.type, static_cast<uint32_t>(KVM_IRQ_ROUTING_IRQCHIP));
    if (e.u.irqchip.irqchip == KVM_IRQCHIP_IOAPIC) {
      EXPECT_EQ(e.u.irqchip.pin, e.gsi);
    } else {
      ++pic;
      EXPECT_LT(e.gsi, 16u);
      EXPECT_EQ(e.u.irqchip.pin, e.gsi % 8);
      EXPECT_EQ(e.u.irqchip.irqchip, e.gsi < 8 ? static_cast<uint32_t>(KVM_IRQCHIP_PIC_MASTER)
                                               : static_cast<uint32_t>(KVM_IRQCHIP_PIC_SLAVE));
    }
  }
  EXPECT_EQ(pic, 16);

  auto gsi = router.add_vector(42);
  ASSERT_TRUE(gsi.ok());
  EXPECT_EQ(*gsi, 24u);
  EXPECT_EQ(ic.irqfds.at(24), 42);
  ASSERT_TRUE(router.set_route(*gsi, 0xFEE01000, 0x4031).ok());
  const auto* r = ic.msi_route(24);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->u.msi.address_lo, 0xFEE01000u);
  EXPECT_EQ(r->u.msi.data, 0x4031u);
  EXPECT_EQ(ic.routing.size(), 41u);
  router.remove_vector(*gsi, 42);
  EXPECT_TRUE(ic.irqfds.empty());
  EXPECT_EQ(ic.msi_route(24), nullptr);
  EXPECT_EQ(*router.add_vector(43), 24u);  // freed GSIs are reused
}

TEST(MsiRouter, RunsOutOfGsis) {
  FakeInterruptController ic;
  MsiRouter router(ic, 24, 26);
  EXPECT_TRUE(router.add_vector(1).ok());
  EXPECT_TRUE(router.add_vector(2).ok());
  auto r = router.add_vector(3);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kResourceExhausted);
}

class MsixTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto t = MsixTable::create(3, router_);
    ASSERT_TRUE(t.ok()) << t.error().message();
    table_ = std::move(*t);
  }
  // Programs vector `v` like Linux: address, data, then unmask.
  void program(uint16_t v, uint32_t addr, uint32_t data, bool unmask = true) {
    write32(*table_, v * 16u + PCI_MSIX_ENTRY_LOWER_ADDR, addr);
    write32(*table_, v * 16u + PCI_MSIX_ENTRY_UPPER_ADDR, 0);
    write32(*table_, v * 16u + PCI_MSIX_ENTRY_DATA, data);
    if (unmask) write32(*table_, v * 16u + PCI_MSIX_ENTRY_VECTOR_CTRL, 0);
  }

  FakeInterruptController ic_;
  MsiRouter router_{ic_};
  std::unique_ptr<MsixTable> table_;
};

TEST_F(MsixTest, ResetStateAndSizes) {
  EXPECT_EQ(table_->message_control(), 2u);  // N-1, disabled, not masked
  EXPECT_EQ(table_->table_bytes(), 48u);
  EXPECT_EQ(table_->pba_bytes(), 8u);
  for (uint16_t v = 0; v < 3; ++v) {
    EXPECT_TRUE(table_->masked(v));
    EXPECT_EQ(read32(*table_, v * 16u + PCI_MSIX_ENTRY_VECTOR_CTRL), 1u);
  }
  EXPECT_EQ(ic_.irqfds.size(), 3u);
}

TEST_F(MsixTest, TableReadsBackAndReservedControlBitsStayZero) {
  program(1, 0xFEE00000, 0x41);
  EXPECT_EQ(read32(*table_, 16 + PCI_MSIX_ENTRY_LOWER_ADDR), 0xFEE00000u);
  EXPECT_EQ(read32(*table_, 16 + PCI_MSIX_ENTRY_DATA), 0x41u);
  write32(*table_, 16 + PCI_MSIX_ENTRY_VECTOR_CTRL, 0xFFFFFFFF);
  EXPECT_EQ(read32(*table_, 16 + PCI_MSIX_ENTRY_VECTOR_CTRL), 1u);
  // A QWORD access covers two registers.
  std::array<uint8_t, 8> q{};
  table_->table_read(16, q);
  uint64_t v;
  std::memcpy(&v, q.data(), 8);
  EXPECT_EQ(v, 0xFEE00000u);
  // Misaligned, odd-sized or out-of-range accesses do nothing and read zero.
  write32(*table_, 2, 0x12345678);
  EXPECT_EQ(read32(*table_, 0), 0u);
  EXPECT_EQ(read32(*table_, 48), 0u);
  std::array<uint8_t, 2> w{0xFF, 0xFF};
  table_->table_write(0, w);
  EXPECT_EQ(read32(*table_, 0), 0u);
}

TEST_F(MsixTest, FiresThroughEventfdWithRoute) {
  program(0, 0xFEE01000, 0x4025);
  table_->write_message_control(PCI_MSIX_FLAGS_ENABLE);
  EXPECT_TRUE(table_->enabled());
  const int commits = ic_.routing_commits;
  table_->fire(0);
  EXPECT_EQ(drain(table_->eventfd(0)), 1u);
  const auto* r = ic_.msi_route(table_->gsi(0));
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->u.msi.address_lo, 0xFEE01000u);
  EXPECT_EQ(r->u.msi.data, 0x4025u);
  // The route is programmed once; later fires are eventfd writes only.
  table_->fire(0);
  table_->fire(0);
  EXPECT_EQ(drain(table_->eventfd(0)), 2u);
  EXPECT_EQ(ic_.routing_commits, commits + 1);
  // New data re-routes on the next delivery.
  program(0, 0xFEE02000, 0x4026);
  table_->fire(0);
  EXPECT_EQ(drain(table_->eventfd(0)), 1u);
  EXPECT_EQ(ic_.msi_route(table_->gsi(0))->u.msi.data, 0x4026u);
  table_->fire(7);  // out of range: ignored
}

TEST_F(MsixTest, MaskedVectorSetsPendingAndDeliversOnUnmask) {
  program(2, 0xFEE00000, 0x30, /*unmask=*/false);
  table_->write_message_control(PCI_MSIX_FLAGS_ENABLE);
  table_->fire(2);
  EXPECT_EQ(drain(table_->eventfd(2)), 0u);
  EXPECT_TRUE(table_->pending(2));
  EXPECT_EQ(pba(*table_), 0b100u);
  write32(*table_, 2 * 16 + PCI_MSIX_ENTRY_VECTOR_CTRL, 0);
  EXPECT_EQ(drain(table_->eventfd(2)), 1u);
  EXPECT_FALSE(table_->pending(2));
  EXPECT_EQ(pba(*table_), 0u);
}

TEST_F(MsixTest, FunctionMaskAndDisableHoldVectors) {
  program(1, 0xFEE00000, 0x31);
  table_->write_message_control(PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL);
  EXPECT_EQ(table_->message_control(), 2u | PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL);
  table_->fire(1);
  EXPECT_EQ(drain(table_->eventfd(1)), 0u);
  EXPECT_EQ(pba(*table_), 0b10u);
  table_->write_message_control(PCI_MSIX_FLAGS_ENABLE);
  EXPECT_EQ(drain(table_->eventfd(1)), 1u);
  // Disabled: the vector is held pending too.
  table_->write_message_control(0);
  table_->fire(1);
  EXPECT_EQ(drain(table_->eventfd(1)), 0u);
  EXPECT_TRUE(table_->pending(1));
  // Table Size is read-only.
  table_->write_message_control(0x07FF);
  EXPECT_EQ(table_->message_control(), 2u);
}

TEST_F(MsixTest, CapabilityInConfigSpaceDrivesTheTable) {
  PciConfigSpace cfg(PciIds{0x1AF4, 0x1041, 1, 0x020000, 0, 0});
  ASSERT_TRUE(cfg.set_bar(0, PciBarInfo{0x4000, false, true, false}).ok());
  auto off = cfg.add_msix_capability(*table_, 0, 0x2000, 0, 0x3000);
  ASSERT_TRUE(off.ok());
  EXPECT_EQ(cfg.read(*off, 1), static_cast<uint32_t>(PCI_CAP_ID_MSIX));
  EXPECT_EQ(cfg.read(*off + 2u, 2), 2u);
  EXPECT_EQ(cfg.read(*off + 4u, 4), 0x2000u);
  EXPECT_EQ(cfg.read(*off + 8u, 4), 0x3000u);
  // Linux enables MSI-X with the function masked, then unmasks: a 16-bit write to control.
  cfg.write(static_cast<uint16_t>(*off + 2), 2, 0xFFFF);
  EXPECT_TRUE(table_->enabled());
  EXPECT_EQ(cfg.read(*off + 2u, 2), 2u | PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL);
  cfg.write(static_cast<uint16_t>(*off + 3), 1, PCI_MSIX_FLAGS_ENABLE >> 8);
  EXPECT_EQ(table_->message_control(), 2u | PCI_MSIX_FLAGS_ENABLE);
  // Table offset/BIR are read-only.
  cfg.write(static_cast<uint16_t>(*off + 4), 4, 0);
  EXPECT_EQ(cfg.read(*off + 4u, 4), 0x2000u);
}

TEST(MsixTable, RejectsBadSizesAndReleasesOnDestruction) {
  FakeInterruptController ic;
  MsiRouter router(ic);
  EXPECT_FALSE(MsixTable::create(0, router).ok());
  EXPECT_FALSE(MsixTable::create(2049, router).ok());
  {
    auto t = MsixTable::create(4, router);
    ASSERT_TRUE(t.ok());
    EXPECT_EQ(ic.irqfds.size(), 4u);
  }
  EXPECT_TRUE(ic.irqfds.empty());
}

std::vector<uint8_t> save(const MsixTable& t) {
  StateWriter w;
  t.save_state(w);
  return w.take();
}

Result<void> restore(MsixTable& t, std::span<const uint8_t> data) {
  StateReader r(data, "msix");
  auto s = TRY(t.read_state(r));
  RETURN_IF_ERROR(r.finish());
  return t.restore_state(s);
}

TEST_F(MsixTest, SaveRestoreRoundTripReprogramsEveryRoute) {
  program(0, 0xFEE01000, 0x41);
  program(1, 0xFEE02000, 0x42, /*unmask=*/false);
  table_->write_message_control(PCI_MSIX_FLAGS_ENABLE);
  table_->fire(1);  // masked: pending
  const auto bytes = save(*table_);

  FakeInterruptController ic;
  MsiRouter router(ic);
  auto t = MsixTable::create(3, router);
  ASSERT_TRUE(t.ok());
  MsixTable& fresh = **t;
  ASSERT_TRUE(restore(fresh, bytes).ok());
  EXPECT_EQ(save(fresh), bytes);
  for (uint64_t off = 0; off < table_->table_bytes(); off += 4)
    EXPECT_EQ(read32(fresh, off), read32(*table_, off)) << off;
  EXPECT_EQ(pba(fresh), 0b10u);
  EXPECT_EQ(fresh.message_control(), table_->message_control());
  // Every programmed vector has its route, from one commit; the untouched one has none.
  EXPECT_EQ(ic.routing_commits, 1);
  ASSERT_NE(ic.msi_route(fresh.gsi(0)), nullptr);
  EXPECT_EQ(ic.msi_route(fresh.gsi(0))->u.msi.address_lo, 0xFEE01000u);
  EXPECT_EQ(ic.msi_route(fresh.gsi(0))->u.msi.data, 0x41u);
  ASSERT_NE(ic.msi_route(fresh.gsi(1)), nullptr);
  EXPECT_EQ(ic.msi_route(fresh.gsi(1))->u.msi.data, 0x42u);
  EXPECT_EQ(ic.msi_route(fresh.gsi(2)), nullptr);
  // Firing needs no more routing; the pending vector goes out on unmask.
  fresh.fire(0);
  EXPECT_EQ(drain(fresh.eventfd(0)), 1u);
  EXPECT_EQ(ic.routing_commits, 1);
  write32(fresh, 16 + PCI_MSIX_ENTRY_VECTOR_CTRL, 0);
  EXPECT_EQ(drain(fresh.eventfd(1)), 1u);
  EXPECT_EQ(pba(fresh), 0u);
}

TEST_F(MsixTest, RestoreRefusesBadStatesAndChangesNothing) {
  program(0, 0xFEE01000, 0x41);
  table_->write_message_control(PCI_MSIX_FLAGS_ENABLE);
  const auto good = save(*table_);
  // Layout: count u16, enable, mask, then per vector 4 x u32 and a pending bool (17 bytes).
  ASSERT_EQ(good.size(), 4u + 3 * 17);
  FakeInterruptController ic;
  MsiRouter router(ic);
  auto t = MsixTable::create(3, router);
  ASSERT_TRUE(t.ok());
  MsixTable& fresh = **t;
  const auto before = save(fresh);
  const auto refused = [&](std::vector<uint8_t> bytes, const char* why) {
    auto r = restore(fresh, bytes);
    ASSERT_FALSE(r.ok()) << why;
    EXPECT_EQ(r.error().code, ErrorCode::kCorrupt) << why << ": " << r.error().message();
    EXPECT_EQ(save(fresh), before) << why;
    EXPECT_EQ(ic.routing_commits, 0) << why;
  };
  auto b = good;
  b[0] = 4;
  refused(b, "another vector count");
  b = good;
  b[2] = 2;
  refused(b, "bad bool");
  b = good;
  b[4 + 12] = 0x02;  // vector 0's Vector Control: a reserved bit
  refused(b, "reserved control bit");
  for (size_t n = 0; n < good.size(); ++n)
    refused({good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n)}, "truncated");
  b = good;
  b.push_back(0);
  refused(b, "trailing byte");
}

}  // namespace
}  // namespace ringvm
