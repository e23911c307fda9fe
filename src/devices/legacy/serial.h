// SerialPort: a 16550A UART, the console a stock Linux kernel finds at COM1 (ttyS0).
//
// Transmission is instantaneous (THR is always empty), so the guest never waits on the host: every
// byte goes to the output sink, which must not block (the Console buffers and drops under
// pressure). Host input enters a real 16-byte receive FIFO through enqueue_input(), which accepts
// only what fits so the caller applies back-pressure instead of losing bytes.
//
// The interrupt line follows the IIR: high while any enabled source is pending, low otherwise.
// Lowering it when the guest drains the sources is what gives the in-kernel PIC/IOAPIC, which
// treat ISA IRQs as edge-triggered, a fresh edge for the next interrupt.
//
// save()/restore() carry every register, the receive FIFO and the pending interrupt sources.
// restore() then drives the interrupt line to the level the restored IIR implies, so restore the
// irqchip (KVM's PIC/IOAPIC) first and the UART after it.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "devices/device.h"

namespace ringvm {

class SerialPort final : public Device {
 public:
  // Receives guest output; called with the port's lock held, so it must return quickly.
  using OutputSink = std::function<void(std::span<const uint8_t>)>;
  // Drives the UART's interrupt line (the builder maps it to KvmVm::set_irq_line(gsi, level)).
  using IrqLine = std::function<void(bool level)>;

  static constexpr size_t kFifoSize = 16;
  // The I/O window: eight byte-wide registers.
  static constexpr uint64_t kSize = 8;

  SerialPort(std::string name, IrqLine irq, OutputSink output);

  std::string_view name() const override { return name_; }
  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;

  // Thread-safe. Queues host input for the guest; returns how many bytes fit in the FIFO (the
  // rest must be offered again later). Accepts nothing while the guest holds the UART in loopback.
  size_t enqueue_input(std::span<const uint8_t> bytes);

  // Stateful: the registers, the RX FIFO (oldest byte first) and the interrupt sources. restore()
  // refuses (kCorrupt, the port unchanged) truncated state, bits a 16550A does not have, and more
  // bytes in the FIFO than its mode holds; on success it sets the IRQ line to the derived level.
  Result<std::vector<uint8_t>> save() const override;
  Result<void> restore(std::span<const uint8_t> state) override;

 private:
  uint8_t read_register(uint64_t offset);
  void write_register(uint64_t offset, uint8_t value);
  bool push_rx(uint8_t byte);
  uint8_t modem_status_lines() const;
  void set_mcr(uint8_t value);
  uint8_t compute_iir() const;
  void update_irq();

  const std::string name_;
  const IrqLine irq_;
  const OutputSink output_;

  mutable std::mutex mu_;
  std::array<uint8_t, kFifoSize> rx_{};
  size_t rx_head_ = 0;   // index of the oldest byte
  size_t rx_count_ = 0;  // bytes in the FIFO
  uint8_t ier_ = 0;
  uint8_t lcr_ = 0x03;  // 8N1, what firmware leaves behind
  uint8_t mcr_ = 0x08;  // OUT2: the PC's interrupt enable
  uint8_t fcr_ = 0;     // only the FIFO-enable and trigger bits are kept
  uint8_t scr_ = 0;
  uint8_t dll_ = 0x0c;  // 9600 baud
  uint8_t dlm_ = 0;
  bool overrun_ = false;
  bool thr_ipending_ = false;  // THRE interrupt armed and not yet acknowledged by an IIR read
  uint8_t msr_delta_ = 0;      // MSR bits 0-3, cleared by reading MSR
  bool irq_level_ = false;
};

}  // namespace ringvm
