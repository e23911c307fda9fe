// AcpiPmDevice: the ACPI fixed-hardware registers a guest uses to power off (S5), plus the power
// button event and the ACPI PM timer. One device covers the FADT's PM1a_EVT_BLK (4 bytes),
// PM1a_CNT_BLK (2 bytes) and PM_TMR_BLK (4 bytes) laid out contiguously:
//
//   offset 0  PM1_STS  (write 1 to clear)     offset 4  PM1_CNT
//   offset 2  PM1_EN                           offset 8  PM_TMR (24-bit, 3.579545 MHz, read-only)
//
// Insert it at PM1a_EVT_BLK with size kSize. Accesses of any width inside the window work byte by
// byte, as ACPICA splits and merges them. SCI_EN reads as set: the guest finds ACPI mode already on
// (the FADT's SMI_CMD is 0). The SCI line is level: high while any enabled status bit is set.
// There is no GPE block (the FADT's GPE0_BLK is 0).
//
// save()/restore() carry PM1_STS, PM1_EN, PM1_CNT and the PM timer's value. The restored timer
// counts on from the saved value on this device's clock, so the guest sees it advance by the
// time it ran, not by the time the snapshot sat on disk. restore() drives the SCI line to the
// restored level, so restore the irqchip first and this device after it.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <span>
#include <string_view>
#include <vector>

#include "devices/device.h"

namespace ringvm {

class AcpiPmDevice final : public Device {
 public:
  using MonotonicClock = std::function<std::chrono::steady_clock::time_point()>;

  static constexpr uint64_t kSize = 12;
  static constexpr uint64_t kPm1StsOffset = 0;
  static constexpr uint64_t kPm1EnOffset = 2;
  static constexpr uint64_t kPm1CntOffset = 4;
  static constexpr uint64_t kPmTmrOffset = 8;
  static constexpr uint64_t kPmTimerHz = 3579545;

  struct Hooks {
    // The guest entered S5. Runs on its vCPU thread: request the exit, do not wait for it.
    std::function<void()> on_poweroff;
    // The SCI interrupt line (GSI 9 on x86); may be empty when no event is ever enabled.
    std::function<void(bool level)> sci;
    // The PM timer's time base; the host's monotonic clock unless a test injects one.
    MonotonicClock clock;
  };

  // `s5_slp_typ` is the SLP_TYP value the DSDT's \_S5 package hands the guest.
  explicit AcpiPmDevice(Hooks hooks, uint8_t s5_slp_typ = 5);

  std::string_view name() const override { return "acpi-pm"; }
  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;

  // Thread-safe host request: sets PWRBTN_STS so an ACPI-aware guest shuts itself down.
  void press_power_button();

  // Stateful. restore() refuses (kCorrupt, the device unchanged) truncated state, status,
  // enable or control bits the device does not implement, SCI_EN clear and a timer value wider
  // than 24 bits.
  Result<std::vector<uint8_t>> save() const override;
  Result<void> restore(std::span<const uint8_t> state) override;

 private:
  uint8_t read_byte(uint64_t offset) const;
  uint32_t timer_value() const;
  void update_sci();

  const std::function<void()> on_poweroff_;
  const std::function<void(bool)> sci_;
  const MonotonicClock clock_;
  const uint8_t s5_slp_typ_;

  mutable std::mutex mu_;
  // The timer reads timer_base_ plus the ticks since epoch_ (both move on a restore).
  std::chrono::steady_clock::time_point epoch_;
  uint32_t timer_base_ = 0;
  uint16_t sts_ = 0;
  uint16_t en_ = 0;
  uint16_t cnt_;
  bool sci_level_ = false;
};

}  // namespace ringvm
