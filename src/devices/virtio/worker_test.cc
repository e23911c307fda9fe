#include "devices/virtio/worker.h"

#include <poll.h>

#include <gtest/gtest.h>

namespace ringvm {
namespace {

// Waits up to `ms` for `fd` to become readable.
bool readable_within(int fd, int ms) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, ms) == 1;
}

TEST(QueueBatcherTest, DisabledAtZeroAndArmsWithinItsMaximum) {
  auto off = QueueBatcher::create("test", 0);
  ASSERT_TRUE(off.ok());
  EXPECT_FALSE(off->enabled());
  EXPECT_FALSE(off->arm());
  auto b = QueueBatcher::create("test", 20'000);
  ASSERT_TRUE(b.ok()) << b.error().message();
  ASSERT_TRUE(b->enabled());
  b->note_request();
  ASSERT_TRUE(b->arm());
  EXPECT_TRUE(b->pending());
  // At most 20 ms: the timer fires within a generous bound and is then no longer pending.
  ASSERT_TRUE(readable_within(b->fd(), 2000));
  EXPECT_FALSE(b->pending());
}

TEST(CompletionHoldTest, HoldsOnlyWhileTheQueueIsBusyAndTheTimerEndsIt) {
  auto h = CompletionHold::create("test", 20'000, 4);
  ASSERT_TRUE(h.ok()) << h.error().message();
  EXPECT_FALSE(h->hold(3)) << "held with fewer operations in flight than the minimum";
  EXPECT_FALSE(h->holding());
  h->note_completion();
  EXPECT_TRUE(h->hold(4));  // busy: the first completion sets the timer
  EXPECT_TRUE(h->holding());
  EXPECT_TRUE(h->hold(9));  // later completions share it
  EXPECT_FALSE(h->expired()) << "the timer was still running";
  ASSERT_TRUE(readable_within(h->fd(), 2000)) << "the hold timer never fired";
  EXPECT_TRUE(h->expired());
  EXPECT_FALSE(h->holding());
  // Holding again, then the queue drains below the minimum: the interrupt goes out at once.
  EXPECT_TRUE(h->hold(5));
  EXPECT_FALSE(h->hold(1));
  EXPECT_FALSE(h->holding());
}

TEST(CompletionHoldTest, DisabledNeverHolds) {
  auto h = CompletionHold::create("test", 0, 4);
  ASSERT_TRUE(h.ok());
  EXPECT_FALSE(h->hold(100));
  CompletionHold none;
  EXPECT_FALSE(none.hold(100));
  EXPECT_EQ(none.fd(), -1);
}

}  // namespace
}  // namespace ringvm
