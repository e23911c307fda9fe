#include "devices/legacy/serial.h"

#include <algorithm>
#include <utility>

#include "base/log.h"
#include "base/state_codec.h"

namespace ringvm {
namespace {

// Register offsets from the base port.
enum Reg : uint64_t {
  kRbrThr = 0,  // receive buffer (read) / transmit holding (write); DLL when DLAB=1
  kIer = 1,     // interrupt enable; DLM when DLAB=1
  kIirFcr = 2,  // interrupt identification (read) / FIFO control (write)
  kLcr = 3,     // line control
  kMcr = 4,     // modem control
  kLsr = 5,     // line status
  kMsr = 6,     // modem status
  kScr = 7,     // scratch
};

enum : uint8_t {
  kIerRdi = 0x01,   // received data available
  kIerThri = 0x02,  // transmit holding register empty
  kIerRlsi = 0x04,  // receiver line status
  kIerMsi = 0x08,   // modem status
  kIerMask = 0x0f,  // a 16550A implements only the low four bits

  kIirNone = 0x01,     // no interrupt pending
  kIirMsi = 0x00,      // modem status changed
  kIirThri = 0x02,     // THR empty
  kIirRdi = 0x04,      // RX data at or above the trigger level
  kIirRlsi = 0x06,     // receiver line status (overrun)
  kIirTimeout = 0x0c,  // RX data below the trigger level (character timeout)
  kIirFifo = 0xc0,     // FIFOs enabled, as a 16550A (not a 16550) reports them

  kFcrEnable = 0x01,   // enable both FIFOs
  kFcrClearRx = 0x02,  // empty the receive FIFO
  kFcrClearTx = 0x04,  // empty the transmit FIFO (always empty here)
  kFcrTrigger = 0xc0,  // RX trigger level: 1, 4, 8 or 14 bytes
  kLcrDlab = 0x80,     // divisor latch access

  kMcrDtr = 0x01,   // data terminal ready
  kMcrRts = 0x02,   // request to send
  kMcrOut1 = 0x04,  // user output 1 (loops to RI)
  kMcrOut2 = 0x08,  // user output 2 (loops to DCD; gates the IRQ on PCs)
  kMcrLoop = 0x10,  // loopback mode
  kMcrMask = 0x1f,  // the 16550A has no bits above loopback

  kLsrDr = 0x01,    // data ready
  kLsrOe = 0x02,    // overrun error
  kLsrThre = 0x20,  // THR empty
  kLsrTemt = 0x40,  // transmitter empty

