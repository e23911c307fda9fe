#include "devices/legacy/i8042.h"

#include <gtest/gtest.h>

#include <atomic>
#include <optional>
#include <thread>
#include <vector>

namespace ringvm {
namespace {

// Ports as offsets from 0x60, the base the builder inserts the device at.
constexpr uint64_t kData = 0x60 - 0x60, kPortB = 0x61 - 0x60, kStatus = 0x64 - 0x60;

class I8042Test : public ::testing::Test {
 protected:
  I8042Test()
      : dev_([this] { ++resets_; },
             [this](bool level) {
               EXPECT_NE(level, irq_);  // only changes are reported
               irq_ = level;
               if (level) ++irq_edges_;
             }) {}

  uint8_t in(uint64_t off) {
    uint8_t v = 0;
    dev_.read(off, std::span<uint8_t>(&v, 1));
    return v;
  }
  void out(uint64_t off, uint8_t v) { dev_.write(off, std::span<const uint8_t>(&v, 1)); }

  // Linux's __i8042_command(): wait for IBF clear, write the command and its parameter, then
  // poll for each result byte. A controller that never answers costs a 500 ms timeout per byte.
  std::optional<uint8_t> command(uint8_t cmd, std::optional<uint8_t> param, bool expect_result,
                                 bool* aux = nullptr) {
    EXPECT_EQ(in(kStatus)&0x02, 0);
    out(kStatus, cmd);
    if (param) out(kData, *param);
    if (!expect_result) return std::nullopt;
    const uint8_t st = in(kStatus);
    if (!(st & 0x01)) return std::nullopt;
    if (aux != nullptr) *aux = st & 0x20;
    return in(kData);
  }

  // A byte for the keyboard, as Linux's i8042_kbd_write() sends it.
  void kbd_write(uint8_t v) {
    EXPECT_EQ(in(kStatus)&0x02, 0);
    out(kData, v);
  }

  // What Linux's i8042_interrupt() receives: one byte per interrupt while the line is up. Checks
  // that every byte came with its own rising edge.
  std::vector<uint8_t> receive() {
    std::vector<uint8_t> got;
    const int edges = irq_edges_ - (irq_ ? 1 : 0);  // the edge that announced the first byte counts
    while (irq_ && got.size() < 64) {
      EXPECT_EQ(in(kStatus)&0x21, 0x01);  // a keyboard byte waits
      got.push_back(in(kData));
    }
    EXPECT_EQ(irq_edges_ - edges, static_cast<int>(got.size()));
    EXPECT_EQ(in(kStatus)&0x01, 0);
    return got;
  }

  // libps2's ps2_command(): each byte written is ACKed before the next; returns what came back.
  std::vector<uint8_t> kbd_command(std::initializer_list<uint8_t> bytes) {
    std::vector<uint8_t> got;
    for (uint8_t b : bytes) {
      kbd_write(b);
      for (uint8_t r : receive()) got.push_back(r);
    }
    return got;
  }

  // Polls like Linux's i8042_flush(), for when the interrupt bit is off.
  std::vector<uint8_t> poll() {
    std::vector<uint8_t> got;
    while ((in(kStatus)&0x01) && got.size() < 64) got.push_back(in(kData));
    return got;
  }

