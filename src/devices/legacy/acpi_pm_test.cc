#include "devices/legacy/acpi_pm.h"

#include <gtest/gtest.h>

#include <vector>

namespace ringvm {
namespace {

using namespace std::chrono_literals;

// Offsets from PM1a_EVT_BLK (0x600): PM1a_CNT_BLK is 0x604 and PM_TMR_BLK 0x608.
constexpr uint64_t kSts = 0x600 - 0x600, kEn = 0x602 - 0x600, kCnt = 0x604 - 0x600, kTmr = 0x608 - 0x600;
constexpr uint16_t kSlpTypS5 = 5;
constexpr uint16_t kSlpEn = 1u << 13;

class AcpiPmTest : public ::testing::Test {
 protected:
  AcpiPmTest()
      : dev_({.on_poweroff = [this] { ++poweroffs_; },
              .sci = [this](bool level) { sci_.push_back(level); },
              .clock = [this] { return now_; }}) {}

  uint16_t in16(uint64_t off) {
    uint8_t b[2] = {};
    dev_.read(off, b);
    return static_cast<uint16_t>(b[0] | (b[1] << 8));
  }
  void out16(uint64_t off, uint16_t v) {
    const uint8_t b[2] = {static_cast<uint8_t>(v), static_cast<uint8_t>(v >> 8)};
    dev_.write(off, b);
  }
  uint32_t in32(uint64_t off) {
    uint8_t b[4] = {};
    dev_.read(off, b);
    return static_cast<uint32_t>(b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24));
  }

  int poweroffs_ = 0;
  std::vector<bool> sci_;
  std::chrono::steady_clock::time_point now_{};
  AcpiPmDevice dev_;
};

TEST_F(AcpiPmTest, SciEnabledFromTheStart) {
  EXPECT_EQ(in16(kCnt) & 1, 1);
  out16(kCnt, 0);  // SCI_EN cannot be turned off
  EXPECT_EQ(in16(kCnt) & 1, 1);
}

TEST_F(AcpiPmTest, LinuxPoweroffSequenceCallsPoweroff) {
  // acpi_hw_legacy_sleep(): write SLP_TYP, then SLP_TYP | SLP_EN.
  const uint16_t cnt = in16(kCnt);
  const uint16_t typ = static_cast<uint16_t>((cnt & ~0x3c00) | (kSlpTypS5 << 10));
  out16(kCnt, typ);
  EXPECT_EQ(poweroffs_, 0);
  out16(kCnt, typ | kSlpEn);
  EXPECT_EQ(poweroffs_, 1);
  EXPECT_EQ(in16(kCnt) & kSlpEn, 0);  // write-only
  EXPECT_EQ((in16(kCnt) >> 10) & 7, kSlpTypS5);
}

TEST_F(AcpiPmTest, ByteWideWriteOfHighByteAlsoPowersOff) {
  const uint8_t high = static_cast<uint8_t>(((kSlpTypS5 << 10) | kSlpEn) >> 8);
  dev_.write(kCnt + 1, std::span(&high, 1));
  EXPECT_EQ(poweroffs_, 1);
}

TEST_F(AcpiPmTest, OtherSleepTypesAreIgnored) {
  out16(kCnt, (3 << 10) | kSlpEn);  // S3
  out16(kCnt, (1 << 10) | kSlpEn);  // S1
  EXPECT_EQ(poweroffs_, 0);
  EXPECT_EQ(in16(kSts) & 0x8000, 0x8000);  // WAK_STS: the guest sees itself resumed
  out16(kSts, 0x8000);
  EXPECT_EQ(in16(kSts), 0);
}

TEST_F(AcpiPmTest, PowerButtonRaisesSciUntilCleared) {
  dev_.press_power_button();
  EXPECT_EQ(in16(kSts) & 0x100, 0x100);
  EXPECT_TRUE(sci_.empty());  // not enabled yet
  out16(kEn, 0x100);
  EXPECT_EQ(in16(kEn), 0x100);
  EXPECT_EQ(sci_, std::vector<bool>{true});
  out16(kSts, 0x0001);  // clearing another bit leaves it pending
  EXPECT_EQ(in16(kSts) & 0x100, 0x100);
  out16(kSts, 0x0100);  // write one to clear
  EXPECT_EQ(in16(kSts), 0);
  EXPECT_EQ(sci_, (std::vector<bool>{true, false}));
}

TEST_F(AcpiPmTest, FourByteEventBlockAccess) {
  // A 32-bit write at PM1a_EVT_BLK covers PM1_STS (low half) and PM1_EN (high half).
  const uint8_t b[4] = {0x00, 0x00, 0x00, 0x01};
  dev_.write(kSts, b);
  EXPECT_EQ(in16(kEn), 0x100);
  EXPECT_EQ(in32(kSts), 0x01000000u);
}

TEST_F(AcpiPmTest, PmTimerCountsAt3579545HzAndWraps24Bits) {
  EXPECT_EQ(in32(kTmr), 0u);
  now_ += 1s;
  EXPECT_EQ(in32(kTmr), 3579545u);
  now_ += 1ms;
  EXPECT_EQ(in32(kTmr), 3579545u + 3579u);
  now_ = std::chrono::steady_clock::time_point{} + 24h * 30;  // a month: no overflow in the math
  const uint64_t ticks = uint64_t{30} * 24 * 3600 * 3579545;
  EXPECT_EQ(in32(kTmr), ticks & 0xffffff);
  uint8_t b = 0xaa;
  dev_.write(kTmr, std::span(&b, 1));  // read-only
  EXPECT_EQ(in32(kTmr), ticks & 0xffffff);
}

TEST_F(AcpiPmTest, OutOfWindowBytesReadAllOnes) {
  uint8_t b[4] = {};
  dev_.read(10, b);
  EXPECT_EQ(b[2], 0xff);
  EXPECT_EQ(b[3], 0xff);
  EXPECT_EQ(in16(6), 0);
}

}  // namespace
}  // namespace ringvm
