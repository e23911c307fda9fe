#include "devices/legacy/serial.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace ringvm {
namespace {

// Register offsets and bits, spelled as the Linux 8250 driver names them.
constexpr uint64_t kRx = 0, kTx = 0, kIer = 1, kIir = 2, kFcr = 2, kLcr = 3, kMcr = 4, kLsr = 5, kMsr = 6,
                   kScr = 7, kDll = 0, kDlm = 1;

class SerialTest : public ::testing::Test {
 protected:
  SerialTest()
      : port_(
            "com1", [this](bool level) { irq_events_.push_back(level); },
            [this](std::span<const uint8_t> b) { output_.append(b.begin(), b.end()); }) {}

  uint8_t in(uint64_t off) {
    uint8_t v = 0;
    port_.read(off, std::span<uint8_t>(&v, 1));
    return v;
  }
  void out(uint64_t off, uint8_t v) { port_.write(off, std::span<const uint8_t>(&v, 1)); }
  bool irq() const { return !irq_events_.empty() && irq_events_.back(); }

  // The 8250 driver's autoconfig() and autoconfig_16550a() probes, in order, reduced to the
  // decisions they make. Returns the port type the driver would report.
  std::string linux_autoconfig() {
    // IER test: the low four bits must clear and set; anything else is "no UART".
    const uint8_t save_ier = in(kIer);
    out(kIer, 0);
    const uint8_t s2 = in(kIer)&0x0f;
    out(kIer, 0x0f);
    const uint8_t s3 = in(kIer)&0x0f;
    out(kIer, save_ier);
    if (s2 != 0 || s3 != 0x0f) return "none (IER test)";
    // Loopback test: RTS|OUT2 must come back as CTS|DCD.
    const uint8_t save_mcr = in(kMcr);
    out(kMcr, 0x10 | 0x0a);
    const uint8_t status = in(kMsr)&0xf0;
    out(kMcr, save_mcr);
    if (status != 0x90) return "none (loopback test)";
    // EFR probes: with LCR=0xbf the EFR must not read as zero, or this would be a 16650.
    out(kLcr, 0xbf);
    if (in(kIir) == 0) return "16650";
    out(kLcr, 0);
    out(kFcr, 0x01);
    const uint8_t fifo = static_cast<uint8_t>(in(kIir) >> 6);
    if (fifo != 3) return fifo == 0 ? "16450" : "16550";
    // autoconfig_16550a: EFR at DLAB (ST16C650V1), NS SuperIO, 16750 64-byte FIFO, XScale UUE.
    out(kLcr, 0x80);
    if (in(kIir) == 0) return "16650V1";
    out(kLcr, 0);
    const uint8_t mcr = in(kMcr);
    out(kLcr, 0xe0);
    uint8_t excr = in(2);
    if (!((excr ^ mcr) & 0x10)) {
      out(kLcr, 0);
      out(kMcr, mcr ^ 0x10);
      out(kLcr, 0xe0);
      excr = in(2);
      out(kLcr, 0);
      out(kMcr, mcr);
      if ((excr ^ mcr) & 0x10) return "NS16550A";
    }
    out(kLcr, 0);
    out(kFcr, 0x01 | 0x20);
    const uint8_t st1 = static_cast<uint8_t>(in(kIir) >> 5);
    out(kFcr, 0x01);
    out(kLcr, 0x80);
    out(kFcr, 0x01 | 0x20);
    const uint8_t st2 = static_cast<uint8_t>(in(kIir) >> 5);
    out(kFcr, 0x01);
    out(kLcr, 0);
    if (st1 == 6 && st2 == 7) return "16750";
    const uint8_t ier = in(kIer);
    out(kIer, ier & ~0x40);
    if (!(in(kIer)&0x40)) {
      out(kIer, ier | 0x40);
      if (in(kIer)&0x40) return "XScale";
    }
    out(kIer, ier);
    // Scratch register: the driver keeps using it for console detection.
    out(kScr, 0xa5);
    if (in(kScr) != 0xa5) return "16550A without scratch";
    return "16550A";
  }

