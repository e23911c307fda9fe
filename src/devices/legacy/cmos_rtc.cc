#include "devices/legacy/cmos_rtc.h"

#include <time.h>

#include <algorithm>
#include <utility>

#include "base/log.h"
#include "base/state_codec.h"

namespace ringvm {
namespace {

using std::chrono::duration_cast;
using std::chrono::seconds;
using std::chrono::system_clock;

// CMOS RAM indices the MC146818 gives meaning to.
enum : uint8_t {
  kSeconds = 0x00,     // 0-59
  kMinutes = 0x02,     // 0-59
  kHours = 0x04,       // 0-23, or 1-12 with bit 7 = PM
  kDayOfWeek = 0x06,   // 1-7, Sunday = 1
  kDayOfMonth = 0x07,  // 1-31
  kMonth = 0x08,       // 1-12
  kYear = 0x09,        // 0-99
  kRegA = 0x0a,        // UIP, divider, rate
  kRegB = 0x0b,        // SET, interrupt enables, data mode, 24-hour
  kRegC = 0x0c,        // interrupt flags, read-only
  kRegD = 0x0d,        // valid RAM and time, read-only
  kCentury = 0x32,     // 19, 20, ... (the ACPI FADT's default century index)
};

enum : uint8_t {
  kAUip = 0x80,       // register A: update in progress
  kADefault = 0x26,   // 32.768 kHz time base, 1024 Hz periodic rate
  kBSet = 0x80,       // register B: updates halted while the guest sets the time
  kBBinary = 0x04,    // register B: binary rather than BCD
  kB24Hour = 0x02,    // register B: 24-hour mode
  kBDefault = 0x02,   // 24-hour BCD, no interrupts
  kDValid = 0x80,     // register D: valid RAM and time (bit 6 must read 0 for Linux)
  kHourPm = 0x80,     // hours register, 12-hour mode: PM
  kIndexMask = 0x7f,  // index port bit 7 is the NMI mask, not part of the index
};

// The times the clock holds, [1900-01-01, 2200-01-01) UTC: what a BCD century byte of 19..21
// spans, and well inside what a nanosecond time_point (to 2262) holds with a host offset added.
constexpr seconds kMinTime{-2208988800};
constexpr seconds kMaxTime{7258118400};  // exclusive

// The layout save() writes; restore() refuses any other.
constexpr uint8_t kStateVersion = 1;

constexpr uint64_t kIndexPort = 0;
constexpr uint64_t kDataPort = 1;

bool is_time_register(uint8_t index) {
  return index == kSeconds || index == kMinutes || index == kHours || index == kDayOfWeek ||
         index == kDayOfMonth || index == kMonth || index == kYear || index == kCentury;
}

}  // namespace

CmosRtc::CmosRtc(Clock clock) : clock_(std::move(clock)) {
  ram_[kRegA] = kADefault;
  ram_[kRegB] = kBDefault;
  ram_[kRegD] = kDValid;
}

void CmosRtc::read(uint64_t offset, std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), 0xff);
  if (data.size() != 1 || offset >= kSize) {
    RINGVM_LOG_RATELIMITED(warn, "cmos-rtc: {}-byte read at offset {} ignored", data.size(), offset);
    return;
  }
  std::lock_guard lock(mu_);
  // The index register is write-only on the real part.
  if (offset == kDataPort) data[0] = read_register(index_);
}

void CmosRtc::write(uint64_t offset, std::span<const uint8_t> data) {
  if (data.size() != 1 || offset >= kSize) {
    RINGVM_LOG_RATELIMITED(warn, "cmos-rtc: {}-byte write at offset {} ignored", data.size(), offset);
    return;
  }
  std::lock_guard lock(mu_);
  if (offset == kIndexPort) {
    index_ = data[0] & kIndexMask;
  } else {
    write_register(index_, data[0]);
  }
}

system_clock::time_point CmosRtc::guest_now() const { return clock_() + offset_; }

uint8_t CmosRtc::encode(int value) const {
  if (ram_[kRegB] & kBBinary) return static_cast<uint8_t>(value);
  return static_cast<uint8_t>(((value / 10) << 4) | (value % 10));
}

int CmosRtc::decode(uint8_t value) const {
  if (ram_[kRegB] & kBBinary) return value;
  return (value >> 4) * 10 + (value & 0x0f);
}

void CmosRtc::fill_time(system_clock::time_point t) {
  const time_t secs = system_clock::to_time_t(t);
  struct tm tm = {};
  if (gmtime_r(&secs, &tm) == nullptr) return;
  ram_[kSeconds] = encode(tm.tm_sec);
  ram_[kMinutes] = encode(tm.tm_min);
  if (ram_[kRegB] & kB24Hour) {
    ram_[kHours] = encode(tm.tm_hour);
  } else {
    const int h12 = tm.tm_hour % 12 == 0 ? 12 : tm.tm_hour % 12;
    ram_[kHours] = static_cast<uint8_t>(encode(h12) | (tm.tm_hour >= 12 ? kHourPm : 0));
  }
  ram_[kDayOfWeek] = encode(tm.tm_wday + 1);
  ram_[kDayOfMonth] = encode(tm.tm_mday);
  ram_[kMonth] = encode(tm.tm_mon + 1);
  const int year = tm.tm_year + 1900;
  ram_[kYear] = encode(year % 100);
  ram_[kCentury] = encode(year / 100);
}

