#include "memory/guest_memory.h"

#include <gtest/gtest.h>

#include <array>
#include <limits>

namespace ringvm {
namespace {

TEST(GuestMemory, ReadWriteInsideRegion) {
  GuestMemory mem;
  ASSERT_TRUE(mem.add_region(0x1000, 0x2000).ok());
  std::array<uint8_t, 4> in{1, 2, 3, 4};
  ASSERT_TRUE(mem.write(0x1ffe, in).ok());  // straddles a page, inside the region
  std::array<uint8_t, 4> out{};
  ASSERT_TRUE(mem.read(0x1ffe, out).ok());
  EXPECT_EQ(in, out);
  ASSERT_TRUE(mem.write_obj<uint32_t>(0x2ffc, 0xdeadbeef).ok());
  EXPECT_EQ(*mem.read_obj<uint32_t>(0x2ffc), 0xdeadbeefu);
}

TEST(GuestMemory, SharedIndicesAreAlignedSingleAccesses) {
  GuestMemory mem;
  ASSERT_TRUE(mem.add_region(0x1000, 0x1000).ok());
  ASSERT_TRUE(mem.store_shared<uint16_t>(0x1002, 0x0f00).ok());
  EXPECT_EQ(*mem.load_shared<uint16_t>(0x1002), 0x0f00);
  EXPECT_EQ(*mem.read_obj<uint16_t>(0x1002), 0x0f00);  // the same bytes either way
  ASSERT_TRUE(mem.store_shared<uint32_t>(0x1ffc, 7u).ok());
  EXPECT_EQ(*mem.load_shared<uint32_t>(0x1ffc), 7u);
  // A torn-free access needs natural alignment; a misaligned or outside address is an error.
  EXPECT_FALSE(mem.load_shared<uint16_t>(0x1003).ok());
  EXPECT_FALSE(mem.store_shared<uint32_t>(0x1002, 1u).ok());
  EXPECT_FALSE(mem.load_shared<uint16_t>(0x2000).ok());
  EXPECT_FALSE(mem.store_shared<uint16_t>(0xffe, 1).ok());
}

TEST(GuestMemory, HostMappingsAreHugePageAligned) {
  // KVM maps guest RAM with 2 MiB stage-2 entries only where guest and host addresses agree
  // modulo 2 MiB; every region's host mapping starts on a 2 MiB boundary for that.
  GuestMemory mem;
  ASSERT_TRUE(mem.add_region(0, 0x201000).ok());
  ASSERT_TRUE(mem.add_region(0x400000, 0x3000).ok());
  for (const auto& r : mem.regions()) {
    EXPECT_EQ(reinterpret_cast<uintptr_t>(r.host.data()) % GuestMemory::kHugePageSize, 0u) << std::hex << r.gpa;
  }
  // The whole mapping is usable, up to its last byte.
  ASSERT_TRUE(mem.write_obj<uint8_t>(0x200fff, 0x5a).ok());
  EXPECT_EQ(*mem.read_obj<uint8_t>(0x200fff), 0x5a);
}

TEST(GuestMemory, RejectsEverythingOutside) {
  GuestMemory mem;
  ASSERT_TRUE(mem.add_region(0x1000, 0x1000).ok());
  std::array<uint8_t, 8> buf{};
  EXPECT_FALSE(mem.read(0x0, buf).ok());       // below
  EXPECT_FALSE(mem.read(0xffc, buf).ok());     // starts below, ends inside
  EXPECT_FALSE(mem.read(0x1ffc, buf).ok());    // starts inside, ends past the end
  EXPECT_FALSE(mem.read(0x2000, buf).ok());    // exactly at the end
  EXPECT_FALSE(mem.span(0x1000, 0x1001).ok()); // one byte too long
  EXPECT_TRUE(mem.span(0x1000, 0x1000).ok());  // the whole region
  EXPECT_TRUE(mem.span(0x2000, 0).ok());       // empty span at the end is fine
  // Lengths chosen to overflow gpa + len.
  EXPECT_FALSE(mem.span(0x1800, std::numeric_limits<uint64_t>::max()).ok());
  EXPECT_FALSE(mem.span(std::numeric_limits<uint64_t>::max(), 2).ok());
  auto err = mem.read(0x5000, buf);
  ASSERT_FALSE(err.ok());
  EXPECT_EQ(err.error().code, ErrorCode::kOutOfRange);
}

TEST(GuestMemory, AccessMayNotSpanTwoRegions) {
  GuestMemory mem;
  ASSERT_TRUE(mem.add_region(0x0, 0x1000).ok());
  ASSERT_TRUE(mem.add_region(0x1000, 0x1000).ok());
  EXPECT_FALSE(mem.span(0xffc, 8).ok());
  EXPECT_TRUE(mem.span(0x1000, 8).ok());
}

TEST(GuestMemory, RegionValidation) {
  GuestMemory mem;
  EXPECT_FALSE(mem.add_region(0x1000, 0).ok());
  EXPECT_FALSE(mem.add_region(0x1001, 0x1000).ok());
  EXPECT_FALSE(mem.add_region(0x1000, 0x1001).ok());
  EXPECT_FALSE(mem.add_region(0xFFFF'FFFF'FFFF'F000ULL, 0x2000).ok());
  ASSERT_TRUE(mem.add_region(0x10000, 0x10000).ok());
  EXPECT_FALSE(mem.add_region(0x8000, 0x10000).ok());   // overlaps the start
  EXPECT_FALSE(mem.add_region(0x1f000, 0x2000).ok());   // overlaps the end
  EXPECT_EQ(mem.total_size(), 0x10000u);
}

TEST(GuestMemory, X86LayoutSplitsAroundTheHole) {
  auto small = GuestMemory::create_x86(512ULL << 20);
  ASSERT_TRUE(small.ok());
  ASSERT_EQ(small->regions().size(), 1u);
  auto big = GuestMemory::create_x86(4ULL << 30, 3ULL << 30);
  ASSERT_TRUE(big.ok());
  ASSERT_EQ(big->regions().size(), 2u);
  EXPECT_EQ(big->regions()[1].gpa, 1ULL << 32);
  EXPECT_EQ(big->total_size(), 4ULL << 30);
  EXPECT_FALSE(GuestMemory::create_x86(0).ok());
}

}  // namespace
}  // namespace ringvm
