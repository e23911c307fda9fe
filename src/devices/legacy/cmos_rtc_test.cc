#include "devices/legacy/cmos_rtc.h"

#include <gtest/gtest.h>
#include <time.h>

#include <chrono>

namespace ringvm {
namespace {

using std::chrono::system_clock;
using namespace std::chrono_literals;

// 2024-02-29 23:59:58 UTC, a Thursday.
constexpr time_t kLeapDayEvening = 1709251198;

class CmosRtcTest : public ::testing::Test {
 protected:
  CmosRtcTest() : rtc_([this] { return now_; }) {}

  uint8_t cmos(uint8_t index) {
    rtc_.write(0, std::span<const uint8_t>(&index, 1));
    uint8_t v = 0;
    rtc_.read(1, std::span<uint8_t>(&v, 1));
    return v;
  }
  void set_cmos(uint8_t index, uint8_t value) {
    rtc_.write(0, std::span<const uint8_t>(&index, 1));
    rtc_.write(1, std::span<const uint8_t>(&value, 1));
  }
  static int bcd(uint8_t v) { return (v >> 4) * 10 + (v & 0x0f); }

  // Linux's mc146818_get_time(): poll UIP, read the fields, decode per register B.
  time_t linux_read_time(int* loops) {
    for (*loops = 1;; ++*loops) {
      const uint8_t sec = cmos(0x00);
      if (cmos(0x0a) & 0x80) {
        now_ += 100us;  // udelay(100)
        continue;
      }
      if (sec != cmos(0x00)) continue;
      struct tm tm = {};
      tm.tm_sec = cmos(0x00);
      tm.tm_min = cmos(0x02);
      tm.tm_hour = cmos(0x04);
      tm.tm_mday = cmos(0x07);
      tm.tm_mon = cmos(0x08);
      tm.tm_year = cmos(0x09);
      int century = cmos(0x32);
      if (!(cmos(0x0b) & 0x04)) {
        tm.tm_sec = bcd(static_cast<uint8_t>(tm.tm_sec));
        tm.tm_min = bcd(static_cast<uint8_t>(tm.tm_min));
        tm.tm_hour = bcd(static_cast<uint8_t>(tm.tm_hour));
        tm.tm_mday = bcd(static_cast<uint8_t>(tm.tm_mday));
        tm.tm_mon = bcd(static_cast<uint8_t>(tm.tm_mon));
        tm.tm_year = bcd(static_cast<uint8_t>(tm.tm_year));
        century = bcd(static_cast<uint8_t>(century));
      }
      tm.tm_mon -= 1;
      tm.tm_year += century * 100 - 1900;
      return timegm(&tm);
    }
  }

