#include "devices/legacy/i8042.h"

#include <algorithm>
#include <utility>

#include "base/log.h"
#include "base/state_codec.h"

namespace ringvm {
namespace {

enum : uint8_t {
  kStatusObf = 0x01,       // output buffer full: a byte waits at port 0x60
  kStatusSys = 0x04,       // system flag: self-test passed
  kStatusCommand = 0x08,   // last write went to port 0x64
  kStatusUnlocked = 0x10,  // keyboard not inhibited by the key lock
  kStatusAux = 0x20,       // the waiting byte came from the AUX port

  kCtrKbdInt = 0x01,      // command byte: output from the keyboard port raises IRQ 1
  kCtrKbdDisable = 0x10,  // command byte: keyboard clock off
  kCtrAuxDisable = 0x20,  // command byte: AUX clock off
  kCtrTranslate = 0x40,   // command byte: translate the keyboard's set 2 codes to set 1
  kCtrDefault = 0x45,     // keyboard interrupt, system flag, scancode translation

  kCmdReadRam = 0x20,      // 0x20-0x3f: read controller RAM byte (0x20 reads the CTR)
  kCmdWriteRam = 0x60,     // 0x60-0x7f: write controller RAM byte (0x60 writes the CTR)
  kCmdAuxDisable = 0xa7,   // AUX clock off
  kCmdAuxEnable = 0xa8,    // AUX clock on
  kCmdAuxTest = 0xa9,      // AUX interface test
  kCmdSelfTest = 0xaa,     // controller self-test
  kCmdKbdTest = 0xab,      // keyboard interface test
  kCmdKbdDisable = 0xad,   // keyboard clock off
  kCmdKbdEnable = 0xae,    // keyboard clock on
  kCmdReadInput = 0xc0,    // read input port
  kCmdReadOutput = 0xd0,   // read output port
  kCmdWriteOutput = 0xd1,  // write output port (bit 0 low resets the CPU)
  kCmdWriteKbdOut = 0xd2,  // put a byte in the output buffer as if from the keyboard
  kCmdWriteAuxOut = 0xd3,  // put a byte in the output buffer as if from the AUX port
  kCmdWriteAux = 0xd4,     // send the next data byte to the AUX device
  kCmdPulseBase = 0xf0,    // 0xf0-0xff: pulse output lines; bit 0 low pulses CPU reset

  kSelfTestOk = 0x55,       // self-test passed
  kPortTestOk = 0x00,       // interface test passed
  kAuxTestNoDevice = 0x02,  // "clock line stuck high": tells Linux there is no AUX port
  kPortBRefresh = 0x10,     // port 0x61: DRAM refresh toggle
  kPortBPitOut = 0x20,      // port 0x61: PIT channel 2 output

  // Keyboard commands (bytes written to the data port with no controller command pending).
  kKbdSetLeds = 0xed,      // + LED byte
  kKbdEcho = 0xee,         // answered with 0xee, no ACK
  kKbdScancodeSet = 0xf0,  // + 1-3 selects the set, 0 asks for the current one
  kKbdGetId = 0xf2,        // ACK, then the two ID bytes
  kKbdTypematic = 0xf3,    // + rate/delay byte
  kKbdEnable = 0xf4,       // start scanning
  kKbdDisable = 0xf5,      // defaults, stop scanning
  kKbdDefaults = 0xf6,     // defaults, scanning on
  kKbdResend = 0xfe,       // send the last byte again
  kKbdReset = 0xff,        // ACK, then the self-test result

