#include "devices/virtio/queue.h"

#include <gtest/gtest.h>
#include <linux/virtio_config.h>

#include "base/state_codec.h"
#include "devices/virtio/testing/fake_driver.h"

namespace ringvm {
namespace {

using testing::FakeDriver;

constexpr uint64_t kIndirect = 1ULL << VIRTIO_RING_F_INDIRECT_DESC;
constexpr uint64_t kEventIdx = 1ULL << VIRTIO_RING_F_EVENT_IDX;

class VirtQueueTest : public ::testing::Test {
 protected:
  void activate(uint64_t features = kIndirect) {
    drv.configure(q);
    ASSERT_TRUE(q.activate(drv.mem(), features).ok());
  }
  // A good chain right after a bad one must still be served.
  void expect_good_after(ChainError e) {
    const uint16_t good = drv.add_chain(10, {16}, {1});
    auto c = q.pop();
    ASSERT_TRUE(c.has_value());
    EXPECT_EQ(c->head, good);
    EXPECT_EQ(q.stats().error(e), 1u) << chain_error_name(e);
    EXPECT_EQ(q.stats().total_errors(), 1u);
    // The bad chain went back with length 0.
    ASSERT_EQ(drv.used_idx(), 1);
    EXPECT_EQ(drv.used(0).len, 0u);
    EXPECT_FALSE(q.broken());
  }

