#include "devices/legacy/vmgenid.h"

#include <gtest/gtest.h>

#include <vector>

namespace ringvm {
namespace {

constexpr uint64_t kAddr = 0xEF000;  // where the x86 layout puts it; any RAM address works here

class VmGenIdTest : public ::testing::Test {
 protected:
  VmGenIdTest() {
    EXPECT_TRUE(mem_.add_region(0, 1 << 20).ok());
    auto dev = VmGenId::create(mem_, kAddr, [this](bool level) { irq_.push_back(level); });
    EXPECT_TRUE(dev.ok()) << dev.error().message();
    dev_ = std::move(*dev);
  }

  VmGenId::Id in_memory(uint64_t addr = kAddr) const {
    VmGenId::Id id{};
    EXPECT_TRUE(mem_.read(addr, id).ok());
    return id;
  }

  GuestMemory mem_;
  std::vector<bool> irq_;
  std::shared_ptr<VmGenId> dev_;
};

TEST_F(VmGenIdTest, BootIdIsRandomInMemoryAndNotNotified) {
  EXPECT_EQ(dev_->address(), kAddr);
  EXPECT_EQ(in_memory(), dev_->id());
  EXPECT_NE(dev_->id(), VmGenId::Id{}) << "16 random bytes are not all zero";
  EXPECT_TRUE(irq_.empty());
  auto other = VmGenId::create(mem_, kAddr + 0x100, nullptr);
  ASSERT_TRUE(other.ok());
  EXPECT_NE((*other)->id(), dev_->id());
}

TEST_F(VmGenIdTest, NewGenerationChangesTheIdAndPulsesOnce) {
  const VmGenId::Id before = dev_->id();
  ASSERT_TRUE(dev_->new_generation().ok());
  EXPECT_NE(dev_->id(), before);
  EXPECT_EQ(in_memory(), dev_->id());
  EXPECT_EQ(irq_, (std::vector<bool>{true, false})) << "one edge, and the line left low";
  const VmGenId::Id second = dev_->id();
  ASSERT_TRUE(dev_->new_generation().ok());
  EXPECT_NE(dev_->id(), second);
  EXPECT_EQ(irq_.size(), 4u);
}

TEST_F(VmGenIdTest, CreateRefusesBadAddresses) {
  EXPECT_FALSE(VmGenId::create(mem_, kAddr + 4, nullptr).ok()) << "unaligned";
  EXPECT_FALSE(VmGenId::create(mem_, (1 << 20) - 8, nullptr).ok()) << "runs past the end of RAM";
  EXPECT_FALSE(VmGenId::create(mem_, 1ULL << 40, nullptr).ok()) << "not guest memory";
}

TEST_F(VmGenIdTest, SaveRestoreRoundTrip) {
  ASSERT_TRUE(dev_->new_generation().ok());
  const std::vector<uint8_t> state = dev_->save().value();
  ASSERT_EQ(state.size(), 1u + 8 + VmGenId::kIdSize);

  // Another VM: its own memory and boot ID, restored from the state.
  GuestMemory mem2;
  ASSERT_TRUE(mem2.add_region(0, 1 << 20).ok());
  std::vector<bool> irq2;
  auto copy = VmGenId::create(mem2, kAddr, [&](bool level) { irq2.push_back(level); }).value();
  ASSERT_NE(copy->id(), dev_->id());
  ASSERT_TRUE(copy->restore(state).ok());
  EXPECT_EQ(copy->id(), dev_->id());
  EXPECT_EQ(copy->save().value(), state);
  VmGenId::Id id2{};
  ASSERT_TRUE(mem2.read(kAddr, id2).ok());
  EXPECT_EQ(id2, dev_->id()) << "restore puts the ID back in guest memory";
  EXPECT_TRUE(irq2.empty()) << "a restore alone does not notify";
  // What the snapshot code does for every restored VM: a new generation.
  ASSERT_TRUE(copy->new_generation().ok());
  EXPECT_NE(copy->id(), dev_->id());
  EXPECT_EQ(irq2.size(), 2u);
}

TEST_F(VmGenIdTest, RestoreRefusesTruncatedStateAndAnotherAddress) {
  const std::vector<uint8_t> good = dev_->save().value();
  GuestMemory mem2;
  ASSERT_TRUE(mem2.add_region(0, 1 << 20).ok());
  auto target = VmGenId::create(mem2, kAddr, nullptr).value();
  const std::vector<uint8_t> before = target->save().value();
  for (size_t len = 0; len < good.size(); ++len) {
    auto r = target->restore(std::span(good).first(len));
    ASSERT_FALSE(r.ok()) << len;
    EXPECT_EQ(r.error().code, ErrorCode::kCorrupt) << len;
  }
  std::vector<uint8_t> moved = good;
  moved[2] ^= 0x10;  // address 0xEF000 -> 0xEE000
  auto r = target->restore(moved);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kCorrupt);
  EXPECT_NE(r.error().message().find("0xee000"), std::string::npos) << r.error().message();
  std::vector<uint8_t> version = good;
  version[0] = 2;
  EXPECT_EQ(target->restore(version).error().code, ErrorCode::kCorrupt);
  std::vector<uint8_t> longer = good;
  longer.push_back(0);
  EXPECT_EQ(target->restore(longer).error().code, ErrorCode::kCorrupt);
  EXPECT_EQ(target->save().value(), before);
  VmGenId::Id id2{};
  ASSERT_TRUE(mem2.read(kAddr, id2).ok());
  EXPECT_EQ(id2, target->id()) << "guest memory untouched";
}

}  // namespace
}  // namespace ringvm