  kKbdAck = 0xfa,
  kKbdNak = 0xfe,  // "resend": the command was not understood
  kKbdSelfTestOk = 0xaa,
  kKbdId0 = 0xab,  // an MF2 keyboard: AB 83, or AB 41 through a translating controller
  kKbdId1 = 0x83,
  kKbdId1Translated = 0x41,
};

// The output buffer a guest can fill (0xd2 loops) without the VMM growing without bound.
constexpr size_t kMaxOutput = 16;
// The keyboard's own buffer, as on real keyboards: scancodes beyond it are refused.
constexpr size_t kMaxScancodes = 16;
// The longest keyboard reply (ACK, then the two ID bytes); a new command drops the old reply.
constexpr size_t kMaxReplies = 3;
// Bytes of controller RAM (commands 0x20-0x3f read them, 0x60-0x7f write them).
constexpr size_t kControllerRam = 32;

// The layout save() writes; restore() refuses any other.
constexpr uint8_t kStateVersion = 1;

// What 0xF0 0x00 answers for sets 1, 2, 3 through a translating controller (the set number as a
// set 2 code, translated to set 1).
constexpr std::array<uint8_t, 4> kTranslatedSetNumber = {0x00, 0x43, 0x41, 0x3f};

// Ctrl+Alt+Del: press Ctrl, Alt, Delete, release Delete, Alt, Ctrl; in set 1 a release sets bit 7,
// in sets 2 and 3 it is prefixed by F0 (after the E0 prefix, if any).
constexpr std::array<uint8_t, 8> kCadSet1 = {0x1d, 0x38, 0xe0, 0x53, 0xe0, 0xd3, 0xb8, 0x9d};
constexpr std::array<uint8_t, 11> kCadSet2 = {0x14, 0x11, 0xe0, 0x71, 0xe0, 0xf0,
                                              0x71, 0xf0, 0x11, 0xf0, 0x14};
constexpr std::array<uint8_t, 9> kCadSet3 = {0x11, 0x19, 0x64, 0xf0, 0x64, 0xf0, 0x19, 0xf0, 0x11};

}  // namespace

I8042::I8042(std::function<void()> on_reset, IrqLine kbd_irq)
    : on_reset_(std::move(on_reset)), kbd_irq_(std::move(kbd_irq)) {
  ram_[0] = kCtrDefault;
}

void I8042::read(uint64_t offset, std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), 0xff);
  if (data.size() != 1) {
    RINGVM_LOG_RATELIMITED(warn, "i8042: {}-byte read at offset {} ignored", data.size(), offset);
    return;
  }
  std::lock_guard lock(mu_);
  switch (offset) {
    case kDataOffset: {
      const bool taken = output_full();
      data[0] = read_data();
      update_irq(taken);
      break;
    }
    case kPortBOffset: data[0] = read_port_b(); break;
    case kCommandOffset: data[0] = status(); break;
    default: break;
  }
}

void I8042::write(uint64_t offset, std::span<const uint8_t> data) {
  if (data.size() != 1) {
    RINGVM_LOG_RATELIMITED(warn, "i8042: {}-byte write at offset {} ignored", data.size(), offset);
    return;
  }
  bool reset = false;
  {
    std::lock_guard lock(mu_);
    switch (offset) {
      case kDataOffset: write_data(data[0]); break;
      case kPortBOffset: port_b_ = data[0] & 0x0f; break;
      case kCommandOffset: command(data[0]); break;
      default: break;
    }
    // Bit 0 of the output port is the CPU reset line, active low.
    if (!(output_port_ & 0x01)) {
      output_port_ |= 0x01;
      reset = true;
    }
    update_irq(false);
  }
  if (reset && on_reset_) on_reset_();
}

bool I8042::send_ctrl_alt_del() {
  std::lock_guard lock(mu_);
  std::span<const uint8_t> codes = kCadSet2;
  if (ram_[0] & kCtrTranslate) {
    codes = kCadSet1;  // the guest reads set 1; the keyboard's set 2 codes are translated
  } else if (kbd_set_ == 1) {
    codes = kCadSet1;
  } else if (kbd_set_ == 3) {
    codes = kCadSet3;
  }
  if (!kbd_scanning_ || kbd_scancodes_.size() + codes.size() > kMaxScancodes) {
    RINGVM_LOG_RATELIMITED(info, "i8042: Ctrl+Alt+Del not sent: {}",
                           kbd_scanning_ ? "keyboard buffer full" : "keyboard scanning disabled");
    return false;
  }
  kbd_scancodes_.insert(kbd_scancodes_.end(), codes.begin(), codes.end());
  update_irq(false);
  return true;
}

