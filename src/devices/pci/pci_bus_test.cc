#include "devices/pci/pci_bus.h"

#include <gtest/gtest.h>
#include <linux/pci_regs.h>

#include <array>
#include <cstring>
#include <tuple>
#include <vector>

#include "base/state_codec.h"
#include "devices/pci/config_space.h"
#include "devices/pci/testing/test_pci_bus.h"

namespace ringvm {
namespace {

constexpr uint16_t kCf8 = 0xCF8;
constexpr uint16_t kCfc = 0xCFC;

// A function with a 64-bit BAR 0, a 32-bit BAR 2 and (optionally) an I/O BAR 3.
class TestFunction final : public PciDevice {
 public:
  explicit TestFunction(bool with_io = false) : cfg_(PciIds{0x1234, 0x5678, 2, 0xFF0000, 0, 0}) {
    EXPECT_TRUE(cfg_.set_bar(0, PciBarInfo{0x4000, false, true, false}).ok());
    EXPECT_TRUE(cfg_.set_bar(2, PciBarInfo{0x1000, false, false, false}).ok());
    if (with_io) {
      EXPECT_TRUE(cfg_.set_bar(3, PciBarInfo{0x20, true, false, false}).ok());
    }
    cfg_.set_interrupt_pin(1);
  }
  std::string_view name() const override { return "test-fn"; }
  uint32_t config_read(uint16_t offset, uint8_t size) override { return cfg_.read(offset, size); }
  void config_write(uint16_t offset, uint8_t size, uint32_t value) override { cfg_.write(offset, size, value); }
  void bar_read(int bar, uint64_t offset, std::span<uint8_t> data) override {
    reads.emplace_back(bar, offset);
    std::memset(data.data(), 0x40 + bar, data.size());
  }
  void bar_write(int bar, uint64_t offset, std::span<const uint8_t>) override { writes.emplace_back(bar, offset); }
  void bar_moved(int bar, uint64_t old_base, uint64_t new_base) override { moves.emplace_back(bar, old_base, new_base); }
  void attached(uint8_t slot, uint32_t gsi) override {
    attached_slot = slot;
    attached_gsi = gsi;
  }

  PciConfigSpace& cfg() { return cfg_; }
  std::vector<std::pair<int, uint64_t>> reads, writes;
  std::vector<std::tuple<int, uint64_t, uint64_t>> moves;
  int attached_slot = -1;
  uint32_t attached_gsi = 0;

 private:
  PciConfigSpace cfg_;
};

class PciBusTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PciBusConfig cfg;
    cfg.mmio_base = 0xC000'0000;
    cfg.mmio_size = 0x10'0000;
    cfg.io_base = 0xC000;
    cfg.io_size = 0x1000;
    cfg.intx_gsi = testing::test_intx_gsi;
    auto bus = PciBus::create(pio_, mmio_, cfg);
    ASSERT_TRUE(bus.ok()) << bus.error().message();
    bus_ = *bus;
  }

  void select(uint8_t slot, uint8_t reg, uint8_t function = 0, uint8_t busnr = 0, bool enable = true) {
    const uint32_t a = (enable ? 0x80000000u : 0) | (uint32_t{busnr} << 16) | (uint32_t{slot} << 11) |
                       (uint32_t{function} << 8) | reg;
    out(kCf8, a, 4);
  }
  void out(uint16_t port, uint32_t v, size_t size) {
    std::array<uint8_t, 4> b{};
    std::memcpy(b.data(), &v, 4);
    pio_.write(port, std::span<const uint8_t>(b.data(), size));
  }
  uint32_t in(uint16_t port, size_t size) {
    std::array<uint8_t, 4> b{};
    pio_.read(port, std::span<uint8_t>(b.data(), size));
    uint32_t v = 0;
    std::memcpy(&v, b.data(), size);
    return v;
  }
  uint32_t cfg_read(uint8_t slot, uint8_t reg) {
    select(slot, reg);
    return in(kCfc, 4);
  }
  void cfg_write(uint8_t slot, uint8_t reg, uint32_t v) {
    select(slot, reg);
    out(kCfc, v, 4);
  }
  bool mmio_hits(uint64_t addr) {
    std::array<uint8_t, 4> b{};
    return mmio_.read(addr, b);
  }

