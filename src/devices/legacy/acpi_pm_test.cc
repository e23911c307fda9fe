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

TEST_F(AcpiPmTest, SaveRestoreRoundTripAndTimerContinues) {
  out16(kCnt, 5 << 10);  // SLP_TYP stored, no SLP_EN
  out16(kCnt, (3 << 10) | kSlpEn);  // an S3 attempt: WAK_STS
  dev_.press_power_button();
  out16(kEn, 0x0120);  // PWRBTN_EN, GBL_EN
  ASSERT_EQ(sci_, std::vector<bool>{true});
  now_ += 5s + 300ms;  // the timer is far from 0 and has wrapped once
  const std::vector<uint8_t> state = dev_.save().value();

  // A new process, whose monotonic clock is somewhere else entirely.
  std::chrono::steady_clock::time_point other = std::chrono::steady_clock::time_point{} + 1000h;
  std::vector<bool> sci;
  AcpiPmDevice copy({.on_poweroff = nullptr, .sci = [&](bool level) { sci.push_back(level); },
                     .clock = [&] { return other; }});
  auto r = copy.restore(state);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(sci, std::vector<bool>{true});
  EXPECT_EQ(copy.save().value(), state);
  auto read32 = [](AcpiPmDevice& d, uint64_t off) {
    uint8_t b[4] = {};
    d.read(off, b);
    return static_cast<uint32_t>(b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24));
  };
  for (uint64_t off : {kSts, kCnt, kTmr}) EXPECT_EQ(read32(copy, off), in32(off)) << off;
  // Both advance by the same guest time from here.
  now_ += 250ms;
  other += 250ms;
  EXPECT_EQ(read32(copy, kTmr), in32(kTmr));
  EXPECT_EQ(read32(copy, kTmr), ((5300 + 250) * 3579545ULL / 1000) & 0xffffff);
  // Clearing the restored power button status lowers the restored SCI.
  const uint8_t clear[2] = {0x00, 0x01};
  copy.write(kSts, clear);
  EXPECT_EQ(sci, (std::vector<bool>{true, false}));
}

TEST_F(AcpiPmTest, RestoreRefusesTruncatedAndOutOfRangeState) {
  dev_.press_power_button();
  const std::vector<uint8_t> good = dev_.save().value();
  ASSERT_EQ(good.size(), 11u);  // version, STS, EN, CNT, TMR
  std::vector<bool> sci;
  AcpiPmDevice target({.on_poweroff = nullptr, .sci = [&](bool level) { sci.push_back(level); },
                       .clock = [this] { return now_; }});
  const std::vector<uint8_t> before = target.save().value();
  for (size_t len = 0; len < good.size(); ++len) {
    auto r = target.restore(std::span(good).first(len));
    ASSERT_FALSE(r.ok()) << len;
    EXPECT_EQ(r.error().code, ErrorCode::kCorrupt) << len;
  }
  auto with16 = [&](size_t at, uint16_t v) {
    std::vector<uint8_t> b = good;
    b[at] = static_cast<uint8_t>(v);
    b[at + 1] = static_cast<uint8_t>(v >> 8);
    return b;
  };
  std::vector<uint8_t> wide_timer = good;
  wide_timer[10] = 0x01;  // bit 24
  std::vector<uint8_t> version = good;
  version[0] = 9;
  const std::vector<std::pair<std::vector<uint8_t>, const char*>> bad = {
      {version, "version"},
      {with16(1, 0x0002), "STS bit 1"},
      {with16(3, 0x0002), "EN bit 1"},
      {with16(5, 0x0000), "SCI_EN clear"},
      {with16(5, 0x2001), "SLP_EN stored"},
      {wide_timer, "a 25-bit timer"},
  };
  for (const auto& [b, why] : bad) {
    auto r = target.restore(b);
    ASSERT_FALSE(r.ok()) << why;
    EXPECT_EQ(r.error().code, ErrorCode::kCorrupt) << why;
    EXPECT_NE(r.error().message().find("acpi-pm"), std::string::npos) << r.error().message();
  }
  EXPECT_EQ(target.save().value(), before);
  EXPECT_TRUE(sci.empty());
}

}  // namespace
}  // namespace ringvm
