#include "devices/virtio/rng/virtio_rng.h"

#include <gtest/gtest.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>

#include "devices/virtio/testing/fake_driver.h"

namespace ringvm {
namespace {

using testing::FakeDriver;

TEST(VirtioRng, FillsWritableBuffersBounded) {
  FakeDriver drv(16, 1 << 20);
  VirtQueue q(16);
  drv.configure(q);
  VirtioRng rng;
  EXPECT_EQ(rng.device_type(), uint32_t{VIRTIO_ID_RNG});
  EXPECT_TRUE(rng.device_features() & (1ULL << VIRTIO_F_VERSION_1));
  int irqs = 0;
  std::vector<ActivatedQueue> qs{ActivatedQueue{&q, -1, [&irqs] { ++irqs; }}};
  ASSERT_TRUE(rng.activate(drv.mem(), 1ULL << VIRTIO_F_VERSION_1, std::move(qs)).ok());
  // A 256-byte buffer and one larger than the per-request bound.
  drv.add_chain(0, {}, {256});
  drv.add_chain(1, {}, {VirtioRng::kMaxBytesPerRequest + 4096});
  rng.on_event(0);
  ASSERT_EQ(drv.used_idx(), 2);
  EXPECT_EQ(drv.used(0).len, 256u);
  EXPECT_EQ(drv.used(1).len, VirtioRng::kMaxBytesPerRequest);
  std::vector<uint8_t> bytes(256);
  ASSERT_TRUE(drv.mem().read(FakeDriver::kDataAddr, bytes).ok());
  // 256 random bytes are all zero with probability 2^-2048.
  EXPECT_NE(std::count(bytes.begin(), bytes.end(), 0), 256);
  EXPECT_EQ(rng.bytes_served(), 256u + VirtioRng::kMaxBytesPerRequest);
  EXPECT_EQ(irqs, 1);
  rng.reset();
  rng.on_event(0);  // after reset: no queue, nothing happens
  EXPECT_EQ(rng.requests_served(), 2u);
}

TEST(VirtioRng, SaveAndRestore) {
  VirtioRng a;
  ASSERT_TRUE(a.pause().ok());
  const auto state = a.save();
  ASSERT_TRUE(state.ok());
  VirtioRng b;
  ASSERT_TRUE(b.restore(*state).ok());
  for (size_t len = 0; len < state->size(); ++len) {
    auto r = b.restore(std::span<const uint8_t>(state->data(), len));
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, ErrorCode::kCorrupt);
  }
  auto trailing = *state;
  trailing.push_back(0);
  EXPECT_EQ(b.restore(trailing).error().code, ErrorCode::kCorrupt);
  auto version = *state;
  version[0] = 9;
  EXPECT_NE(b.restore(version).error().message().find("version 9"), std::string::npos);
  // After restore the device serves as before.
  FakeDriver drv(16, 1 << 20);
  VirtQueue q(16);
  drv.configure(q);
  ASSERT_TRUE(b.activate(drv.mem(), 1ULL << VIRTIO_F_VERSION_1, {ActivatedQueue{&q, -1, [] {}}}).ok());
  drv.add_chain(0, {}, {32});
  b.on_event(0);
  EXPECT_EQ(drv.used_idx(), 1);
  b.reset();
}

}  // namespace
}  // namespace ringvm
