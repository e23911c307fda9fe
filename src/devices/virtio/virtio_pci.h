// VirtioPciDevice: the modern virtio-pci transport (virtio 1.x section 4.1) for one VirtioDevice.
//
// The function exposes one 64-bit memory BAR (kBar) holding, at fixed offsets, the common config
// (struct virtio_pci_common_cfg), the ISR byte, the device config (forwarded to the device), the
// notify area (one 4-byte doorbell per queue) and the MSI-X table and PBA; vendor capabilities
// (struct virtio_pci_cap / virtio_pci_notify_cap) point the driver at each, and a
// VIRTIO_PCI_CAP_PCI_CFG window gives config-space access to the BAR (for firmware).
//
// Doorbells: by default the notify capability points at a small I/O BAR (kNotifyIoBar, one port
// pair per queue) rather than at the memory BAR. A port write exits with the port, width and value
// already decoded (and, on AMD, the next RIP), so KVM matches the ioeventfd without its instruction
// emulator; an MMIO doorbell write is a nested page fault that KVM on AMD must fetch, decode and
// emulate (Intel's EPT-misconfig fast path avoids that). Linux's virtio_pci takes either kind of
// BAR. `pio_notify = false` (or more than kMaxPioNotifyQueues queues) keeps the doorbells in kBar.
//
// Fast paths: each queue's doorbell is an ioeventfd (re-registered whenever the guest moves the
// BAR) whose eventfd is the device's ActivatedQueue::kick_fd, and each interrupt is an MSI-X
// vector fired through its irqfd. When the driver has not enabled MSI-X, interrupts fall back to
// INTx: ISR bits plus the slot's level-triggered line, lowered when the driver reads the ISR.
//
// The device stays Inactive until DRIVER_OK; queue configuration is frozen from then on. A
// failed activate() or a broken queue puts the device in DEVICE_NEEDS_RESET.
//
// Snapshots: the transport is Stateful under state_name() == name() ("virtio-pci-" + the
// device's name). save() holds the common config, every queue (VirtQueue::State and its MSI-X
// vector), the ISR and INTx line, the MSI-X table and the config space with its BAR addresses.
// The caller's order on restore, into a VM built from the same configuration:
//   1. guest memory and the interrupt routing (MsiRouter::install) exist;
//   2. the device backend's restore(), then this transport's restore() (it is freshly built and
//      was never activated);
//   3. once every PCI function is restored, PciBus::restore(), which maps the BARs where the
//      restored config spaces say (bar_moved() moves the doorbell ioeventfds along).
// A state whose status has DRIVER_OK and FEATURES_OK (and not NEEDS_RESET) activates the device
// as the driver's DRIVER_OK write did, with its queues at their saved indices; its workers run
// from then on (pause the backend again if the VM must stay quiescent).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"
#include "base/stateful.h"
#include "base/unique_fd.h"
#include "devices/pci/config_space.h"
#include "devices/pci/interrupt_controller.h"
#include "devices/pci/msi.h"
#include "devices/pci/msix.h"
#include "devices/pci/pci_device.h"
#include "devices/virtio/queue.h"
#include "devices/virtio/virtio_device.h"

namespace ringvm {

class GuestMemory;

struct VirtioPciOptions {
  // Doorbells in an I/O BAR (see above); false: in the memory BAR, as QEMU does by default.
  bool pio_notify = true;
};

class VirtioPciDevice final : public PciDevice, public Stateful {
 public:
  static constexpr uint16_t kVendor = 0x1AF4;         // Red Hat / virtio
  static constexpr uint16_t kDeviceIdBase = 0x1040;   // modern device ID = 0x1040 + VIRTIO_ID_*
  static constexpr uint16_t kSubsystemId = 0x1100;    // informational only (as QEMU)
  static constexpr int kBar = 0;
  // Regions of BAR kBar.
  static constexpr uint64_t kCommonOffset = 0x0000;
  static constexpr uint64_t kIsrOffset = 0x1000;
  static constexpr uint64_t kDeviceConfigOffset = 0x2000;
  static constexpr uint64_t kDeviceConfigSize = 0x1000;
  static constexpr uint64_t kNotifyOffset = 0x3000;
  static constexpr uint32_t kNotifyMultiplier = 4;  // queue q's doorbell at kNotifyOffset + 4 * q
  static constexpr uint64_t kMsixTableOffset = 0x4000;
  static constexpr size_t kMaxQueues = 1024;        // the notify area is one page
  // The I/O BAR holding the doorbells when they are port I/O: queue q's at kNotifyMultiplier * q.
  static constexpr int kNotifyIoBar = 2;
  static constexpr size_t kMaxPioNotifyQueues = 64;  // 256 ports; larger devices use kBar

  // `mem`, `ic` and `router` must outlive the device. Creates the kick eventfds and one MSI-X
  // vector per queue plus one for configuration changes.
  static Result<std::shared_ptr<VirtioPciDevice>> create(std::shared_ptr<VirtioDevice> device, const GuestMemory& mem,
                                                         InterruptController& ic, MsiRouter& router,
                                                         const VirtioPciOptions& options = {});
  ~VirtioPciDevice() override;
  VirtioPciDevice(const VirtioPciDevice&) = delete;
  VirtioPciDevice& operator=(const VirtioPciDevice&) = delete;

