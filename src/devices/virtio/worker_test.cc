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

}  // namespace
}  // namespace ringvm
