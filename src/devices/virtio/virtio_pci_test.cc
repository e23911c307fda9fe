#include "devices/virtio/virtio_pci.h"

#include <gtest/gtest.h>
#include <linux/pci_regs.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <linux/virtio_pci.h>
#include <unistd.h>

#include <array>
#include <cstddef>
#include <cstring>
#include <map>

#include "devices/pci/pci_bus.h"
#include "devices/pci/testing/fake_interrupt_controller.h"
#include "devices/pci/testing/test_pci_bus.h"
#include "devices/virtio/testing/fake_driver.h"
#include "devices/virtio/worker.h"
#include "memory/guest_memory.h"

namespace ringvm {
namespace {

using testing::FakeDriver;
using testing::FakeInterruptController;

constexpr uint64_t kFeatureA = 1ULL << 5;
constexpr uint64_t kFeatureB = 1ULL << 33;
constexpr uint64_t kVersion1 = 1ULL << VIRTIO_F_VERSION_1;

class FakeDevice final : public VirtioDevice {
 public:
  Result<void> pause() override { return Ok(); }
  Result<void> resume() override { return Ok(); }
  std::string_view name() const override { return "fake"; }
  uint32_t device_type() const override { return VIRTIO_ID_NET; }
  uint64_t device_features() const override { return kVersion1 | kFeatureA | kFeatureB; }
  std::vector<uint16_t> queue_max_sizes() const override { return {256, 128}; }
  void read_config(uint64_t offset, std::span<uint8_t> data) const override {
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(0xA0 + offset + i);
  }
  void write_config(uint64_t offset, std::span<const uint8_t> data) override {
    config_writes.emplace_back(offset, data.size());
  }
  Result<void> activate(const GuestMemory& mem, uint64_t acked, std::vector<ActivatedQueue> queues) override {
    ++activations;
    acked_features = acked;
    if (fail_activate) return make_error(ErrorCode::kInvalidArgument, "fake refuses");
    // As a real device does: activate the ready queues (geometry checks; a restored queue keeps
    // its position).
    if (activate_rings) queues = TRY(activate_queues("fake", mem, acked, std::move(queues)));
    activated = std::move(queues);
    return Ok();
  }
  void reset() override {
    ++resets;
    activated.clear();
  }

  int activations = 0;
  int resets = 0;
  bool fail_activate = false;
  bool activate_rings = false;
  uint64_t acked_features = 0;
  std::vector<ActivatedQueue> activated;
  std::vector<std::pair<uint64_t, size_t>> config_writes;
};

uint64_t drain(int fd) {
  uint64_t v = 0;
  if (::read(fd, &v, sizeof(v)) != sizeof(v)) return 0;
  return v;
}

class VirtioPciTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(mem_.add_region(0, 1 << 20).ok());
    fake_ = std::make_shared<FakeDevice>();
    recreate({});
  }
  void recreate(const VirtioPciOptions& options, const GuestMemory* mem = nullptr) {
    dev_.reset();
    auto d = VirtioPciDevice::create(fake_, mem != nullptr ? *mem : mem_, ic_, router_, options);
    ASSERT_TRUE(d.ok()) << d.error().message();
    dev_ = *d;
  }
  static VirtioPciOptions mmio_notify() {
    VirtioPciOptions o;
    o.pio_notify = false;
    return o;
  }

