#include "base/event_loop.h"

#include <gtest/gtest.h>
#include <sys/eventfd.h>

#include <thread>

namespace ringvm {
namespace {

TEST(EventLoop, DispatchesReadyFd) {
  auto loop = EventLoop::create();
  ASSERT_TRUE(loop.ok()) << loop.error().message();
  UniqueFd efd(::eventfd(0, EFD_NONBLOCK));
  int calls = 0;
  ASSERT_TRUE(loop->add(efd.get(), EPOLLIN, [&](uint32_t) {
    uint64_t v;
    ASSERT_EQ(::read(efd.get(), &v, sizeof v), 8);
    calls += static_cast<int>(v);
  }).ok());
  uint64_t three = 3;
  ASSERT_EQ(::write(efd.get(), &three, sizeof three), 8);
  auto n = loop->run_once(1000);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(calls, 3);
  // Nothing ready: times out with no handler call.
  n = loop->run_once(10);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 0);
  EXPECT_EQ(calls, 3);
}

TEST(EventLoop, StopFromAnotherThread) {
  auto loop = EventLoop::create();
  ASSERT_TRUE(loop.ok());
  std::thread t([&] { loop->stop(); });
  EXPECT_TRUE(loop->run().ok());
  t.join();
}

TEST(EventLoop, RemovedFdIsNotDispatched) {
  auto loop = EventLoop::create();
  ASSERT_TRUE(loop.ok());
  UniqueFd efd(::eventfd(1, EFD_NONBLOCK));
  bool called = false;
  ASSERT_TRUE(loop->add(efd.get(), EPOLLIN, [&](uint32_t) { called = true; }).ok());
  ASSERT_TRUE(loop->remove(efd.get()).ok());
  ASSERT_TRUE(loop->run_once(10).ok());
  EXPECT_FALSE(called);
  EXPECT_FALSE(loop->remove(efd.get()).ok());
}

}  // namespace
}  // namespace ringvm