  FakeDriver drv{16};
  VirtQueue q{16};
};

TEST_F(VirtQueueTest, ConfigurationAndReset) {
  VirtQueue v(256);
  EXPECT_EQ(v.max_size(), 256);
  EXPECT_EQ(v.size(), 256);
  v.set_size(64);
  v.set_desc_addr(0x1000);
  v.set_avail_addr(0x2000);
  v.set_used_addr(0x3000);
  v.set_ready(true);
  EXPECT_EQ(v.size(), 64);
  EXPECT_EQ(v.desc_addr(), 0x1000u);
  EXPECT_EQ(v.avail_addr(), 0x2000u);
  EXPECT_EQ(v.used_addr(), 0x3000u);
  EXPECT_TRUE(v.ready());
  v.reset();
  EXPECT_EQ(v.size(), 256);
  EXPECT_EQ(v.desc_addr(), 0u);
  EXPECT_FALSE(v.ready());
  EXPECT_FALSE(v.active());
}

TEST_F(VirtQueueTest, ActivationChecksGeometry) {
  drv.configure(q);
  q.set_size(12);  // not a power of two
  EXPECT_FALSE(q.activate(drv.mem(), 0).ok());
  q.set_size(32);  // above max
  EXPECT_FALSE(q.activate(drv.mem(), 0).ok());
  q.set_size(0);
  EXPECT_FALSE(q.activate(drv.mem(), 0).ok());
  drv.configure(q);
  q.set_desc_addr(FakeDriver::kDescAddr + 8);  // needs 16-byte alignment
  EXPECT_FALSE(q.activate(drv.mem(), 0).ok());
  drv.configure(q);
  q.set_used_addr(FakeDriver::kUsedAddr + 2);  // needs 4-byte alignment
  EXPECT_FALSE(q.activate(drv.mem(), 0).ok());
  drv.configure(q);
  q.set_avail_addr((1 << 20) - 4);  // ring runs past the end of memory
  EXPECT_FALSE(q.activate(drv.mem(), 0).ok());
  drv.configure(q);
  q.set_used_addr(uint64_t{1} << 40);
  EXPECT_FALSE(q.activate(drv.mem(), 0).ok());
  EXPECT_FALSE(q.active());
  EXPECT_FALSE(q.pop().has_value());  // inactive queue: nothing, no crash
  drv.configure(q);
  EXPECT_TRUE(q.activate(drv.mem(), 0).ok());
}

TEST_F(VirtQueueTest, EmptyRing) {
  activate();
  EXPECT_FALSE(q.pop().has_value());
  EXPECT_FALSE(q.needs_notification());
}

TEST_F(VirtQueueTest, SingleAndMultiDescriptorChains) {
  activate();
  drv.add_chain(0, {100}, {});
  drv.add_chain(1, {16, 4096}, {512, 1});
  drv.add_chain(5, {}, {64});
  auto a = q.pop();
  ASSERT_TRUE(a);
  EXPECT_EQ(a->head, 0);
  ASSERT_EQ(a->readable.size(), 1u);
  EXPECT_EQ(a->readable[0].len, 100u);
  EXPECT_TRUE(a->writable.empty());
  auto b = q.pop();
  ASSERT_TRUE(b);
  EXPECT_EQ(b->head, 1);
  EXPECT_EQ(b->readable.size(), 2u);
  EXPECT_EQ(b->writable.size(), 2u);
  EXPECT_EQ(b->readable_bytes(), 16u + 4096u);
  EXPECT_EQ(b->writable_bytes(), 513u);
  auto c = q.pop();
  ASSERT_TRUE(c);
  EXPECT_TRUE(c->readable.empty());
  EXPECT_EQ(c->writable[0].len, 64u);
  EXPECT_FALSE(q.pop());
  q.add_used(b->head, 513);
  q.add_used(a->head, 0);
  EXPECT_EQ(drv.used_idx(), 2);
  EXPECT_EQ(drv.used(0).id, 1u);
  EXPECT_EQ(drv.used(0).len, 513u);
  EXPECT_EQ(drv.used(1).id, 0u);
  EXPECT_EQ(q.stats().chains.load(), 3u);
  EXPECT_EQ(q.stats().total_errors(), 0u);
}

TEST_F(VirtQueueTest, BatchPublishesAllChainsWithOneIndexUpdate) {
  activate();
  drv.add_chain(0, {}, {64});
  drv.add_chain(1, {}, {64});
  drv.add_chain(2, {}, {64});
  auto a = q.pop();
  auto b = q.pop();
  auto c = q.pop();
  ASSERT_TRUE(a && b && c);
  q.add_used(c->head, 7);
  EXPECT_EQ(drv.used_idx(), 1);
  const std::pair<uint16_t, uint32_t> frame[] = {{a->head, 64}, {b->head, 10}};
  q.add_used_batch(frame);
  EXPECT_EQ(drv.used_idx(), 3);  // both elements at once, after the single one
  EXPECT_EQ(drv.used(1).id, 0u);
  EXPECT_EQ(drv.used(1).len, 64u);
  EXPECT_EQ(drv.used(2).id, 1u);
  EXPECT_EQ(drv.used(2).len, 10u);
  q.add_used_batch({});
  EXPECT_EQ(drv.used_idx(), 3);
}

TEST_F(VirtQueueTest, IndirectChainMixedWithDirect) {
  activate(kIndirect);
  // Direct descriptor 0 (readable) -> descriptor 1 (indirect: 1 readable + 2 writable).
  const uint64_t t = FakeDriver::kIndirectAddr;
  drv.set_desc(0, drv.alloc(16), 16, VRING_DESC_F_NEXT, 1, t);
  drv.set_desc(1, drv.alloc(100), 100, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 2, t);
  drv.set_desc(2, drv.alloc(1), 1, VRING_DESC_F_WRITE, 0, t);
  drv.set_desc(0, drv.alloc(8), 8, VRING_DESC_F_NEXT, 1);
  drv.set_desc(1, t, 3 * 16, VRING_DESC_F_INDIRECT);
  drv.publish(0);
  auto c = q.pop();
  ASSERT_TRUE(c);
  EXPECT_EQ(c->readable.size(), 2u);
  EXPECT_EQ(c->writable.size(), 2u);
  EXPECT_EQ(c->readable_bytes(), 24u);
  EXPECT_EQ(c->writable_bytes(), 101u);
}

TEST_F(VirtQueueTest, HeadOutOfRange) {
  activate();
  drv.publish(16);
  expect_good_after(ChainError::kHeadOutOfRange);
  EXPECT_EQ(drv.used(0).id, 16u);
}

TEST_F(VirtQueueTest, NextOutOfRange) {
  activate();
  drv.set_desc(0, drv.alloc(8), 8, VRING_DESC_F_NEXT, 16);
  drv.publish(0);
  expect_good_after(ChainError::kNextOutOfRange);
}

TEST_F(VirtQueueTest, LoopIsChainTooLong) {
  activate();
  drv.set_desc(0, drv.alloc(8), 8, VRING_DESC_F_NEXT, 1);
  drv.set_desc(1, drv.alloc(8), 8, VRING_DESC_F_NEXT, 0);
  drv.publish(0);
  expect_good_after(ChainError::kChainTooLong);
}

TEST_F(VirtQueueTest, ZeroLengthBuffer) {
  activate();
  drv.set_desc(0, drv.alloc(8), 0, 0);
  drv.publish(0);
  expect_good_after(ChainError::kZeroLength);
}

TEST_F(VirtQueueTest, BufferOutsideMemoryOrWrapping) {
  activate();
  drv.set_desc(0, (1 << 20) - 4, 8, 0);  // crosses the end of memory
  drv.publish(0);
  expect_good_after(ChainError::kBufferOutsideMemory);
  drv.set_desc(1, ~uint64_t{0} - 2, 16, 0);  // wraps the address space
  drv.publish(1);
  EXPECT_FALSE(q.pop());
  EXPECT_EQ(q.stats().error(ChainError::kBufferOutsideMemory), 2u);
}

TEST_F(VirtQueueTest, ReadableAfterWritable) {
  activate();
  drv.set_desc(0, drv.alloc(8), 8, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1);
  drv.set_desc(1, drv.alloc(8), 8, 0);
  drv.publish(0);
  expect_good_after(ChainError::kReadableAfterWritable);
}

TEST_F(VirtQueueTest, IndirectNotNegotiated) {
  activate(0);
  drv.set_desc(0, drv.alloc(8), 8, 0, 0, FakeDriver::kIndirectAddr);
  drv.set_desc(0, FakeDriver::kIndirectAddr, 16, VRING_DESC_F_INDIRECT);
  drv.publish(0);
  expect_good_after(ChainError::kIndirectNotNegotiated);
}

TEST_F(VirtQueueTest, IndirectBadLengths) {
  activate();
  drv.set_desc(0, FakeDriver::kIndirectAddr, 24, VRING_DESC_F_INDIRECT);  // not a multiple of 16
  drv.publish(0);
  expect_good_after(ChainError::kIndirectBadLength);
  drv.set_desc(1, FakeDriver::kIndirectAddr, 17 * 16, VRING_DESC_F_INDIRECT);  // > max queue size
  drv.publish(1);
  drv.set_desc(2, FakeDriver::kIndirectAddr, 0, VRING_DESC_F_INDIRECT);
  drv.publish(2);
  EXPECT_FALSE(q.pop());
  EXPECT_EQ(q.stats().error(ChainError::kIndirectBadLength), 3u);
}

TEST_F(VirtQueueTest, IndirectWithNext) {
  activate();
  drv.set_desc(0, drv.alloc(8), 8, 0, 0, FakeDriver::kIndirectAddr);
  drv.set_desc(0, FakeDriver::kIndirectAddr, 16, VRING_DESC_F_INDIRECT | VRING_DESC_F_NEXT, 1);
  drv.set_desc(1, drv.alloc(8), 8, 0);
  drv.publish(0);
  expect_good_after(ChainError::kIndirectWithNext);
}

TEST_F(VirtQueueTest, NestedIndirect) {
  activate();
  const uint64_t t = FakeDriver::kIndirectAddr;
  drv.set_desc(0, t, 16, VRING_DESC_F_INDIRECT, 0, t);  // points at itself
  drv.set_desc(0, t, 16, VRING_DESC_F_INDIRECT);
  drv.publish(0);
  expect_good_after(ChainError::kNestedIndirect);
}

TEST_F(VirtQueueTest, IndirectLoopAndNextOutsideTable) {
  activate();
  const uint64_t t = FakeDriver::kIndirectAddr;
  drv.set_desc(0, drv.alloc(8), 8, VRING_DESC_F_NEXT, 1, t);
  drv.set_desc(1, drv.alloc(8), 8, VRING_DESC_F_NEXT, 0, t);  // loop inside the table
  drv.set_desc(0, t, 2 * 16, VRING_DESC_F_INDIRECT);
  drv.publish(0);
  const uint64_t t2 = t + 0x100;
  drv.set_desc(0, drv.alloc(8), 8, VRING_DESC_F_NEXT, 2, t2);  // next >= table length 1
  drv.set_desc(1, t2, 1 * 16, VRING_DESC_F_INDIRECT);
  drv.publish(1);
  EXPECT_FALSE(q.pop());
  EXPECT_EQ(q.stats().error(ChainError::kChainTooLong), 1u);
  EXPECT_EQ(q.stats().error(ChainError::kNextOutOfRange), 1u);
  EXPECT_EQ(drv.used_idx(), 2);
}

TEST_F(VirtQueueTest, AvailIdxRunningAheadBreaksQueue) {
  activate();
  drv.add_chain(0, {8}, {});
  drv.set_avail_idx(17);  // 17 pending on a 16-entry ring
  EXPECT_FALSE(q.pop());
  EXPECT_TRUE(q.broken());
  drv.set_avail_idx(1);
  EXPECT_FALSE(q.pop());  // stays stopped until reset
  q.reset();
  EXPECT_FALSE(q.broken());
}

TEST_F(VirtQueueTest, WrapsAroundTheRing) {
  activate();
  for (int round = 0; round < 40; ++round) {
    drv.add_chain(static_cast<uint16_t>(round % 8), {4}, {4});
    auto c = q.pop();
    ASSERT_TRUE(c);
    q.add_used(c->head, 4);
  }
  EXPECT_EQ(drv.used_idx(), 40);
  EXPECT_EQ(q.stats().chains.load(), 40u);
}

TEST_F(VirtQueueTest, NoInterruptFlagSuppresses) {
  activate();
  drv.add_chain(0, {4}, {});
  q.add_used(q.pop()->head, 0);
  drv.set_avail_flags(VRING_AVAIL_F_NO_INTERRUPT);
  EXPECT_FALSE(q.needs_notification());
  drv.add_chain(1, {4}, {});
  q.add_used(q.pop()->head, 0);
  drv.set_avail_flags(0);
  EXPECT_TRUE(q.needs_notification());
  EXPECT_FALSE(q.needs_notification());  // nothing new since
}

TEST_F(VirtQueueTest, EventIdxNotificationDecisions) {
  activate(kEventIdx);
  // Driver wants an interrupt once used idx passes 2 (used_event = 2: after entry index 2).
  drv.set_used_event(2);
  for (uint16_t i = 0; i < 2; ++i) {
    drv.add_chain(i, {4}, {});
    q.add_used(q.pop()->head, 0);
    EXPECT_FALSE(q.needs_notification()) << i;
  }
  drv.add_chain(2, {4}, {});
  q.add_used(q.pop()->head, 0);
  EXPECT_TRUE(q.needs_notification());
  // A batch that jumps over used_event still notifies once.
  drv.set_used_event(4);
  for (uint16_t i = 3; i < 7; ++i) {
    drv.add_chain(i, {4}, {});
    q.add_used(q.pop()->head, 0);
  }
  EXPECT_TRUE(q.needs_notification());
  EXPECT_EQ(q.stats().notifications.load(), 2u);
}

TEST_F(VirtQueueTest, PopWithoutArmingLeavesAvailEvent) {
  activate(kEventIdx);
  EXPECT_FALSE(q.has_available());
  drv.add_chain(0, {4}, {});
  EXPECT_TRUE(q.has_available());
  ASSERT_TRUE(q.pop(VirtQueue::Arm::kNo));
  EXPECT_FALSE(q.pop(VirtQueue::Arm::kNo));
  EXPECT_FALSE(q.has_available());
  EXPECT_EQ(drv.avail_event(), 0) << "a polling device asks for no kick";
  drv.add_chain(1, {4}, {});
  EXPECT_TRUE(q.has_available());
  ASSERT_TRUE(q.pop(VirtQueue::Arm::kYes));
  EXPECT_FALSE(q.pop(VirtQueue::Arm::kYes));
  EXPECT_EQ(drv.avail_event(), 2);
}

TEST_F(VirtQueueTest, EventIdxPublishesAvailEvent) {
  activate(kEventIdx);
  drv.add_chain(0, {4}, {});
  drv.add_chain(1, {4}, {});
  ASSERT_TRUE(q.pop());
  ASSERT_TRUE(q.pop());
  EXPECT_FALSE(q.pop());
  EXPECT_EQ(drv.avail_event(), 2);  // kick me when entry 2 arrives
}

std::vector<uint8_t> save(const VirtQueue& q) {
  StateWriter w;
  q.save_state(w);
  return w.take();
}

Result<VirtQueue::State> load(const VirtQueue& q, std::span<const uint8_t> data, const GuestMemory* mem) {
  StateReader r(data, "q");
  auto s = TRY(q.read_state(r, mem));
  RETURN_IF_ERROR(r.finish());
  return s;
}

TEST_F(VirtQueueTest, SaveRestoreContinuesAtTheSavedIndices) {
  activate(kEventIdx);
  for (uint16_t i = 0; i < 3; ++i) {
    drv.add_chain(i, {4}, {4});
    auto c = q.pop();
    ASSERT_TRUE(c);
    q.add_used(c->head, 4);
  }
  drv.set_used_event(2);
  EXPECT_TRUE(q.needs_notification());
  const auto bytes = save(q);

  VirtQueue fresh(16);
  auto s = load(fresh, bytes, &drv.mem());
  ASSERT_TRUE(s.ok()) << s.error().message();
  fresh.restore_state(*s);
  EXPECT_EQ(fresh.size(), 16);
  EXPECT_EQ(fresh.desc_addr(), FakeDriver::kDescAddr);
  EXPECT_EQ(fresh.avail_addr(), FakeDriver::kAvailAddr);
  EXPECT_EQ(fresh.used_addr(), FakeDriver::kUsedAddr);
  EXPECT_TRUE(fresh.ready());
  EXPECT_FALSE(fresh.active());
  EXPECT_EQ(save(fresh), bytes);  // restored but not yet activated: the same state
  ASSERT_TRUE(fresh.activate(drv.mem(), kEventIdx).ok());
  EXPECT_EQ(fresh.next_avail(), 3);
  EXPECT_EQ(fresh.next_used(), 3);
  // The next request is served once, at used index 3; the suppression state carried over.
  EXPECT_FALSE(fresh.pop());
  drv.add_chain(5, {4}, {4});
  auto c = fresh.pop();
  ASSERT_TRUE(c);
  EXPECT_EQ(c->head, 5);
  EXPECT_FALSE(fresh.pop());
  fresh.add_used(c->head, 4);
  EXPECT_EQ(drv.used_idx(), 4);
  EXPECT_EQ(drv.used(3).id, 5u);
  drv.set_used_event(3);
  EXPECT_TRUE(fresh.needs_notification());
  // A reset forgets the position: the next activation starts at 0 again.
  fresh.reset();
  drv.configure(fresh);
  ASSERT_TRUE(fresh.activate(drv.mem(), 0).ok());
  EXPECT_EQ(fresh.next_avail(), 0);
}

TEST_F(VirtQueueTest, AnInactiveQueueRestoresItsConfigurationOnly) {
  drv.configure(q);
  q.set_size(8);
  const auto bytes = save(q);
  VirtQueue fresh(16);
  auto s = load(fresh, bytes, nullptr);
  ASSERT_TRUE(s.ok()) << s.error().message();
  fresh.restore_state(*s);
  EXPECT_EQ(fresh.size(), 8);
  // Activation after such a restore starts at 0 (the driver had not started yet).
  ASSERT_TRUE(fresh.activate(drv.mem(), 0).ok());
  EXPECT_EQ(fresh.next_avail(), 0);
}

TEST_F(VirtQueueTest, RestoreRefusesBadStates) {
  activate();
  drv.add_chain(0, {4}, {4});
  q.add_used(q.pop()->head, 4);
  const auto good = save(q);
  // Layout: size u16 @0, desc/avail/used u64 @2/10/18, ready @26, active @27, next_avail u16 @28,
  // next_used @30, signalled_used @32, broken @34.
  ASSERT_EQ(good.size(), 35u);
  const auto refused = [&](std::vector<uint8_t> bytes, const GuestMemory* mem, const char* why) {
    VirtQueue fresh(16);
    auto s = load(fresh, bytes, mem);
    ASSERT_FALSE(s.ok()) << why;
    EXPECT_EQ(s.error().code, ErrorCode::kCorrupt) << why << ": " << s.error().message();
  };
  const auto with = [&](size_t at, std::initializer_list<uint8_t> v) {
    auto b = good;
    std::copy(v.begin(), v.end(), b.begin() + static_cast<std::ptrdiff_t>(at));
    return b;
  };
  refused(with(0, {12, 0}), nullptr, "size not a power of two");
  refused(with(0, {32, 0}), nullptr, "size above the maximum");
  refused(with(0, {0, 0}), nullptr, "size 0");
  refused(with(26, {2}), nullptr, "bad bool");
  refused(with(28, {20, 0}), nullptr, "next avail 19 ahead of next used");
  refused(with(27, {0}), nullptr, "inactive with indices");
  refused(with(2, {8}), nullptr, "misaligned descriptor table");
  refused(with(18, {0, 0, 0, 0, 0, 1}), &drv.mem(), "used ring outside memory");
  for (size_t n = 0; n < good.size(); ++n)
    refused(std::vector<uint8_t>(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n)), nullptr,
            "truncated");
  auto longer = good;
  longer.push_back(0);
  refused(longer, nullptr, "trailing byte");
  // Without the memory, placement is left to activation.
  VirtQueue fresh(16);
  EXPECT_TRUE(load(fresh, with(18, {0, 0, 0, 0, 0, 1}), nullptr).ok());
}

}  // namespace
}  // namespace ringvm
