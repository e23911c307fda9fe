// I8042: the PS/2 keyboard controller, with a PS/2 keyboard on its first port and no AUX port.
// A VM needs it for two things: the guest's reboot path (command 0xFE pulses the CPU reset line)
// and Ctrl+Alt+Del from the host (`send_ctrl_alt_del()`), which the guest's own handler turns into
// a reboot (Linux: ctrl_alt_del() -> reboot, which pulses the reset line through this device). It
// answers the Linux i8042 driver's probe (self-test, command byte, port tests) without timeouts:
// no AUX port, a keyboard that atkbd binds to (reset, get ID AB 83, or AB 41 while the controller
// translates, LEDs, typematic rate, scancode set, enable/disable, echo).
//
// Every byte in the output buffer raises the keyboard interrupt (a level, through `kbd_irq`) while
// the command byte's interrupt bit (CTR bit 0) is set; a data-port read takes one byte and lowers
// the line, and the next byte raises it again, so each byte gets its own edge at the PIC/IOAPIC.
// Controller replies come first, then the keyboard's command replies, then its scancodes; the
// keyboard's bytes wait while its port is disabled (CTR bit 4, command 0xAD).
//
// The device covers ports 0x60-0x64 (insert it at 0x60 with size kSize): offset 0 is the data
// port, offset 4 the status/command port, and offset 1 is port 0x61 (system control port B), whose
// refresh and PIT-output bits toggle on every read so the guest's delay loops always end. When the
// in-kernel PIT exists, KVM claims port 0x61 itself and offset 1 is never reached.
//
// save()/restore() carry the controller (RAM with the command byte, output buffer, pending
// command, output port, port B) and the keyboard (reply and scancode queues, pending command,
// scancode set, scanning). restore() then drives IRQ 1 to the level the restored state implies,
// so restore the irqchip first and this device after it.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <functional>
#include <initializer_list>
#include <mutex>
#include <span>
#include <string_view>
#include <vector>

#include "devices/device.h"

namespace ringvm {

class I8042 final : public Device {
 public:
  // Ports 0x60 to 0x64.
  static constexpr uint64_t kSize = 5;
  static constexpr uint64_t kDataOffset = 0;
  static constexpr uint64_t kPortBOffset = 1;
  static constexpr uint64_t kCommandOffset = 4;

  // Drives IRQ 1 (the builder maps it to KvmVm::set_irq_line(gsi, level)); called with the
  // device's lock held, only on changes.
  using IrqLine = std::function<void(bool level)>;

  // `on_reset` runs on the vCPU thread that pulsed the reset line; it must only request the
  // reboot (or exit), not wait for it.
  I8042(std::function<void()> on_reset, IrqLine kbd_irq);

  std::string_view name() const override { return "i8042"; }
  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;

  // Thread-safe (called from an API thread while vCPUs run). Queues the keyboard's scancodes for
  // pressing Ctrl, Alt and Delete and releasing Delete, Alt and Ctrl, in the set the guest reads:
  // set 1 while the controller translates (CTR bit 6), else the keyboard's own set (2 unless the
  // guest chose another with 0xF0). Returns false, queueing nothing, while the keyboard is not
  // scanning (the guest sent 0xF5 and no 0xF4 yet) or when the sequence does not fit its buffer.
  bool send_ctrl_alt_del();

  // Stateful. restore() refuses (kCorrupt, the device unchanged) truncated state, queues longer
  // than the device ever holds, a pending command that takes no data byte, an asserted reset
  // line, unknown scancode sets and bits the ports do not have.
  Result<std::vector<uint8_t>> save() const override;
  Result<void> restore(std::span<const uint8_t> state) override;

 private:
  uint8_t status() const;
  uint8_t read_data();
  void write_data(uint8_t value);
  void command(uint8_t cmd);
  void push_output(uint8_t byte);
  bool output_full() const;
  void update_irq(bool byte_taken);
  void keyboard_write(uint8_t value);
  void keyboard_reply(std::initializer_list<uint8_t> bytes);
  void keyboard_defaults();
  uint8_t read_port_b();

  const std::function<void()> on_reset_;
  const IrqLine kbd_irq_;

  mutable std::mutex mu_;
  std::array<uint8_t, 32> ram_{};  // controller RAM; byte 0 is the command byte (CTR)
  std::deque<uint8_t> output_;     // controller replies (and 0xd2/0xd3 bytes) waiting
  uint8_t last_output_ = 0;        // what a read of an empty buffer returns
  uint8_t pending_ = 0;            // command waiting for its data byte, or 0
  bool last_was_command_ = false;  // status bit A2
  uint8_t output_port_ = 0x03;     // reset line deasserted, A20 enabled
  uint8_t port_b_ = 0;             // port 0x61 bits 0-3 as last written
  uint8_t port_b_toggle_ = 0;      // the toggling bits 4 and 5
  bool irq_level_ = false;         // what kbd_irq_ was last told

  // The keyboard. Its command replies go out before any scancodes it still holds.
  std::deque<uint8_t> kbd_replies_;
  std::deque<uint8_t> kbd_scancodes_;
  uint8_t kbd_pending_ = 0;   // keyboard command waiting for its argument byte, or 0
  uint8_t kbd_last_ = 0;      // the last byte the keyboard sent, for 0xFE (resend)
  uint8_t kbd_set_ = 2;       // scancode set (0xF0)
  bool kbd_scanning_ = true;  // 0xF4 enables, 0xF5 disables
};

}  // namespace ringvm
