// ExitHandler: where KvmVcpu::run sends the guest's port I/O and MMIO accesses. The kvm layer
// knows nothing of devices; the VMM implements this (vmm/bus_exit_handler.h: its two buses).
#pragma once

#include <cstdint>
#include <span>

namespace ringvm {

class ExitHandler {
 public:
  virtual ~ExitHandler() = default;
  // One access of 1 to 8 bytes, from a vCPU thread (several at once on a multi-vCPU VM). Each
  // returns whether something claimed it; an unclaimed read leaves all ones in `data`.
  virtual bool pio_read(uint16_t port, std::span<uint8_t> data) = 0;
  virtual bool pio_write(uint16_t port, std::span<const uint8_t> data) = 0;
  virtual bool mmio_read(uint64_t addr, std::span<uint8_t> data) = 0;
  virtual bool mmio_write(uint64_t addr, std::span<const uint8_t> data) = 0;
};

}  // namespace ringvm
