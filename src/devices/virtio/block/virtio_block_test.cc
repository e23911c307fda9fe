#include "devices/virtio/block/virtio_block.h"

#include <fcntl.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "block/raw_disk.h"
#include "devices/virtio/testing/fake_driver.h"

namespace ringvm {
namespace {

using testing::FakeDriver;

constexpr uint64_t kFeatures = (1ULL << VIRTIO_F_VERSION_1) | (1ULL << VIRTIO_RING_F_INDIRECT_DESC);

// A Disk whose every operation fails, standing in for a dying host disk. Given an fd, it hands
// that out as its direct_fd() for io_uring (a pipe: reads complete when the test writes to it).
class FailingDisk final : public Disk {
 public:
  explicit FailingDisk(std::optional<int> direct_fd = std::nullopt) : fd_(direct_fd) {}
  const std::string& path() const override { return path_; }
  uint64_t size() const override { return 1 << 20; }
  bool read_only() const override { return false; }
  Result<void> readv(uint64_t, std::span<const iovec>) override { return fail(); }
  Result<void> writev(uint64_t, std::span<const iovec>) override { return fail(); }
  Result<void> flush() override { return fail(); }
  Result<void> discard(uint64_t, uint64_t) override { return fail(); }
  Result<void> write_zeroes(uint64_t, uint64_t, bool) override { return fail(); }
  std::optional<int> direct_fd() const override { return fd_; }

 private:
  static Error fail() { return Error{ErrorCode::kIo, EIO, "injected failure"}; }
  std::optional<int> fd_;
  std::string path_ = "failing";
};

VirtioBlockOptions opts_with(void (*edit)(VirtioBlockOptions&)) {
  VirtioBlockOptions o;
  edit(o);
  return o;
}

struct Request {
  uint16_t head;
  uint64_t data;    // guest address of the data buffer (0 if none)
  uint64_t status;  // guest address of the status byte
};

class VirtioBlockTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ringvm-vblk-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    const std::string path = dir_ + "/disk.img";
    UniqueFd fd(::open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0644));
    ASSERT_EQ(::ftruncate(fd.get(), 1 << 20), 0);
    path_ = path;
  }
  void TearDown() override {
    if (blk_) blk_->reset();
    std::filesystem::remove_all(dir_);
  }

  void start(VirtioBlockOptions opts = {}, std::shared_ptr<Disk> disk = nullptr, bool ro_file = false) {
    if (!disk) disk = std::shared_ptr<Disk>(std::move(*RawDisk::open(path_, ro_file)));
    // process_queue() from the test thread must finish every request before it returns.
    opts.engine = VirtioBlockOptions::Engine::kSync;
    auto b = VirtioBlock::create(std::move(disk), std::move(opts));
    ASSERT_TRUE(b.ok()) << b.error().message();
    blk_ = std::move(*b);
    drv_.configure(q_);
    std::vector<ActivatedQueue> qs{ActivatedQueue{&q_, -1, [this] { ++interrupts_; }}};
    ASSERT_TRUE(blk_->activate(drv_.mem(), kFeatures, std::move(qs)).ok());
  }

  // Header (readable) [+ data out (readable) | data in (writable)] + status (writable).
  Request submit(uint32_t type, uint64_t sector, std::span<const uint8_t> out, uint32_t in_len) {
    Request r{next_desc_, 0, 0};
    virtio_blk_outhdr hdr{htole32(type), 0, htole64(sector)};
    const uint64_t h = drv_.alloc(sizeof hdr);
    (void)drv_.mem().write_obj(h, hdr);
    uint16_t d = next_desc_;
    drv_.set_desc(d, h, sizeof hdr, VRING_DESC_F_NEXT, static_cast<uint16_t>(d + 1));
    ++d;
    if (!out.empty()) {
      r.data = drv_.alloc(static_cast<uint32_t>(out.size()));
      (void)drv_.mem().write(r.data, out);
      drv_.set_desc(d, r.data, static_cast<uint32_t>(out.size()), VRING_DESC_F_NEXT, static_cast<uint16_t>(d + 1));
      ++d;
    } else if (in_len > 0) {
      r.data = drv_.alloc(in_len);
      drv_.set_desc(d, r.data, in_len, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, static_cast<uint16_t>(d + 1));
      ++d;
    }
    r.status = drv_.alloc(1);
    (void)drv_.mem().write_obj<uint8_t>(r.status, 0xff);
    drv_.set_desc(d, r.status, 1, VRING_DESC_F_WRITE);
    next_desc_ = static_cast<uint16_t>((d + 1) % drv_.size());
    drv_.publish(r.head);
    return r;
  }
  uint8_t status(const Request& r) { return *drv_.mem().read_obj<uint8_t>(r.status); }
  std::vector<uint8_t> data(const Request& r, size_t n) {
    std::vector<uint8_t> v(n);
    (void)drv_.mem().read(r.data, v);
    return v;
  }
  void run() { blk_->process_queue(0); }

  std::string dir_, path_;
  FakeDriver drv_{16};
  VirtQueue q_{16};
  std::unique_ptr<VirtioBlock> blk_;
  int interrupts_ = 0;
  uint16_t next_desc_ = 0;
};

