#include "memory/guest_memory.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>

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

namespace ringvm {
namespace {

TEST(GuestMemoryFileTest, PrivateMappingReadsTheFileAndNeverWritesIt) {
  char path[] = "/tmp/ringvm-memfile-XXXXXX";
  int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  ::unlink(path);
  std::vector<uint8_t> content(2 * 4096 * 4, 0);
  content[5] = 0x5A;
  content[4096 * 5 + 1] = 0xA5;  // in the high region below
  ASSERT_EQ(::pwrite(fd, content.data(), content.size(), 0), static_cast<ssize_t>(content.size()));
  // 32 KiB of RAM with the hole at 16 KiB: 16 KiB low, 16 KiB at 4 GiB (file offset 16 KiB).
  auto mem = GuestMemory::create_x86_from_file(content.size(), 4 * 4096, fd, "mem");
  ASSERT_TRUE(mem) << mem.error().message();
  EXPECT_EQ(*mem->read_obj<uint8_t>(5), 0x5A);
  EXPECT_EQ(*mem->read_obj<uint8_t>((1ULL << 32) + 4096 + 1), 0xA5);
  ASSERT_TRUE(mem->write_obj<uint8_t>(5, 0x11));
  uint8_t on_disk = 0;
  ASSERT_EQ(::pread(fd, &on_disk, 1, 5), 1);
  EXPECT_EQ(on_disk, 0x5A);  // copy-on-write: the file keeps the snapshot
  ::close(fd);
}

TEST(GuestMemoryFileTest, WrongSizeRefusedNamingTheFile) {
  char path[] = "/tmp/ringvm-memfile-XXXXXX";
  int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  ::unlink(path);
  ASSERT_EQ(::ftruncate(fd, 8192), 0);
  auto mem = GuestMemory::create_x86_from_file(16384, 1ULL << 30, fd, "memory file m.mem");
  ASSERT_FALSE(mem);
  EXPECT_NE(mem.error().message().find("m.mem"), std::string::npos);
  ::close(fd);
}

TEST(GuestMemoryDirtyTest, DeviceAccessesMarkTheirPages) {
  auto mem = GuestMemory::create_x86(64 * 4096, 1ULL << 30, false);
  ASSERT_TRUE(mem);
  ASSERT_TRUE(mem->write_obj<uint32_t>(0, 1));  // before tracking: not marked
  mem->enable_dirty_tracking();
  ASSERT_TRUE(mem->write_obj<uint32_t>(3 * 4096 + 8, 1));
  ASSERT_TRUE(mem->span(10 * 4096 - 2, 4));  // straddles pages 9 and 10
  auto bits = mem->take_vmm_dirty(0);
  ASSERT_EQ(bits.size(), 1u);
  EXPECT_EQ(bits[0], (uint64_t{1} << 3) | (uint64_t{1} << 9) | (uint64_t{1} << 10));
  EXPECT_EQ(mem->take_vmm_dirty(0)[0], 0u);  // taken: cleared
}

}  // namespace
}  // namespace ringvm
