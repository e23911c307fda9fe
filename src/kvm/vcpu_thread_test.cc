// VcpuThread's stop: kicks until the body returns, resends kicks a lost wakeup would swallow, and
// gives up on a thread that never returns instead of waiting forever.
#include "kvm/vcpu_thread.h"

#include <gtest/gtest.h>
#include <poll.h>

#include <atomic>
#include <chrono>
#include <thread>

namespace ringvm {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

TEST(VcpuThreadTest, StopReturnsOnceAKickEndsTheBody) {
  VcpuThread t;
  std::atomic<bool> in_body{false};
  t.start(nullptr, [&] {
    in_body = true;
    // Blocks until a signal interrupts it, as KVM_RUN does (EINTR).
    ::poll(nullptr, 0, -1);
  });
  while (!in_body) std::this_thread::sleep_for(milliseconds(1));
  std::this_thread::sleep_for(milliseconds(20));  // inside poll() by now, most likely
  const auto start = steady_clock::now();
  EXPECT_TRUE(t.stop_by(start + std::chrono::seconds(10), milliseconds(50)));
  EXPECT_LT(steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_GE(t.kicks(), 1u);
}

TEST(VcpuThreadTest, StopKicksAgainAndGivesUpOnAThreadThatNeverLeaves) {
  VcpuThread t;
  std::atomic<bool> release{false};
  // Ignores kicks (a vCPU the host kernel does not return from KVM_RUN) until released.
  t.start(nullptr, [&] {
    while (!release) std::this_thread::sleep_for(milliseconds(1));
  });
  const auto start = steady_clock::now();
  EXPECT_FALSE(t.stop_by(start + milliseconds(300), milliseconds(50)));
  EXPECT_GE(steady_clock::now() - start, milliseconds(300));
  EXPECT_GE(t.kicks(), 3u) << "the kick was not resent";
  release = true;
  EXPECT_TRUE(t.stop_by(steady_clock::now() + std::chrono::seconds(10)));
}

TEST(VcpuThreadTest, ANeverStartedThreadCountsAsStopped) {
  VcpuThread t;
  EXPECT_TRUE(t.stop_by(steady_clock::now()));
  EXPECT_EQ(t.kicks(), 0u);
}

}  // namespace
}  // namespace ringvm