  int resets_ = 0;
  bool irq_ = false;
  int irq_edges_ = 0;
  I8042 dev_;
};

using Bytes = std::vector<uint8_t>;
const Bytes kCadSet1 = {0x1d, 0x38, 0xe0, 0x53, 0xe0, 0xd3, 0xb8, 0x9d};
const Bytes kCadSet2 = {0x14, 0x11, 0xe0, 0x71, 0xe0, 0xf0, 0x71, 0xf0, 0x11, 0xf0, 0x14};

TEST_F(I8042Test, LinuxProbeFindsControllerWithoutAux) {
  // i8042_flush(): the output buffer drains.
  int n = 0;
  while ((in(kStatus)&0x01) && n < 16) {
    in(kData);
    ++n;
  }
  EXPECT_LT(n, 16);
  EXPECT_NE(in(kStatus), 0xff);
  EXPECT_EQ(command(0xaa, std::nullopt, true), 0x55);
  const auto ctr = command(0x20, std::nullopt, true);
  ASSERT_TRUE(ctr.has_value());
  EXPECT_EQ(command(0x20, std::nullopt, true), ctr);  // "stable CTR read"
  command(0x60, 0x47, false);
  EXPECT_EQ(command(0x20, std::nullopt, true), 0x47);
  // i8042_check_aux(): the loopback answer lacks the AUX status bit, and the AUX interface test
  // reports a stuck clock line, so the driver gives up on AUX without any timeout.
  bool aux = true;
  EXPECT_EQ(command(0xd3, 0x5a, true, &aux), 0x5a);
  EXPECT_FALSE(aux);
  const auto aux_test = command(0xa9, std::nullopt, true);
  ASSERT_TRUE(aux_test.has_value());
  EXPECT_TRUE(*aux_test != 0 && *aux_test != 0xfa && *aux_test != 0xff);
  EXPECT_EQ(command(0xab, std::nullopt, true), 0x00);
  EXPECT_EQ(in(kStatus)&0x01, 0);
  EXPECT_EQ(resets_, 0);
}

TEST_F(I8042Test, PortEnableBitsFollowCommands) {
  command(0xa7, std::nullopt, false);
  EXPECT_EQ(*command(0x20, std::nullopt, true) & 0x20, 0x20);
  command(0xa8, std::nullopt, false);
  EXPECT_EQ(*command(0x20, std::nullopt, true) & 0x20, 0);
  command(0xad, std::nullopt, false);
  EXPECT_EQ(*command(0x20, std::nullopt, true) & 0x10, 0x10);
  command(0xae, std::nullopt, false);
  EXPECT_EQ(*command(0x20, std::nullopt, true) & 0x10, 0);
}

TEST_F(I8042Test, StatusReportsSystemFlagAndCommandBit) {
  out(kStatus, 0xad);
  EXPECT_EQ(in(kStatus)&0x0c, 0x0c);
  out(kData, 0xf4);  // to the keyboard: its clock comes back on, and it ACKs
  EXPECT_EQ(in(kStatus)&0x09, 0x01);
  EXPECT_EQ(in(kData), 0xfa);
  EXPECT_EQ(*command(0x20, std::nullopt, true) & 0x10, 0);
}

TEST_F(I8042Test, LinuxProbeFindsTranslatedKeyboard) {
  // i8042_controller_init(): flush, self-test, a stable CTR read, keyboard off and its interrupt
  // off while the ports are probed.
  poll();
  EXPECT_EQ(command(0xaa, std::nullopt, true), 0x55);
  const auto ctr = command(0x20, std::nullopt, true);
  ASSERT_TRUE(ctr.has_value());
  EXPECT_EQ(command(0x20, std::nullopt, true), ctr);
  EXPECT_EQ(*ctr & 0x40, 0x40);  // translating: Linux keeps it so
  command(0x60, static_cast<uint8_t>((*ctr | 0x10) & ~0x01), false);
  EXPECT_TRUE(poll().empty());
  EXPECT_EQ(command(0xab, std::nullopt, true), 0x00);  // keyboard interface test
  EXPECT_FALSE(irq_);
  // i8042_enable_kbd_port(): clock on, interrupt on.
  command(0x60, static_cast<uint8_t>((*ctr & ~0x10) | 0x01), false);
  EXPECT_FALSE(irq_);
  // atkbd_probe(): reset, get ID (a translated MF2 keyboard), deactivate; atkbd_select_set()
  // keeps set 2 behind translation without asking; atkbd_reset_state(): LEDs off, fastest repeat;
  // atkbd_activate(): enable.
  EXPECT_EQ(kbd_command({0xff}), (Bytes{0xfa, 0xaa}));
  EXPECT_EQ(kbd_command({0xf2}), (Bytes{0xfa, 0xab, 0x41}));
  EXPECT_EQ(kbd_command({0xf5}), (Bytes{0xfa}));
  EXPECT_EQ(kbd_command({0xed, 0x00}), (Bytes{0xfa, 0xfa}));
  EXPECT_EQ(kbd_command({0xf3, 0x00}), (Bytes{0xfa, 0xfa}));
  EXPECT_EQ(kbd_command({0xf4}), (Bytes{0xfa}));
  EXPECT_FALSE(irq_);
  EXPECT_EQ(resets_, 0);
  // The keyboard now types.
  EXPECT_TRUE(dev_.send_ctrl_alt_del());
  EXPECT_EQ(receive(), kCadSet1);
}

TEST_F(I8042Test, LinuxProbeFindsRawKeyboardAndItsScancodeSet) {
  // i8042.direct=1: the translate bit cleared.
  poll();
  EXPECT_EQ(command(0xaa, std::nullopt, true), 0x55);
  command(0x60, 0x14, false);
  EXPECT_EQ(command(0xab, std::nullopt, true), 0x00);
  command(0x60, 0x05, false);
  EXPECT_EQ(kbd_command({0xf2}), (Bytes{0xfa, 0xab, 0x83}));
  EXPECT_EQ(kbd_command({0xf5}), (Bytes{0xfa}));
  // atkbd.set=3's atkbd_select_set(): OK_GETID is unknown, set 3 is set and read back; then
  // back to set 2 and its default.
  EXPECT_EQ(kbd_command({0xe8}), (Bytes{0xfe}));
  EXPECT_EQ(kbd_command({0xf0, 0x03}), (Bytes{0xfa, 0xfa}));
  EXPECT_EQ(kbd_command({0xf0, 0x00}), (Bytes{0xfa, 0xfa, 0x03}));
  EXPECT_EQ(kbd_command({0xf0, 0x02}), (Bytes{0xfa, 0xfa}));
  EXPECT_EQ(kbd_command({0xf0, 0x00}), (Bytes{0xfa, 0xfa, 0x02}));
  EXPECT_EQ(kbd_command({0xf4}), (Bytes{0xfa}));
  EXPECT_TRUE(dev_.send_ctrl_alt_del());
  EXPECT_EQ(receive(), kCadSet2);
}

TEST_F(I8042Test, KeyboardCommandsAnswerLikeAnMf2Keyboard) {
  command(0x60, 0x05, false);
  EXPECT_EQ(kbd_command({0xee}), (Bytes{0xee}));              // echo, no ACK
  EXPECT_EQ(kbd_command({0xfe}), (Bytes{0xee}));              // resend the last byte
  EXPECT_EQ(kbd_command({0xf6}), (Bytes{0xfa}));              // defaults
  EXPECT_EQ(kbd_command({0x12}), (Bytes{0xfe}));              // unknown
  EXPECT_EQ(kbd_command({0xf0, 0x07}), (Bytes{0xfa, 0xfe}));  // no such set
  EXPECT_EQ(kbd_command({0xf0, 0x01}), (Bytes{0xfa, 0xfa}));
  EXPECT_TRUE(dev_.send_ctrl_alt_del());  // the raw keyboard in set 1 sends set 1
  EXPECT_EQ(receive(), kCadSet1);
  EXPECT_EQ(kbd_command({0xff}), (Bytes{0xfa, 0xaa}));  // reset: set 2 again
  EXPECT_EQ(kbd_command({0xf0, 0x00}), (Bytes{0xfa, 0xfa, 0x02}));
  // Through a translating controller the ID and the set number come translated.
  command(0x60, 0x45, false);
  EXPECT_EQ(kbd_command({0xf2}), (Bytes{0xfa, 0xab, 0x41}));
  EXPECT_EQ(kbd_command({0xf0, 0x00}), (Bytes{0xfa, 0xfa, 0x41}));
}

TEST_F(I8042Test, CtrlAltDelTranslatedIsSet1OneBytePerReadAndInterrupt) {
  command(0x60, 0x45, false);  // interrupt, system flag, translation: the power-on value
  EXPECT_FALSE(irq_);
  ASSERT_TRUE(dev_.send_ctrl_alt_del());
  for (uint8_t expected : kCadSet1) {
    EXPECT_TRUE(irq_);
    const int edges = irq_edges_;
    EXPECT_EQ(in(kStatus)&0x01, 0x01);
    EXPECT_EQ(in(kStatus)&0x01, 0x01);  // status reads take nothing
    EXPECT_EQ(in(kData), expected);
    // The line went down with the read, and up again only if another byte waits.
    EXPECT_EQ(irq_edges_, edges + (expected == kCadSet1.back() ? 0 : 1));
  }
  EXPECT_FALSE(irq_);
  EXPECT_EQ(in(kStatus)&0x01, 0);
  EXPECT_EQ(in(kData), 0x9d);  // an empty buffer repeats the last byte, with no interrupt
  EXPECT_FALSE(irq_);
  EXPECT_EQ(irq_edges_, static_cast<int>(kCadSet1.size()));
}

TEST_F(I8042Test, CtrlAltDelUntranslatedIsSet2) {
  command(0x60, 0x05, false);
  ASSERT_TRUE(dev_.send_ctrl_alt_del());
  EXPECT_EQ(receive(), kCadSet2);
  EXPECT_EQ(irq_edges_, static_cast<int>(kCadSet2.size()));
}

TEST_F(I8042Test, CtrlAltDelWithoutInterruptBitIsPolledSilently) {
  command(0x60, 0x44, false);  // translation, no keyboard interrupt
  ASSERT_TRUE(dev_.send_ctrl_alt_del());
  EXPECT_EQ(poll(), kCadSet1);
  command(0x60, 0x04, false);
  ASSERT_TRUE(dev_.send_ctrl_alt_del());
  EXPECT_EQ(poll(), kCadSet2);
  EXPECT_FALSE(irq_);
  EXPECT_EQ(irq_edges_, 0);
  // Setting the interrupt bit while bytes wait raises the line at once.
  ASSERT_TRUE(dev_.send_ctrl_alt_del());
  command(0x60, 0x05, false);
  EXPECT_TRUE(irq_);
  EXPECT_EQ(receive(), kCadSet2);
}

TEST_F(I8042Test, DisabledKeyboardPortHoldsScancodes) {
  command(0x60, 0x45, false);
  command(0xad, std::nullopt, false);
  ASSERT_TRUE(dev_.send_ctrl_alt_del());
  EXPECT_FALSE(irq_);
  EXPECT_EQ(in(kStatus)&0x01, 0);
  // Controller replies still come while the keyboard's clock is off.
  EXPECT_EQ(command(0x20, std::nullopt, true), 0x55);
  command(0xae, std::nullopt, false);
  EXPECT_TRUE(irq_);
  EXPECT_EQ(receive(), kCadSet1);
  // The same through the command byte's bit 4.
  command(0x60, 0x55, false);
  ASSERT_TRUE(dev_.send_ctrl_alt_del());
  EXPECT_FALSE(irq_);
  command(0x60, 0x45, false);
  EXPECT_EQ(receive(), kCadSet1);
}

TEST_F(I8042Test, KeyboardNotScanningRefusesCtrlAltDel) {
  command(0x60, 0x45, false);
  EXPECT_EQ(kbd_command({0xf5}), (Bytes{0xfa}));
  EXPECT_FALSE(dev_.send_ctrl_alt_del());
  EXPECT_FALSE(irq_);
  EXPECT_EQ(kbd_command({0xf4}), (Bytes{0xfa}));
  EXPECT_TRUE(dev_.send_ctrl_alt_del());
  // A second sequence fits the keyboard's 16-byte buffer in set 1; a third does not, whole.
  EXPECT_TRUE(dev_.send_ctrl_alt_del());
  EXPECT_FALSE(dev_.send_ctrl_alt_del());
  Bytes twice = kCadSet1;
  twice.insert(twice.end(), kCadSet1.begin(), kCadSet1.end());
  EXPECT_EQ(receive(), twice);
}

TEST_F(I8042Test, ControllerRepliesAndAcksGoBeforeScancodes) {
  command(0x60, 0x45, false);
  ASSERT_TRUE(dev_.send_ctrl_alt_del());
  EXPECT_EQ(in(kData), 0x1d);
  EXPECT_EQ(command(0x20, std::nullopt, true), 0x45);  // not the next scancode
  kbd_write(0xf2);
  EXPECT_EQ(in(kData), 0xfa);
  EXPECT_EQ(in(kData), 0xab);
  EXPECT_EQ(in(kData), 0x41);
  const Bytes rest(kCadSet1.begin() + 1, kCadSet1.end());
  EXPECT_EQ(receive(), rest);
}

TEST_F(I8042Test, CtrlAltDelFromAnotherThreadArrivesWhole) {
  command(0x60, 0x45, false);
  constexpr int kSequences = 50;
  std::atomic<bool> done = false;
  std::thread api([&] {
    for (int i = 0; i < kSequences; ++i) {
      while (!dev_.send_ctrl_alt_del()) std::this_thread::yield();
    }
    done = true;
  });
  Bytes got;
  while (!done || (in(kStatus)&0x01)) {
    if (in(kStatus)&0x01) got.push_back(in(kData));
  }
  api.join();
  ASSERT_EQ(got.size(), kSequences * kCadSet1.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], kCadSet1[i % kCadSet1.size()]) << i;
  EXPECT_FALSE(irq_);
}

TEST_F(I8042Test, CtrlAltDelThenGuestRebootPulsesReset) {
  // What the guest does next: its Ctrl+Alt+Del handler reboots, through 0xfe among others.
  ASSERT_TRUE(dev_.send_ctrl_alt_del());
  EXPECT_EQ(receive(), kCadSet1);
  out(kStatus, 0xfe);
  EXPECT_EQ(resets_, 1);
}

TEST_F(I8042Test, PulseResetCallsResetOncePerPulse) {
  // Linux's reboot=kbd: kb_wait() then 0xfe, repeated.
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(in(kStatus)&0x02, 0);
    out(kStatus, 0xfe);
  }
  EXPECT_EQ(resets_, 3);
  out(kStatus, 0xff);  // pulses no line
  EXPECT_EQ(resets_, 3);
}

