#include "block/raw_disk.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <array>
#include <filesystem>
#include <vector>

namespace ringvm {
namespace {

class RawDiskTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ringvm-rawdisk-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/disk.img";
    UniqueFd fd(::open(path_.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0644));
    ASSERT_TRUE(fd.valid());
    ASSERT_EQ(::ftruncate(fd.get(), 1 << 20), 0);  // sparse 1 MiB
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::unique_ptr<RawDisk> open_disk(bool ro = false) {
    auto d = RawDisk::open(path_, ro);
    EXPECT_TRUE(d.ok()) << (d.ok() ? "" : d.error().message());
    return d.ok() ? std::move(*d) : nullptr;
  }

  std::string dir_;
  std::string path_;
};

TEST_F(RawDiskTest, SizeAndFd) {
  auto d = open_disk();
  ASSERT_TRUE(d);
  EXPECT_EQ(d->size(), 1u << 20);
  EXPECT_FALSE(d->read_only());
  ASSERT_TRUE(d->direct_fd().has_value());
  EXPECT_GE(*d->direct_fd(), 0);
  EXPECT_EQ(d->path(), path_);
}

TEST_F(RawDiskTest, ScatterGatherRoundTrip) {
  auto d = open_disk();
  ASSERT_TRUE(d);
  std::array<uint8_t, 100> a{};
  std::array<uint8_t, 412> b{};
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<uint8_t>(i);
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<uint8_t>(255 - i % 256);
  std::array<iovec, 2> w{iovec{a.data(), a.size()}, iovec{b.data(), b.size()}};
  ASSERT_TRUE(d->writev(4096, w).ok());
  ASSERT_TRUE(d->flush().ok());
  std::vector<uint8_t> out(512);
  iovec r{out.data(), out.size()};
  ASSERT_TRUE(d->readv(4096, {&r, 1}).ok());
  EXPECT_TRUE(std::equal(a.begin(), a.end(), out.begin()));
  EXPECT_TRUE(std::equal(b.begin(), b.end(), out.begin() + 100));
}

TEST_F(RawDiskTest, SparseReadsZerosAndEndIsEnforced) {
  auto d = open_disk();
  ASSERT_TRUE(d);
  std::vector<uint8_t> out(512, 0xAA);
  iovec r{out.data(), out.size()};
  ASSERT_TRUE(d->readv((1 << 20) - 512, {&r, 1}).ok());
  EXPECT_EQ(std::count(out.begin(), out.end(), 0), 512);
  auto past = d->readv((1 << 20) - 256, {&r, 1});
  ASSERT_FALSE(past.ok());
  EXPECT_EQ(past.error().code, ErrorCode::kOutOfRange);
  EXPECT_NE(past.error().context.find(path_), std::string::npos);
  EXPECT_FALSE(d->writev(~uint64_t{0} - 10, {&r, 1}).ok());  // offset + len overflows
}

TEST_F(RawDiskTest, DiscardAndWriteZeroes) {
  auto d = open_disk();
  ASSERT_TRUE(d);
  std::vector<uint8_t> ones(3 * 4096, 1);
  iovec w{ones.data(), ones.size()};
  ASSERT_TRUE(d->writev(0, {&w, 1}).ok());
  ASSERT_TRUE(d->discard(0, 4096).ok());
  ASSERT_TRUE(d->write_zeroes(4096, 4096, false).ok());
  ASSERT_TRUE(d->write_zeroes(8192, 512, true).ok());  // partial block: punch zeroes it anyway
  std::vector<uint8_t> out(3 * 4096);
  iovec r{out.data(), out.size()};
  ASSERT_TRUE(d->readv(0, {&r, 1}).ok());
  EXPECT_EQ(std::count(out.begin(), out.begin() + 8192 + 512, 0), 8192 + 512);
  EXPECT_EQ(std::count(out.begin() + 8192 + 512, out.end(), 1), 4096 - 512);
  EXPECT_EQ(d->size(), 1u << 20);  // KEEP_SIZE
}

TEST_F(RawDiskTest, ReadOnlyRefusesWrites) {
  auto d = open_disk(/*ro=*/true);
  ASSERT_TRUE(d);
  EXPECT_TRUE(d->read_only());
  std::array<uint8_t, 512> buf{};
  iovec v{buf.data(), buf.size()};
  EXPECT_TRUE(d->readv(0, {&v, 1}).ok());
  EXPECT_FALSE(d->writev(0, {&v, 1}).ok());
  EXPECT_FALSE(d->discard(0, 512).ok());
  EXPECT_FALSE(d->write_zeroes(0, 512, false).ok());
}

TEST_F(RawDiskTest, OpenErrorsNameThePath) {
  auto missing = RawDisk::open(dir_ + "/nope.img", false);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, ErrorCode::kNotFound);
  EXPECT_NE(missing.error().message().find("nope.img"), std::string::npos);
  auto dir = RawDisk::open(dir_, true);
  ASSERT_FALSE(dir.ok());
  EXPECT_NE(dir.error().message().find(dir_), std::string::npos);
}

TEST_F(RawDiskTest, DirectIoHintFallsBack) {
  auto d = RawDisk::open(path_, false, /*direct_io_hint=*/true);
  ASSERT_TRUE(d.ok()) << d.error().message();
  std::vector<uint8_t> out(4096);
  iovec r{out.data(), out.size()};
  if ((*d)->direct_io()) {
    // O_DIRECT needs an aligned buffer.
    void* p = nullptr;
    ASSERT_EQ(::posix_memalign(&p, 4096, 4096), 0);
    r.iov_base = p;
    EXPECT_TRUE((*d)->readv(0, {&r, 1}).ok());
    ::free(p);
  } else {
    EXPECT_TRUE((*d)->readv(0, {&r, 1}).ok());
  }
}

}  // namespace
}  // namespace ringvm