  void w(uint64_t off, uint64_t v, size_t size, int bar = VirtioPciDevice::kBar) {
    std::array<uint8_t, 8> b{};
    std::memcpy(b.data(), &v, 8);
    dev_->bar_write(bar, off, std::span<const uint8_t>(b.data(), size));
  }
  uint64_t r(uint64_t off, size_t size) {
    std::array<uint8_t, 8> b{};
    dev_->bar_read(VirtioPciDevice::kBar, off, std::span<uint8_t>(b.data(), size));
    uint64_t v = 0;
    std::memcpy(&v, b.data(), 8);
    return v;
  }
  void status(uint8_t s) { w(VIRTIO_PCI_COMMON_STATUS, s, 1); }
  uint8_t status() { return static_cast<uint8_t>(r(VIRTIO_PCI_COMMON_STATUS, 1)); }
  uint64_t device_features() {
    w(VIRTIO_PCI_COMMON_DFSELECT, 0, 4);
    uint64_t f = r(VIRTIO_PCI_COMMON_DF, 4);
    w(VIRTIO_PCI_COMMON_DFSELECT, 1, 4);
    return f | r(VIRTIO_PCI_COMMON_DF, 4) << 32;
  }
  void driver_features(uint64_t f) {
    w(VIRTIO_PCI_COMMON_GFSELECT, 0, 4);
    w(VIRTIO_PCI_COMMON_GF, static_cast<uint32_t>(f), 4);
    w(VIRTIO_PCI_COMMON_GFSELECT, 1, 4);
    w(VIRTIO_PCI_COMMON_GF, f >> 32, 4);
  }
  // What virtio_pci_modern's setup_vq does for queue `q`.
  void setup_queue(uint16_t q, uint16_t size, uint16_t vector, uint64_t desc) {
    w(VIRTIO_PCI_COMMON_Q_SELECT, q, 2);
    w(VIRTIO_PCI_COMMON_Q_SIZE, size, 2);
    w(VIRTIO_PCI_COMMON_Q_DESCLO, static_cast<uint32_t>(desc), 4);
    w(VIRTIO_PCI_COMMON_Q_DESCHI, desc >> 32, 4);
    w(VIRTIO_PCI_COMMON_Q_AVAILLO, static_cast<uint32_t>(desc + 0x1000), 4);
    w(VIRTIO_PCI_COMMON_Q_AVAILHI, 0, 4);
    w(VIRTIO_PCI_COMMON_Q_USEDLO, static_cast<uint32_t>(desc + 0x2000), 4);
    w(VIRTIO_PCI_COMMON_Q_USEDHI, 0, 4);
    w(VIRTIO_PCI_COMMON_Q_MSIX, vector, 2);
  }
  // The whole Linux probe up to DRIVER_OK, with queue q's vector q + 1 (config vector 0).
  void bring_up(uint64_t features = kVersion1 | kFeatureA) {
    status(0);
    status(VIRTIO_CONFIG_S_ACKNOWLEDGE);
    status(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
    driver_features(features);
    status(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
    ASSERT_TRUE(status() & VIRTIO_CONFIG_S_FEATURES_OK);
    w(VIRTIO_PCI_COMMON_MSIX, 0, 2);
    setup_queue(0, 64, 1, 0x10000);
    setup_queue(1, 128, 2, 0x20000);
    for (uint16_t q = 0; q < 2; ++q) {
      w(VIRTIO_PCI_COMMON_Q_SELECT, q, 2);
      w(VIRTIO_PCI_COMMON_Q_ENABLE, 1, 2);
    }
    status(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK |
           VIRTIO_CONFIG_S_DRIVER_OK);
  }
  // Enables MSI-X in config space and programs + unmasks every vector.
  void enable_msix() {
    const auto cap = find_cap(PCI_CAP_ID_MSIX);
    ASSERT_NE(cap, 0);
    dev_->config_write(static_cast<uint16_t>(cap + PCI_MSIX_FLAGS), 2, PCI_MSIX_FLAGS_ENABLE);
    for (uint16_t v = 0; v < dev_->msix().size(); ++v) {
      const uint64_t e = VirtioPciDevice::kMsixTableOffset + v * 16u;
      w(e + PCI_MSIX_ENTRY_LOWER_ADDR, 0xFEE00000, 4);
      w(e + PCI_MSIX_ENTRY_DATA, 0x40 + v, 4);
      w(e + PCI_MSIX_ENTRY_VECTOR_CTRL, 0, 4);
    }
  }
  uint16_t find_cap(uint8_t id, uint8_t cfg_type = 0) {
    for (uint32_t p = dev_->config_read(PCI_CAPABILITY_LIST, 1); p != 0;
         p = dev_->config_read(static_cast<uint16_t>(p + 1), 1)) {
      if (dev_->config_read(static_cast<uint16_t>(p), 1) != id) continue;
      if (cfg_type == 0 || dev_->config_read(static_cast<uint16_t>(p + 3), 1) == cfg_type)
        return static_cast<uint16_t>(p);
    }
    return 0;
  }

  GuestMemory mem_;
  FakeInterruptController ic_;
  MsiRouter router_{ic_};
  std::shared_ptr<FakeDevice> fake_;
  std::shared_ptr<VirtioPciDevice> dev_;
};

TEST_F(VirtioPciTest, Identity) {
  EXPECT_EQ(dev_->config_read(PCI_VENDOR_ID, 2), 0x1AF4u);
  EXPECT_EQ(dev_->config_read(PCI_DEVICE_ID, 2), 0x1041u);
  EXPECT_EQ(dev_->config_read(PCI_REVISION_ID, 1), 1u);
  EXPECT_EQ(dev_->config_read(PCI_CLASS_REVISION, 4) >> 8, 0x020000u);
  EXPECT_EQ(dev_->config_read(PCI_SUBSYSTEM_VENDOR_ID, 2), 0x1AF4u);
  EXPECT_EQ(dev_->config_read(PCI_INTERRUPT_PIN, 1), 1u);
  // BAR 0: 64-bit memory, sized to hold every region.
  dev_->config_write(PCI_BASE_ADDRESS_0, 4, 0xFFFFFFFF);
  const uint32_t mask = dev_->config_read(PCI_BASE_ADDRESS_0, 4);
  EXPECT_EQ(mask & 0xF, static_cast<uint32_t>(PCI_BASE_ADDRESS_MEM_TYPE_64));
  EXPECT_EQ(~(mask & ~0xFu) + 1, dev_->bar_size());
  EXPECT_GE(dev_->bar_size(), dev_->msix_pba_offset() + 8);
}

TEST_F(VirtioPciTest, CapabilitiesPointIntoTheBar) {
  struct Expect {
    uint8_t type;
    uint32_t offset;
    uint32_t min_length;
  };
  const Expect expects[] = {
      {VIRTIO_PCI_CAP_COMMON_CFG, VirtioPciDevice::kCommonOffset, sizeof(virtio_pci_common_cfg)},
      {VIRTIO_PCI_CAP_ISR_CFG, VirtioPciDevice::kIsrOffset, 1},
      {VIRTIO_PCI_CAP_DEVICE_CFG, VirtioPciDevice::kDeviceConfigOffset, 0x100},
  };
  for (const auto& e : expects) {
    const uint16_t cap = find_cap(PCI_CAP_ID_VNDR, e.type);
    ASSERT_NE(cap, 0) << int{e.type};
    EXPECT_EQ(dev_->config_read(cap + 4u, 1), static_cast<uint32_t>(VirtioPciDevice::kBar));
    EXPECT_EQ(dev_->config_read(cap + 8u, 4), e.offset);
    EXPECT_GE(dev_->config_read(cap + 12u, 4), e.min_length);
    EXPECT_LE(uint64_t{e.offset} + dev_->config_read(cap + 12u, 4), dev_->bar_size());
  }
  // The doorbells: by default the whole I/O BAR (2 queues x 4 ports), a BAR of I/O type.
  const uint16_t notify = find_cap(PCI_CAP_ID_VNDR, VIRTIO_PCI_CAP_NOTIFY_CFG);
  ASSERT_NE(notify, 0);
  EXPECT_EQ(dev_->config_read(notify + 4u, 1), static_cast<uint32_t>(VirtioPciDevice::kNotifyIoBar));
  EXPECT_EQ(dev_->config_read(notify + 8u, 4), 0u);
  EXPECT_EQ(dev_->config_read(notify + 12u, 4), 8u);
  EXPECT_EQ(dev_->config_read(PCI_BASE_ADDRESS_0 + 4 * VirtioPciDevice::kNotifyIoBar, 4) & PCI_BASE_ADDRESS_SPACE,
            static_cast<uint32_t>(PCI_BASE_ADDRESS_SPACE_IO));
  EXPECT_EQ(dev_->config_read(notify + 2u, 1), sizeof(virtio_pci_notify_cap));
  EXPECT_EQ(dev_->config_read(notify + VIRTIO_PCI_NOTIFY_CAP_MULT, 4), 4u);
  const uint16_t msix = find_cap(PCI_CAP_ID_MSIX);
  ASSERT_NE(msix, 0);
  EXPECT_EQ(dev_->config_read(msix + PCI_MSIX_FLAGS, 2), 2u);  // 3 vectors
  EXPECT_EQ(dev_->config_read(msix + PCI_MSIX_TABLE, 4), VirtioPciDevice::kMsixTableOffset);
  EXPECT_EQ(dev_->config_read(msix + PCI_MSIX_PBA, 4), dev_->msix_pba_offset());
}

TEST_F(VirtioPciTest, CommonConfigDefaults) {
  EXPECT_EQ(r(VIRTIO_PCI_COMMON_NUMQ, 2), 2u);
  EXPECT_EQ(device_features(), kVersion1 | kFeatureA | kFeatureB);
  w(VIRTIO_PCI_COMMON_DFSELECT, 2, 4);
  EXPECT_EQ(r(VIRTIO_PCI_COMMON_DF, 4), 0u);
  w(VIRTIO_PCI_COMMON_Q_SELECT, 1, 2);
  EXPECT_EQ(r(VIRTIO_PCI_COMMON_Q_SIZE, 2), 128u);  // max size until the driver shrinks it
  EXPECT_EQ(r(VIRTIO_PCI_COMMON_Q_NOFF, 2), 1u);
  EXPECT_EQ(r(VIRTIO_PCI_COMMON_Q_ENABLE, 2), 0u);
  EXPECT_EQ(r(VIRTIO_PCI_COMMON_Q_MSIX, 2), static_cast<uint64_t>(VIRTIO_MSI_NO_VECTOR));
  w(VIRTIO_PCI_COMMON_Q_SELECT, 9, 2);  // no such queue: size 0 tells the driver
  EXPECT_EQ(r(VIRTIO_PCI_COMMON_Q_SIZE, 2), 0u);
}

TEST_F(VirtioPciTest, LinuxInitSequenceActivatesWithNegotiatedState) {
  bring_up();
  EXPECT_EQ(status(), VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK |
                          VIRTIO_CONFIG_S_DRIVER_OK);
  ASSERT_EQ(fake_->activations, 1);
  EXPECT_EQ(fake_->acked_features, kVersion1 | kFeatureA);
  ASSERT_EQ(fake_->activated.size(), 2u);
  const VirtQueue* q0 = fake_->activated[0].queue;
  const VirtQueue* q1 = fake_->activated[1].queue;
  ASSERT_NE(q0, nullptr);
  ASSERT_NE(q1, nullptr);
  EXPECT_EQ(q0->size(), 64u);
  EXPECT_EQ(q0->desc_addr(), 0x10000u);
  EXPECT_EQ(q0->avail_addr(), 0x11000u);
  EXPECT_EQ(q0->used_addr(), 0x12000u);
  EXPECT_TRUE(q0->ready());
  EXPECT_EQ(q1->size(), 128u);
  EXPECT_EQ(q1->desc_addr(), 0x20000u);
  EXPECT_EQ(fake_->activated[0].kick_fd, dev_->kick_fd(0));
  EXPECT_EQ(fake_->activated[1].kick_fd, dev_->kick_fd(1));
  EXPECT_NE(fake_->activated[0].kick_fd, fake_->activated[1].kick_fd);
  // Reading back what the driver wrote, as Linux does for the vectors.
  w(VIRTIO_PCI_COMMON_Q_SELECT, 1, 2);
  EXPECT_EQ(r(VIRTIO_PCI_COMMON_Q_MSIX, 2), 2u);
  EXPECT_EQ(r(VIRTIO_PCI_COMMON_Q_DESCLO, 8), 0x20000u);  // one QWORD read works too
  EXPECT_EQ(r(VIRTIO_PCI_COMMON_MSIX, 2), 0u);
}

TEST_F(VirtioPciTest, QueueConfigFrozenAfterDriverOk) {
  bring_up();
  w(VIRTIO_PCI_COMMON_Q_SELECT, 0, 2);
  w(VIRTIO_PCI_COMMON_Q_SIZE, 16, 2);
  w(VIRTIO_PCI_COMMON_Q_DESCLO, 0x50000, 4);
  w(VIRTIO_PCI_COMMON_Q_MSIX, 0, 2);
  EXPECT_EQ(r(VIRTIO_PCI_COMMON_Q_SIZE, 2), 64u);
  EXPECT_EQ(r(VIRTIO_PCI_COMMON_Q_DESCLO, 4), 0x10000u);
  EXPECT_EQ(r(VIRTIO_PCI_COMMON_Q_MSIX, 2), 1u);
  // Features are frozen too once FEATURES_OK is set.
  driver_features(kVersion1);
  w(VIRTIO_PCI_COMMON_GFSELECT, 0, 4);
  EXPECT_EQ(r(VIRTIO_PCI_COMMON_GF, 4), static_cast<uint32_t>(kFeatureA));
  EXPECT_EQ(fake_->activations, 1);
}

TEST_F(VirtioPciTest, BadQueueSizesAndVectorsAreRefused) {
  w(VIRTIO_PCI_COMMON_Q_SELECT, 0, 2);
  w(VIRTIO_PCI_COMMON_Q_SIZE, 100, 2);  // not a power of two
  EXPECT_EQ(r(VIRTIO_PCI_COMMON_Q_SIZE, 2), 256u);
  w(VIRTIO_PCI_COMMON_Q_SIZE, 512, 2);  // above the maximum
  EXPECT_EQ(r(VIRTIO_PCI_COMMON_Q_SIZE, 2), 256u);
  w(VIRTIO_PCI_COMMON_Q_SIZE, 0, 2);
  EXPECT_EQ(r(VIRTIO_PCI_COMMON_Q_SIZE, 2), 256u);
  w(VIRTIO_PCI_COMMON_Q_MSIX, 3, 2);    // only vectors 0..2 exist
  EXPECT_EQ(r(VIRTIO_PCI_COMMON_Q_MSIX, 2), static_cast<uint64_t>(VIRTIO_MSI_NO_VECTOR));
  w(VIRTIO_PCI_COMMON_MSIX, 7, 2);
  EXPECT_EQ(r(VIRTIO_PCI_COMMON_MSIX, 2), static_cast<uint64_t>(VIRTIO_MSI_NO_VECTOR));
  w(VIRTIO_PCI_COMMON_Q_ENABLE, 1, 2);
  w(VIRTIO_PCI_COMMON_Q_ENABLE, 0, 2);  // disabling is not the driver's to do
  EXPECT_EQ(r(VIRTIO_PCI_COMMON_Q_ENABLE, 2), 1u);
  w(VIRTIO_PCI_COMMON_NUMQ, 9, 2);      // read-only
  EXPECT_EQ(r(VIRTIO_PCI_COMMON_NUMQ, 2), 2u);
}

TEST_F(VirtioPciTest, UnofferedFeatureMakesFeaturesOkFail) {
  status(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
  driver_features(kVersion1 | kFeatureA | (1ULL << 7));
  status(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
  EXPECT_FALSE(status() & VIRTIO_CONFIG_S_FEATURES_OK);
  // DRIVER_OK without FEATURES_OK does not activate.
  status(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_DRIVER_OK);
  EXPECT_EQ(fake_->activations, 0);
  // A legacy driver (no VERSION_1) is refused as well.
  status(0);
  status(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
  driver_features(kFeatureA);
  status(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
  EXPECT_FALSE(status() & VIRTIO_CONFIG_S_FEATURES_OK);
}

TEST_F(VirtioPciTest, ResetReturnsToPowerOnState) {
  bring_up();
  status(0);
  EXPECT_EQ(fake_->resets, 1);
  EXPECT_EQ(status(), 0u);
  w(VIRTIO_PCI_COMMON_Q_SELECT, 0, 2);
  EXPECT_EQ(r(VIRTIO_PCI_COMMON_Q_SIZE, 2), 256u);
  EXPECT_EQ(r(VIRTIO_PCI_COMMON_Q_ENABLE, 2), 0u);
  EXPECT_EQ(r(VIRTIO_PCI_COMMON_Q_DESCLO, 4), 0u);
  EXPECT_EQ(r(VIRTIO_PCI_COMMON_Q_MSIX, 2), static_cast<uint64_t>(VIRTIO_MSI_NO_VECTOR));
  w(VIRTIO_PCI_COMMON_GFSELECT, 0, 4);
  EXPECT_EQ(r(VIRTIO_PCI_COMMON_GF, 4), 0u);
  // And the device can be brought up again.
  bring_up();
  EXPECT_EQ(fake_->activations, 2);
}

TEST_F(VirtioPciTest, FailedActivationNeedsReset) {
  fake_->fail_activate = true;
  dev_->attached(1, 17);
  bring_up();
  EXPECT_TRUE(status() & VIRTIO_CONFIG_S_NEEDS_RESET);
  // A config-change interrupt told the driver (INTx here: MSI-X is not enabled).
  EXPECT_EQ(r(VirtioPciDevice::kIsrOffset, 1), static_cast<uint64_t>(VIRTIO_PCI_ISR_CONFIG));
  // The driver cannot clear NEEDS_RESET except by resetting.
  status(VIRTIO_CONFIG_S_ACKNOWLEDGE);
  EXPECT_TRUE(status() & VIRTIO_CONFIG_S_NEEDS_RESET);
  status(0);
  EXPECT_EQ(status(), 0u);
}

TEST_F(VirtioPciTest, IntxFallbackSetsIsrAndLine) {
  dev_->attached(3, testing::test_intx_gsi(3, 0));
  bring_up();
  fake_->activated[0].notify();
  fake_->activated[1].notify();
  EXPECT_TRUE(ic_.lines.at(19));
  EXPECT_EQ(ic_.line_changes.size(), 1u);  // raised once while the ISR was pending
  EXPECT_EQ(r(VirtioPciDevice::kIsrOffset, 1), 1u);
  EXPECT_FALSE(ic_.lines.at(19));
  EXPECT_EQ(r(VirtioPciDevice::kIsrOffset, 1), 0u);  // read-to-clear
  fake_->config_changed();
  EXPECT_EQ(r(VIRTIO_PCI_COMMON_CFGGENERATION, 1), 1u);
  EXPECT_EQ(r(VirtioPciDevice::kIsrOffset, 1), static_cast<uint64_t>(VIRTIO_PCI_ISR_CONFIG));
}

TEST_F(VirtioPciTest, MsixVectorsFireThroughEventfds) {
  bring_up();
  enable_msix();
  fake_->activated[1].notify();
  EXPECT_EQ(drain(dev_->msix().eventfd(2)), 1u);
  EXPECT_EQ(drain(dev_->msix().eventfd(1)), 0u);
  const auto* route = ic_.msi_route(dev_->msix().gsi(2));
  ASSERT_NE(route, nullptr);
  EXPECT_EQ(route->u.msi.data, 0x42u);
  fake_->config_changed();
  EXPECT_EQ(drain(dev_->msix().eventfd(0)), 1u);
  EXPECT_EQ(r(VirtioPciDevice::kIsrOffset, 1), 0u);  // no ISR bits with MSI-X
  EXPECT_TRUE(ic_.line_changes.empty());
  // A masked vector is pending in the PBA, delivered on unmask.
  w(VirtioPciDevice::kMsixTableOffset + 16 + PCI_MSIX_ENTRY_VECTOR_CTRL, 1, 4);
  fake_->activated[0].notify();
  EXPECT_EQ(drain(dev_->msix().eventfd(1)), 0u);
  EXPECT_EQ(r(dev_->msix_pba_offset(), 8), 0b10u);
  w(VirtioPciDevice::kMsixTableOffset + 16 + PCI_MSIX_ENTRY_VECTOR_CTRL, 0, 4);
  EXPECT_EQ(drain(dev_->msix().eventfd(1)), 1u);
}

TEST_F(VirtioPciTest, DeviceConfigIsForwarded) {
  EXPECT_EQ(r(VirtioPciDevice::kDeviceConfigOffset + 4, 2), 0xA5A4u);
  w(VirtioPciDevice::kDeviceConfigOffset + 8, 0x1234, 2);
  ASSERT_EQ(fake_->config_writes.size(), 1u);
  EXPECT_EQ(fake_->config_writes[0], std::make_pair(uint64_t{8}, size_t{2}));
}

TEST_F(VirtioPciTest, PciCfgWindowReachesTheBar) {
  const uint16_t cap = find_cap(PCI_CAP_ID_VNDR, VIRTIO_PCI_CAP_PCI_CFG);
  ASSERT_NE(cap, 0);
  const auto field = [cap](size_t off) { return static_cast<uint16_t>(cap + off); };
  const uint16_t data = field(offsetof(virtio_pci_cfg_cap, pci_cfg_data));
  dev_->config_write(field(offsetof(virtio_pci_cap, bar)), 1, VirtioPciDevice::kBar);
  dev_->config_write(field(offsetof(virtio_pci_cap, offset)), 4, VIRTIO_PCI_COMMON_NUMQ);
  dev_->config_write(field(offsetof(virtio_pci_cap, length)), 4, 2);
  EXPECT_EQ(dev_->config_read(data, 4), 2u);
  EXPECT_EQ(dev_->config_read(data, 2), 2u);
  dev_->config_write(field(offsetof(virtio_pci_cap, offset)), 4, VIRTIO_PCI_COMMON_STATUS);
  dev_->config_write(field(offsetof(virtio_pci_cap, length)), 4, 1);
  dev_->config_write(data, 4, VIRTIO_CONFIG_S_ACKNOWLEDGE);
  EXPECT_EQ(status(), VIRTIO_CONFIG_S_ACKNOWLEDGE);
  // Misaligned, odd or out-of-BAR windows do nothing.
  dev_->config_write(field(offsetof(virtio_pci_cap, length)), 4, 3);
  dev_->config_write(data, 4, 0);
  EXPECT_EQ(status(), VIRTIO_CONFIG_S_ACKNOWLEDGE);
  dev_->config_write(field(offsetof(virtio_pci_cap, length)), 4, 4);
  dev_->config_write(field(offsetof(virtio_pci_cap, offset)), 4, 0xFFFFFFFC);
  EXPECT_EQ(dev_->config_read(data, 4), 0u);
  // The type and the next pointer stay read-only.
  dev_->config_write(field(offsetof(virtio_pci_cap, cfg_type)), 1, 1);
  EXPECT_EQ(dev_->config_read(field(offsetof(virtio_pci_cap, cfg_type)), 1),
            static_cast<uint32_t>(VIRTIO_PCI_CAP_PCI_CFG));
}

TEST_F(VirtioPciTest, MmioNotifyKeepsTheDoorbellsInTheMemoryBar) {
  recreate(mmio_notify());
  EXPECT_FALSE(dev_->pio_notify());
  const uint16_t notify = find_cap(PCI_CAP_ID_VNDR, VIRTIO_PCI_CAP_NOTIFY_CFG);
  ASSERT_NE(notify, 0);
  EXPECT_EQ(dev_->config_read(notify + 4u, 1), static_cast<uint32_t>(VirtioPciDevice::kBar));
  EXPECT_EQ(dev_->config_read(notify + 8u, 4), VirtioPciDevice::kNotifyOffset);
  EXPECT_EQ(dev_->config_read(notify + 12u, 4), 8u);
  // No I/O BAR at all.
  dev_->config_write(PCI_BASE_ADDRESS_0 + 4 * VirtioPciDevice::kNotifyIoBar, 4, 0xFFFFFFFF);
  EXPECT_EQ(dev_->config_read(PCI_BASE_ADDRESS_0 + 4 * VirtioPciDevice::kNotifyIoBar, 4), 0u);
}

TEST_F(VirtioPciTest, NotifySlowPathSignalsKickFd) {
  w(4, 1, 2, VirtioPciDevice::kNotifyIoBar);
  EXPECT_EQ(drain(dev_->kick_fd(1)), 1u);
  EXPECT_EQ(drain(dev_->kick_fd(0)), 0u);
  w(8, 2, 2, VirtioPciDevice::kNotifyIoBar);  // past the last queue: ignored
  w(VirtioPciDevice::kNotifyOffset, 0, 2);     // the memory BAR's notify area is not the doorbell
  EXPECT_EQ(drain(dev_->kick_fd(0)), 0u);
  recreate(mmio_notify());
  w(VirtioPciDevice::kNotifyOffset + 4, 1, 2);
  EXPECT_EQ(drain(dev_->kick_fd(1)), 1u);
  EXPECT_EQ(drain(dev_->kick_fd(0)), 0u);
  w(VirtioPciDevice::kNotifyOffset + 8, 2, 2);  // past the last queue: ignored
}

TEST_F(VirtioPciTest, PciCfgWindowReachesTheDoorbells) {
  const uint16_t cap = find_cap(PCI_CAP_ID_VNDR, VIRTIO_PCI_CAP_PCI_CFG);
  ASSERT_NE(cap, 0);
  const auto field = [cap](size_t off) { return static_cast<uint16_t>(cap + off); };
  dev_->config_write(field(offsetof(virtio_pci_cap, bar)), 1, VirtioPciDevice::kNotifyIoBar);
  dev_->config_write(field(offsetof(virtio_pci_cap, offset)), 4, 4);
  dev_->config_write(field(offsetof(virtio_pci_cap, length)), 4, 2);
  dev_->config_write(field(offsetof(virtio_pci_cfg_cap, pci_cfg_data)), 2, 1);
  EXPECT_EQ(drain(dev_->kick_fd(1)), 1u);
  // Past the I/O BAR's end: nothing.
  dev_->config_write(field(offsetof(virtio_pci_cap, offset)), 4, 8);
  dev_->config_write(field(offsetof(virtio_pci_cfg_cap, pci_cfg_data)), 2, 1);
  EXPECT_EQ(drain(dev_->kick_fd(0)) + drain(dev_->kick_fd(1)), 0u);
}

TEST_F(VirtioPciTest, OnThePciBusPortDoorbellsFollowTheIoBar) {
  Bus pio("pio"), mmio("mmio");
  auto bus = PciBus::create(pio, mmio, testing::test_pci_bus_config());
  ASSERT_TRUE(bus.ok());
  auto slot = (*bus)->add_device(dev_);
  ASSERT_TRUE(slot.ok()) << slot.error().message();
  const uint64_t port = (*bus)->bar_address(*slot, VirtioPciDevice::kNotifyIoBar);
  ASSERT_GE(port, 0xC000u);
  using Io = FakeInterruptController::IoEventFd;
  EXPECT_EQ(ic_.ioeventfds,
            (std::set<Io>{{dev_->kick_fd(0), port, 2, true}, {dev_->kick_fd(1), port + 4, 2, true}}));
  // The guest moves the I/O BAR: doorbells move with it.
  const uint64_t moved = port + 0x100;
  (*bus)->config_write(*slot, PCI_BASE_ADDRESS_0 + 4 * VirtioPciDevice::kNotifyIoBar, 4,
                       static_cast<uint32_t>(moved) | PCI_BASE_ADDRESS_SPACE_IO);
  EXPECT_EQ(ic_.ioeventfds,
            (std::set<Io>{{dev_->kick_fd(0), moved, 2, true}, {dev_->kick_fd(1), moved + 4, 2, true}}));
  // I/O decoding off: no doorbells; memory decoding alone does not bring them back.
  (*bus)->config_write(*slot, PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
  EXPECT_TRUE(ic_.ioeventfds.empty());
  (*bus)->config_write(*slot, PCI_COMMAND, 2, PCI_COMMAND_MEMORY | PCI_COMMAND_IO);
  EXPECT_EQ(ic_.ioeventfds.size(), 2u);
  // A port write the ioeventfd did not catch (another width) still kicks, through the PIO bus.
  std::array<uint8_t, 4> one = {1, 0, 0, 0};
  ASSERT_TRUE(pio.write(moved + 4, one));
  EXPECT_EQ(drain(dev_->kick_fd(1)), 1u);
}

TEST_F(VirtioPciTest, OnThePciBusDoorbellsFollowTheBar) {
  recreate(mmio_notify());
  Bus pio("pio"), mmio("mmio");
  auto bus = PciBus::create(pio, mmio, testing::test_pci_bus_config());
  ASSERT_TRUE(bus.ok());
  auto slot = (*bus)->add_device(dev_);
  ASSERT_TRUE(slot.ok()) << slot.error().message();
  const uint64_t base = (*bus)->bar_address(*slot, VirtioPciDevice::kBar);
  ASSERT_NE(base, 0u);
  using Io = FakeInterruptController::IoEventFd;
  EXPECT_EQ(ic_.ioeventfds, (std::set<Io>{{dev_->kick_fd(0), base + 0x3000, 2, false},
                                          {dev_->kick_fd(1), base + 0x3004, 2, false}}));
  // The guest moves the BAR: doorbells move with it.
  const uint64_t moved = base + 0x100000;
  (*bus)->config_write(*slot, PCI_BASE_ADDRESS_0, 4, static_cast<uint32_t>(moved) | 4);
  EXPECT_EQ((*bus)->bar_address(*slot, VirtioPciDevice::kBar), moved);
  EXPECT_EQ(ic_.ioeventfds, (std::set<Io>{{dev_->kick_fd(0), moved + 0x3000, 2, false},
                                          {dev_->kick_fd(1), moved + 0x3004, 2, false}}));
  // Decoding off: no doorbells at all.
  (*bus)->config_write(*slot, PCI_COMMAND, 2, 0);
  EXPECT_TRUE(ic_.ioeventfds.empty());
  (*bus)->config_write(*slot, PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
  EXPECT_EQ(ic_.ioeventfds.size(), 2u);
  // The common config is reachable through the MMIO bus.
  std::array<uint8_t, 2> numq{};
  ASSERT_TRUE(mmio.read(moved + VIRTIO_PCI_COMMON_NUMQ, numq));
  EXPECT_EQ(numq[0], 2);
}

// Snapshot round trips: a transport driven by a driver into DRIVER_OK, with requests served, is
// saved and restored into a fresh transport and device (new interrupt controller and router, as
// in a new process) on a PCI bus of the same shape.
class VirtioPciSnapshotTest : public VirtioPciTest {
 protected:
  static constexpr uint64_t kQueue1Desc = 0x80000;

  void SetUp() override {
    fake_ = std::make_shared<FakeDevice>();
    fake_->activate_rings = true;
    recreate({}, &drv_.mem());
    auto bus = PciBus::create(pio_, mmio_, testing::test_pci_bus_config());
    ASSERT_TRUE(bus.ok());
    bus_ = *bus;
    auto slot = bus_->add_device(dev_);
    ASSERT_TRUE(slot.ok()) << slot.error().message();
    slot_ = *slot;
  }
  // Linux's probe, with queue 0 on the fake driver's rings (size 16) and queue 1 elsewhere.
  void bring_up_on_driver_rings(uint64_t features = kVersion1 | kFeatureA) {
    status(VIRTIO_CONFIG_S_ACKNOWLEDGE);
    status(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
    driver_features(features);
    status(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
    w(VIRTIO_PCI_COMMON_MSIX, 0, 2);
    setup_queue(1, 32, 2, kQueue1Desc);
    w(VIRTIO_PCI_COMMON_Q_SELECT, 0, 2);
    w(VIRTIO_PCI_COMMON_Q_SIZE, drv_.size(), 2);
    w(VIRTIO_PCI_COMMON_Q_DESCLO, FakeDriver::kDescAddr, 4);
    w(VIRTIO_PCI_COMMON_Q_AVAILLO, FakeDriver::kAvailAddr, 4);
    w(VIRTIO_PCI_COMMON_Q_USEDLO, FakeDriver::kUsedAddr, 4);
    w(VIRTIO_PCI_COMMON_Q_MSIX, 1, 2);
    for (uint16_t q = 0; q < 2; ++q) {
      w(VIRTIO_PCI_COMMON_Q_SELECT, q, 2);
      w(VIRTIO_PCI_COMMON_Q_ENABLE, 1, 2);
    }
    status(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK |
           VIRTIO_CONFIG_S_DRIVER_OK);
  }
  // The driver posts a request on queue 0; the device (the test) serves what is there.
  static int serve(FakeDevice& d) {
    VirtQueue* q = d.activated.at(0).queue;
    int n = 0;
    while (auto c = q->pop()) {
      q->add_used(c->head, 4);
      ++n;
    }
    return n;
  }
  std::vector<uint8_t> common_bytes(VirtioPciDevice& d, uint16_t queue) {
    std::vector<uint8_t> out(0x40);
    std::array<uint8_t, 2> sel{static_cast<uint8_t>(queue), 0};
    d.bar_write(VirtioPciDevice::kBar, VIRTIO_PCI_COMMON_Q_SELECT, sel);
    for (size_t off = 0; off < out.size(); off += 4)
      d.bar_read(VirtioPciDevice::kBar, off, std::span<uint8_t>(out.data() + off, 4));
    return out;
  }

  // The restoring side: a new controller, router, device, transport and bus.
  struct Restored {
    FakeInterruptController ic;
    MsiRouter router{ic};
    Bus pio{"pio"}, mmio{"mmio"};
    std::shared_ptr<FakeDevice> fake = std::make_shared<FakeDevice>();
    std::shared_ptr<VirtioPciDevice> dev;
    std::shared_ptr<PciBus> bus;
  };
  std::unique_ptr<Restored> fresh() {
    auto r = std::make_unique<Restored>();
    r->fake->activate_rings = true;
    auto d = VirtioPciDevice::create(r->fake, drv_.mem(), r->ic, r->router);
    EXPECT_TRUE(d.ok());
    r->dev = *d;
    auto bus = PciBus::create(r->pio, r->mmio, testing::test_pci_bus_config());
    EXPECT_TRUE(bus.ok());
    r->bus = *bus;
    EXPECT_TRUE(r->bus->add_device(r->dev).ok());
    return r;
  }

  FakeDriver drv_{16};
  Bus pio_{"pio"}, mmio_{"mmio"};
  std::shared_ptr<PciBus> bus_;
  uint8_t slot_ = 0;
};

TEST_F(VirtioPciSnapshotTest, RoundTripContinuesWhereTheSavedTransportStopped) {
  bring_up_on_driver_rings();
  ASSERT_EQ(fake_->activations, 1);
  enable_msix();
  for (uint16_t i = 0; i < 3; ++i) drv_.add_chain(static_cast<uint16_t>(2 * i), {8}, {4});
  EXPECT_EQ(serve(*fake_), 3);
  fake_->config_changed();  // config generation 1
  w(VIRTIO_PCI_COMMON_DFSELECT, 1, 4);
  w(VIRTIO_PCI_COMMON_Q_SELECT, 1, 2);
  // The guest moved the I/O BAR (the doorbells) and the memory BAR.
  const uint64_t port = bus_->bar_address(slot_, VirtioPciDevice::kNotifyIoBar) + 0x100;
  bus_->config_write(slot_, PCI_BASE_ADDRESS_0 + 4 * VirtioPciDevice::kNotifyIoBar, 4,
                     static_cast<uint32_t>(port) | PCI_BASE_ADDRESS_SPACE_IO);
  const uint64_t base = bus_->bar_address(slot_, VirtioPciDevice::kBar) + 0x100000;
  bus_->config_write(slot_, PCI_BASE_ADDRESS_0, 4, static_cast<uint32_t>(base) | 4);

  auto saved = dev_->save();
  ASSERT_TRUE(saved.ok()) << saved.error().message();
  auto saved_bus = bus_->save();
  ASSERT_TRUE(saved_bus.ok());
  EXPECT_EQ(dev_->state_name(), "virtio-pci-fake");
  EXPECT_EQ(bus_->state_name(), "pci-bus");

  auto r = fresh();
  ASSERT_TRUE(r->dev->restore(*saved).ok());
  ASSERT_TRUE(r->bus->restore(*saved_bus).ok());

  // The device was activated as by DRIVER_OK, with the negotiated features, queues positioned.
  ASSERT_EQ(r->fake->activations, 1);
  EXPECT_EQ(r->fake->acked_features, kVersion1 | kFeatureA);
  ASSERT_EQ(r->fake->activated.size(), 2u);
  VirtQueue* q0 = r->fake->activated[0].queue;
  ASSERT_NE(q0, nullptr);
  EXPECT_TRUE(q0->active());
  EXPECT_EQ(q0->next_avail(), 3);
  EXPECT_EQ(q0->next_used(), 3);
  EXPECT_EQ(r->fake->activated[1].queue->next_avail(), 0);
  EXPECT_EQ(r->fake->activated[0].kick_fd, r->dev->kick_fd(0));
  // The same common config (selectors included), config space and MSI-X table.
  EXPECT_EQ(r->dev->status(), dev_->status());
  for (uint16_t q = 0; q < 2; ++q) EXPECT_EQ(common_bytes(*r->dev, q), common_bytes(*dev_, q)) << q;
  EXPECT_EQ(r->dev->config_read(PCI_COMMAND, 2), dev_->config_read(PCI_COMMAND, 2));
  for (uint16_t off = 0; off < 256; off += 4)
    EXPECT_EQ(r->dev->config_read(off, 4), dev_->config_read(off, 4)) << off;
  for (uint64_t off = 0; off < dev_->msix().table_bytes(); off += 4) {
    std::array<uint8_t, 4> a{}, b{};
    dev_->msix().table_read(off, a);
    r->dev->msix().table_read(off, b);
    EXPECT_EQ(a, b) << off;
  }
  EXPECT_TRUE(r->dev->msix().enabled());
  for (uint16_t v = 0; v < r->dev->msix().size(); ++v) {
    const auto* route = r->ic.msi_route(r->dev->msix().gsi(v));
    ASSERT_NE(route, nullptr) << v;
    EXPECT_EQ(route->u.msi.data, 0x40u + v);
  }
  EXPECT_EQ(r->dev->save().value(), *saved);
  // The BARs are where the guest had put them, the doorbells with them.
  EXPECT_EQ(r->bus->bar_address(slot_, VirtioPciDevice::kBar), base);
  EXPECT_EQ(r->bus->bar_address(slot_, VirtioPciDevice::kNotifyIoBar), port);
  using Io = FakeInterruptController::IoEventFd;
  EXPECT_EQ(r->ic.ioeventfds,
            (std::set<Io>{{r->dev->kick_fd(0), port, 2, true}, {r->dev->kick_fd(1), port + 4, 2, true}}));
  std::array<uint8_t, 2> numq{};
  ASSERT_TRUE(r->mmio.read(base + VIRTIO_PCI_COMMON_NUMQ, numq));
  EXPECT_EQ(numq[0], 2);

  // A request the driver posts after the restore is served exactly once, in the next used slot,
  // and its interrupt goes out through the restored vector.
  const uint16_t head = drv_.add_chain(8, {8}, {4});
  EXPECT_EQ(serve(*r->fake), 1);
  EXPECT_EQ(serve(*r->fake), 0);
  EXPECT_EQ(drv_.used_idx(), 4);
  EXPECT_EQ(drv_.used(3).id, head);
  r->fake->activated[0].notify();
  EXPECT_EQ(drain(r->dev->msix().eventfd(1)), 1u);
}

TEST_F(VirtioPciSnapshotTest, InactiveAndIntxStatesRoundTrip) {
  status(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
  driver_features(kVersion1);
  setup_queue(1, 32, 2, kQueue1Desc);
  fake_->config_changed();  // INTx: ISR bit and the line up
  auto saved = dev_->save();
  ASSERT_TRUE(saved.ok());
  auto r = fresh();
  const uint32_t gsi = testing::test_intx_gsi(slot_, 0);
  ASSERT_TRUE(r->dev->restore(*saved).ok());
  EXPECT_EQ(r->fake->activations, 0);
  EXPECT_EQ(r->dev->status(), VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
  EXPECT_TRUE(r->ic.lines.at(gsi));
  for (uint16_t q = 0; q < 2; ++q) EXPECT_EQ(common_bytes(*r->dev, q), common_bytes(*dev_, q)) << q;
  std::array<uint8_t, 1> isr{};
  r->dev->bar_read(VirtioPciDevice::kBar, VirtioPciDevice::kIsrOffset, isr);
  EXPECT_EQ(isr[0], VIRTIO_PCI_ISR_CONFIG);
  EXPECT_FALSE(r->ic.lines.at(gsi));
}

TEST_F(VirtioPciSnapshotTest, NeedsResetAndFailedRestoreAsSuch) {
  fake_->fail_activate = true;
  bring_up_on_driver_rings();
  ASSERT_TRUE(status() & VIRTIO_CONFIG_S_NEEDS_RESET);
  auto saved = dev_->save();
  ASSERT_TRUE(saved.ok());
  auto r = fresh();
  ASSERT_TRUE(r->dev->restore(*saved).ok());
  EXPECT_EQ(r->fake->activations, 0);
  EXPECT_EQ(r->dev->status(), status());

  status(0);
  status(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_FAILED);
  saved = dev_->save();
  r = fresh();
  ASSERT_TRUE(r->dev->restore(*saved).ok());
  EXPECT_EQ(r->fake->activations, 0);
  EXPECT_EQ(r->dev->status(), VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_FAILED);
}

TEST_F(VirtioPciSnapshotTest, CorruptStatesAreRefusedAndChangeNothing) {
  bring_up_on_driver_rings();
  enable_msix();
  drv_.add_chain(0, {8}, {4});
  EXPECT_EQ(serve(*fake_), 1);
  auto saved = dev_->save();
  ASSERT_TRUE(saved.ok());
  const std::vector<uint8_t> good = *saved;
  // Layout: offered u64 @0, status @8, feature selects u32 @9/@13, driver features u64 @17,
  // queue select u16 @25, config vector u16 @27, generation @29, queue count u16 @30, then queue
  // 0: size u16 @32, desc/avail/used u64 @34/@42/@50, ready @58, active @59, next avail u16 @60,
  // next used @62, signalled @64, broken @66, its MSI-X vector u16 @67.
  constexpr size_t kQ0 = 32;
  ASSERT_EQ(good[kQ0], drv_.size());
  ASSERT_EQ(good[kQ0 + 28], 1);  // next avail

  auto r = fresh();
  const auto before = r->dev->save().value();
  const auto refused = [&](std::vector<uint8_t> bytes, const char* why) {
    auto res = r->dev->restore(bytes);
    ASSERT_FALSE(res.ok()) << why;
    EXPECT_EQ(res.error().code, ErrorCode::kCorrupt) << why << ": " << res.error().message();
    EXPECT_EQ(r->dev->save().value(), before) << why;
    EXPECT_EQ(r->fake->activations, 0) << why;
    EXPECT_EQ(r->ic.routing_commits, 0) << why;
  };
  const auto with = [&](size_t at, std::initializer_list<uint8_t> v) {
    auto b = good;
    std::copy(v.begin(), v.end(), b.begin() + static_cast<std::ptrdiff_t>(at));
    return b;
  };
  refused(with(kQ0, {12, 0}), "queue size not a power of two");
  refused(with(kQ0, {0, 2}), "queue size above the maximum (256)");
  refused(with(kQ0 + 28, {40, 0}), "next avail out of range");
  refused(with(kQ0 + 26, {2}), "bad bool");
  refused(with(kQ0 + 35, {9, 0}), "MSI-X vector out of range");
  refused(with(27, {7, 0}), "config vector out of range");
  refused(with(30, {3, 0}), "queue count");
  refused(with(0, {0}), "offered features");
  refused(with(17, {0xFF}), "driver features not offered with FEATURES_OK");
  refused(with(kQ0 + 18, {0, 0, 0, 0, 0, 1}), "used ring outside guest memory");
  for (size_t n = 0; n < good.size(); ++n)
    refused({good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n)}, "truncated");
  auto longer = good;
  longer.push_back(0);
  refused(longer, "trailing byte");
  // And the good state still restores into the transport the refusals left alone.
  EXPECT_TRUE(r->dev->restore(good).ok());
  EXPECT_EQ(r->fake->activations, 1);
  // A transport that is already active refuses (restore wants a fresh one).
  auto again = r->dev->restore(good);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace ringvm