TEST_F(I8042Test, OutputPortResetBit) {
  EXPECT_EQ(command(0xd0, std::nullopt, true), 0x03);
  command(0xd1, 0x03, false);
  EXPECT_EQ(resets_, 0);
  command(0xd1, 0x02, false);
  EXPECT_EQ(resets_, 1);
  EXPECT_EQ(*command(0xd0, std::nullopt, true) & 0x01, 0x01);  // the line came back up
}

TEST_F(I8042Test, OutputBufferIsBounded) {
  for (int i = 0; i < 1000; ++i) command(0xd2, static_cast<uint8_t>(i), false);
  int n = 0;
  while (in(kStatus)&0x01) {
    EXPECT_EQ(in(kData), n);
    ++n;
  }
  EXPECT_EQ(n, 16);
}

TEST_F(I8042Test, PortBTogglesRefreshAndKeepsGateBits) {
  out(kPortB, 0x03);
  const uint8_t a = in(kPortB);
  const uint8_t b = in(kPortB);
  EXPECT_EQ(a & 0x0f, 0x03);
  EXPECT_EQ(b & 0x0f, 0x03);
  EXPECT_NE(a & 0x10, b & 0x10);
  // A guest loop waiting for the PIT output to rise ends at once.
  int spins = 0;
  while (!(in(kPortB)&0x20) && spins < 3) ++spins;
  EXPECT_LT(spins, 3);
}