TEST_F(VirtioBlockTest, FeaturesAndConfig) {
  start(opts_with([](auto& o) { o.serial = "ABC"; o.queues = 2; }));
  EXPECT_EQ(blk_->device_type(), uint32_t{VIRTIO_ID_BLOCK});
  const uint64_t f = blk_->device_features();
  EXPECT_TRUE(f & (1ULL << VIRTIO_F_VERSION_1));
  EXPECT_TRUE(f & (1ULL << VIRTIO_BLK_F_FLUSH));
  EXPECT_TRUE(f & (1ULL << VIRTIO_BLK_F_DISCARD));
  EXPECT_TRUE(f & (1ULL << VIRTIO_BLK_F_MQ));
  EXPECT_FALSE(f & (1ULL << VIRTIO_BLK_F_RO));
  EXPECT_EQ(blk_->queue_max_sizes().size(), 2u);
  uint64_t cap = 0;
  blk_->read_config(0, {reinterpret_cast<uint8_t*>(&cap), 8});
  EXPECT_EQ(cap, (1u << 20) / 512);
  uint16_t nq = 0;
  blk_->read_config(offsetof(virtio_blk_config, num_queues), {reinterpret_cast<uint8_t*>(&nq), 2});
  EXPECT_EQ(nq, 2);
  uint32_t past = 0xffffffff;
  blk_->read_config(4096, {reinterpret_cast<uint8_t*>(&past), 4});
  EXPECT_EQ(past, 0u);
}

TEST_F(VirtioBlockTest, RejectsBadOptions) {
  auto disk = std::shared_ptr<Disk>(std::move(*RawDisk::open(path_, false)));
  EXPECT_FALSE(VirtioBlock::create(disk, opts_with([](auto& o) { o.serial = std::string(21, 'x'); })).ok());
  EXPECT_FALSE(VirtioBlock::create(disk, opts_with([](auto& o) { o.queues = 0; })).ok());
  EXPECT_FALSE(VirtioBlock::create(disk, opts_with([](auto& o) { o.queues = 17; })).ok());
  EXPECT_FALSE(VirtioBlock::create(disk, opts_with([](auto& o) { o.queue_size = 100; })).ok());
  EXPECT_FALSE(VirtioBlock::create(nullptr, {}).ok());
}

TEST_F(VirtioBlockTest, WriteThenReadBack) {
  start();
  std::vector<uint8_t> payload(1024);
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<uint8_t>(i * 7);
  auto w = submit(VIRTIO_BLK_T_OUT, 8, payload, 0);
  auto f = submit(VIRTIO_BLK_T_FLUSH, 0, {}, 0);
  auto r = submit(VIRTIO_BLK_T_IN, 8, {}, 1024);
  run();
  EXPECT_EQ(status(w), VIRTIO_BLK_S_OK);
  EXPECT_EQ(status(f), VIRTIO_BLK_S_OK);
  EXPECT_EQ(status(r), VIRTIO_BLK_S_OK);
  EXPECT_EQ(data(r, 1024), payload);
  EXPECT_EQ(drv_.used_idx(), 3);
  EXPECT_EQ(drv_.used(0).len, 1u);
  EXPECT_EQ(drv_.used(2).len, 1025u);  // data + status
  EXPECT_EQ(blk_->stats().bytes_written.load(), 1024u);
  EXPECT_EQ(blk_->stats().reads.load(), 1u);
  EXPECT_GE(interrupts_, 1);
  // And it really is in the file.
  UniqueFd fd(::open(path_.c_str(), O_RDONLY | O_CLOEXEC));
  std::vector<uint8_t> file(1024);
  ASSERT_EQ(::pread(fd.get(), file.data(), file.size(), 8 * 512), 1024);
  EXPECT_EQ(file, payload);
}

TEST_F(VirtioBlockTest, GetId) {
  start(opts_with([](auto& o) { o.serial = "ringvm-serial"; }));
  auto r = submit(VIRTIO_BLK_T_GET_ID, 0, {}, 20);
  run();
  EXPECT_EQ(status(r), VIRTIO_BLK_S_OK);
  auto id = data(r, 20);
  EXPECT_EQ(std::string(id.begin(), id.begin() + 13), "ringvm-serial");
  EXPECT_EQ(id[13], 0);
  EXPECT_EQ(drv_.used(0).len, 21u);
}

TEST_F(VirtioBlockTest, DiscardAndWriteZeroes) {
  start();
  std::vector<uint8_t> ones(4096, 1);
  auto w = submit(VIRTIO_BLK_T_OUT, 0, ones, 0);
  virtio_blk_discard_write_zeroes segs[2] = {{htole64(0), htole32(2), 0}, {htole64(4), htole32(2), htole32(1)}};
  auto z = submit(VIRTIO_BLK_T_WRITE_ZEROES, 0, {reinterpret_cast<uint8_t*>(segs), sizeof segs}, 0);
  virtio_blk_discard_write_zeroes d{htole64(6), htole32(2), 0};
  auto dr = submit(VIRTIO_BLK_T_DISCARD, 0, {reinterpret_cast<uint8_t*>(&d), sizeof d}, 0);
  auto r = submit(VIRTIO_BLK_T_IN, 0, {}, 4096);
  run();
  EXPECT_EQ(status(w), VIRTIO_BLK_S_OK);
  EXPECT_EQ(status(z), VIRTIO_BLK_S_OK);
  EXPECT_EQ(status(dr), VIRTIO_BLK_S_OK);
  auto back = data(r, 4096);
  EXPECT_EQ(std::count(back.begin(), back.begin() + 1024, 0), 1024);       // sectors 0-1 zeroed
  EXPECT_EQ(std::count(back.begin() + 1024, back.begin() + 2048, 1), 1024); // 2-3 untouched
  EXPECT_EQ(std::count(back.begin() + 2048, back.begin() + 4096, 0), 2048); // 4-7 zeroed/discarded
}

