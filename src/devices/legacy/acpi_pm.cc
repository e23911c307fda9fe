#include "devices/legacy/acpi_pm.h"

#include <utility>

#include "base/log.h"
#include "base/state_codec.h"

namespace ringvm {
namespace {

enum : uint16_t {
  kStsTmr = 1u << 0,     // PM1_STS: timer carry (never set: no timer interrupt)
  kStsPwrBtn = 1u << 8,  // PM1_STS: power button pressed
  kStsWak = 1u << 15,    // PM1_STS: woke from sleep
  kStsMask = 0x8f31,     // status bits the spec defines (others read 0)
  kEnMask = 0x0721,      // PM1_EN: TMR_EN, GBL_EN, PWRBTN_EN, SLPBTN_EN, RTC_EN
  kCntSciEn = 1u << 0,   // PM1_CNT: SCI instead of SMI; always on
  kCntBmRld = 1u << 1,   // PM1_CNT: bus master wakes from C3
  kCntGblRls = 1u << 2,  // PM1_CNT: write-only, releases the global lock to the BIOS
  kCntSlpTypShift = 10,  // PM1_CNT: SLP_TYP in bits 12:10
  kCntSlpTypMask = 0x1c00,
  kCntSlpEn = 1u << 13,  // PM1_CNT: write-only, enter the sleep state in SLP_TYP
  kCntStored = kCntBmRld | kCntSlpTypMask,
};

constexpr uint32_t kTimerMask = 0xffffff;  // 24-bit timer (the FADT leaves TMR_VAL_EXT clear)

// The layout save() writes; restore() refuses any other.
constexpr uint8_t kStateVersion = 1;

// Merges the bytes of a write that land in the 16-bit register at `reg`. Returns false if none do.
bool merge16(uint64_t reg, uint64_t offset, std::span<const uint8_t> data, uint16_t* value, uint16_t* mask) {
  *value = 0;
  *mask = 0;
  for (size_t i = 0; i < data.size(); ++i) {
    const uint64_t at = offset + i;
    if (at < reg || at >= reg + 2) continue;
    const unsigned shift = static_cast<unsigned>(at - reg) * 8;
    *value = static_cast<uint16_t>(*value | (data[i] << shift));
    *mask = static_cast<uint16_t>(*mask | (0xff << shift));
  }
  return *mask != 0;
}

}  // namespace

AcpiPmDevice::AcpiPmDevice(Hooks hooks, uint8_t s5_slp_typ)
    : on_poweroff_(std::move(hooks.on_poweroff)),
      sci_(std::move(hooks.sci)),
      clock_(hooks.clock ? std::move(hooks.clock)
                         : MonotonicClock([] { return std::chrono::steady_clock::now(); })),
      s5_slp_typ_(s5_slp_typ),
      epoch_(clock_()),
      cnt_(kCntSciEn) {}

uint32_t AcpiPmDevice::timer_value() const {
  const uint64_t ns =
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(clock_() - epoch_).count());
  // Split so the product cannot overflow, however long the VM runs.
  const uint64_t ticks =
      (ns / 1'000'000'000) * kPmTimerHz + (ns % 1'000'000'000) * kPmTimerHz / 1'000'000'000;
  return static_cast<uint32_t>((timer_base_ + ticks) & kTimerMask);
}

uint8_t AcpiPmDevice::read_byte(uint64_t offset) const {
  auto byte_of = [](uint32_t v, uint64_t i) { return static_cast<uint8_t>(v >> (i * 8)); };
  if (offset < kPm1EnOffset) return byte_of(sts_, offset - kPm1StsOffset);
  if (offset < kPm1CntOffset) return byte_of(en_, offset - kPm1EnOffset);
  if (offset < kPm1CntOffset + 2) return byte_of(cnt_, offset - kPm1CntOffset);
  if (offset >= kPmTmrOffset && offset < kSize) return byte_of(timer_value(), offset - kPmTmrOffset);
  return 0;  // the gap between PM1_CNT and PM_TMR
}