TEST_F(I8042Test, WideAndUnknownAccessesAreHarmless) {
  uint8_t wide[2] = {};
  dev_.read(kData, wide);
  EXPECT_EQ(wide[0], 0xff);
  EXPECT_EQ(in(2), 0xff);
  out(3, 0xfe);
  out(kStatus, 0xc8);  // an unsupported command
  EXPECT_EQ(resets_, 0);
}

// What a guest sees from here on: the status and every byte it can read, then port B twice.
std::vector<uint8_t> drain(I8042& dev) {
  auto in = [&dev](uint64_t off) {
    uint8_t v = 0;
    dev.read(off, std::span<uint8_t>(&v, 1));
    return v;
  };
  std::vector<uint8_t> seen;
  for (int i = 0; i < 64 && (in(kStatus) & 0x01); ++i) {
    seen.push_back(in(kStatus));
    seen.push_back(in(kData));
  }
  seen.push_back(in(kStatus));
  seen.push_back(in(kPortB));
  seen.push_back(in(kPortB));
  return seen;
}

// A controller mid-conversation: a reply waiting, a command waiting for its data byte, a
// keyboard in set 3 halfway through "set LEDs" with Ctrl+Alt+Del queued behind the ACK.
TEST_F(I8042Test, SaveRestoreRoundTrip) {
  EXPECT_EQ(kbd_command({0xf0, 0x03}), (std::vector<uint8_t>{0xfa, 0xfa}));  // scancode set 3
  out(kStatus, 0x60);
  out(kData, 0x05);  // CTR: keyboard interrupt, system flag, no translation
  out(kPortB, 0x03);
  in(kPortB);
  ASSERT_TRUE(dev_.send_ctrl_alt_del());
  out(kData, 0xed);  // set LEDs: ACK now, the LED byte still to come
  out(kStatus, 0x20);  // read the CTR: the controller's reply goes first
  out(kStatus, 0xd1);  // write output port: waits for its byte
  ASSERT_TRUE(irq_);

  const std::vector<uint8_t> state = dev_.save().value();
  std::vector<bool> levels;
  int resets = 0;
  I8042 copy([&] { ++resets; }, [&](bool level) { levels.push_back(level); });
  auto r = copy.restore(state);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(levels, std::vector<bool>{true});
  EXPECT_EQ(copy.save().value(), state);

  // The pending 0xd1 takes the next data byte on both; then both read out the same bytes.
  for (I8042* d : {&dev_, &copy}) {
    const uint8_t b = 0x03;
    d->write(kData, std::span<const uint8_t>(&b, 1));
  }
  const std::vector<uint8_t> want = drain(dev_);
  EXPECT_EQ(drain(copy), want);
  // CTR reply, the ACK for 0xED, then set 3's Ctrl+Alt+Del (9 bytes), each with its status.
  ASSERT_EQ(want.size(), 2 * (1 + 1 + 9) + 3u);
  EXPECT_EQ(want[1], 0x05);
  EXPECT_EQ(want[3], 0xfa);
  EXPECT_EQ(want[5], 0x11);
  // The keyboard still waits for the LED byte, on both.
  for (I8042* d : {&dev_, &copy}) {
    const uint8_t leds = 0x02;
    d->write(kData, std::span<const uint8_t>(&leds, 1));
  }
  EXPECT_EQ(drain(copy), drain(dev_));
  EXPECT_EQ(resets, 0);
}

