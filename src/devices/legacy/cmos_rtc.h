// CmosRtc: the MC146818 real-time clock and its 128 bytes of CMOS RAM (ports 0x70/0x71).
//
// The clock registers are computed from the host's UTC time on every read (plus an offset the guest
// sets by writing them, e.g. `hwclock --systohc`), in BCD or binary and 12- or 24-hour form as
// register B asks. Update-in-progress (register A bit 7) is reported during the last
// kUipWindow of every second, so a guest that checks UIP before reading has that long to read all
// fields consistently even when each port access is a slow VM exit.
//
// No interrupts are generated (periodic, alarm and update-ended): register C always reads 0.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <span>
#include <string_view>

#include "devices/device.h"

namespace ringvm {

class CmosRtc final : public Device {
 public:
  using Clock = std::function<std::chrono::system_clock::time_point()>;

  // Index port and data port.
  static constexpr uint64_t kSize = 2;
  static constexpr std::chrono::milliseconds kUipWindow{10};

  // `clock` defaults to the host's wall clock; tests inject a fixed one.
  explicit CmosRtc(Clock clock = [] { return std::chrono::system_clock::now(); });

  std::string_view name() const override { return "cmos-rtc"; }
  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;

 private:
  // The guest's view of "now": host time plus the offset it set.
  std::chrono::system_clock::time_point guest_now() const;
  // Writes the clock fields for `t` into ram_ in the current data mode.
  void fill_time(std::chrono::system_clock::time_point t);
  // Reads the clock fields in ram_ back into a time; false if they are not a valid date.
  bool decode_time(std::chrono::system_clock::time_point* t) const;
  // Makes the time the guest wrote into the clock fields the running time.
  void adopt_written_time();
  uint8_t encode(int value) const;
  int decode(uint8_t value) const;
  uint8_t read_register(uint8_t index);
  void write_register(uint8_t index, uint8_t value);

  const Clock clock_;

  std::mutex mu_;
  std::array<uint8_t, 128> ram_{};
  uint8_t index_ = 0;
  std::chrono::seconds offset_{0};  // guest time minus host time
};

}  // namespace ringvm
