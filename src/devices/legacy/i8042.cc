#include "devices/legacy/i8042.h"

#include <algorithm>
#include <utility>

#include "base/log.h"

namespace ringvm {
namespace {

enum : uint8_t {
  kStatusObf = 0x01,       // output buffer full: a byte waits at port 0x60
  kStatusSys = 0x04,       // system flag: self-test passed
  kStatusCommand = 0x08,   // last write went to port 0x64
  kStatusUnlocked = 0x10,  // keyboard not inhibited by the key lock
  kStatusAux = 0x20,       // the waiting byte came from the AUX port

  kCtrKbdDisable = 0x10,  // command byte: keyboard clock off
  kCtrAuxDisable = 0x20,  // command byte: AUX clock off
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
};

// The output buffer a guest can fill (0xd2 loops) without the VMM growing without bound.
constexpr size_t kMaxOutput = 16;

}  // namespace

I8042::I8042(std::function<void()> on_reset) : on_reset_(std::move(on_reset)) { ram_[0] = kCtrDefault; }

void I8042::read(uint64_t offset, std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), 0xff);
  if (data.size() != 1) {
    RINGVM_LOG_RATELIMITED(warn, "i8042: {}-byte read at offset {} ignored", data.size(), offset);
    return;
  }
  std::lock_guard lock(mu_);
  switch (offset) {
    case kDataOffset: data[0] = read_data(); break;
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
  }
  if (reset && on_reset_) on_reset_();
}

uint8_t I8042::status() const {
  uint8_t s = kStatusSys | kStatusUnlocked;
  if (last_was_command_) s |= kStatusCommand;
  if (!output_.empty()) s |= kStatusObf;
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
  if (!output_.empty()) {
    last_output_ = output_.front();
    output_.pop_front();
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
  }
  // Anything else is for the keyboard or AUX device, and none is attached.
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

}  // namespace ringvm
