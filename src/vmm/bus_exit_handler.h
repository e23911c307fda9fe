// BusExitHandler: a vCPU's port I/O and MMIO exits dispatched to the VM's two buses.
#pragma once

#include <cstdint>
#include <span>

#include "devices/bus.h"
#include "kvm/exit_handler.h"

namespace ringvm {

class BusExitHandler final : public ExitHandler {
 public:
  // Both buses must outlive the handler.
  BusExitHandler(const Bus& pio, const Bus& mmio) : pio_(pio), mmio_(mmio) {}

  bool pio_read(uint16_t port, std::span<uint8_t> data) override { return pio_.read(port, data); }
  bool pio_write(uint16_t port, std::span<const uint8_t> data) override { return pio_.write(port, data); }
  bool mmio_read(uint64_t addr, std::span<uint8_t> data) override { return mmio_.read(addr, data); }
  bool mmio_write(uint64_t addr, std::span<const uint8_t> data) override { return mmio_.write(addr, data); }

 private:
  const Bus& pio_;
  const Bus& mmio_;
};

}  // namespace ringvm