bool I8042::output_full() const {
  if (!output_.empty()) return true;
  if (ram_[0] & kCtrKbdDisable) return false;  // the keyboard's bytes wait for its clock
  return !kbd_replies_.empty() || !kbd_scancodes_.empty();
}

void I8042::update_irq(bool byte_taken) {
  const bool level = (ram_[0] & kCtrKbdInt) && output_full();
  // A read that takes a byte lowers the line even when another byte follows at once: the ISA
  // interrupt is edge-triggered, and each byte needs its own edge.
  if (irq_level_ && (byte_taken || !level)) {
    irq_level_ = false;
    if (kbd_irq_) kbd_irq_(false);
  }
  if (level && !irq_level_) {
    irq_level_ = true;
    if (kbd_irq_) kbd_irq_(true);
  }
}

uint8_t I8042::status() const {
  uint8_t s = kStatusSys | kStatusUnlocked;
  if (last_was_command_) s |= kStatusCommand;
  if (output_full()) s |= kStatusObf;
  return s;
}

void I8042::push_output(uint8_t byte) {
  if (output_.size() >= kMaxOutput) {
    RINGVM_LOG_RATELIMITED(warn, "i8042: output buffer full; byte {:#04x} dropped", byte);
    return;
  }
  output_.push_back(byte);
}

uint8_t I8042::read_data() {
  std::deque<uint8_t>* from = nullptr;
  if (!output_.empty()) {
    from = &output_;
  } else if (!(ram_[0] & kCtrKbdDisable)) {
    if (!kbd_replies_.empty()) {
      from = &kbd_replies_;
    } else if (!kbd_scancodes_.empty()) {
      from = &kbd_scancodes_;
    }
  }
  if (from != nullptr) {
    last_output_ = from->front();
    from->pop_front();
    if (from != &output_) kbd_last_ = last_output_;
  }
  return last_output_;
}

uint8_t I8042::read_port_b() {
  port_b_toggle_ ^= kPortBRefresh | kPortBPitOut;
  return port_b_ | port_b_toggle_;
}

void I8042::write_data(uint8_t value) {
  last_was_command_ = false;
  const uint8_t cmd = std::exchange(pending_, 0);
  if (cmd >= kCmdWriteRam && cmd < kCmdWriteRam + ram_.size()) {
    ram_[cmd - kCmdWriteRam] = value;
  } else if (cmd == kCmdWriteOutput) {
    output_port_ = value;  // write() acts on a cleared reset bit
  } else if (cmd == kCmdWriteKbdOut || cmd == kCmdWriteAuxOut) {
    // The AUX loopback answers as keyboard data, which the Linux driver takes as "no AUX port"
    // at once instead of waiting for an AUX interrupt that would never come.
    push_output(value);
  } else if (cmd == 0) {
    // Sending to the keyboard turns its clock back on, as QEMU's controller and real ones do.
    ram_[0] &= static_cast<uint8_t>(~kCtrKbdDisable);
    keyboard_write(value);
  }
  // A byte after 0xd4 is for the AUX device, and none is attached.
}

void I8042::keyboard_reply(std::initializer_list<uint8_t> bytes) {
  kbd_replies_.insert(kbd_replies_.end(), bytes.begin(), bytes.end());
}

void I8042::keyboard_defaults() {
  kbd_set_ = 2;
  kbd_scancodes_.clear();
}