  Bus pio_{"pio"};
  Bus mmio_{"mmio"};
  std::shared_ptr<PciBus> bus_;
};

TEST_F(PciBusTest, HostBridgeAtSlotZero) {
  EXPECT_EQ(cfg_read(0, PCI_VENDOR_ID), 0x0D578086u);
  EXPECT_EQ(cfg_read(0, PCI_CLASS_REVISION) >> 8, 0x060000u);
  EXPECT_EQ(cfg_read(0, PCI_HEADER_TYPE & ~3) >> 16 & 0x7F, 0u);
}

TEST_F(PciBusTest, AddressLatchDecoding) {
  select(3, 0x10, 0, 0);
  EXPECT_EQ(in(kCf8, 4), 0x80001810u);
  // Reserved low bits are dropped; byte/word accesses to 0xCF8..0xCFB are not the latch.
  out(kCf8, 0x80000003, 4);
  EXPECT_EQ(in(kCf8, 4), 0x80000000u);
  out(kCf8 + 1, 0xAB, 1);
  out(kCf8, 0x1234, 2);
  EXPECT_EQ(in(kCf8, 4), 0x80000000u);
  EXPECT_EQ(in(kCf8 + 1, 1), 0xFFu);
}

TEST_F(PciBusTest, ByteAndWordDataAccesses) {
  select(0, PCI_VENDOR_ID);
  EXPECT_EQ(in(kCfc, 2), 0x8086u);
  EXPECT_EQ(in(kCfc + 2, 2), 0x0D57u);
  EXPECT_EQ(in(kCfc + 1, 1), 0x80u);
  EXPECT_EQ(in(kCfc + 3, 1), 0x0Du);
  EXPECT_EQ(in(kCfc + 1, 2), 0xFFFFu);  // misaligned word
  select(0, PCI_CLASS_REVISION);
  EXPECT_EQ(in(kCfc + 3, 1), 0x06u);
  // Byte write to the command register through 0xCFC.
  select(0, PCI_COMMAND);
  out(kCfc, PCI_COMMAND_MASTER, 1);
  EXPECT_EQ(in(kCfc, 2), static_cast<uint32_t>(PCI_COMMAND_MASTER));
}

TEST_F(PciBusTest, AbsentFunctionsReadAllOnes) {
  EXPECT_EQ(cfg_read(5, 0), 0xFFFFFFFFu);           // empty slot
  select(0, 0, /*function=*/1);
  EXPECT_EQ(in(kCfc, 4), 0xFFFFFFFFu);              // function 1
  select(0, 0, 0, /*busnr=*/1);
  EXPECT_EQ(in(kCfc, 4), 0xFFFFFFFFu);              // bus 1
  select(0, 0, 0, 0, /*enable=*/false);
  EXPECT_EQ(in(kCfc, 4), 0xFFFFFFFFu);              // enable bit clear
  EXPECT_EQ(in(kCfc + 2, 2), 0xFFFFu);
  cfg_write(7, PCI_COMMAND, 0xFFFF);                 // writes to nothing are dropped
  EXPECT_EQ(bus_->config_read(7, 0, 4), 0xFFFFFFFFu);
}

