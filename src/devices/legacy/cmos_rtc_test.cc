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

TEST_F(CmosRtcTest, TimesBeyond2199AreIgnored) {
  set_cmos(0x32, 0x22);  // the 2200s
  EXPECT_EQ(cmos(0x32), 0x20);
  set_cmos(0x32, 0x21);
  EXPECT_EQ(cmos(0x32), 0x21);
}

// Offsets of save()'s layout: version, 128 bytes of RAM, index, guest time (i64 ns).
constexpr size_t kStateRam = 1, kStateIndex = 129, kStateTime = 130, kStateSize = 138;

TEST_F(CmosRtcTest, SaveRestoreContinuesFromTheSavedTime) {
  set_cmos(0x40, 0xab);  // NVRAM a guest (or firmware) keeps settings in
  set_cmos(0x7f, 0x11);
  set_cmos(0x0b, 0x82);  // SET: the guest sets 2030-01-01 12:00:00
  for (auto [index, value] : {std::pair{0x00, 0x00}, {0x02, 0x00}, {0x04, 0x12}, {0x07, 0x01}, {0x08, 0x01},
                              {0x09, 0x30}, {0x32, 0x20}})
    set_cmos(static_cast<uint8_t>(index), static_cast<uint8_t>(value));
  set_cmos(0x0b, 0x02);  // running
  set_cmos(0x0b, 0x06);  // binary, 24-hour
  now_ += 95s;           // 12:01:35 for the guest, at 250 ms into its second
  set_cmos(0x0a, 0x2a);  // another periodic rate
  const uint8_t index = 0x40;
  rtc_.write(0, std::span<const uint8_t>(&index, 1));

  const std::vector<uint8_t> state = rtc_.save().value();
  ASSERT_EQ(state.size(), kStateSize);

  // Restored an hour and 600 ms later on another host clock: the guest's clock does not jump.
  system_clock::time_point later = now_ + 3600s + 600ms;
  CmosRtc copy([&] { return later; });
  ASSERT_TRUE(copy.restore(state).ok());
  EXPECT_EQ(copy.save().value(), state);
  auto reg = [](CmosRtc& rtc, uint8_t i) {
    rtc.write(0, std::span<const uint8_t>(&i, 1));
    uint8_t v = 0;
    rtc.read(1, std::span<uint8_t>(&v, 1));
    return v;
  };
  uint8_t v = 0;
  copy.read(1, std::span<uint8_t>(&v, 1));
  EXPECT_EQ(v, 0xab) << "the index register came back";
  EXPECT_EQ(reg(copy, 0x7f), 0x11);
  EXPECT_EQ(reg(copy, 0x0a) & 0x7f, 0x2a);
  EXPECT_EQ(reg(copy, 0x0b), 0x06);
  EXPECT_EQ(reg(copy, 0x04), 12);
  EXPECT_EQ(reg(copy, 0x02), 1);
  EXPECT_EQ(reg(copy, 0x00), 35);
  EXPECT_EQ(reg(copy, 0x09), 30);
  later += 745ms;  // 12:01:35.995: the sub-second phase carried over, so UIP is up
  EXPECT_EQ(reg(copy, 0x0a) & 0x80, 0x80);
  later += 10s;
  EXPECT_EQ(reg(copy, 0x00), 45);
  for (int i : {0x02, 0x04, 0x09, 0x0b, 0x32, 0x40, 0x7f})
    EXPECT_EQ(reg(copy, static_cast<uint8_t>(i)), reg(rtc_, static_cast<uint8_t>(i))) << i;

  // clock_realtime=true: the host's time from now on.
  copy.set_time_to_host_now();
  const time_t host = system_clock::to_time_t(later);
  struct tm tm = {};
  gmtime_r(&host, &tm);
  EXPECT_EQ(reg(copy, 0x09), tm.tm_year % 100);
  EXPECT_EQ(reg(copy, 0x04), tm.tm_hour);
  EXPECT_EQ(reg(copy, 0x00), tm.tm_sec);
  EXPECT_EQ(reg(copy, 0x40), 0xab) << "NVRAM stays";
}

TEST_F(CmosRtcTest, RestoreRefusesTruncatedAndOutOfRangeState) {
  set_cmos(0x40, 0xab);
  const std::vector<uint8_t> good = rtc_.save().value();
  ASSERT_EQ(good.size(), kStateSize);
  system_clock::time_point other = now_ + 1h;
  CmosRtc target([&] { return other; });
  set_cmos(0x41, 0);  // (only rtc_ changes; target keeps its defaults)
  const std::vector<uint8_t> before = target.save().value();

  for (size_t len = 0; len < good.size(); ++len) {
    auto r = target.restore(std::span(good).first(len));
    ASSERT_FALSE(r.ok()) << len;
    EXPECT_EQ(r.error().code, ErrorCode::kCorrupt) << len;
  }
  std::vector<uint8_t> longer = good;
  longer.push_back(0);
  EXPECT_FALSE(target.restore(longer).ok());

  auto with_time = [&](int64_t secs) {
    std::vector<uint8_t> b = good;
    const auto ns = static_cast<uint64_t>(secs) * 1'000'000'000ULL;
    for (size_t i = 0; i < 8; ++i) b[kStateTime + i] = static_cast<uint8_t>(ns >> (8 * i));
    return b;
  };
  auto with_byte = [&](size_t at, uint8_t value) {
    std::vector<uint8_t> b = good;
    b[at] = value;
    return b;
  };
  const std::vector<std::pair<std::vector<uint8_t>, const char*>> bad = {
      {with_byte(0, 2), "version"},
      {with_byte(kStateIndex, 0x80), "index with the NMI bit"},
      {with_byte(kStateRam + 0x0a, 0xa6), "register A with UIP"},
      {with_byte(kStateRam + 0x0c, 0x80), "register C"},
      {with_byte(kStateRam + 0x0d, 0x00), "register D"},
      {with_time(7258118400), "2200-01-01"},
      {with_time(-2208988801), "1899-12-31 23:59:59"},
      {with_time(-9'000'000'000), "a negative time far out"},
  };
  for (const auto& [b, why] : bad) {
    auto r = target.restore(b);
    ASSERT_FALSE(r.ok()) << why;
    EXPECT_EQ(r.error().code, ErrorCode::kCorrupt) << why;
    EXPECT_NE(r.error().message().find("cmos-rtc"), std::string::npos) << r.error().message();
  }
  EXPECT_EQ(target.save().value(), before);
  EXPECT_TRUE(target.restore(with_time(7258118399)).ok()) << "2199-12-31 23:59:59 is a valid time";
}

}  // namespace
}  // namespace ringvm