  kMsrDcts = 0x01,  // CTS changed
  kMsrTeri = 0x04,  // RI went low
  kMsrCts = 0x10,   // clear to send
  kMsrDsr = 0x20,   // data set ready
  kMsrRi = 0x40,    // ring indicator
  kMsrDcd = 0x80,   // data carrier detect
};

constexpr size_t kTriggerLevels[4] = {1, 4, 8, 14};

// The layout save() writes; restore() refuses any other.
constexpr uint8_t kStateVersion = 1;

}  // namespace

SerialPort::SerialPort(std::string name, IrqLine irq, OutputSink output)
    : name_(std::move(name)), irq_(std::move(irq)), output_(std::move(output)) {}

void SerialPort::read(uint64_t offset, std::span<uint8_t> data) {
  if (data.size() != 1 || offset >= kSize) {
    RINGVM_LOG_RATELIMITED(warn, "{}: {}-byte read at offset {} ignored", name_, data.size(), offset);
    std::fill(data.begin(), data.end(), 0xff);
    return;
  }
  std::lock_guard lock(mu_);
  data[0] = read_register(offset);
  update_irq();
}

void SerialPort::write(uint64_t offset, std::span<const uint8_t> data) {
  if (data.size() != 1 || offset >= kSize) {
    RINGVM_LOG_RATELIMITED(warn, "{}: {}-byte write at offset {} ignored", name_, data.size(), offset);
    return;
  }
  std::lock_guard lock(mu_);
  write_register(offset, data[0]);
  update_irq();
}

size_t SerialPort::enqueue_input(std::span<const uint8_t> bytes) {
  std::lock_guard lock(mu_);
  if (mcr_ & kMcrLoop) return 0;  // the serial input pin is disconnected in loopback
  size_t accepted = 0;
  while (accepted < bytes.size() && push_rx(bytes[accepted])) ++accepted;
  update_irq();
  return accepted;
}

bool SerialPort::push_rx(uint8_t byte) {
  // Without FIFOs the UART holds a single character.
  const size_t capacity = (fcr_ & kFcrEnable) ? kFifoSize : 1;
  if (rx_count_ >= capacity) return false;
  rx_[(rx_head_ + rx_count_) % kFifoSize] = byte;
  ++rx_count_;
  return true;
}

uint8_t SerialPort::modem_status_lines() const {
  if (mcr_ & kMcrLoop) {
    // Loopback wires the modem outputs back to the inputs: the 8250 driver's probe checks this.
    uint8_t v = 0;
    if (mcr_ & kMcrRts) v |= kMsrCts;
    if (mcr_ & kMcrDtr) v |= kMsrDsr;
    if (mcr_ & kMcrOut1) v |= kMsrRi;
    if (mcr_ & kMcrOut2) v |= kMsrDcd;
    return v;
  }
  // A connected, always-ready peer: getty and the tty layer wait for carrier and CTS otherwise.
  return kMsrCts | kMsrDsr | kMsrDcd;
}

void SerialPort::set_mcr(uint8_t value) {
  const uint8_t before = modem_status_lines();
  mcr_ = value & kMcrMask;
  const uint8_t after = modem_status_lines();
  const uint8_t changed = static_cast<uint8_t>(before ^ after);
  // Delta bits 0, 1, 3 track CTS, DSR, DCD changes; bit 2 only a falling RI.
  msr_delta_ |= static_cast<uint8_t>((changed >> 4) & ~kMsrTeri);
  if ((before & kMsrRi) && !(after & kMsrRi)) msr_delta_ |= kMsrTeri;
}

uint8_t SerialPort::compute_iir() const {
  const uint8_t fifo_bits = (fcr_ & kFcrEnable) ? kIirFifo : 0;
  if ((ier_ & kIerRlsi) && overrun_) return fifo_bits | kIirRlsi;
  if ((ier_ & kIerRdi) && rx_count_ > 0) {
    const bool below_trigger = (fcr_ & kFcrEnable) && rx_count_ < kTriggerLevels[(fcr_ & kFcrTrigger) >> 6];
    return fifo_bits | (below_trigger ? kIirTimeout : kIirRdi);
  }
  if ((ier_ & kIerThri) && thr_ipending_) return fifo_bits | kIirThri;
  if ((ier_ & kIerMsi) && msr_delta_) return fifo_bits | kIirMsi;
  return fifo_bits | kIirNone;
}

void SerialPort::update_irq() {
  const bool level = !(compute_iir() & kIirNone);
  if (level == irq_level_) return;
  irq_level_ = level;
  if (irq_) irq_(level);
}

uint8_t SerialPort::read_register(uint64_t offset) {
  const bool dlab = lcr_ & kLcrDlab;
  switch (offset) {
    case kRbrThr: {
      if (dlab) return dll_;
      if (rx_count_ == 0) return 0;
      const uint8_t byte = rx_[rx_head_];
      rx_head_ = (rx_head_ + 1) % kFifoSize;
      --rx_count_;
      return byte;
    }
    case kIer: return dlab ? dlm_ : ier_;
    case kIirFcr: {
      const uint8_t iir = compute_iir();
      // Reading the IIR acknowledges a THRE interrupt (and only that one).
      if ((iir & 0x0f) == kIirThri) thr_ipending_ = false;
      return iir;
    }
    case kLcr: return lcr_;
    case kMcr: return mcr_;
    case kLsr: {
      uint8_t lsr = kLsrThre | kLsrTemt;
      if (rx_count_ > 0) lsr |= kLsrDr;
      if (overrun_) lsr |= kLsrOe;
      overrun_ = false;  // error bits clear on read
      return lsr;
    }
    case kMsr: {
      const uint8_t msr = modem_status_lines() | msr_delta_;
      msr_delta_ = 0;
      return msr;
    }
    case kScr: return scr_;
    default: return 0xff;
  }
}

void SerialPort::write_register(uint64_t offset, uint8_t value) {
  const bool dlab = lcr_ & kLcrDlab;
  switch (offset) {
    case kRbrThr:
      if (dlab) {
        dll_ = value;
        return;
      }
      if (mcr_ & kMcrLoop) {
        if (!push_rx(value)) overrun_ = true;  // the receiver drops the new byte
      } else if (output_) {
        output_(std::span<const uint8_t>(&value, 1));
      }
      // The byte left at once: THR is empty again and, if enabled, says so.
      thr_ipending_ = true;
      return;
    case kIer: {
      if (dlab) {
        dlm_ = value;
        return;
      }
      const uint8_t next = value & kIerMask;
      // Enabling THRI while THR is empty raises it at once; the 8250 driver tests for this.
      if ((next ^ ier_) & kIerThri) thr_ipending_ = (next & kIerThri) != 0;
      ier_ = next;
      return;
    }
    case kIirFcr: {
      const bool was_enabled = fcr_ & kFcrEnable;
      const bool enable = value & kFcrEnable;
      // Toggling the FIFO mode empties both FIFOs, as on the real part.
      if ((value & kFcrClearRx) || was_enabled != enable) {
        rx_head_ = 0;
        rx_count_ = 0;
      }
      fcr_ = value & (kFcrEnable | kFcrTrigger);
      return;
    }
    case kLcr: lcr_ = value; return;
    case kMcr: set_mcr(value); return;
    case kLsr: return;  // read-only (factory test writes are ignored)
    case kMsr: return;  // read-only
    case kScr: scr_ = value; return;
    default: return;
  }
}

Result<std::vector<uint8_t>> SerialPort::save() const {
  std::lock_guard lock(mu_);
  StateWriter w;
  w.u8(kStateVersion);
  w.u8(static_cast<uint8_t>(rx_count_));
  for (size_t i = 0; i < rx_count_; ++i) w.u8(rx_[(rx_head_ + i) % kFifoSize]);
  w.u8(ier_);
  w.u8(lcr_);
  w.u8(mcr_);
  w.u8(fcr_);
  w.u8(scr_);
  w.u8(dll_);
  w.u8(dlm_);
  w.boolean(overrun_);
  w.boolean(thr_ipending_);
  w.u8(msr_delta_);
  return w.take();
}

Result<void> SerialPort::restore(std::span<const uint8_t> state) {
  StateReader r(state, name_);
  const uint8_t version = TRY(r.u8("version"));
  if (version != kStateVersion)
    return r.corrupt(fmt::format("state version {}; this ringvm reads version {}", version, kStateVersion));
  const uint8_t rx_count = TRY(r.u8("rx_count"));
  RETURN_IF_ERROR(r.check_range("rx_count", rx_count, 0, kFifoSize));
  std::array<uint8_t, kFifoSize> rx{};
  RETURN_IF_ERROR(r.raw("rx_fifo", std::span<uint8_t>(rx.data(), rx_count)));
  const uint8_t ier = TRY(r.u8("ier"));
  const uint8_t lcr = TRY(r.u8("lcr"));
  const uint8_t mcr = TRY(r.u8("mcr"));
  const uint8_t fcr = TRY(r.u8("fcr"));
  const uint8_t scr = TRY(r.u8("scr"));
  const uint8_t dll = TRY(r.u8("dll"));
  const uint8_t dlm = TRY(r.u8("dlm"));
  const bool overrun = TRY(r.boolean("overrun"));
  const bool thr_ipending = TRY(r.boolean("thr_ipending"));
  const uint8_t msr_delta = TRY(r.u8("msr_delta"));
  RETURN_IF_ERROR(r.finish());
  if (ier & ~kIerMask) return r.corrupt(fmt::format("`ier` {:#04x} sets bits a 16550A does not have", ier));
  if (mcr & ~kMcrMask) return r.corrupt(fmt::format("`mcr` {:#04x} sets bits a 16550A does not have", mcr));
  if (fcr & ~(kFcrEnable | kFcrTrigger))
    return r.corrupt(fmt::format("`fcr` {:#04x} keeps bits the UART never stores", fcr));
  if (msr_delta & ~0x0f) return r.corrupt(fmt::format("`msr_delta` {:#04x} is not a delta nibble", msr_delta));
  if (!(fcr & kFcrEnable) && rx_count > 1)
    return r.corrupt(fmt::format("{} received bytes with the FIFO off, which holds one", rx_count));

  std::lock_guard lock(mu_);
  rx_ = rx;
  rx_head_ = 0;
  rx_count_ = rx_count;
  ier_ = ier;
  lcr_ = lcr;
  mcr_ = mcr;
  fcr_ = fcr;
  scr_ = scr;
  dll_ = dll;
  dlm_ = dlm;
  overrun_ = overrun;
  thr_ipending_ = thr_ipending;
  msr_delta_ = msr_delta;
  // The line is driven whatever it was before: the irqchip it feeds may be a new one.
  irq_level_ = !(compute_iir() & kIirNone);
  if (irq_) irq_(irq_level_);
  return Ok();
}

}  // namespace ringvm