  std::string_view name() const override { return name_; }
  uint32_t config_read(uint16_t offset, uint8_t size) override;
  void config_write(uint16_t offset, uint8_t size, uint32_t value) override;
  void bar_read(int bar, uint64_t offset, std::span<uint8_t> data) override;
  void bar_write(int bar, uint64_t offset, std::span<const uint8_t> data) override;
  void bar_moved(int bar, uint64_t old_base, uint64_t new_base) override;
  void attached(uint8_t slot, uint32_t intx_gsi) override;

  // Stateful. The transport has no thread: pause() and resume() have nothing to do (its device
  // backend is paused on its own, before save()). save() needs the backend paused and the vCPUs
  // parked. restore() is all or nothing: a refused state (kCorrupt: truncated, trailing bytes,
  // a bad bool, a queue size or index out of range, rings outside guest memory, another device's
  // config space or MSI-X table, features this device does not offer) changes nothing.
  std::string_view state_name() const override { return name_; }
  Result<void> pause() override { return Ok(); }
  Result<void> resume() override { return Ok(); }
  Result<std::vector<uint8_t>> save() const override;
  // Precondition: the transport was never activated (or was reset); kInvalidArgument otherwise.
  Result<void> restore(std::span<const uint8_t> data) override;

  uint64_t bar_size() const { return bar_size_; }
  uint64_t msix_pba_offset() const { return pba_offset_; }
  uint8_t status() const;
  VirtioDevice& device() { return *device_; }
  // For tests: the MSI-X table and a queue's kick eventfd.
  const MsixTable& msix() const { return *msix_; }
  int kick_fd(uint16_t queue) const { return queue < queues_.size() ? queues_[queue]->kick.get() : -1; }
  // Whether the doorbells are in kNotifyIoBar (else in kBar at kNotifyOffset).
  bool pio_notify() const { return pio_notify_; }

 private:
  // Where VIRTIO_PCI_CAP_PCI_CFG currently points, for an access to its pci_cfg_data.
  struct CfgWindow {
    uint16_t data_offset = 0;  // config offset of pci_cfg_data
    int bar = kBar;
    uint32_t bar_offset = 0;
    uint32_t length = 0;
    bool valid = false;
  };
  struct Queue {
    explicit Queue(uint16_t max) : vq(max) {}
    VirtQueue vq;
    UniqueFd kick;
    std::atomic<uint16_t> msix_vector;
  };

  VirtioPciDevice(std::shared_ptr<VirtioDevice> device, const GuestMemory& mem, InterruptController& ic,
                  bool pio_notify);
  Result<void> init(MsiRouter& router);
  // The window if [offset, offset+size) touches pci_cfg_data, else nullopt.
  std::optional<CfgWindow> cfg_window_locked(uint16_t offset, uint8_t size) const;
  void common_read(uint64_t offset, std::span<uint8_t> data);
  void common_write(uint64_t offset, std::span<const uint8_t> data);
  // The common config as the driver sees it now (plus queue_notify_data and queue_reset, zero).
  std::vector<uint8_t> common_snapshot_locked() const;
  void write_status_locked(uint8_t value);
  void activate_locked();
  void reset_locked();
  uint8_t read_isr();
  // Raises `vector` (MSI-X enabled) or sets `isr_bit` and the INTx line. Never takes mu_.
  void signal(uint16_t vector, uint8_t isr_bit);
  // (Un)registers every queue's doorbell ioeventfd in the notify BAR mapped at `base`.
  void set_ioeventfds_locked(uint64_t base, bool assign);
  // The BAR and offset of the doorbell area.
  int notify_bar() const { return pio_notify_ ? kNotifyIoBar : kBar; }
  uint64_t notify_offset() const { return pio_notify_ ? 0 : kNotifyOffset; }

  std::shared_ptr<VirtioDevice> device_;
  const GuestMemory& mem_;
  InterruptController& ic_;
  std::string name_;
  uint64_t offered_features_ = 0;
  uint64_t bar_size_ = 0;
  uint64_t pba_offset_ = 0;
  std::unique_ptr<MsixTable> msix_;
  std::vector<std::unique_ptr<Queue>> queues_;

  mutable std::mutex mu_;  // config space, common config, status machine
  PciConfigSpace cfg_;
  uint16_t pci_cfg_cap_ = 0;  // offset of the VIRTIO_PCI_CAP_PCI_CFG capability
  uint8_t status_ = 0;
  bool active_ = false;
  uint32_t device_feature_select_ = 0;
  uint32_t driver_feature_select_ = 0;
  uint64_t driver_features_ = 0;
  uint16_t queue_select_ = 0;
  bool pio_notify_;
  uint64_t io_bar_size_ = 0;
  uint64_t notify_base_ = 0;  // where the notify BAR is mapped (ioeventfds registered there); 0 = unmapped
  std::atomic<uint16_t> config_vector_;
  std::atomic<uint8_t> config_generation_{0};

  mutable std::mutex intx_mu_;  // ISR and the INTx line; never held with mu_ taken after it
  uint8_t isr_ = 0;
  bool line_high_ = false;
  std::atomic<uint32_t> intx_gsi_{0};
  std::atomic<bool> has_intx_{false};
};

}  // namespace ringvm