void I8042::keyboard_write(uint8_t value) {
  // A byte from the host ends whatever reply the keyboard was still sending.
  kbd_replies_.clear();
  const bool translate = ram_[0] & kCtrTranslate;
  switch (std::exchange(kbd_pending_, 0)) {
    case kKbdSetLeds:
    case kKbdTypematic: keyboard_reply({kKbdAck}); return;  // nothing to show or repeat
    case kKbdScancodeSet:
      if (value == 0) {
        keyboard_reply({kKbdAck, translate ? kTranslatedSetNumber[kbd_set_] : kbd_set_});
      } else if (value <= 3) {
        kbd_set_ = value;
        keyboard_reply({kKbdAck});
      } else {
        keyboard_reply({kKbdNak});
      }
      return;
    default: break;
  }
  switch (value) {
    case kKbdSetLeds:
    case kKbdTypematic:
    case kKbdScancodeSet:
      kbd_pending_ = value;
      keyboard_reply({kKbdAck});
      break;
    case kKbdEcho: keyboard_reply({kKbdEcho}); break;
    case kKbdGetId: keyboard_reply({kKbdAck, kKbdId0, translate ? kKbdId1Translated : kKbdId1}); break;
    case kKbdEnable:
      kbd_scanning_ = true;
      keyboard_reply({kKbdAck});
      break;
    case kKbdDisable:
      keyboard_defaults();
      kbd_scanning_ = false;
      keyboard_reply({kKbdAck});
      break;
    case kKbdDefaults:
      keyboard_defaults();
      kbd_scanning_ = true;
      keyboard_reply({kKbdAck});
      break;
    case kKbdResend: keyboard_reply({kbd_last_}); break;
    case kKbdReset:
      keyboard_defaults();
      kbd_scanning_ = true;
      keyboard_reply({kKbdAck, kKbdSelfTestOk});
      break;
    default:
      RINGVM_LOG_RATELIMITED(info, "i8042: unsupported keyboard command {:#04x}", value);
      keyboard_reply({kKbdNak});
      break;
  }
}

void I8042::command(uint8_t cmd) {
  last_was_command_ = true;
  pending_ = 0;
  if (cmd >= kCmdReadRam && cmd < kCmdReadRam + ram_.size()) {
    push_output(ram_[cmd - kCmdReadRam]);
    return;
  }
  if ((cmd >= kCmdWriteRam && cmd < kCmdWriteRam + ram_.size()) || cmd == kCmdWriteOutput ||
      cmd == kCmdWriteKbdOut || cmd == kCmdWriteAuxOut || cmd == kCmdWriteAux) {
    pending_ = cmd;
    return;
  }
  if (cmd >= kCmdPulseBase) {
    if (!(cmd & 0x01)) output_port_ &= static_cast<uint8_t>(~0x01);  // write() performs the reset
    return;
  }
  switch (cmd) {
    case kCmdAuxDisable: ram_[0] |= kCtrAuxDisable; break;
    case kCmdAuxEnable: ram_[0] &= static_cast<uint8_t>(~kCtrAuxDisable); break;
    case kCmdAuxTest: push_output(kAuxTestNoDevice); break;
    case kCmdSelfTest: push_output(kSelfTestOk); break;
    case kCmdKbdTest: push_output(kPortTestOk); break;
    case kCmdKbdDisable: ram_[0] |= kCtrKbdDisable; break;
    case kCmdKbdEnable: ram_[0] &= static_cast<uint8_t>(~kCtrKbdDisable); break;
    case kCmdReadInput: push_output(0x00); break;
    case kCmdReadOutput: push_output(output_port_); break;
    default: RINGVM_LOG_RATELIMITED(info, "i8042: unsupported command {:#04x} ignored", cmd); break;
  }
}

namespace {

// The encoding of StateWriter::bytes(), a byte at a time from the deque.
void write_queue(StateWriter& w, const std::deque<uint8_t>& q) {
  w.u32(static_cast<uint32_t>(q.size()));
  for (uint8_t b : q) w.u8(b);
}

Result<std::deque<uint8_t>> read_queue(StateReader& r, std::string_view field, size_t max) {
  auto s = TRY(r.bytes(field, max));
  return std::deque<uint8_t>(s.begin(), s.end());
}

// Controller commands that wait for a data byte (what command() leaves in pending_).
bool takes_data_byte(uint8_t cmd) {
  return (cmd >= kCmdWriteRam && cmd < kCmdWriteRam + kControllerRam) || cmd == kCmdWriteOutput || cmd == kCmdWriteKbdOut ||
         cmd == kCmdWriteAuxOut || cmd == kCmdWriteAux;
}

}  // namespace

