// VirtioMmioDevice: the virtio-mmio transport, version 2 (virtio 1.x section 4.2), for guests
// without PCI (custom kernels booted with `virtio_mmio.device=4K@0xADDR:IRQ`).
//
// One 4 KiB window per device. The device logic is entirely in the VirtioDevice; this class only
// keeps the register file, the queues and the status state machine. Queue kicks go to one eventfd
// per queue: a QueueNotify write signals it, or, faster, the builder registers it as an
// ioeventfd at base + kQueueNotify so the guest's write never leaves the kernel. The interrupt is
// a level-triggered line driven through a callback.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"
#include "devices/device.h"
#include "devices/virtio/queue.h"
#include "devices/virtio/virtio_device.h"

namespace ringvm {

class GuestMemory;

class VirtioMmioDevice final : public Device {
 public:
  // Register offsets (all 32-bit; the device config space starts at kConfig).
  enum Reg : uint64_t {
    kMagic = 0x000,             // "virt" (0x74726976)
    kVersion = 0x004,           // 2: the virtio 1.x layout
    kDeviceId = 0x008,          // VIRTIO_ID_*
    kVendorId = 0x00c,          // a vendor id; the driver does not match on it
    kDeviceFeatures = 0x010,    // 32 feature bits of the bank chosen by kDeviceFeaturesSel
    kDeviceFeaturesSel = 0x014, // feature bank (0: bits 0-31, 1: bits 32-63)
    kDriverFeatures = 0x020,    // the driver's acknowledged bits for kDriverFeaturesSel's bank
    kDriverFeaturesSel = 0x024, // bank for kDriverFeatures
    kQueueSel = 0x030,          // which queue the kQueue* registers below address
    kQueueNumMax = 0x034,       // the selected queue's maximum size (0: no such queue)
    kQueueNum = 0x038,          // the size the driver chose
    kQueueReady = 0x044,        // 1 once the driver configured the selected queue
    kQueueNotify = 0x050,       // the driver writes a queue index here to kick it
    kInterruptStatus = 0x060,   // bit 0: used buffer, bit 1: configuration change
    kInterruptAck = 0x064,      // the driver clears kInterruptStatus bits by writing them
    kStatus = 0x070,            // device status (ACKNOWLEDGE, DRIVER, ... ); 0 resets
    kQueueDescLow = 0x080,      // descriptor table address, low 32 bits
    kQueueDescHigh = 0x084,     // ... high 32 bits
    kQueueDriverLow = 0x090,    // avail ring address, low
    kQueueDriverHigh = 0x094,   // ... high
    kQueueDeviceLow = 0x0a0,    // used ring address, low
    kQueueDeviceHigh = 0x0a4,   // ... high
    kConfigGeneration = 0x0fc,  // changes whenever the device changed its config space
    kConfig = 0x100,            // device-specific configuration space
  };
  static constexpr uint32_t kMagicValue = 0x74726976;
  static constexpr uint64_t kWindowSize = 0x1000;

  using InterruptLine = std::function<void(bool level)>;

  // `mem` must outlive the transport. Creates one kick eventfd per queue.
  static Result<std::unique_ptr<VirtioMmioDevice>> create(std::shared_ptr<VirtioDevice> device,
                                                          const GuestMemory& mem, InterruptLine irq);
  ~VirtioMmioDevice() override;

  std::string_view name() const override { return name_; }
  void read(uint64_t offset, std::span<uint8_t> data) override;
  void write(uint64_t offset, std::span<const uint8_t> data) override;

  // The eventfd the builder may register as an ioeventfd at base + kQueueNotify with
  // datamatch = `queue` (or -1 if there is no such queue).
  int kick_fd(uint16_t queue) const;
  size_t num_queues() const { return queues_.size(); }
  VirtioDevice& device() { return *device_; }
  uint32_t status() const;

 private:
  VirtioMmioDevice(std::shared_ptr<VirtioDevice> device, const GuestMemory& mem, InterruptLine irq);
  uint32_t read_reg(uint64_t offset);
  void write_reg(uint64_t offset, uint32_t value);
  void write_status(uint32_t value);
  void reset_locked();
  void raise(uint32_t bits);
  VirtQueue* selected();

  std::shared_ptr<VirtioDevice> device_;
  const GuestMemory& mem_;
  InterruptLine irq_;
  std::string name_;
  std::vector<std::unique_ptr<VirtQueue>> queues_;
  std::vector<UniqueFd> kick_fds_;

  mutable std::mutex mu_;  // register state below; taken by vCPU threads
  uint32_t status_ = 0;
  uint32_t device_features_sel_ = 0;
  uint32_t driver_features_sel_ = 0;
  uint64_t driver_features_ = 0;
  uint32_t queue_sel_ = 0;
  bool active_ = false;
  uint32_t config_generation_ = 0;

  std::mutex irq_mu_;  // interrupt status and line level; taken by device workers too
  uint32_t interrupt_status_ = 0;
};

// The kernel command-line parameter that declares one virtio-mmio device:
// "virtio_mmio.device=4K@0xd0000000:5".
std::string virtio_mmio_cmdline(uint64_t base, uint32_t irq, uint64_t size = VirtioMmioDevice::kWindowSize);

}  // namespace ringvm