void AcpiPmDevice::read(uint64_t offset, std::span<uint8_t> data) {
  std::lock_guard lock(mu_);
  for (size_t i = 0; i < data.size(); ++i) {
    data[i] = offset + i < kSize ? read_byte(offset + i) : 0xff;
  }
}

void AcpiPmDevice::write(uint64_t offset, std::span<const uint8_t> data) {
  bool poweroff = false;
  {
    std::lock_guard lock(mu_);
    uint16_t value = 0;
    uint16_t mask = 0;
    if (merge16(kPm1StsOffset, offset, data, &value, &mask))
      sts_ = static_cast<uint16_t>(sts_ & ~(value & mask));
    if (merge16(kPm1EnOffset, offset, data, &value, &mask)) {
      en_ = static_cast<uint16_t>(((en_ & ~mask) | (value & mask)) & kEnMask);
    }
    if (merge16(kPm1CntOffset, offset, data, &value, &mask)) {
      const uint16_t merged = static_cast<uint16_t>((cnt_ & ~mask) | (value & mask));
      cnt_ = static_cast<uint16_t>((merged & kCntStored) | kCntSciEn);
      if (value & mask & kCntSlpEn) {
        const unsigned slp_typ = (merged & kCntSlpTypMask) >> kCntSlpTypShift;
        if (slp_typ == s5_slp_typ_) {
          poweroff = true;
        } else {
          // S1-S4 need firmware wake paths ringvm does not model; the guest simply keeps running.
          RINGVM_LOG_RATELIMITED(warn,
                                 "acpi-pm: guest asked for sleep type {}; only S5 (type {}) is supported",
                                 slp_typ, s5_slp_typ_);
          sts_ |= kStsWak;  // what the guest checks to see the "sleep" is over
        }
      }
    }
    update_sci();
  }
  if (poweroff && on_poweroff_) on_poweroff_();
}

void AcpiPmDevice::press_power_button() {
  std::lock_guard lock(mu_);
  sts_ |= kStsPwrBtn;
  update_sci();
}

void AcpiPmDevice::update_sci() {
  const bool level = (sts_ & en_ & kStsMask) != 0;
  if (level == sci_level_) return;
  sci_level_ = level;
  if (sci_) sci_(level);
}

Result<std::vector<uint8_t>> AcpiPmDevice::save() const {
  std::lock_guard lock(mu_);
  StateWriter w;
  w.u8(kStateVersion);
  w.u16(sts_);
  w.u16(en_);
  w.u16(cnt_);
  w.u32(timer_value());
  return w.take();
}

Result<void> AcpiPmDevice::restore(std::span<const uint8_t> state) {
  StateReader r(state, std::string(name()));
  const uint8_t version = TRY(r.u8("version"));
  if (version != kStateVersion)
    return r.corrupt(fmt::format("state version {}; this ringvm reads version {}", version, kStateVersion));
  const uint16_t sts = TRY(r.u16("pm1_sts"));
  const uint16_t en = TRY(r.u16("pm1_en"));
  const uint16_t cnt = TRY(r.u16("pm1_cnt"));
  const uint32_t timer = TRY(r.u32("pm_tmr"));
  RETURN_IF_ERROR(r.finish());
  if (sts & ~kStsMask) return r.corrupt(fmt::format("PM1_STS {:#06x} sets undefined bits", sts));
  if (en & ~kEnMask) return r.corrupt(fmt::format("PM1_EN {:#06x} enables events the device lacks", en));
  if ((cnt & ~(kCntStored | kCntSciEn)) || !(cnt & kCntSciEn))
    return r.corrupt(fmt::format("PM1_CNT {:#06x} is not SCI_EN plus stored bits", cnt));
  RETURN_IF_ERROR(r.check_range("pm_tmr", timer, 0, kTimerMask));

  std::lock_guard lock(mu_);
  sts_ = sts;
  en_ = en;
  cnt_ = cnt;
  epoch_ = clock_();
  timer_base_ = timer;
  // The line is driven whatever it was before: the irqchip it feeds may be a new one.
  sci_level_ = (sts_ & en_ & kStsMask) != 0;
  if (sci_) sci_(sci_level_);
  return Ok();
}

}  // namespace ringvm
