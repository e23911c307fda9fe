#include "devices/virtio/mmio.h"

#include <gtest/gtest.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "devices/virtio/rng/virtio_rng.h"
#include "devices/virtio/testing/fake_driver.h"

namespace ringvm {
namespace {

using testing::FakeDriver;
using Reg = VirtioMmioDevice::Reg;

class VirtioMmioTest : public ::testing::Test {
 protected:
  void SetUp() override {
    rng_ = std::make_shared<VirtioRng>();
    auto d = VirtioMmioDevice::create(rng_, drv_.mem(), [this](bool level) { line_ = level; });
    ASSERT_TRUE(d.ok()) << d.error().message();
    dev_ = std::move(*d);
  }
  uint32_t rd(uint64_t off) {
    uint32_t v = 0;
    dev_->read(off, {reinterpret_cast<uint8_t*>(&v), 4});
    return v;
  }
  void wr(uint64_t off, uint32_t v) { dev_->write(off, {reinterpret_cast<const uint8_t*>(&v), 4}); }
  // The driver's side of spec 3.1.1 and 4.2.3.2, up to FEATURES_OK.
  void negotiate(uint64_t features) {
    wr(Reg::kStatus, 0);
    wr(Reg::kStatus, VIRTIO_CONFIG_S_ACKNOWLEDGE);
    wr(Reg::kStatus, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
    wr(Reg::kDriverFeaturesSel, 0);
    wr(Reg::kDriverFeatures, static_cast<uint32_t>(features));
    wr(Reg::kDriverFeaturesSel, 1);
    wr(Reg::kDriverFeatures, static_cast<uint32_t>(features >> 32));
    wr(Reg::kStatus, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
  }
  void setup_queue() {
    wr(Reg::kQueueSel, 0);
    wr(Reg::kQueueNum, drv_.size());
    wr(Reg::kQueueDescLow, FakeDriver::kDescAddr);
    wr(Reg::kQueueDescHigh, 0);
    wr(Reg::kQueueDriverLow, FakeDriver::kAvailAddr);
    wr(Reg::kQueueDeviceLow, FakeDriver::kUsedAddr);
    wr(Reg::kQueueReady, 1);
  }
  static constexpr uint32_t kAll = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER |
                                   VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK;

  FakeDriver drv_{16};
  std::shared_ptr<VirtioRng> rng_;
  std::unique_ptr<VirtioMmioDevice> dev_;
  std::atomic<bool> line_{false};
};

TEST_F(VirtioMmioTest, IdentificationRegisters) {
  EXPECT_EQ(rd(Reg::kMagic), 0x74726976u);
  EXPECT_EQ(rd(Reg::kVersion), 2u);
  EXPECT_EQ(rd(Reg::kDeviceId), uint32_t{VIRTIO_ID_RNG});
  wr(Reg::kDeviceFeaturesSel, 1);
  EXPECT_EQ(rd(Reg::kDeviceFeatures), 1u);  // VERSION_1 is bit 32
  wr(Reg::kDeviceFeaturesSel, 0);
  EXPECT_EQ(uint64_t{rd(Reg::kDeviceFeatures)}, rng_->device_features() & 0xffffffff);
  wr(Reg::kQueueSel, 0);
  EXPECT_EQ(rd(Reg::kQueueNumMax), VirtioRng::kQueueSize);
  wr(Reg::kQueueSel, 1);
  EXPECT_EQ(rd(Reg::kQueueNumMax), 0u);  // no such queue
  EXPECT_GE(dev_->kick_fd(0), 0);
  EXPECT_EQ(dev_->kick_fd(1), -1);
  // Non-32-bit register access reads zero.
  uint16_t half = 0xffff;
  dev_->read(Reg::kMagic, {reinterpret_cast<uint8_t*>(&half), 2});
  EXPECT_EQ(half, 0);
}

TEST_F(VirtioMmioTest, RefusesFeaturesNotOffered) {
  negotiate((1ULL << VIRTIO_F_VERSION_1) | (1ULL << 40));
  EXPECT_FALSE(rd(Reg::kStatus) & VIRTIO_CONFIG_S_FEATURES_OK);
  negotiate(1ULL << VIRTIO_RING_F_EVENT_IDX);  // a legacy driver (no VERSION_1)
  EXPECT_FALSE(rd(Reg::kStatus) & VIRTIO_CONFIG_S_FEATURES_OK);
}

TEST_F(VirtioMmioTest, FullInitSequenceKickAndInterrupt) {
  negotiate(1ULL << VIRTIO_F_VERSION_1);
  EXPECT_TRUE(rd(Reg::kStatus) & VIRTIO_CONFIG_S_FEATURES_OK);
  setup_queue();
  EXPECT_EQ(rd(Reg::kQueueReady), 1u);
  wr(Reg::kStatus, kAll);
  EXPECT_EQ(rd(Reg::kStatus), kAll);
  // Queue registers are frozen while running.
  wr(Reg::kQueueNum, 4);
  drv_.add_chain(0, {}, {32});
  wr(Reg::kQueueNotify, 0);
  for (int i = 0; i < 500 && !line_; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_TRUE(line_) << "no interrupt within 5 s";
  EXPECT_EQ(rd(Reg::kInterruptStatus), 1u);
  EXPECT_EQ(drv_.used_idx(), 1);
  EXPECT_EQ(drv_.used(0).len, 32u);
  wr(Reg::kInterruptAck, 1);
  EXPECT_EQ(rd(Reg::kInterruptStatus), 0u);
  EXPECT_FALSE(line_);
  // Reset: status 0, queue back to power-on state, device inactive.
  wr(Reg::kStatus, 0);
  EXPECT_EQ(rd(Reg::kStatus), 0u);
  EXPECT_EQ(rd(Reg::kQueueReady), 0u);
}

TEST_F(VirtioMmioTest, BadQueueGeometrySetsNeedsReset) {
  negotiate(1ULL << VIRTIO_F_VERSION_1);
  setup_queue();
  wr(Reg::kQueueDescLow, 0xfffff000);  // outside the 1 MiB of guest memory
  wr(Reg::kStatus, kAll);
  EXPECT_TRUE(rd(Reg::kStatus) & VIRTIO_CONFIG_S_NEEDS_RESET);
  EXPECT_EQ(rd(Reg::kInterruptStatus), 2u);  // config change
  EXPECT_TRUE(line_);
  wr(Reg::kStatus, 0);
  EXPECT_FALSE(line_);
}

TEST_F(VirtioMmioTest, BrokenQueueReportsNeedsReset) {
  negotiate(1ULL << VIRTIO_F_VERSION_1);
  setup_queue();
  wr(Reg::kStatus, kAll);
  drv_.set_avail_idx(100);  // far more than 16 entries ahead
  wr(Reg::kQueueNotify, 0);
  for (int i = 0; i < 500 && !(rd(Reg::kStatus) & VIRTIO_CONFIG_S_NEEDS_RESET); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_TRUE(rd(Reg::kStatus) & VIRTIO_CONFIG_S_NEEDS_RESET);
}

TEST(VirtioMmioCmdline, Formats) {
  EXPECT_EQ(virtio_mmio_cmdline(0xd0000000, 5), "virtio_mmio.device=4K@0xd0000000:5");
  EXPECT_EQ(virtio_mmio_cmdline(0x1000, 12, 1 << 20), "virtio_mmio.device=1M@0x1000:12");
}

}  // namespace
}  // namespace ringvm
