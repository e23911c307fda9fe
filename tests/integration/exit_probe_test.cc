// The exit-cost probe (vmm/exit_probe.h) on the host's /dev/kvm: it runs its throw-away guest to
// the halt and reports a plausible per-exit cost.
#include "vmm/exit_probe.h"

#include <gtest/gtest.h>

#include <iostream>

#include "kvm/system.h"

namespace ringvm {
namespace {

TEST(ExitProbeTest, MeasuresAPlausibleRoundTrip) {
  auto sys = KvmSystem::open();
  if (!sys) GTEST_SKIP() << "host KVM unusable, skipping: " << sys.error().message();
  auto cost = measure_exit_cost(*sys, 16);
  ASSERT_TRUE(cost.ok()) << cost.error().message();
  EXPECT_EQ(cost->exits, 16u);
  std::cout << "one exit to userspace: " << cost->round_trip_ns << " ns; batch_us=auto would be "
            << auto_batch_us(cost->round_trip_ns) << "\n";
  // Above 100 ns (an exit is a world switch plus two syscalls' worth of work), below 100 ms (even
  // PVM's instruction emulation and the lab's nested TCG stay far below).
  EXPECT_GT(cost->round_trip_ns, 100u);
  EXPECT_LT(cost->round_trip_ns, 100'000'000u);
  // A second VM in the same process measures again: nothing leaks between probes.
  auto again = measure_exit_cost(*sys, 4);
  ASSERT_TRUE(again.ok()) << again.error().message();
  EXPECT_EQ(again->exits, 4u);
}

TEST(ExitProbeTest, DoorbellWritesOfBothKindsStayInTheKernel) {
  auto sys = KvmSystem::open();
  if (!sys) GTEST_SKIP() << "host KVM unusable, skipping: " << sys.error().message();
  // Both loops must run to the halt: a doorbell write the ioeventfd did not catch would stop the
  // vCPU with an I/O or MMIO exit, which the probe reports as an error.
  auto cost = measure_doorbell_cost(*sys, 32);
  ASSERT_TRUE(cost.ok()) << cost.error().message();
  EXPECT_EQ(cost->writes, 32u);
  std::cout << "doorbell write, caught in the kernel: port " << cost->pio_ns << " ns, MMIO " << cost->mmio_ns
            << " ns\n";
  EXPECT_GT(cost->pio_ns, 10u);
  EXPECT_GT(cost->mmio_ns, 10u);
  EXPECT_LT(cost->pio_ns, 100'000'000u);
  EXPECT_LT(cost->mmio_ns, 100'000'000u);
}

}  // namespace
}  // namespace ringvm
