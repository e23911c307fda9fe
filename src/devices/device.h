// Device: the bus side of every emulated device. Kept this small on purpose.
//
// `offset` is relative to the base the device was inserted at. Devices are called from vCPU
// threads concurrently and lock their own state.
//
// Every device is Stateful (base/stateful.h). A device that acts only when a vCPU touches it
// (the UART, the RTC, the ACPI PM block) is quiescent once the vCPUs are parked: its pause and
// resume have nothing to do, which the defaults below say. A device with a thread of its own
// overrides them.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "base/stateful.h"

namespace ringvm {

class Device : public Stateful {
 public:
  ~Device() override = default;
  virtual std::string_view name() const = 0;
  std::string_view state_name() const override { return name(); }
  Result<void> pause() override { return Ok(); }
  Result<void> resume() override { return Ok(); }
  // Fills `data` (1, 2, 4 or 8 bytes); unimplemented registers read as all ones or zeros.
  virtual void read(uint64_t offset, std::span<uint8_t> data) = 0;
  virtual void write(uint64_t offset, std::span<const uint8_t> data) = 0;
};

}  // namespace ringvm