TEST_F(PciBusTest, AddDevicePreAssignsAndMapsBars) {
  auto fn = std::make_shared<TestFunction>();
  auto slot = bus_->add_device(fn);
  ASSERT_TRUE(slot.ok()) << slot.error().message();
  EXPECT_EQ(*slot, 1);
  EXPECT_EQ(fn->attached_slot, 1);
  EXPECT_EQ(fn->attached_gsi, testing::test_intx_gsi(1, 0));
  EXPECT_EQ(fn->attached_gsi, 17u);
  EXPECT_EQ(cfg_read(1, PCI_INTERRUPT_LINE) & 0xFFFF, 0x0100u | 17u);

  const uint64_t bar0 = bus_->bar_address(1, 0);
  const uint64_t bar2 = bus_->bar_address(1, 2);
  EXPECT_EQ(bar0, 0xC000'0000u);
  EXPECT_EQ(bar2, 0xC000'4000u);
  EXPECT_EQ(bar0 % 0x4000, 0u);
  EXPECT_EQ(cfg_read(1, PCI_BASE_ADDRESS_0), 0xC000'0000u | PCI_BASE_ADDRESS_MEM_TYPE_64);
  EXPECT_EQ(cfg_read(1, PCI_BASE_ADDRESS_1), 0u);
  EXPECT_EQ(cfg_read(1, PCI_COMMAND) & 0xFFFF, static_cast<uint32_t>(PCI_COMMAND_MEMORY));
  EXPECT_EQ(fn->moves.size(), 2u);
  EXPECT_EQ(fn->moves[0], std::make_tuple(0, uint64_t{0}, bar0));

  std::array<uint8_t, 4> b{};
  ASSERT_TRUE(mmio_.read(bar0 + 0x3FFC, b));
  EXPECT_EQ(b[0], 0x40);
  ASSERT_TRUE(mmio_.write(bar2 + 8, b));
  EXPECT_EQ(fn->reads.back(), std::make_pair(0, uint64_t{0x3FFC}));
  EXPECT_EQ(fn->writes.back(), std::make_pair(2, uint64_t{8}));

  auto second = std::make_shared<TestFunction>();
  ASSERT_EQ(*bus_->add_device(second), 2);
  EXPECT_EQ(bus_->bar_address(2, 0), 0xC000'8000u);
  EXPECT_EQ(second->attached_gsi, 18u);
}

TEST_F(PciBusTest, SizingUnmapsAndRestoreRemaps) {
  auto fn = std::make_shared<TestFunction>();
  ASSERT_TRUE(bus_->add_device(fn).ok());
  const uint64_t bar2 = bus_->bar_address(1, 2);
  fn->moves.clear();
  // Sizing with decoding left on (Linux turns it off, other guests may not).
  cfg_write(1, PCI_BASE_ADDRESS_2, 0xFFFFFFFF);
  EXPECT_EQ(cfg_read(1, PCI_BASE_ADDRESS_2), 0xFFFFF000u);
  EXPECT_EQ(bus_->bar_address(1, 2), 0u);
  EXPECT_FALSE(mmio_hits(bar2));
  cfg_write(1, PCI_BASE_ADDRESS_2, static_cast<uint32_t>(bar2));
  EXPECT_EQ(bus_->bar_address(1, 2), bar2);
  EXPECT_TRUE(mmio_hits(bar2));
  ASSERT_EQ(fn->moves.size(), 2u);
  EXPECT_EQ(fn->moves[0], std::make_tuple(2, bar2, uint64_t{0}));
  EXPECT_EQ(fn->moves[1], std::make_tuple(2, uint64_t{0}, bar2));

  // 64-bit pair: the low half first, then the high half, then both restored.
  const uint64_t bar0 = bus_->bar_address(1, 0);
  cfg_write(1, PCI_BASE_ADDRESS_0, 0xFFFFFFFF);
  EXPECT_EQ(bus_->bar_address(1, 0), 0u);
  cfg_write(1, PCI_BASE_ADDRESS_1, 0xFFFFFFFF);
  EXPECT_EQ(cfg_read(1, PCI_BASE_ADDRESS_0), 0xFFFFC000u | PCI_BASE_ADDRESS_MEM_TYPE_64);
  EXPECT_EQ(cfg_read(1, PCI_BASE_ADDRESS_1), 0xFFFFFFFFu);
  EXPECT_EQ(bus_->bar_address(1, 0), 0u);
  cfg_write(1, PCI_BASE_ADDRESS_0, static_cast<uint32_t>(bar0));
  EXPECT_EQ(bus_->bar_address(1, 0), 0u);  // high half still all ones
  cfg_write(1, PCI_BASE_ADDRESS_1, 0);
  EXPECT_EQ(bus_->bar_address(1, 0), bar0);
  EXPECT_TRUE(mmio_hits(bar0));
}

TEST_F(PciBusTest, GuestMovesAndDisablesBars) {
  auto fn = std::make_shared<TestFunction>();
  ASSERT_TRUE(bus_->add_device(fn).ok());
  const uint64_t old = bus_->bar_address(1, 2);
  fn->moves.clear();
  cfg_write(1, PCI_BASE_ADDRESS_2, 0xC008'0000);
  EXPECT_EQ(bus_->bar_address(1, 2), 0xC008'0000u);
  EXPECT_FALSE(mmio_hits(old));
  EXPECT_TRUE(mmio_hits(0xC008'0000));
  ASSERT_EQ(fn->moves.size(), 1u);
  EXPECT_EQ(fn->moves[0], std::make_tuple(2, old, uint64_t{0xC008'0000}));

  // A 64-bit BAR moved above 4 GiB.
  cfg_write(1, PCI_BASE_ADDRESS_1, 0x1);
  EXPECT_EQ(bus_->bar_address(1, 0), 0x1'C000'0000u);
  EXPECT_TRUE(mmio_hits(0x1'C000'0000));

  // Memory decoding off: everything unmapped; on again: back where programmed.
  cfg_write(1, PCI_COMMAND, 0);
  EXPECT_EQ(bus_->bar_address(1, 0), 0u);
  EXPECT_EQ(bus_->bar_address(1, 2), 0u);
  EXPECT_FALSE(mmio_hits(0xC008'0000));
  cfg_write(1, PCI_COMMAND, PCI_COMMAND_MEMORY);
  EXPECT_TRUE(mmio_hits(0xC008'0000));
  EXPECT_TRUE(mmio_hits(0x1'C000'0000));
}

TEST_F(PciBusTest, OverlappingMoveLeavesBarUnmapped) {
  auto a = std::make_shared<TestFunction>();
  auto b = std::make_shared<TestFunction>();
  ASSERT_TRUE(bus_->add_device(a).ok());
  ASSERT_TRUE(bus_->add_device(b).ok());
  const uint64_t a_bar2 = bus_->bar_address(1, 2);
  cfg_write(2, PCI_BASE_ADDRESS_2, static_cast<uint32_t>(a_bar2));
  EXPECT_EQ(bus_->bar_address(2, 2), 0u);
  EXPECT_EQ(std::get<2>(b->moves.back()), 0u);
  std::array<uint8_t, 4> buf{};
  ASSERT_TRUE(mmio_.read(a_bar2, buf));
  EXPECT_EQ(a->reads.size(), 1u);
  EXPECT_TRUE(b->reads.empty());
}

TEST_F(PciBusTest, IoBarThroughTheWindow) {
  auto fn = std::make_shared<TestFunction>(/*with_io=*/true);
  auto added = bus_->add_device(fn);
  ASSERT_TRUE(added.ok()) << added.error().message();
  const uint64_t io = bus_->bar_address(1, 3);
  EXPECT_EQ(io, 0xC000u);
  EXPECT_EQ(cfg_read(1, PCI_COMMAND) & 3, static_cast<uint32_t>(PCI_COMMAND_IO | PCI_COMMAND_MEMORY));
  EXPECT_EQ(in(static_cast<uint16_t>(io + 4), 1), 0x43u);
  EXPECT_EQ(fn->reads.back(), std::make_pair(3, uint64_t{4}));
  // Moving it re-maps on the private I/O bus while we are inside a PIO access: no deadlock.
  cfg_write(1, PCI_BASE_ADDRESS_3, 0xC100);
  EXPECT_EQ(bus_->bar_address(1, 3), 0xC100u);
  EXPECT_EQ(in(0xC104, 1), 0x43u);
  EXPECT_EQ(in(static_cast<uint16_t>(io + 4), 1), 0xFFu);
  // Outside the window: unreachable, so unmapped.
  cfg_write(1, PCI_BASE_ADDRESS_3, 0x2000);
  EXPECT_EQ(bus_->bar_address(1, 3), 0u);
}

TEST(PciBus, WindowsRunOut) {
  Bus pio("pio"), mmio("mmio");
  PciBusConfig cfg;
  cfg.mmio_base = 0xC000'0000;
  cfg.mmio_size = 0x8000;
  cfg.io_size = 0;
  auto bus = PciBus::create(pio, mmio, cfg);
  ASSERT_TRUE(bus.ok());
  EXPECT_TRUE((*bus)->add_device(std::make_shared<TestFunction>()).ok());
  auto r = (*bus)->add_device(std::make_shared<TestFunction>());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kResourceExhausted);
  // The failed device left no trace: its slot is free again.
  EXPECT_EQ((*bus)->config_read(2, 0, 4), 0xFFFFFFFFu);
  // No I/O window: an I/O BAR cannot be placed.
  auto io = (*bus)->add_device(std::make_shared<TestFunction>(true));
  EXPECT_FALSE(io.ok());
}

TEST(PciBus, ThirtyOneDevicesAtMost) {
  Bus pio("pio"), mmio("mmio");
  auto bus = PciBus::create(pio, mmio, testing::test_pci_bus_config());
  ASSERT_TRUE(bus.ok());
  for (int i = 1; i < 32; ++i) ASSERT_TRUE((*bus)->add_device(std::make_shared<TestFunction>()).ok()) << i;
  EXPECT_FALSE((*bus)->add_device(std::make_shared<TestFunction>()).ok());
}

// Snapshots: a second bus of the same shape, as a restoring process builds it.
class PciBusSnapshotTest : public PciBusTest {
 protected:
  void SetUp() override {
    PciBusTest::SetUp();
    auto bus = PciBus::create(pio2_, mmio2_, config());
    ASSERT_TRUE(bus.ok());
    bus2_ = *bus;
  }
  static PciBusConfig config() {
    PciBusConfig cfg;
    cfg.mmio_base = 0xC000'0000;
    cfg.mmio_size = 0x10'0000;
    cfg.io_base = 0xC000;
    cfg.io_size = 0x1000;
    cfg.intx_gsi = testing::test_intx_gsi;
    return cfg;
  }
  static std::vector<uint8_t> save_cfg(TestFunction& f) {
    StateWriter w;
    f.cfg().save_state(w);
    return w.take();
  }
  static void restore_cfg(TestFunction& f, std::span<const uint8_t> data) {
    StateReader r(data, "fn");
    auto s = f.cfg().read_state(r);
    ASSERT_TRUE(s.ok()) << s.error().message();
    f.cfg().restore_state(*s);
  }

  Bus pio2_{"pio2"};
  Bus mmio2_{"mmio2"};
  std::shared_ptr<PciBus> bus2_;
};

TEST_F(PciBusSnapshotTest, RestoreMapsBarsWhereTheConfigSpacesSay) {
  auto a = std::make_shared<TestFunction>(true), b = std::make_shared<TestFunction>();
  ASSERT_TRUE(bus_->add_device(a).ok());
  ASSERT_TRUE(bus_->add_device(b).ok());
  // The guest swaps the two functions' BAR 2 (through a free spot) and moves a's I/O BAR.
  const uint32_t a2 = cfg_read(1, PCI_BASE_ADDRESS_2), b2 = cfg_read(2, PCI_BASE_ADDRESS_2);
  cfg_write(1, PCI_BASE_ADDRESS_2, 0xC00F'0000);
  cfg_write(2, PCI_BASE_ADDRESS_2, a2);
  cfg_write(1, PCI_BASE_ADDRESS_2, b2);
  const uint64_t io = bus_->bar_address(1, 3) + 0x100;
  cfg_write(1, PCI_BASE_ADDRESS_3, static_cast<uint32_t>(io) | PCI_BASE_ADDRESS_SPACE_IO);
  cfg_write(0, PCI_COMMAND, PCI_COMMAND_MASTER);  // the host bridge's state is the bus's
  select(2, PCI_VENDOR_ID);                       // a vCPU parked between 0xCF8 and 0xCFC
  auto saved = bus_->save();
  ASSERT_TRUE(saved.ok());
  const auto sa = save_cfg(*a), sb = save_cfg(*b);

  auto a_new = std::make_shared<TestFunction>(true), b_new = std::make_shared<TestFunction>();
  ASSERT_TRUE(bus2_->add_device(a_new).ok());
  ASSERT_TRUE(bus2_->add_device(b_new).ok());
  restore_cfg(*a_new, sa);
  restore_cfg(*b_new, sb);
  a_new->moves.clear();
  b_new->moves.clear();
  ASSERT_TRUE(bus2_->restore(*saved).ok());
  EXPECT_EQ(bus2_->save().value(), *saved);
  for (uint8_t slot = 1; slot <= 2; ++slot)
    for (int bar : {0, 2, 3})
      EXPECT_EQ(bus2_->bar_address(slot, bar), bus_->bar_address(slot, bar)) << int{slot} << bar;
  EXPECT_EQ(bus2_->bar_address(1, 2), b2);
  EXPECT_EQ(bus2_->bar_address(2, 2), a2);
  EXPECT_EQ(bus2_->bar_address(1, 3), io);
  // Each function heard where its BARs went, as after a guest write.
  EXPECT_EQ(b_new->moves, (std::vector<std::tuple<int, uint64_t, uint64_t>>{{2, b2, 0}, {2, 0, a2}}));
  // Accesses reach the functions at their new places; the latch is where the vCPU left it.
  std::array<uint8_t, 4> buf{};
  ASSERT_TRUE(mmio2_.read(a2, buf));
  EXPECT_EQ(b_new->reads.back(), std::make_pair(2, uint64_t{0}));
  std::array<uint8_t, 4> id{};
  ASSERT_TRUE(pio2_.read(kCfc, id));
  EXPECT_EQ(id[0], 0x34);
  ASSERT_TRUE(pio2_.read(kCf8, id));
  EXPECT_EQ(id[1], 0x10);  // slot 2 << 11
}

TEST_F(PciBusSnapshotTest, RestoreRefusesAnotherTopologyOrBadLatch) {
  ASSERT_TRUE(bus_->add_device(std::make_shared<TestFunction>()).ok());
  auto saved = bus_->save();
  ASSERT_TRUE(saved.ok());
  const auto before = bus2_->save().value();
  const auto refused = [&](std::vector<uint8_t> bytes, const char* why) {
    auto r = bus2_->restore(bytes);
    ASSERT_FALSE(r.ok()) << why;
    EXPECT_EQ(r.error().code, ErrorCode::kCorrupt) << why << ": " << r.error().message();
    EXPECT_EQ(bus2_->save().value(), before) << why;
  };
  refused(*saved, "a function bus2 does not have");
  ASSERT_TRUE(bus2_->add_device(std::make_shared<TestFunction>()).ok());
  const auto now = bus2_->save().value();
  auto b = *saved;
  b[4 + 3] = 0x7F;  // CONFIG_ADDRESS reserved bits
  auto r = bus2_->restore(b);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kCorrupt);
  EXPECT_EQ(bus2_->save().value(), now);
  for (size_t n = 0; n < saved->size(); n += 5) {
    auto t = bus2_->restore(std::span<const uint8_t>(saved->data(), n));
    ASSERT_FALSE(t.ok());
    EXPECT_EQ(t.error().code, ErrorCode::kCorrupt);
  }
  b = *saved;
  b.push_back(0);
  EXPECT_FALSE(bus2_->restore(b).ok());
  EXPECT_TRUE(bus2_->restore(*saved).ok());
}

}  // namespace
}  // namespace ringvm
