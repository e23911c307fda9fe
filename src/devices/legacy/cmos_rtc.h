// CmosRtc: the MC146818 real-time clock and its 128 bytes of CMOS RAM (ports 0x70/0x71).
//
// The clock registers are computed from the host's UTC time on every read (plus an offset the guest
// sets by writing them, e.g. `hwclock --systohc`), in BCD or binary and 12- or 24-hour form as
// register B asks. Update-in-progress (register A bit 7) is reported during the last
// kUipWindow of every second, so a guest that checks UIP before reading has that long to read all
// fields consistently even when each port access is a slow VM exit.
//
// No interrupts are generated (periodic, alarm and update-ended): register C always reads 0.
//
// save()/restore() carry the 128 bytes of CMOS RAM, the index register and the time the clock
// shows. A restored clock continues from that time (its offset from the host clock is
// recomputed), so the guest sees no jump for however long the snapshot sat on disk;
// set_time_to_host_now() is the other choice (a snapshot restored with clock_realtime=true).
// The clock holds times from 1900 to 2199: a guest writing a time outside them is ignored.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <span>
#include <string_view>
#include <vector>

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

  // Thread-safe. The clock shows the host's UTC time from now on (the offset a guest set by
  // writing the time, or a restore carried over, is dropped).
  void set_time_to_host_now();

  // Stateful. restore() refuses (kCorrupt, the RTC unchanged) truncated state, an index above
  // 127, UIP stored in register A, registers C and D other than the hardware's constants, and a
  // time outside 1900..2199. The RTC raises no interrupts, so there is no line to re-drive.
  Result<std::vector<uint8_t>> save() const override;
  Result<void> restore(std::span<const uint8_t> state) override;

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

  mutable std::mutex mu_;
  std::array<uint8_t, 128> ram_{};
  uint8_t index_ = 0;
  // Guest time minus host time: whole seconds when the guest set it, any duration after a restore.
  std::chrono::system_clock::duration offset_{0};
};

}  // namespace ringvm