TEST_F(I8042Test, RestoreRefusesTruncatedAndOutOfRangeState) {
  ASSERT_TRUE(dev_.send_ctrl_alt_del());
  out(kStatus, 0xd1);
  const std::vector<uint8_t> good = dev_.save().value();
  // Layout: version, 32 bytes RAM, output (u32 length + bytes), last_output, pending, last_cmd,
  // output_port, port_b, port_b_toggle, replies (u32 + bytes), scancodes (u32 + the 8 bytes of
  // set 1, as the translating controller delivers them), kbd_pending, kbd_last, kbd_set, scanning.
  constexpr size_t kOutLen = 33, kPending = 38, kOutputPort = 40, kPortBAt = 41, kToggle = 42, kReplies = 43,
                   kScanLen = 47, kKbdPending = 59, kKbdSet = 61, kScanning = 62;
  ASSERT_EQ(good.size(), 63u);
  ASSERT_EQ(good[kPending], 0xd1);
  ASSERT_EQ(good[kScanLen], 8);
  int calls = 0;
  I8042 target(nullptr, [&](bool) { ++calls; });
  const std::vector<uint8_t> before = target.save().value();
  for (size_t len = 0; len < good.size(); ++len) {
    auto r = target.restore(std::span(good).first(len));
    ASSERT_FALSE(r.ok()) << len;
    EXPECT_EQ(r.error().code, ErrorCode::kCorrupt) << len;
  }
  auto with = [&](size_t at, uint8_t v) {
    std::vector<uint8_t> b = good;
    b[at] = v;
    return b;
  };
  const std::vector<std::pair<std::vector<uint8_t>, const char*>> bad = {
      {with(0, 0), "version"},
      {with(kOutLen, 17), "output buffer longer than 16 (and than the state)"},
      {with(kPending, 0xaa), "pending self-test takes no data"},
      {with(kOutputPort, 0x02), "reset line asserted"},
      {with(kPortBAt, 0x10), "port B bit 4 stored"},
      {with(kToggle, 0x01), "toggle bit 0"},
      {with(kReplies, 4), "four reply bytes"},
      {with(kScanLen, 17), "scancode queue above 16"},
      {with(kKbdPending, 0xf4), "enable takes no argument"},
      {with(kKbdSet, 0), "scancode set 0"},
      {with(kKbdSet, 4), "scancode set 4"},
      {with(kScanning, 2), "scanning not a boolean"},
  };
  for (const auto& [b, why] : bad) {
    auto r = target.restore(b);
    ASSERT_FALSE(r.ok()) << why;
    EXPECT_EQ(r.error().code, ErrorCode::kCorrupt) << why;
    EXPECT_NE(r.error().message().find("i8042"), std::string::npos) << r.error().message();
  }
  std::vector<uint8_t> longer = good;
  longer.push_back(0);
  EXPECT_FALSE(target.restore(longer).ok());
  EXPECT_EQ(target.save().value(), before);
  EXPECT_EQ(calls, 0);
}

}  // namespace
}  // namespace ringvm