Result<std::vector<uint8_t>> I8042::save() const {
  std::lock_guard lock(mu_);
  StateWriter w;
  w.u8(kStateVersion);
  w.raw(ram_);
  write_queue(w, output_);
  w.u8(last_output_);
  w.u8(pending_);
  w.boolean(last_was_command_);
  w.u8(output_port_);
  w.u8(port_b_);
  w.u8(port_b_toggle_);
  write_queue(w, kbd_replies_);
  write_queue(w, kbd_scancodes_);
  w.u8(kbd_pending_);
  w.u8(kbd_last_);
  w.u8(kbd_set_);
  w.boolean(kbd_scanning_);
  return w.take();
}

Result<void> I8042::restore(std::span<const uint8_t> state) {
  StateReader r(state, std::string(name()));
  const uint8_t version = TRY(r.u8("version"));
  if (version != kStateVersion)
    return r.corrupt(fmt::format("state version {}; this ringvm reads version {}", version, kStateVersion));
  std::array<uint8_t, kControllerRam> ram{};
  static_assert(sizeof(ram) == sizeof(ram_));
  RETURN_IF_ERROR(r.raw("controller_ram", ram));
  std::deque<uint8_t> output = TRY(read_queue(r, "output_buffer", kMaxOutput));
  const uint8_t last_output = TRY(r.u8("last_output"));
  const uint8_t pending = TRY(r.u8("pending_command"));
  const bool last_was_command = TRY(r.boolean("last_was_command"));
  const uint8_t output_port = TRY(r.u8("output_port"));
  const uint8_t port_b = TRY(r.u8("port_b"));
  const uint8_t port_b_toggle = TRY(r.u8("port_b_toggle"));
  std::deque<uint8_t> kbd_replies = TRY(read_queue(r, "kbd_replies", kMaxReplies));
  std::deque<uint8_t> kbd_scancodes = TRY(read_queue(r, "kbd_scancodes", kMaxScancodes));
  const uint8_t kbd_pending = TRY(r.u8("kbd_pending"));
  const uint8_t kbd_last = TRY(r.u8("kbd_last"));
  const uint8_t kbd_set = TRY(r.u8("kbd_set"));
  const bool kbd_scanning = TRY(r.boolean("kbd_scanning"));
  RETURN_IF_ERROR(r.finish());
  if (pending != 0 && !takes_data_byte(pending))
    return r.corrupt(fmt::format("pending command {:#04x} takes no data byte", pending));
  if (!(output_port & 0x01)) return r.corrupt("the output port holds the CPU reset line asserted");
  if (port_b & ~0x0f) return r.corrupt(fmt::format("port B {:#04x} stores bits 0-3 only", port_b));
  if (port_b_toggle & ~(kPortBRefresh | kPortBPitOut))
    return r.corrupt(fmt::format("port B toggle {:#04x} has bits other than 4 and 5", port_b_toggle));
  if (kbd_pending != 0 && kbd_pending != kKbdSetLeds && kbd_pending != kKbdTypematic &&
      kbd_pending != kKbdScancodeSet)
    return r.corrupt(fmt::format("keyboard command {:#04x} takes no argument byte", kbd_pending));
  RETURN_IF_ERROR(r.check_range("kbd_set", kbd_set, 1, 3));

  std::lock_guard lock(mu_);
  ram_ = ram;
  output_ = std::move(output);
  last_output_ = last_output;
  pending_ = pending;
  last_was_command_ = last_was_command;
  output_port_ = output_port;
  port_b_ = port_b;
  port_b_toggle_ = port_b_toggle;
  kbd_replies_ = std::move(kbd_replies);
  kbd_scancodes_ = std::move(kbd_scancodes);
  kbd_pending_ = kbd_pending;
  kbd_last_ = kbd_last;
  kbd_set_ = kbd_set;
  kbd_scanning_ = kbd_scanning;
  // The line is driven whatever it was before: the irqchip it feeds may be a new one.
  irq_level_ = (ram_[0] & kCtrKbdInt) && output_full();
  if (kbd_irq_) kbd_irq_(irq_level_);
  return Ok();
}

}  // namespace ringvm
