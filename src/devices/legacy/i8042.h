// I8042: the PS/2 keyboard controller, present for the one thing a VM needs from it: the guest's
// reboot path (command 0xFE pulses the CPU reset line). It answers the Linux i8042 driver's probe
// (self-test, command byte, port tests) so that it finds a controller with no keyboard and no
// AUX port quickly and quietly, without waiting on timeouts.
//
// The device covers ports 0x60-0x64 (insert it at 0x60 with size kSize): offset 0 is the data
// port, offset 4 the status/command port, and offset 1 is port 0x61 (system control port B), whose
// refresh and PIT-output bits toggle on every read so the guest's delay loops always end. When the
// in-kernel PIT exists, KVM claims port 0x61 itself and offset 1 is never reached.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <span>
#include <string_view>

#include "devices/device.h"

namespace ringvm {

class I8042 final : public Device {
 public:
  // Ports 0x60 to 0x64.
  static constexpr uint64_t kSize = 5;
  static constexpr uint64_t kDataOffset = 0;
  static constexpr uint64_t kPortBOffset = 1;
  static constexpr uint64_t kCommandOffset = 4;

  // `on_reset` runs on the vCPU thread that pulsed the reset line; it must only request the
  // reboot (or exit), not wait for it.
  explicit I8042(std::function<void()> on_reset);

  std::string_view name() const override { return "i8042"; }
  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;

 private:
  uint8_t status() const;
  uint8_t read_data();
  void write_data(uint8_t value);
  void command(uint8_t cmd);
  void push_output(uint8_t byte);
  uint8_t read_port_b();

  const std::function<void()> on_reset_;

  std::mutex mu_;
  std::array<uint8_t, 32> ram_{};  // controller RAM; byte 0 is the command byte (CTR)
  std::deque<uint8_t> output_;     // bytes waiting in the output buffer
  uint8_t last_output_ = 0;        // what a read of an empty buffer returns
  uint8_t pending_ = 0;            // command waiting for its data byte, or 0
  bool last_was_command_ = false;  // status bit A2
  uint8_t output_port_ = 0x03;     // reset line deasserted, A20 enabled
  uint8_t port_b_ = 0;             // port 0x61 bits 0-3 as last written
  uint8_t port_b_toggle_ = 0;      // the toggling bits 4 and 5
};

}  // namespace ringvm
