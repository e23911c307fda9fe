// VmGenId: the Virtual Machine Generation ID (Microsoft's "Virtual Machine Generation ID" spec,
// as Linux's drivers/virt/vmgenid.c consumes it). A 16-byte random value in guest memory that
// changes whenever the VM may have been duplicated or rewound (a snapshot restored, a clone
// started), with an interrupt to say so: the guest kernel then mixes the new value into its
// random number generator (add_vmfork_randomness), so two clones of one snapshot do not go on
// with the same RNG state, TLS nonces or UUIDs.
//
// The device has no registers. The guest finds the ID's address through ACPI (\_SB.VGEN's ADDR
// method, arch/x86_64/acpi.h) and learns of a change through an ACPI Notify that the Generic
// Event Device's _EVT method sends when `irq` pulses. The builder owns that wiring; this class
// writes the ID and pulses the line.
//
// It is a Device so the DeviceManager keeps, pauses and snapshots it with the other platform
// devices, but it is never inserted on a bus: read() and write() are inert.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "devices/device.h"
#include "memory/guest_memory.h"

namespace ringvm {

class VmGenId final : public Device {
 public:
  static constexpr size_t kIdSize = 16;
  using Id = std::array<uint8_t, kIdSize>;
  // The GED's interrupt line (the builder maps it to KvmVm::set_irq_line(gsi, level)).
  using IrqLine = std::function<void(bool level)>;

  // Writes a fresh random ID at `addr` (which must be 8-byte aligned and lie in `mem`) without
  // notifying: at boot no driver is listening yet. `mem` must outlive the device.
  static Result<std::shared_ptr<VmGenId>> create(const GuestMemory& mem, uint64_t addr, IrqLine irq);

  std::string_view name() const override { return "vmgenid"; }
  void read(uint64_t, std::span<uint8_t> data) override;
  void write(uint64_t, std::span<const uint8_t>) override {}

  uint64_t address() const { return addr_; }
  Id id() const;

  // Thread-safe. A fresh random ID (getrandom) in guest memory, then one pulse of the interrupt
  // line (high, then low: an edge) so the guest re-reads it. Call it after a restore, before
  // the vCPUs run, on every VM started from a snapshot. On failure the ID is unchanged.
  Result<void> new_generation();

  // Stateful: the address and the current ID. restore() refuses (kCorrupt, the device and guest
  // memory unchanged) truncated state and an address other than this device's (the address the
  // guest's ACPI tables name is fixed by this build's layout); on success it writes the ID back
  // to guest memory, which a restored memory file already holds. It does not notify: a restore
  // alone is not a new generation, the caller decides (new_generation()).
  Result<std::vector<uint8_t>> save() const override;
  Result<void> restore(std::span<const uint8_t> state) override;

 private:
  VmGenId(const GuestMemory& mem, uint64_t addr, IrqLine irq)
      : mem_(mem), addr_(addr), irq_(std::move(irq)) {}
  Result<void> write_id(const Id& id);

  const GuestMemory& mem_;
  const uint64_t addr_;
  const IrqLine irq_;

  mutable std::mutex mu_;
  Id id_{};
};

}  // namespace ringvm