  system_clock::time_point now_ = system_clock::from_time_t(kLeapDayEvening) + 250ms;
  CmosRtc rtc_;
};

TEST_F(CmosRtcTest, DefaultsAreBcd24HourAndValid) {
  EXPECT_EQ(cmos(0x0b), 0x02);
  EXPECT_EQ(cmos(0x0d), 0x80);  // VRT set; bit 6 clear or Linux refuses the RTC
  EXPECT_EQ(cmos(0x0c), 0x00);
  EXPECT_EQ(cmos(0x0a) & 0x7f, 0x26);
}

TEST_F(CmosRtcTest, BcdFieldsMatchClock) {
  EXPECT_EQ(cmos(0x00), 0x58);
  EXPECT_EQ(cmos(0x02), 0x59);
  EXPECT_EQ(cmos(0x04), 0x23);
  EXPECT_EQ(cmos(0x06), 0x05);  // Thursday
  EXPECT_EQ(cmos(0x07), 0x29);
  EXPECT_EQ(cmos(0x08), 0x02);
  EXPECT_EQ(cmos(0x09), 0x24);
  EXPECT_EQ(cmos(0x32), 0x20);
}

TEST_F(CmosRtcTest, BinaryAnd12HourModes) {
  set_cmos(0x0b, 0x04);  // binary, 12-hour
  EXPECT_EQ(cmos(0x00), 58);
  EXPECT_EQ(cmos(0x04), 0x80 | 11);  // 11 PM
  EXPECT_EQ(cmos(0x09), 24);
  EXPECT_EQ(cmos(0x32), 20);
  now_ = system_clock::from_time_t(kLeapDayEvening + 2 + 30 * 60);  // 00:30 on March 1st
  EXPECT_EQ(cmos(0x04), 12);                                        // 12 AM
  EXPECT_EQ(cmos(0x08), 3);
  set_cmos(0x0b, 0x00);                                           // BCD, 12-hour
  now_ = system_clock::from_time_t(kLeapDayEvening - 11 * 3600);  // 12:59:58
  EXPECT_EQ(cmos(0x04), 0x80 | 0x12);                             // 12 PM
}

TEST_F(CmosRtcTest, LinuxReadLoopGetsHostTime) {
  int loops = 0;
  EXPECT_EQ(linux_read_time(&loops), kLeapDayEvening);
  EXPECT_EQ(loops, 1);
}

TEST_F(CmosRtcTest, UpdateInProgressNearSecondBoundaryAndLoopEnds) {
  now_ = system_clock::from_time_t(kLeapDayEvening) + 995ms;
  EXPECT_EQ(cmos(0x0a) & 0x80, 0x80);
  int loops = 0;
  EXPECT_EQ(linux_read_time(&loops), kLeapDayEvening + 1);  // read after the update, not across it
  EXPECT_GT(loops, 1);
  EXPECT_LT(loops, 200);
  now_ = system_clock::from_time_t(kLeapDayEvening) + 500ms;
  EXPECT_EQ(cmos(0x0a) & 0x80, 0);
}

TEST_F(CmosRtcTest, IndexIgnoresNmiBitAndRamStores) {
  set_cmos(0x80 | 0x40, 0xab);
  EXPECT_EQ(cmos(0x40), 0xab);
  set_cmos(0x7f, 0x11);
  EXPECT_EQ(cmos(0xff), 0x11);
  set_cmos(0x0c, 0xff);  // read-only
  set_cmos(0x0d, 0x00);
  EXPECT_EQ(cmos(0x0c), 0x00);
  EXPECT_EQ(cmos(0x0d), 0x80);
}

TEST_F(CmosRtcTest, GuestSetsTimeWithSetBit) {
  set_cmos(0x0b, 0x82);  // SET, 24-hour BCD
  set_cmos(0x00, 0x00);
  set_cmos(0x02, 0x00);
  set_cmos(0x04, 0x12);
  set_cmos(0x07, 0x01);
  set_cmos(0x08, 0x01);
  set_cmos(0x09, 0x30);
  set_cmos(0x32, 0x20);
  EXPECT_EQ(cmos(0x04), 0x12);  // frozen while SET
  EXPECT_EQ(cmos(0x0a) & 0x80, 0);
  set_cmos(0x0b, 0x02);
  now_ += 61s;  // the host clock keeps running and the guest's with it
  int loops = 0;
  struct tm want = {};
  want.tm_year = 130;
  want.tm_mday = 1;
  want.tm_hour = 12;
  EXPECT_EQ(linux_read_time(&loops), timegm(&want) + 61);
}

TEST_F(CmosRtcTest, SingleFieldWriteWhileRunning) {
  set_cmos(0x09, 0x25);  // February 29th, 2025 does not exist: ignored
  EXPECT_EQ(cmos(0x09), 0x24);
  set_cmos(0x09, 0x28);
  EXPECT_EQ(cmos(0x09), 0x28);
  EXPECT_EQ(cmos(0x02), 0x59);
  set_cmos(0x08, 0x13);  // invalid month: ignored
  EXPECT_EQ(cmos(0x08), 0x02);
}

TEST(CmosRtcHostClock, ReadsHostUtcTime) {
  CmosRtc rtc;
  auto reg = [&](uint8_t index) {
    rtc.write(0, std::span<const uint8_t>(&index, 1));
    uint8_t v = 0;
    rtc.read(1, std::span<uint8_t>(&v, 1));
    return (v >> 4) * 10 + (v & 0x0f);
  };
  const time_t host = time(nullptr);
  struct tm tm = {};
  tm.tm_sec = reg(0x00);
  tm.tm_min = reg(0x02);
  tm.tm_hour = reg(0x04);
  tm.tm_mday = reg(0x07);
  tm.tm_mon = reg(0x08) - 1;
  tm.tm_year = reg(0x32) * 100 + reg(0x09) - 1900;
  EXPECT_LE(std::abs(timegm(&tm) - host), 2);
}

TEST(CmosRtcHostClock, WideAccessesAreHarmless) {
  CmosRtc rtc;
  uint8_t wide[2] = {};
  rtc.read(0, wide);
  EXPECT_EQ(wide[0], 0xff);
  rtc.write(0, wide);
  uint8_t v = 0;
  rtc.read(5, std::span(&v, 1));
  EXPECT_EQ(v, 0xff);
}

}  // namespace
}  // namespace ringvm