  std::vector<bool> irq_events_;
  std::string output_;
  SerialPort port_;
};

TEST_F(SerialTest, LinuxAutoconfigFinds16550A) {
  EXPECT_EQ(linux_autoconfig(), "16550A");
  // The probe must leave nothing behind that the guest would see as output or an interrupt.
  EXPECT_TRUE(output_.empty());
  EXPECT_FALSE(irq());
}

TEST_F(SerialTest, DivisorLatchIsSeparateFromDataRegisters) {
  out(kLcr, 0x83);
  out(kDll, 0x01);
  out(kDlm, 0x00);
  EXPECT_EQ(in(kDll), 0x01);
  EXPECT_EQ(in(kDlm), 0x00);
  out(kLcr, 0x03);
  out(kTx, 'A');
  EXPECT_EQ(output_, "A");
  EXPECT_EQ(in(kLcr), 0x03);
  out(kLcr, 0x83);
  EXPECT_EQ(in(kDll), 0x01);  // the THR write did not touch the latch
}

TEST_F(SerialTest, TransmitGoesToSinkAndLineStatusStaysEmpty) {
  for (char c : std::string("hello\n")) out(kTx, static_cast<uint8_t>(c));
  EXPECT_EQ(output_, "hello\n");
  EXPECT_EQ(in(kLsr)&0x60, 0x60);  // THRE and TEMT: the guest never waits
  EXPECT_EQ(in(kLsr)&0x01, 0);     // nothing received
}

TEST_F(SerialTest, ModemLinesAssertedOutsideLoopback) {
  EXPECT_EQ(in(kMsr)&0xf0, 0xb0);  // DCD, DSR, CTS; no ring
}

TEST_F(SerialTest, RxFifoKeepsOrderAndAppliesBackPressure) {
  out(kFcr, 0x07);
  std::vector<uint8_t> input(20);
  for (size_t i = 0; i < input.size(); ++i) input[i] = static_cast<uint8_t>('a' + i);
  EXPECT_EQ(port_.enqueue_input(input), SerialPort::kFifoSize);
  EXPECT_EQ(port_.enqueue_input(std::span(input).subspan(16)), 0u);
  std::string got;
  while (in(kLsr)&0x01) got.push_back(static_cast<char>(in(kRx)));
  EXPECT_EQ(got, "abcdefghijklmnop");
  EXPECT_EQ(port_.enqueue_input(std::span(input).subspan(16)), 4u);
  got.clear();
  while (in(kLsr)&0x01) got.push_back(static_cast<char>(in(kRx)));
  EXPECT_EQ(got, "qrst");
  EXPECT_EQ(in(kLsr)&0x02, 0);  // back-pressure means no overrun
}

TEST_F(SerialTest, WithoutFifoHoldsOneCharacter) {
  const uint8_t two[] = {'x', 'y'};
  EXPECT_EQ(port_.enqueue_input(two), 1u);
  EXPECT_EQ(in(kRx), 'x');
  EXPECT_EQ(in(kIir)&0xc0, 0);  // FIFOs off: a 16450-style IIR
}

TEST_F(SerialTest, LoopbackOverrunSetsAndClearsOe) {
  out(kFcr, 0x01);
  out(kMcr, 0x10);
  for (int i = 0; i < 17; ++i) out(kTx, static_cast<uint8_t>(i));
  EXPECT_TRUE(output_.empty());  // loopback keeps transmitted bytes inside the UART
  const uint8_t in_byte = 'z';
  EXPECT_EQ(port_.enqueue_input(std::span(&in_byte, 1)), 0u);  // input pin disconnected
  EXPECT_EQ(in(kLsr)&0x03, 0x03);                              // DR and OE
  EXPECT_EQ(in(kLsr)&0x02, 0);                                 // OE clears on read
  for (int i = 0; i < 16; ++i) EXPECT_EQ(in(kRx), i);          // the 17th byte was the one lost
  EXPECT_EQ(in(kLsr)&0x01, 0);
}

TEST_F(SerialTest, OverrunRaisesLineStatusInterruptFirst) {
  out(kFcr, 0x01);
  out(kMcr, 0x10);
  out(kIer, 0x05);  // RX data + line status
  for (int i = 0; i < 17; ++i) out(kTx, static_cast<uint8_t>(i));
  EXPECT_TRUE(irq());
  EXPECT_EQ(in(kIir), 0xc6);  // line status outranks data
  in(kLsr);
  EXPECT_EQ(in(kIir), 0xc4);  // 16 bytes >= trigger level 1
}

TEST_F(SerialTest, RxInterruptRaisesAndLowers) {
  out(kFcr, 0x01);
  out(kIer, 0x01);
  EXPECT_FALSE(irq());
  EXPECT_EQ(in(kIir), 0xc1);
  const uint8_t data[] = {'1', '2'};
  ASSERT_EQ(port_.enqueue_input(data), 2u);
  EXPECT_TRUE(irq());
  EXPECT_EQ(in(kIir), 0xc4);
  in(kRx);
  EXPECT_TRUE(irq());  // one byte left
  in(kRx);
  EXPECT_FALSE(irq());
  EXPECT_EQ(in(kIir), 0xc1);
  EXPECT_EQ(irq_events_, (std::vector<bool>{true, false}));
}

TEST_F(SerialTest, RxBelowTriggerLevelReportsTimeout) {
  out(kFcr, 0x81);  // trigger at 8 bytes
  out(kIer, 0x01);
  const uint8_t data[] = {'1', '2', '3'};
  ASSERT_EQ(port_.enqueue_input(data), 3u);
  EXPECT_TRUE(irq());
  EXPECT_EQ(in(kIir), 0xcc);
}

TEST_F(SerialTest, ThreInterruptFollowsLinuxStartupTest) {
  // serial8250_do_startup(): enabling THRI must raise THRE, reading IIR acknowledges it, and
  // re-enabling must raise it again (otherwise Linux flags UART_BUG_THRE and polls with a timer).
  out(kIer, 0x02);
  EXPECT_TRUE(irq());
  EXPECT_EQ(in(kIir)&0x0f, 0x02);
  EXPECT_FALSE(irq());
  EXPECT_EQ(in(kIir)&0x0f, 0x01);
  out(kIer, 0);
  out(kIer, 0x02);
  EXPECT_EQ(in(kIir)&0x0f, 0x02);
  // Writing a byte re-arms it once the byte has gone.
  out(kTx, 'x');
  EXPECT_TRUE(irq());
  out(kIer, 0);
  EXPECT_FALSE(irq());
}

TEST_F(SerialTest, DataOutranksThre) {
  out(kFcr, 0x01);
  out(kIer, 0x03);
  const uint8_t b = 'k';
  ASSERT_EQ(port_.enqueue_input(std::span(&b, 1)), 1u);
  EXPECT_EQ(in(kIir)&0x0f, 0x04);
  in(kRx);
  EXPECT_EQ(in(kIir)&0x0f, 0x02);
  EXPECT_EQ(in(kIir)&0x0f, 0x01);
}

TEST_F(SerialTest, ModemStatusDeltaInLoopback) {
  out(kIer, 0x08);
  out(kMcr, 0x10);
  EXPECT_EQ(in(kMsr), 0x0b);  // entering loopback dropped CTS, DSR and DCD
  EXPECT_FALSE(irq());
  out(kMcr, 0x12);  // RTS -> CTS changes
  EXPECT_TRUE(irq());
  EXPECT_EQ(in(kIir)&0x0f, 0x00);
  EXPECT_EQ(in(kMsr), 0x11);  // CTS with its delta bit
  EXPECT_FALSE(irq());
  EXPECT_EQ(in(kMsr), 0x10);
}

TEST_F(SerialTest, FifoClearEmptiesReceiver) {
  out(kFcr, 0x01);
  const uint8_t data[] = {'a', 'b'};
  ASSERT_EQ(port_.enqueue_input(data), 2u);
  out(kFcr, 0x03);
  EXPECT_EQ(in(kLsr)&0x01, 0);
}

TEST_F(SerialTest, WideAccessesAreHarmless) {
  uint8_t wide[4] = {};
  port_.read(0, wide);
  EXPECT_EQ(wide[0], 0xff);
  const uint8_t w[2] = {'a', 'b'};
  port_.write(0, w);
  port_.write(99, std::span(w, 1));
  EXPECT_TRUE(output_.empty());
}

// Reads every register a guest can see, in an order that exposes the state side effects clear
// (IIR before LSR before MSR, then the divisor latch and the whole RX FIFO). Two ports in the
// same state give the same bytes.
std::vector<uint8_t> probe(SerialPort& p) {
  auto in = [&p](uint64_t off) {
    uint8_t v = 0;
    p.read(off, std::span<uint8_t>(&v, 1));
    return v;
  };
  auto out = [&p](uint64_t off, uint8_t v) { p.write(off, std::span<const uint8_t>(&v, 1)); };
  std::vector<uint8_t> seen;
  const uint8_t lcr = in(kLcr);
  out(kLcr, lcr & 0x7f);
  for (uint64_t off : {kIir, kIer, kLcr, kMcr, kLsr, kMsr, kScr, kIir}) seen.push_back(in(off));
  out(kLcr, lcr | 0x80);
  seen.push_back(in(kDll));
  seen.push_back(in(kDlm));
  out(kLcr, lcr & 0x7f);
  while (in(kLsr) & 0x01) seen.push_back(in(kRx));
  return seen;
}

// A port with a wrapped, partly full FIFO, an overrun, a modem delta, a divisor and scratch.
TEST_F(SerialTest, SaveRestoreRoundTrip) {
  out(kLcr, 0x83);
  out(kDll, 0x01);
  out(kDlm, 0x02);
  out(kLcr, 0x1b);  // 8 bits, even parity
  out(kScr, 0x5a);
  out(kFcr, 0x81);  // FIFO on, trigger at 8
  out(kMcr, 0x1b);  // loopback: transmitted bytes come back
  for (int i = 0; i < 10; ++i) out(kTx, static_cast<uint8_t>('a' + i));
  for (int i = 0; i < 4; ++i) in(kRx);  // the FIFO's head moves away from slot 0
  for (int i = 0; i < 11; ++i) out(kTx, static_cast<uint8_t>('A' + i));  // 17 sent, 16 fit: overrun
  out(kMcr, 0x0b);                                                       // leave loopback: MSR deltas
  out(kIer, 0x0d);
  ASSERT_TRUE(irq());

  auto state = port_.save();
  ASSERT_TRUE(state.ok()) << state.error().message();
  std::vector<bool> irqs;
  SerialPort copy("com1", [&](bool level) { irqs.push_back(level); }, nullptr);
  auto r = copy.restore(*state);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(irqs, std::vector<bool>{true}) << "restore drives the line to the derived level";
  EXPECT_EQ(copy.save().value(), *state);
  const std::vector<uint8_t> want = probe(port_);
  EXPECT_EQ(probe(copy), want);
  EXPECT_EQ(want[0], 0xc6) << "the overrun is what the IIR reports first";
  EXPECT_EQ(want.size(), 10u + SerialPort::kFifoSize) << "ten registers, then a full FIFO";

  // A quiet port restores with the line low, and says so even if it was high before.
  SerialPort quiet("com1", nullptr, nullptr);
  irqs.clear();
  ASSERT_TRUE(copy.restore(quiet.save().value()).ok());
  EXPECT_EQ(irqs, std::vector<bool>{false});
}

TEST_F(SerialTest, RestoreRefusesTruncatedState) {
  out(kFcr, 0x01);
  const uint8_t data[] = {'x', 'y', 'z'};
  ASSERT_EQ(port_.enqueue_input(data), 3u);
  const std::vector<uint8_t> state = port_.save().value();
  int irq_calls = 0;
  SerialPort target("com1", [&](bool) { ++irq_calls; }, nullptr);
  const std::vector<uint8_t> before = target.save().value();
  for (size_t len = 0; len < state.size(); ++len) {
    auto r = target.restore(std::span(state).first(len));
    ASSERT_FALSE(r.ok()) << len;
    EXPECT_EQ(r.error().code, ErrorCode::kCorrupt) << len;
    EXPECT_NE(r.error().message().find("com1"), std::string::npos) << r.error().message();
  }
  std::vector<uint8_t> longer = state;
  longer.push_back(0);
  EXPECT_EQ(target.restore(longer).error().code, ErrorCode::kCorrupt);
  EXPECT_EQ(target.save().value(), before);
  EXPECT_EQ(irq_calls, 0);
}

TEST_F(SerialTest, RestoreRefusesOutOfRangeValues) {
  out(kFcr, 0x01);
  const uint8_t data[] = {'x', 'y'};
  ASSERT_EQ(port_.enqueue_input(data), 2u);
  const std::vector<uint8_t> good = port_.save().value();
  // Layout: version, rx_count, 2 rx bytes, ier, lcr, mcr, fcr, scr, dll, dlm, overrun, thr, msr_delta.
  constexpr size_t kVersion = 0, kCount = 1, kIerAt = 4, kMcrAt = 6, kFcrAt = 7, kOverrunAt = 11, kDeltaAt = 13;
  ASSERT_EQ(good.size(), 14u);
  struct Case {
    size_t at;
    uint8_t value;
    const char* why;
  };
  for (const Case& c : {Case{kVersion, 2, "version"}, Case{kCount, 17, "rx_count above the FIFO"},
                        Case{kIerAt, 0x10, "IER bit 4"}, Case{kMcrAt, 0x20, "MCR bit 5"},
                        Case{kFcrAt, 0x08, "FCR DMA bit"}, Case{kFcrAt, 0x00, "two bytes with the FIFO off"},
                        Case{kOverrunAt, 2, "overrun not a boolean"}, Case{kDeltaAt, 0x10, "MSR delta bit 4"}}) {
    std::vector<uint8_t> bad = good;
    bad[c.at] = c.value;
    SerialPort target("com1", nullptr, nullptr);
    const std::vector<uint8_t> before = target.save().value();
    auto r = target.restore(bad);
    ASSERT_FALSE(r.ok()) << c.why;
    EXPECT_EQ(r.error().code, ErrorCode::kCorrupt) << c.why;
    EXPECT_EQ(target.save().value(), before) << c.why;
  }
}

}  // namespace
}  // namespace ringvm