bool CmosRtc::decode_time(system_clock::time_point* t) const {
  struct tm tm = {};
  tm.tm_sec = decode(ram_[kSeconds]);
  tm.tm_min = decode(ram_[kMinutes]);
  if (ram_[kRegB] & kB24Hour) {
    tm.tm_hour = decode(ram_[kHours]);
  } else {
    tm.tm_hour =
        decode(ram_[kHours] & static_cast<uint8_t>(~kHourPm)) % 12 + ((ram_[kHours] & kHourPm) ? 12 : 0);
  }
  tm.tm_mday = decode(ram_[kDayOfMonth]);
  tm.tm_mon = decode(ram_[kMonth]) - 1;
  tm.tm_year = decode(ram_[kCentury]) * 100 + decode(ram_[kYear]) - 1900;
  if (tm.tm_sec > 59 || tm.tm_min > 59 || tm.tm_hour > 23 || tm.tm_mday < 1 || tm.tm_mday > 31 ||
      tm.tm_mon < 0 || tm.tm_mon > 11) {
    return false;
  }
  struct tm fields = tm;
  const time_t secs = timegm(&tm);
  // timegm() normalizes out-of-range days (February 30th) instead of failing: reject those.
  if (secs == static_cast<time_t>(-1) || tm.tm_mday != fields.tm_mday || tm.tm_mon != fields.tm_mon)
    return false;
  *t = system_clock::from_time_t(secs);
  return true;
}

void CmosRtc::adopt_written_time() {
  system_clock::time_point t;
  if (decode_time(&t) && t.time_since_epoch() >= kMinTime && t.time_since_epoch() < kMaxTime) {
    // Whole seconds, so the host clock's sub-second phase carries over unchanged.
    offset_ = duration_cast<seconds>(t - std::chrono::floor<seconds>(clock_()));
  } else {
    RINGVM_LOG_RATELIMITED(info, "cmos-rtc: guest wrote an invalid time; clock unchanged");
  }
}

uint8_t CmosRtc::read_register(uint8_t index) {
  if (is_time_register(index)) {
    // While SET is on, the guest sees what it wrote rather than the running clock.
    if (!(ram_[kRegB] & kBSet)) fill_time(guest_now());
    return ram_[index];
  }
  switch (index) {
    case kRegA: {
      const auto now = guest_now().time_since_epoch();
      const auto into_second = now - duration_cast<seconds>(now);
      const bool uip = !(ram_[kRegB] & kBSet) && into_second >= seconds(1) - kUipWindow;
      return static_cast<uint8_t>((ram_[kRegA] & ~kAUip) | (uip ? kAUip : 0));
    }
    case kRegC: return 0;  // no interrupt sources, so no flags to report
    case kRegD: return kDValid;
    default: return ram_[index];
  }
}

void CmosRtc::write_register(uint8_t index, uint8_t value) {
  if (is_time_register(index)) {
    // Start from the running time so a single-field write changes only that field.
    if (!(ram_[kRegB] & kBSet)) fill_time(guest_now());
    ram_[index] = value;
    if (!(ram_[kRegB] & kBSet)) adopt_written_time();
    return;
  }
  switch (index) {
    case kRegA: ram_[kRegA] = value & static_cast<uint8_t>(~kAUip); return;
    case kRegB: {
      const bool was_set = ram_[kRegB] & kBSet;
      // Entering SET freezes the fields at the current time for the guest to overwrite.
      if (!was_set && (value & kBSet)) fill_time(guest_now());
      ram_[kRegB] = value;
      if (was_set && !(value & kBSet)) adopt_written_time();
      return;
    }
    case kRegC:
    case kRegD: return;  // read-only
    default: ram_[index] = value; return;
  }
}

void CmosRtc::set_time_to_host_now() {
  std::lock_guard lock(mu_);
  offset_ = system_clock::duration::zero();
}

Result<std::vector<uint8_t>> CmosRtc::save() const {
  std::lock_guard lock(mu_);
  StateWriter w;
  w.u8(kStateVersion);
  w.raw(ram_);
  w.u8(index_);
  // The running clock, also while SET holds the fields (ram_ keeps what the guest wrote).
  w.i64(std::chrono::duration_cast<std::chrono::nanoseconds>(guest_now().time_since_epoch()).count());
  return w.take();
}

Result<void> CmosRtc::restore(std::span<const uint8_t> state) {
  StateReader r(state, std::string(name()));
  const uint8_t version = TRY(r.u8("version"));
  if (version != kStateVersion)
    return r.corrupt(fmt::format("state version {}; this ringvm reads version {}", version, kStateVersion));
  std::array<uint8_t, 128> ram{};
  RETURN_IF_ERROR(r.raw("cmos_ram", ram));
  const uint8_t index = TRY(r.u8("index"));
  const int64_t guest_ns = TRY(r.i64("guest_time_ns"));
  RETURN_IF_ERROR(r.finish());
  RETURN_IF_ERROR(r.check_range("index", index, 0, kIndexMask));
  if (ram[kRegA] & kAUip) return r.corrupt("register A stores UIP, which the RTC only computes");
  if (ram[kRegC] != 0) return r.corrupt(fmt::format("register C is {:#04x}; it is always 0", ram[kRegC]));
  if (ram[kRegD] != kDValid)
    return r.corrupt(fmt::format("register D is {:#04x}; it is always {:#04x}", ram[kRegD], kDValid));
  const std::chrono::nanoseconds guest_time{guest_ns};
  if (guest_time < kMinTime || guest_time >= kMaxTime)
    return r.corrupt(fmt::format("`guest_time_ns` {} lies outside the years 1900..2199", guest_ns));

  std::lock_guard lock(mu_);
  ram_ = ram;
  index_ = index;
  offset_ = std::chrono::duration_cast<system_clock::duration>(guest_time) - clock_().time_since_epoch();
  return Ok();
}

}  // namespace ringvm
