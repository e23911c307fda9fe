#include "devices/bus.h"

#include <gtest/gtest.h>

#include <array>
#include <vector>

namespace ringvm {
namespace {

class Recorder final : public Device {
 public:
  std::string_view name() const override { return "recorder"; }
  void read(uint64_t offset, std::span<uint8_t> data) override {
    last_read = offset;
    for (auto& b : data) b = 0x5a;
  }
  void write(uint64_t offset, std::span<const uint8_t> data) override {
    writes.emplace_back(offset, std::vector<uint8_t>(data.begin(), data.end()));
  }
  uint64_t last_read = ~0ULL;
  std::vector<std::pair<uint64_t, std::vector<uint8_t>>> writes;
};

TEST(Bus, DispatchesWithOffset) {
  Bus bus("pio");
  auto a = std::make_shared<Recorder>();
  auto b = std::make_shared<Recorder>();
  ASSERT_TRUE(bus.insert(0x3f8, 8, a).ok());
  ASSERT_TRUE(bus.insert(0x400, 4, b).ok());
  std::array<uint8_t, 1> v{0x41};
  EXPECT_TRUE(bus.write(0x3fd, v));
  ASSERT_EQ(a->writes.size(), 1u);
  EXPECT_EQ(a->writes[0].first, 5u);
  EXPECT_EQ(a->writes[0].second, std::vector<uint8_t>{0x41});
  std::array<uint8_t, 2> r{};
  EXPECT_TRUE(bus.read(0x402, r));
  EXPECT_EQ(b->last_read, 2u);
  EXPECT_EQ(r[0], 0x5a);
}

TEST(Bus, UnclaimedReadsAllOnesAndCounts) {
  Bus bus("mmio");
  auto a = std::make_shared<Recorder>();
  ASSERT_TRUE(bus.insert(0x1000, 0x10, a).ok());
  std::array<uint8_t, 4> r{};
  EXPECT_FALSE(bus.read(0x2000, r));
  EXPECT_EQ(r, (std::array<uint8_t, 4>{0xff, 0xff, 0xff, 0xff}));
  // An access that starts inside but runs past the end is not the device's.
  EXPECT_FALSE(bus.read(0x100e, r));
  EXPECT_FALSE(bus.write(0xfff, r));
  EXPECT_EQ(bus.unclaimed(), 3u);
  EXPECT_TRUE(a->writes.empty());
}

TEST(Bus, RejectsOverlapsAndRemoves) {
  Bus bus("pio");
  auto a = std::make_shared<Recorder>();
  ASSERT_TRUE(bus.insert(0x100, 0x10, a).ok());
  EXPECT_FALSE(bus.insert(0x10f, 1, a).ok());
  EXPECT_FALSE(bus.insert(0xf0, 0x11, a).ok());
  EXPECT_FALSE(bus.insert(0x0, 0, a).ok());
  EXPECT_TRUE(bus.insert(0x110, 1, a).ok());
  EXPECT_TRUE(bus.insert(0xf0, 0x10, a).ok());
  EXPECT_TRUE(bus.remove(0x100).ok());
  EXPECT_FALSE(bus.remove(0x100).ok());
  std::array<uint8_t, 1> r{};
  EXPECT_FALSE(bus.read(0x105, r));
}

}  // namespace
}  // namespace ringvm
