// VirtioDevice: the contract between a virtio device (block, net, rng, console, ...) and the
// transports (virtio-pci modern, virtio-mmio) that expose it. About ten methods; keep it so.
//
// Lifecycle: a device is Inactive until the driver sets DRIVER_OK; then the transport calls
// activate() with the negotiated features and the configured queues, and only from then on may the
// device touch guest memory. reset() returns it to Inactive (driver wrote 0 to status).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "base/stateful.h"
#include "base/unique_fd.h"

namespace ringvm {

class GuestMemory;
class VirtQueue;

// What the transport hands a device at activation, per queue.
struct ActivatedQueue {
  VirtQueue* queue = nullptr;  // owned by the transport; valid until reset()
  int kick_fd = -1;            // eventfd the guest's notify signals (ioeventfd); device polls it
  // Raise the queue's interrupt (MSI-X vector through irqfd, or INTx + ISR bit). Thread-safe.
  std::function<void()> notify;
};

// Every device is Stateful (base/stateful.h): pause() parks its worker threads after they finish
// what is in flight, so a paused device touches neither guest memory nor its queues.
class VirtioDevice : public Stateful {
 public:
  ~VirtioDevice() override = default;
  std::string_view state_name() const override { return name(); }
  virtual std::string_view name() const = 0;
  virtual uint32_t device_type() const = 0;           // VIRTIO_ID_* from <linux/virtio_ids.h>
  virtual uint64_t device_features() const = 0;      // including VIRTIO_F_VERSION_1
  virtual std::vector<uint16_t> queue_max_sizes() const = 0;
  virtual void read_config(uint64_t offset, std::span<uint8_t> data) const = 0;
  virtual void write_config(uint64_t offset, std::span<const uint8_t> data) = 0;
  // Called once the driver set DRIVER_OK. An error puts the device in DEVICE_NEEDS_RESET.
  virtual Result<void> activate(const GuestMemory& mem, uint64_t acked_features,
                                std::vector<ActivatedQueue> queues) = 0;
  // Stops all processing and forgets the queues; the device is Inactive again.
  virtual void reset() = 0;
  // The device asks for its config-change interrupt (e.g. capacity, link status). Set by transport.
  std::function<void()> config_changed;
};

}  // namespace ringvm
