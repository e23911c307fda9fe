// Device: the bus side of every emulated device. Kept this small on purpose.
//
// `offset` is relative to the base the device was inserted at. Devices are called from vCPU
// threads concurrently and lock their own state.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

namespace ringvm {

class Device {
 public:
  virtual ~Device() = default;
  virtual std::string_view name() const = 0;
  // Fills `data` (1, 2, 4 or 8 bytes); unimplemented registers read as all ones or zeros.
  virtual void read(uint64_t offset, std::span<uint8_t> data) = 0;
  virtual void write(uint64_t offset, std::span<const uint8_t> data) = 0;
};

}  // namespace ringvm
