// DeviceManager: owns every device of one VM with its type, and the order they go in.
//
// The builder (builder.cc) creates devices and hands them here; the buses only route accesses.
// Pause and resume walk the devices through the state contract (base/stateful.h); teardown stops
// every device's worker threads before anything they use (interrupt routes, the PCI bus, guest
// memory) is released, and releases the rest newest first.
#pragma once

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"
#include "devices/device.h"
#include "vmm/snapshot_file.h"

namespace ringvm {

class I8042;
class KvmInterruptController;
class MsiRouter;
class PciBus;
class VirtioBlock;
class VirtioDevice;
class VirtioNet;
class VirtioPciDevice;
class VmGenId;

class DeviceManager {
 public:
  DeviceManager() = default;
  DeviceManager(const DeviceManager&) = delete;
  DeviceManager& operator=(const DeviceManager&) = delete;
  ~DeviceManager();

  // Devices on the port-I/O or MMIO bus that only act when a vCPU touches them (UART, RTC, ...).
  void add_platform(std::shared_ptr<Device> dev) { platform_.push_back(std::move(dev)); }
  void set_i8042(std::shared_ptr<I8042> kbd);
  I8042* i8042() const { return i8042_.get(); }
  // The VM Generation ID (also a platform device): a restore calls new_generation() through it.
  void set_vmgenid(std::shared_ptr<VmGenId> gen);
  VmGenId* vmgenid() const { return vmgenid_.get(); }
  void set_interrupts(std::shared_ptr<KvmInterruptController> ic, std::shared_ptr<MsiRouter> router);
  void set_pci(std::shared_ptr<PciBus> pci);
  void add_virtio(std::shared_ptr<VirtioDevice> dev, std::shared_ptr<VirtioPciDevice> transport);
  // The typed views --stats and the metrics read (the device is also add_virtio()'d).
  void add_block(std::shared_ptr<VirtioBlock> dev, std::string path);
  void add_net(std::shared_ptr<VirtioNet> dev);
  void keep_fd(UniqueFd fd) { fds_.push_back(std::move(fd)); }
  // A line for --stats that belongs to no device (the exit-cost probe).
  void add_stats_line(std::function<std::string()> line) { extra_stats_.push_back(std::move(line)); }

  // Stateful over every device: virtio devices first (their workers finish what is in flight),
  // then the platform devices. On failure, what was paused is resumed.
  Result<void> pause();
  Result<void> resume();
  // Resets every virtio device (joins its workers). Idempotent; ~DeviceManager calls it too.
  void stop_workers();

  // Snapshots (vmm/snapshot.h): every device's state, in a fixed order (platform devices, then
  // each virtio device followed by its transport), named by state_name(). Only while paused.
  Result<std::vector<NamedState>> save_states() const;
  // Onto freshly built, never-run devices: `states` must name exactly this VM's devices in the
  // same order (the same configuration built them), else nothing is restored and the error
  // names the first difference.
  Result<void> restore_states(const std::vector<NamedState>& states);
  // Makes every write the guest saw completed durable (each disk's flush).
  Result<void> flush_disks();

  std::string stats_text() const;
  nlohmann::json metrics() const;

 private:
  struct Virtio {
    std::shared_ptr<VirtioDevice> device;
    std::shared_ptr<VirtioPciDevice> transport;
  };
  struct Block {
    std::shared_ptr<VirtioBlock> device;
    std::string path;
  };
  std::vector<UniqueFd> fds_;
  std::vector<std::shared_ptr<Device>> platform_;
  std::shared_ptr<I8042> i8042_;
  std::shared_ptr<VmGenId> vmgenid_;
  std::shared_ptr<KvmInterruptController> ic_;
  std::shared_ptr<MsiRouter> router_;
  std::vector<Virtio> virtio_;
  std::shared_ptr<PciBus> pci_;
  std::vector<Block> blocks_;
  std::vector<std::shared_ptr<VirtioNet>> nets_;
  std::vector<std::function<std::string()>> extra_stats_;
  bool stopped_ = false;
};

}  // namespace ringvm