TEST_F(VirtioBlockTest, BadDiscardRequests) {
  start();
  virtio_blk_discard_write_zeroes unmap{htole64(0), htole32(1), htole32(1)};
  auto a = submit(VIRTIO_BLK_T_DISCARD, 0, {reinterpret_cast<uint8_t*>(&unmap), sizeof unmap}, 0);
  std::vector<uint8_t> partial(10, 0);
  auto b = submit(VIRTIO_BLK_T_DISCARD, 0, partial, 0);
  virtio_blk_discard_write_zeroes past{htole64(2047), htole32(2), 0};
  auto c = submit(VIRTIO_BLK_T_WRITE_ZEROES, 0, {reinterpret_cast<uint8_t*>(&past), sizeof past}, 0);
  run();
  EXPECT_EQ(status(a), VIRTIO_BLK_S_UNSUPP);
  EXPECT_EQ(status(b), VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(status(c), VIRTIO_BLK_S_IOERR);
}

TEST_F(VirtioBlockTest, OutOfRangeAndOverflow) {
  start();
  auto a = submit(VIRTIO_BLK_T_IN, 2047, {}, 1024);  // last sector + one past
  auto b = submit(VIRTIO_BLK_T_IN, ~uint64_t{0} / 512 + 1, {}, 512);  // sector * 512 overflows
  auto c = submit(VIRTIO_BLK_T_IN, 0, {}, 100);  // not a sector multiple
  auto d = submit(VIRTIO_BLK_T_IN, 2047, {}, 512);  // the very last sector is fine
  run();
  EXPECT_EQ(status(a), VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(status(b), VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(status(c), VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(status(d), VIRTIO_BLK_S_OK);
  EXPECT_EQ(blk_->stats().bad_requests.load(), 3u);
  EXPECT_EQ(drv_.used(0).len, 1u);  // failed reads report only the status byte
}

TEST_F(VirtioBlockTest, ReadOnly) {
  start({}, nullptr, /*ro_file=*/true);
  EXPECT_TRUE(blk_->read_only());
  EXPECT_TRUE(blk_->device_features() & (1ULL << VIRTIO_BLK_F_RO));
  EXPECT_FALSE(blk_->device_features() & (1ULL << VIRTIO_BLK_F_DISCARD));
  std::vector<uint8_t> payload(512, 9);
  auto w = submit(VIRTIO_BLK_T_OUT, 0, payload, 0);
  virtio_blk_discard_write_zeroes seg{0, htole32(1), 0};
  auto z = submit(VIRTIO_BLK_T_WRITE_ZEROES, 0, {reinterpret_cast<uint8_t*>(&seg), sizeof seg}, 0);
  auto r = submit(VIRTIO_BLK_T_IN, 0, {}, 512);
  auto f = submit(VIRTIO_BLK_T_FLUSH, 0, {}, 0);
  run();
  EXPECT_EQ(status(w), VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(status(z), VIRTIO_BLK_S_UNSUPP);
  EXPECT_EQ(status(r), VIRTIO_BLK_S_OK);
  EXPECT_EQ(status(f), VIRTIO_BLK_S_OK);
}

TEST_F(VirtioBlockTest, ShortHeaderAndMissingStatus) {
  start();
  // 8-byte header, then a status byte.
  const uint64_t h = drv_.alloc(8), s = drv_.alloc(1);
  drv_.set_desc(0, h, 8, VRING_DESC_F_NEXT, 1);
  drv_.set_desc(1, s, 1, VRING_DESC_F_WRITE);
  drv_.publish(0);
  // No writable byte at all.
  drv_.set_desc(2, drv_.alloc(16), 16, 0);
  drv_.publish(2);
  next_desc_ = 3;
  auto unknown = submit(99, 0, {}, 0);
  auto good = submit(VIRTIO_BLK_T_IN, 0, {}, 512);
  run();
  EXPECT_EQ(*drv_.mem().read_obj<uint8_t>(s), VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(drv_.used(1).len, 0u);
  EXPECT_EQ(status(unknown), VIRTIO_BLK_S_UNSUPP);
  EXPECT_EQ(status(good), VIRTIO_BLK_S_OK);
  EXPECT_EQ(blk_->stats().no_status.load(), 1u);
  EXPECT_EQ(blk_->stats().unsupported.load(), 1u);
}

TEST_F(VirtioBlockTest, MalformedChainCountedAndQueueKeepsGoing) {
  start();
  drv_.publish(99);  // head out of range
  next_desc_ = 0;
  auto good = submit(VIRTIO_BLK_T_IN, 0, {}, 512);
  run();
  EXPECT_EQ(status(good), VIRTIO_BLK_S_OK);
  EXPECT_EQ(q_.stats().error(ChainError::kHeadOutOfRange), 1u);
}

TEST_F(VirtioBlockTest, HostIoErrorBecomesIoerr) {
  start({}, std::make_shared<FailingDisk>());
  std::vector<uint8_t> payload(512, 1);
  auto w = submit(VIRTIO_BLK_T_OUT, 0, payload, 0);
  auto r = submit(VIRTIO_BLK_T_IN, 0, {}, 512);
  auto f = submit(VIRTIO_BLK_T_FLUSH, 0, {}, 0);
  run();
  EXPECT_EQ(status(w), VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(status(r), VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(status(f), VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(blk_->stats().io_errors.load(), 3u);
  EXPECT_EQ(drv_.used_idx(), 3);
}

TEST_F(VirtioBlockTest, UnsafeCacheSkipsFlush) {
  start(opts_with([](auto& o) { o.cache = VirtioBlockOptions::Cache::kUnsafe; }), std::make_shared<FailingDisk>());
  auto f = submit(VIRTIO_BLK_T_FLUSH, 0, {}, 0);
  run();
  EXPECT_EQ(status(f), VIRTIO_BLK_S_OK);  // the failing flush was never called
}

std::vector<uint8_t> config_of(const VirtioBlock& b) {
  std::vector<uint8_t> c(sizeof(virtio_blk_config));
  b.read_config(0, c);
  return c;
}

// A write the guest saw completed before the snapshot reads back through a device restored on
// the same disk file, with fresh rings (a new guest memory: the disk is what carries the data).
TEST_F(VirtioBlockTest, SaveFlushRestoreOnTheSameDisk) {
  const auto opts = opts_with([](auto& o) { o.serial = "snap"; o.queues = 2; });
  start(opts);
  std::vector<uint8_t> payload(2048);
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<uint8_t>(i * 13 + 1);
  auto w = submit(VIRTIO_BLK_T_OUT, 16, payload, 0);
  run();
  ASSERT_EQ(status(w), VIRTIO_BLK_S_OK);
  ASSERT_TRUE(blk_->pause().ok());
  ASSERT_TRUE(blk_->flush().ok());
  auto state = blk_->save();
  ASSERT_TRUE(state.ok()) << state.error().message();
  const auto config = config_of(*blk_);
  blk_->reset();
  blk_.reset();

  auto fresh = VirtioBlock::create(std::shared_ptr<Disk>(std::move(*RawDisk::open(path_, false))), opts);
  ASSERT_TRUE(fresh.ok());
  ASSERT_TRUE((*fresh)->restore(*state).ok());
  EXPECT_EQ(config_of(**fresh), config);
  drv_ = FakeDriver(16);
  next_desc_ = 0;
  drv_.configure(q_);
  std::vector<ActivatedQueue> qs{ActivatedQueue{&q_, -1, [this] { ++interrupts_; }}};
  ASSERT_TRUE((*fresh)->activate(drv_.mem(), kFeatures, std::move(qs)).ok());
  blk_ = std::move(*fresh);
  auto r = submit(VIRTIO_BLK_T_IN, 16, {}, 2048);
  run();
  EXPECT_EQ(status(r), VIRTIO_BLK_S_OK);
  EXPECT_EQ(data(r, 2048), payload);
}

TEST_F(VirtioBlockTest, FlushReportsTheDiskFailing) {
  start({}, std::make_shared<FailingDisk>());
  auto r = blk_->flush();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("flushing failing"), std::string::npos) << r.error().message();
}

TEST_F(VirtioBlockTest, RestoreRefusesAnotherDiskOrBadState) {
  start(opts_with([](auto& o) { o.serial = "snap"; }));
  const std::vector<uint8_t> good = *blk_->save();
  auto device = [&](std::string_view serial, const std::string& path) {
    VirtioBlockOptions o;
    o.serial = serial;
    return std::move(*VirtioBlock::create(std::shared_ptr<Disk>(std::move(*RawDisk::open(path, false))), o));
  };
  auto fresh = device("snap", path_);
  const auto config = config_of(*fresh);
  auto refused = [&](VirtioBlock& b, const std::vector<uint8_t>& s, ErrorCode code, std::string_view says) {
    auto r = b.restore(s);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, code) << r.error().message();
    EXPECT_NE(r.error().message().find(says), std::string::npos) << r.error().message();
  };
  for (size_t len = 0; len < good.size(); ++len)
    refused(*fresh, std::vector<uint8_t>(good.begin(), good.begin() + static_cast<ptrdiff_t>(len)),
            ErrorCode::kCorrupt, "state ends after");
  auto trailing = good;
  trailing.push_back(1);
  refused(*fresh, trailing, ErrorCode::kCorrupt, "follow the end");
  auto boolean = good;
  boolean[4 + 8 + 2 + 2 + 8] = 2;  // version, features, queues, queue size, capacity, then read_only
  refused(*fresh, boolean, ErrorCode::kCorrupt, "not a boolean");
  // A disk of another size: refused naming the disk and both sizes.
  const std::string other = dir_ + "/other.img";
  {
    UniqueFd fd(::open(other.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0644));
    ASSERT_EQ(::ftruncate(fd.get(), 2 << 20), 0);
  }
  auto bigger = device("snap", other);
  refused(*bigger, good, ErrorCode::kInvalidArgument, "2048 sectors (1048576 bytes); " + other + " has 4096");
  refused(*device("other", path_), good, ErrorCode::kInvalidArgument, "'snap'; this device's is 'other'");
  EXPECT_EQ(config_of(*fresh), config);
  EXPECT_TRUE(fresh->restore(good).ok());
}

// Through the real worker: kicks on an eventfd, interrupts on another, for either engine.
class VirtioBlockWorkerTest : public VirtioBlockTest,
                              public ::testing::WithParamInterface<VirtioBlockOptions::Engine> {
 protected:
  void start_worker(uint32_t poll_us = 0, uint64_t features = kFeatures, uint32_t batch_us = 0,
                    std::shared_ptr<Disk> disk = nullptr, uint16_t chain_passes = 4,
                    uint64_t merge_bytes = VirtioBlockOptions::kDefaultMergeBytes) {
    if (!disk) disk = std::shared_ptr<Disk>(std::move(*RawDisk::open(path_, false)));
    VirtioBlockOptions opts;
    opts.engine = GetParam();
    opts.poll_us = poll_us;
    opts.batch_us = batch_us;
    opts.chain_passes = chain_passes;
    opts.merge_bytes = merge_bytes;
    opts.chain_max_bytes = chain_max_bytes_;
    auto b = VirtioBlock::create(disk, opts);
    ASSERT_TRUE(b.ok());
    blk_ = std::move(*b);
    kick_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    irq_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    drv_.configure(q_);
    const int irq_fd = irq_.get();
    std::vector<ActivatedQueue> qs{ActivatedQueue{&q_, kick_.get(), [irq_fd] {
                                                    const uint64_t one = 1;
                                                    [[maybe_unused]] auto n = ::write(irq_fd, &one, 8);
                                                  }}};
    ASSERT_TRUE(blk_->activate(drv_.mem(), features, std::move(qs)).ok());
  }
  void kick() {
    const uint64_t one = 1;
    ASSERT_EQ(::write(kick_.get(), &one, 8), 8);
  }
  // Waits (bounded) for the used ring to reach `n` entries.
  bool wait_used(uint16_t n) {
    for (int i = 0; i < 500; ++i) {
      if (drv_.used_idx() == n) return true;
      pollfd p{irq_.get(), POLLIN, 0};
      ::poll(&p, 1, 10);
      uint64_t v;
      [[maybe_unused]] auto r = ::read(irq_.get(), &v, 8);
    }
    return false;
  }
  // A read of 512 bytes from a pipe into the avail ring (from its idx field on): the bytes are
  // the ring as it is, with a GET_ID request (set up, not published) added. With `lead_bytes`, a
  // plain read of that many bytes from the pipe comes first in the same pass. Kicked once.
  void start_self_publishing_read(uint16_t chain_passes, uint32_t lead_bytes = 0) {
    int p[2];
    ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
    pipe_rd_.reset(p[0]);
    pipe_wr_.reset(p[1]);
    if (lead_bytes > 0) {
      ASSERT_GE(::fcntl(pipe_wr_.get(), F_SETPIPE_SZ, lead_bytes + 4096), static_cast<int>(lead_bytes));
    }
    constexpr uint64_t kRingIdx = FakeDriver::kAvailAddr + 2;  // avail->idx, then the ring entries
    const virtio_blk_outhdr get_id{htole32(VIRTIO_BLK_T_GET_ID), 0, 0};
    uint16_t published = 0;
    if (lead_bytes > 0) {
      const virtio_blk_outhdr lead{htole32(VIRTIO_BLK_T_IN), 0, 0};
      const uint64_t h = drv_.alloc(sizeof lead), st = drv_.alloc(1);
      (void)drv_.mem().write_obj(h, lead);
      drv_.set_desc(6, h, sizeof lead, VRING_DESC_F_NEXT, 7);
      drv_.set_desc(7, drv_.alloc(lead_bytes), lead_bytes, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 8);
      drv_.set_desc(8, st, 1, VRING_DESC_F_WRITE);
      drv_.publish(6);
      ++published;
    }
    // The self-publishing read continues the lead one on the disk (it may merge with it).
    const virtio_blk_outhdr read{htole32(VIRTIO_BLK_T_IN), 0, htole64(lead_bytes / 512)};
    const uint64_t h1 = drv_.alloc(sizeof read), s1 = drv_.alloc(1), h2 = drv_.alloc(sizeof get_id),
                   id = drv_.alloc(20), s2 = drv_.alloc(1);
    (void)drv_.mem().write_obj(h1, read);
    (void)drv_.mem().write_obj(h2, get_id);
    drv_.set_desc(0, h1, sizeof read, VRING_DESC_F_NEXT, 1);
    drv_.set_desc(1, kRingIdx, 512, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 2);
    drv_.set_desc(2, s1, 1, VRING_DESC_F_WRITE);
    drv_.set_desc(3, h2, sizeof get_id, VRING_DESC_F_NEXT, 4);
    drv_.set_desc(4, id, 20, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 5);
    drv_.set_desc(5, s2, 1, VRING_DESC_F_WRITE);
    drv_.publish(0);
    ++published;
    std::vector<uint8_t> ring(512);
    ASSERT_TRUE(drv_.mem().read(kRingIdx, ring).ok());
    ring[0] = static_cast<uint8_t>(published + 1);  // avail->idx, one more
    ring[1] = 0;
    ring[2 + 2 * published] = 3;  // avail->ring[published] = the GET_ID's head
    ring[3 + 2 * published] = 0;
    // Everything is in place (requests published, the pipe holding the lead's bytes and the
    // ring's) before the worker starts: its first pass finds the requests together and their
    // read completes during its submit, every time. (Started earlier, the worker could submit the
    // read before the bytes arrived, and then reap it late, in whichever pass came next.)
    std::vector<uint8_t> bytes(lead_bytes, 0x11);
    bytes.insert(bytes.end(), ring.begin(), ring.end());
    ASSERT_EQ(::write(pipe_wr_.get(), bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
    start_worker(0, kFeatures, 0, std::make_shared<FailingDisk>(pipe_rd_.get()), chain_passes);
    if (blk_->uring_queues() == 0) GTEST_SKIP() << "no io_uring on this host";
  }
  UniqueFd kick_, irq_, pipe_rd_, pipe_wr_;
  uint64_t chain_max_bytes_ = VirtioBlockOptions::kDefaultChainMaxBytes;
};

TEST_P(VirtioBlockWorkerTest, ServesKicksAndStopsOnReset) {
  start_worker();
  if (GetParam() == VirtioBlockOptions::Engine::kSync) {
    EXPECT_EQ(blk_->uring_queues(), 0u);
  } else {
    // kAuto uses io_uring wherever this host allows it; otherwise it falls back silently.
    const bool host_has_uring = UringQueue::create(4).ok();
    EXPECT_EQ(blk_->uring_queues(), host_has_uring ? 1u : 0u);
    std::printf("io_uring on this host: %s\n", host_has_uring ? "yes" : "no (synchronous fallback tested)");
  }
  std::vector<uint8_t> payload(4096);
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<uint8_t>(i % 251);
  auto w = submit(VIRTIO_BLK_T_OUT, 16, payload, 0);
  kick();
  ASSERT_TRUE(wait_used(1)) << "write not completed within 5 s";
  auto f = submit(VIRTIO_BLK_T_FLUSH, 0, {}, 0);
  auto r = submit(VIRTIO_BLK_T_IN, 16, {}, 4096);
  auto bad = submit(VIRTIO_BLK_T_IN, 4096, {}, 512);  // past the end
  kick();
  ASSERT_TRUE(wait_used(4)) << "requests not completed within 5 s";
  EXPECT_EQ(status(w), VIRTIO_BLK_S_OK);
  EXPECT_EQ(status(f), VIRTIO_BLK_S_OK);
  EXPECT_EQ(status(r), VIRTIO_BLK_S_OK);
  EXPECT_EQ(status(bad), VIRTIO_BLK_S_IOERR);
  EXPECT_EQ(data(r, 4096), payload);
  EXPECT_EQ(blk_->stats().bytes_read.load(), 4096u);
  EXPECT_EQ(blk_->stats().bytes_written.load(), 4096u);
  // --stats' view of what the queue cost the guest: the two doorbells, and at least one
  // interrupt for each of them (without EVENT_IDX the driver wants every one).
  EXPECT_EQ(blk_->stats().kicks.load(), 2u);
  EXPECT_GE(blk_->stats().interrupts.load(), 2u);
  blk_->reset();
  // After reset the queue is not served even when kicked.
  auto r2 = submit(VIRTIO_BLK_T_IN, 0, {}, 512);
  kick();
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(status(r2), 0xff);
}

TEST_P(VirtioBlockWorkerTest, PollingServesRequestsWithoutKicksThenSleeps) {
  // A 2 s window (far longer than the test needs) so scheduling delays cannot make it miss.
  start_worker(2'000'000, kFeatures | (1ULL << VIRTIO_RING_F_EVENT_IDX));
  auto misses = [&](uint64_t n) {
    for (int i = 0; i < 1000 && blk_->stats().poll_misses.load() < n; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return blk_->stats().poll_misses.load() == n;
  };
  // The worker serves its ring once at start, polls it for the window, finds nothing, asks for a
  // kick at the next request and sleeps: a request now is not served until it is kicked.
  ASSERT_TRUE(misses(1));
  EXPECT_EQ(drv_.avail_event(), 0);
  auto r1 = submit(VIRTIO_BLK_T_IN, 0, {}, 512);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(status(r1), 0xff) << "served without a kick while the worker slept";
  kick();
  ASSERT_TRUE(wait_used(1));
  EXPECT_EQ(status(r1), VIRTIO_BLK_S_OK);
  // Now it polls again (the 2 s gap before the kick halved the window to 1 s): the next request
  // is served with no kick, and the driver is not asked for one.
  auto r2 = submit(VIRTIO_BLK_T_IN, 0, {}, 512);
  ASSERT_TRUE(wait_used(2)) << "a request made available during the poll window was not served";
  EXPECT_EQ(status(r2), VIRTIO_BLK_S_OK);
  EXPECT_EQ(blk_->stats().poll_hits.load(), 1u);
  EXPECT_EQ(drv_.avail_event(), 0) << "a kick was asked for while polling";
  // When the window runs out it asks for a kick at the next request.
  ASSERT_TRUE(misses(2));
  EXPECT_EQ(drv_.avail_event(), 2);
}

TEST_P(VirtioBlockWorkerTest, BusyQueueBatchesWithoutKicksThenAsksForThemAgain) {
  // Two requests waiting when the worker starts: its first pass finds both, so the queue counts as
  // busy and asks for no kick for the next ones.
  auto r1 = submit(VIRTIO_BLK_T_IN, 0, {}, 512);
  auto r2 = submit(VIRTIO_BLK_T_IN, 8, {}, 512);
  start_worker(0, kFeatures | (1ULL << VIRTIO_RING_F_EVENT_IDX), 200'000);
  ASSERT_TRUE(wait_used(2));
  // The count goes up after the pass published its requests.
  for (int i = 0; i < 100 && blk_->stats().batches.load() == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(blk_->stats().batches.load(), 1u);
  EXPECT_EQ(drv_.avail_event(), 0) << "a busy queue asked for a kick";
  // The next request is served by the worker's timer (within batch_us), without a kick.
  auto r3 = submit(VIRTIO_BLK_T_IN, 16, {}, 512);
  ASSERT_TRUE(wait_used(3)) << "a request added while batching was not served without a kick";
  EXPECT_EQ(status(r1), VIRTIO_BLK_S_OK);
  EXPECT_EQ(status(r2), VIRTIO_BLK_S_OK);
  EXPECT_EQ(status(r3), VIRTIO_BLK_S_OK);
  // That pass found one request: light load again, so it asked for a kick and sleeps.
  for (int i = 0; i < 100 && drv_.avail_event() != 3; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(drv_.avail_event(), 3);
  auto r4 = submit(VIRTIO_BLK_T_IN, 24, {}, 512);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // longer than any batch window
  EXPECT_EQ(status(r4), 0xff) << "served without a kick after the queue went idle";
  kick();
  ASSERT_TRUE(wait_used(4));
  EXPECT_EQ(status(r4), VIRTIO_BLK_S_OK);
  EXPECT_EQ(blk_->stats().batches.load(), 1u);
  // That kick came within 4 x batch_us of the busy pass: it was served on the timer.
  EXPECT_EQ(blk_->stats().deferred.load(), 1u);
}

TEST_P(VirtioBlockWorkerTest, KickOnAQueueThatWentQuietIsServedAtOnce) {
  auto r1 = submit(VIRTIO_BLK_T_IN, 0, {}, 512);
  auto r2 = submit(VIRTIO_BLK_T_IN, 8, {}, 512);
  start_worker(0, kFeatures | (1ULL << VIRTIO_RING_F_EVENT_IDX), 20'000);  // busy for 80 ms after
  ASSERT_TRUE(wait_used(2));
  // The timer pass finds nothing and asks for kicks again; then the queue stays quiet.
  for (int i = 0; i < 100 && drv_.avail_event() != 2; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_EQ(drv_.avail_event(), 2);
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  auto r3 = submit(VIRTIO_BLK_T_IN, 16, {}, 512);
  kick();
  ASSERT_TRUE(wait_used(3));
  EXPECT_EQ(status(r1), VIRTIO_BLK_S_OK);
  EXPECT_EQ(status(r2), VIRTIO_BLK_S_OK);
  EXPECT_EQ(status(r3), VIRTIO_BLK_S_OK);
  EXPECT_EQ(blk_->stats().deferred.load(), 0u) << "a kick on a quiet queue waited for the batch timer";
}

TEST_P(VirtioBlockWorkerTest, AdjacentRequestsInOnePassBecomeOneHostIo) {
  // Three writes that continue each other, one elsewhere: all waiting when the worker starts, so
  // its first pass finds them together. On io_uring the three go out as one writev.
  std::vector<std::vector<uint8_t>> blocks;
  for (int i = 0; i < 4; ++i) blocks.emplace_back(4096, static_cast<uint8_t>(0x10 + i));
  auto w0 = submit(VIRTIO_BLK_T_OUT, 8, blocks[0], 0);
  auto w1 = submit(VIRTIO_BLK_T_OUT, 16, blocks[1], 0);
  auto w2 = submit(VIRTIO_BLK_T_OUT, 24, blocks[2], 0);
  auto w3 = submit(VIRTIO_BLK_T_OUT, 100, blocks[3], 0);
  start_worker();
  ASSERT_TRUE(wait_used(4));
  for (const auto& w : {w0, w1, w2, w3}) EXPECT_EQ(status(w), VIRTIO_BLK_S_OK);
  const uint64_t merged = blk_->uring_queues() == 1 ? 2 : 0;  // the synchronous engine never merges
  EXPECT_EQ(blk_->stats().merged.load(), merged);
  EXPECT_EQ(blk_->stats().writes.load(), 4u);
  EXPECT_EQ(blk_->stats().bytes_written.load(), 4u * 4096);
  // On the host file, each block where its own request put it.
  UniqueFd fd(::open(path_.c_str(), O_RDONLY | O_CLOEXEC));
  std::vector<uint8_t> got(4096);
  for (auto [sector, i] : {std::pair<uint64_t, int>{8, 0}, {16, 1}, {24, 2}, {100, 3}}) {
    ASSERT_EQ(::pread(fd.get(), got.data(), got.size(), static_cast<off_t>(sector * 512)), 4096);
    EXPECT_EQ(got, blocks[static_cast<size_t>(i)]) << "sector " << sector;
  }
  // Reads merge the same way, and a read never joins a write: each gets its own bytes back.
  next_desc_ = 0;  // every descriptor is free again; chains must not wrap around the table
  auto r0 = submit(VIRTIO_BLK_T_IN, 8, {}, 4096);
  auto r1 = submit(VIRTIO_BLK_T_IN, 16, {}, 4096);
  auto w4 = submit(VIRTIO_BLK_T_OUT, 24, blocks[3], 0);
  auto r2 = submit(VIRTIO_BLK_T_IN, 32, {}, 4096);
  kick();
  ASSERT_TRUE(wait_used(8));
  for (const auto& r : {r0, r1, w4, r2}) EXPECT_EQ(status(r), VIRTIO_BLK_S_OK);
  EXPECT_EQ(data(r0, 4096), blocks[0]);
  EXPECT_EQ(data(r1, 4096), blocks[1]);
  EXPECT_EQ(data(r2, 4096), std::vector<uint8_t>(4096, 0));
  EXPECT_EQ(blk_->stats().merged.load(), blk_->uring_queues() == 1 ? 3u : 0u);
}

// merge_bytes bounds the host I/O that adjacent requests are joined into; 0 joins nothing.
// Three adjacent 4 KiB writes, all waiting for the worker's first pass; returns what merged.
class VirtioBlockMergeTest : public VirtioBlockWorkerTest {
 protected:
  void write_three_adjacent(uint64_t merge_bytes, uint64_t want_merged) {
    std::vector<std::vector<uint8_t>> blocks;
    for (int i = 0; i < 3; ++i) blocks.emplace_back(4096, static_cast<uint8_t>(0x40 + i));
    std::vector<Request> w;
    for (int i = 0; i < 3; ++i) w.push_back(submit(VIRTIO_BLK_T_OUT, 8 * static_cast<uint64_t>(i), blocks[static_cast<size_t>(i)], 0));
    start_worker(0, kFeatures, 0, nullptr, 4, merge_bytes);
    if (blk_->uring_queues() == 0) GTEST_SKIP() << "no io_uring on this host";
    ASSERT_TRUE(wait_used(3));
    for (const auto& r : w) EXPECT_EQ(status(r), VIRTIO_BLK_S_OK);
    EXPECT_EQ(blk_->stats().merged.load(), want_merged);
    UniqueFd fd(::open(path_.c_str(), O_RDONLY | O_CLOEXEC));
    std::vector<uint8_t> got(4096);
    for (int i = 0; i < 3; ++i) {
      ASSERT_EQ(::pread(fd.get(), got.data(), got.size(), i * 4096), 4096);
      EXPECT_EQ(got, blocks[static_cast<size_t>(i)]) << "block " << i;
    }
  }
};

TEST_P(VirtioBlockMergeTest, MergingStopsAtTheMergeLimit) {
  if (GetParam() == VirtioBlockOptions::Engine::kSync) GTEST_SKIP() << "io_uring engine only";
  write_three_adjacent(8192, 1);  // the first two join; the third would make 12 KiB
}

TEST_P(VirtioBlockMergeTest, MergeLimitZeroJoinsNothing) {
  if (GetParam() == VirtioBlockOptions::Engine::kSync) GTEST_SKIP() << "io_uring engine only";
  write_three_adjacent(0, 0);
}

// A read that completes after its pass reaches the guest through io_uring's eventfd, with its
// own interrupt; --stats counts such passes (late completions), which a RAM disk never has.
TEST_P(VirtioBlockWorkerTest, CompletionAfterTheSubmittingPassIsReapedAndSignalled) {
  if (GetParam() == VirtioBlockOptions::Engine::kSync) GTEST_SKIP() << "io_uring engine only";
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd rd(p[0]), wr(p[1]);
  start_worker(0, kFeatures, 0, std::make_shared<FailingDisk>(rd.get()));
  if (blk_->uring_queues() == 0) GTEST_SKIP() << "no io_uring on this host";
  auto r = submit(VIRTIO_BLK_T_IN, 0, {}, 512);
  kick();
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(status(r), 0xff) << "the read completed before the pipe had data";
  EXPECT_EQ(blk_->stats().late_reaps.load(), 0u);
  std::vector<uint8_t> payload(512, 0x5a);
  ASSERT_EQ(::write(wr.get(), payload.data(), payload.size()), 512);
  ASSERT_TRUE(wait_used(1)) << "the late completion never reached the used ring";
  EXPECT_EQ(status(r), VIRTIO_BLK_S_OK);
  EXPECT_EQ(data(r, 512), payload);
  EXPECT_EQ(blk_->stats().late_reaps.load(), 1u);
  EXPECT_GE(blk_->stats().interrupts.load(), 1u);
  blk_->reset();
}

// A request the driver adds while a pass's I/O runs joins that pass's interrupt (chain_passes).
// To add it at exactly that moment, the first request reads from a pipe into the avail ring
// itself: the bytes it reads publish the second request (a GET_ID), as a driver's vCPU would
// while the device copied. With chain_passes = 1 the pass raises its interrupt and stops, and
// the second request waits for the driver's next kick.
TEST_P(VirtioBlockWorkerTest, RequestAddedDuringInlineIoSharesTheInterrupt) {
  if (GetParam() == VirtioBlockOptions::Engine::kSync) GTEST_SKIP() << "io_uring engine only";
  ASSERT_NO_FATAL_FAILURE(start_self_publishing_read(4));
  ASSERT_TRUE(wait_used(2)) << "the request published during the read was not served";
  EXPECT_EQ(blk_->stats().interrupts.load(), 1u) << "both passes' completions under one interrupt";
  EXPECT_EQ(blk_->stats().chained.load(), 1u);
}

TEST_P(VirtioBlockWorkerTest, ChainOfOnePassInterruptsEachPass) {
  if (GetParam() == VirtioBlockOptions::Engine::kSync) GTEST_SKIP() << "io_uring engine only";
  ASSERT_NO_FATAL_FAILURE(start_self_publishing_read(1));
  for (int i = 0; i < 500 && drv_.used_idx() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_GE(drv_.used_idx(), 1) << "the read was not served";
  // The driver's next kick serves request 2 (unless the worker's first round took request 1 and
  // this test's first kick then served request 2): two passes, two interrupts either way.
  kick();
  ASSERT_TRUE(wait_used(2));
  EXPECT_EQ(blk_->stats().interrupts.load(), 2u);
  EXPECT_EQ(blk_->stats().chained.load(), 0u);
}

TEST_P(VirtioBlockWorkerTest, PassThatMovedMuchDataDoesNotChain) {
  if (GetParam() == VirtioBlockOptions::Engine::kSync) GTEST_SKIP() << "io_uring engine only";
  ASSERT_NO_FATAL_FAILURE(start_self_publishing_read(4, VirtioBlockOptions::kDefaultChainMaxBytes));
  for (int i = 0; i < 500 && drv_.used_idx() < 2; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_GE(drv_.used_idx(), 2) << "the reads were not served";
  kick();  // the GET_ID was published during the pass but not chained: the next kick serves it
  ASSERT_TRUE(wait_used(3));
  EXPECT_EQ(blk_->stats().chained.load(), 0u);
  EXPECT_EQ(blk_->stats().interrupts.load(), 2u);
}

TEST_P(VirtioBlockWorkerTest, HigherChainLimitChainsAfterMuchData) {
  if (GetParam() == VirtioBlockOptions::Engine::kSync) GTEST_SKIP() << "io_uring engine only";
  chain_max_bytes_ = 2 * VirtioBlockOptions::kDefaultChainMaxBytes;
  ASSERT_NO_FATAL_FAILURE(start_self_publishing_read(4, VirtioBlockOptions::kDefaultChainMaxBytes));
  ASSERT_TRUE(wait_used(3)) << "the GET_ID published during the pass was not chained";
  EXPECT_EQ(blk_->stats().chained.load(), 1u);
  EXPECT_EQ(blk_->stats().interrupts.load(), 1u);
}

}  // namespace

// Found by argument-dependent lookup, so GoogleTest prints "GetParam() = Sync", not raw bytes.
void PrintTo(VirtioBlockOptions::Engine engine, std::ostream* os) {
  *os << (engine == VirtioBlockOptions::Engine::kSync ? "Sync" : "Auto");
}

namespace {

// Named, so test names (and CTest labels) say which engine ran: Engines/...Test.Name/Sync.
std::string engine_name(const ::testing::TestParamInfo<VirtioBlockOptions::Engine>& info) {
  return ::testing::PrintToString(info.param);
}

INSTANTIATE_TEST_SUITE_P(Engines, VirtioBlockWorkerTest,
                         ::testing::Values(VirtioBlockOptions::Engine::kSync, VirtioBlockOptions::Engine::kAuto),
                         engine_name);
INSTANTIATE_TEST_SUITE_P(Engines, VirtioBlockMergeTest,
                         ::testing::Values(VirtioBlockOptions::Engine::kSync, VirtioBlockOptions::Engine::kAuto),
                         engine_name);

}  // namespace
}  // namespace ringvm
