#include "vmm/exit_probe.h"

#include <gtest/gtest.h>

namespace ringvm {
namespace {

TEST(AutoBatchTest, OffWhereExitsAreCheap) {
  EXPECT_EQ(auto_batch_us(0), 0u);
  EXPECT_EQ(auto_batch_us(3'000), 0u);  // hardware-assisted KVM
  EXPECT_EQ(auto_batch_us(kBatchAutoMinExitNs - 1), 0u);
}

TEST(AutoBatchTest, FourExitsWorthWhereExitsAreSlow) {
  EXPECT_EQ(auto_batch_us(kBatchAutoMinExitNs), 4 * kBatchAutoMinExitNs / 1000);
  EXPECT_EQ(auto_batch_us(300'000), 1200u);
  EXPECT_EQ(auto_batch_us(5'000'000), kBatchAutoMaxUs);  // bounded
}

}  // namespace
}  // namespace ringvm
