#include "arch/x86_64/e820.h"

#include <gtest/gtest.h>

#include "arch/x86_64/layout.h"

namespace ringvm::x86 {
namespace {

std::vector<E820Entry> e820_for(uint64_t ram) {
  auto mem = GuestMemory::create_x86(ram, kMmioHoleStart);
  EXPECT_TRUE(mem.ok());
  auto map = build_e820(*mem);
  EXPECT_TRUE(map.ok()) << map.error().message();
  return map.ok() ? *map : std::vector<E820Entry>{};
}

uint64_t ram_total(const std::vector<E820Entry>& map) {
  uint64_t t = 0;
  for (const auto& e : map) t += e.type == E820Type::kRam ? e.size : 0;
  return t;
}

TEST(E820, Small) {
  const auto map = e820_for(256 * kMiB);
  const std::vector<E820Entry> want = {
      {0, 0x9FC00, E820Type::kRam},
      {0x9FC00, 0x100000 - 0x9FC00, E820Type::kReserved},
      {0x100000, 256 * kMiB - 0x100000, E820Type::kRam},
      {kPciEcamBase, kPciEcamSize, E820Type::kReserved},
  };
  EXPECT_EQ(map, want);
}

// The VMGenID page is memory the guest may map but never allocates: inside one reserved entry.
TEST(E820, VmGenIdPageIsReserved) {
  for (uint64_t ram : {64 * kMiB, 3 * kGiB, 8 * kGiB}) {
    int covering = 0;
    for (const auto& e : e820_for(ram)) {
      if (e.addr <= kVmGenIdAddr && kVmGenIdAddr + 16 <= e.end()) {
        EXPECT_EQ(e.type, E820Type::kReserved);
        ++covering;
      }
    }
    EXPECT_EQ(covering, 1) << ram;
  }
}

TEST(E820, ExactlyThreeGiBStaysBelowTheHole) {
  const auto map = e820_for(3 * kGiB);
  ASSERT_EQ(map.size(), 4u);
  EXPECT_EQ(map[2].end(), kMmioHoleStart);
  EXPECT_EQ(ram_total(map), 3 * kGiB - (0x100000 - 0x9FC00));
}

TEST(E820, EightGiBSplitsAroundTheHole) {
  const auto map = e820_for(8 * kGiB);
  ASSERT_EQ(map.size(), 5u);
  EXPECT_EQ(map[2].end(), kMmioHoleStart);
  EXPECT_EQ(map[4], (E820Entry{4 * kGiB, 5 * kGiB, E820Type::kRam}));
  EXPECT_EQ(ram_total(map), 8 * kGiB - (0x100000 - 0x9FC00));
  for (size_t i = 1; i < map.size(); ++i) EXPECT_LE(map[i - 1].end(), map[i].addr) << "sorted, no overlap";
  // Nothing the firmware or devices use is reported as RAM.
  for (const auto& e : map) {
    if (e.type != E820Type::kRam) continue;
    EXPECT_FALSE(e.addr < kIoapicAddr + 1 && kPciMmio32Base < e.end());
  }
  EXPECT_EQ(pci_mmio64_base(map.back().end()), 9 * kGiB);
}

TEST(E820, TooLittleMemoryIsAnError) {
  GuestMemory mem;
  ASSERT_TRUE(mem.add_region(0, 2 * kMiB).ok());
  auto r = build_e820(mem);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("give --memory more"), std::string::npos);
  GuestMemory none;
  EXPECT_FALSE(build_e820(none).ok());
}

}  // namespace
}  // namespace ringvm::x86
