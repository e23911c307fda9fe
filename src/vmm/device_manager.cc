#include "vmm/device_manager.h"

#include "devices/legacy/i8042.h"
#include "devices/legacy/vmgenid.h"
#include "devices/pci/interrupt_controller.h"
#include "devices/pci/msi.h"
#include "devices/pci/pci_bus.h"
#include "devices/virtio/block/virtio_block.h"
#include "devices/virtio/net/virtio_net.h"
#include "devices/virtio/virtio_pci.h"

namespace ringvm {

DeviceManager::~DeviceManager() {
  stop_workers();
  // Newest first: the PCI bus and the transports use the MSI router and interrupt controller.
  pci_.reset();
  nets_.clear();
  blocks_.clear();
  while (!virtio_.empty()) virtio_.pop_back();
  router_.reset();
  ic_.reset();
  i8042_.reset();
  vmgenid_.reset();
  while (!platform_.empty()) platform_.pop_back();
}

void DeviceManager::set_i8042(std::shared_ptr<I8042> kbd) {
  i8042_ = kbd;
  platform_.push_back(std::move(kbd));
}

void DeviceManager::set_vmgenid(std::shared_ptr<VmGenId> gen) {
  vmgenid_ = gen;
  platform_.push_back(std::move(gen));
}

void DeviceManager::set_interrupts(std::shared_ptr<KvmInterruptController> ic,
                                   std::shared_ptr<MsiRouter> router) {
  ic_ = std::move(ic);
  router_ = std::move(router);
}

void DeviceManager::set_pci(std::shared_ptr<PciBus> pci) { pci_ = std::move(pci); }

void DeviceManager::add_virtio(std::shared_ptr<VirtioDevice> dev,
                               std::shared_ptr<VirtioPciDevice> transport) {
  virtio_.push_back({std::move(dev), std::move(transport)});
}

void DeviceManager::add_block(std::shared_ptr<VirtioBlock> dev, std::string path) {
  blocks_.push_back({std::move(dev), std::move(path)});
}

void DeviceManager::add_net(std::shared_ptr<VirtioNet> dev) { nets_.push_back(std::move(dev)); }

Result<void> DeviceManager::pause() {
  std::vector<Stateful*> order;
  for (auto& v : virtio_) order.push_back(v.device.get());
  for (auto& p : platform_) order.push_back(p.get());
  for (size_t i = 0; i < order.size(); ++i) {
    auto r = order[i]->pause();
    if (!r) {
      for (size_t k = i; k-- > 0;) (void)order[k]->resume();
      return wrap(std::move(r).error(), "pausing {}", order[i]->state_name());
    }
  }
  return Ok();
}

Result<void> DeviceManager::resume() {
  Result<void> first = Ok();
  for (auto it = platform_.rbegin(); it != platform_.rend(); ++it)
    if (auto r = (*it)->resume(); !r && first)
      first = wrap(std::move(r).error(), "resuming {}", (*it)->state_name());
  for (auto it = virtio_.rbegin(); it != virtio_.rend(); ++it)
    if (auto r = it->device->resume(); !r && first)
      first = wrap(std::move(r).error(), "resuming {}", it->device->state_name());
  return first;
}

Result<std::vector<NamedState>> DeviceManager::save_states() const {
  std::vector<NamedState> out;
  for (const auto& p : platform_) {
    auto data = p->save();
    if (!data) return wrap(std::move(data).error(), "snapshot");
    out.push_back({std::string(p->state_name()), std::move(*data)});
  }
  for (const auto& v : virtio_) {
    auto dev = v.device->save();
    if (!dev) return wrap(std::move(dev).error(), "snapshot");
    out.push_back({std::string(v.device->state_name()), std::move(*dev)});
    auto transport = v.transport->save();
    if (!transport) return wrap(std::move(transport).error(), "snapshot");
    out.push_back({std::string(v.transport->name()), std::move(*transport)});
  }
  if (pci_) {
    auto bus = pci_->save();
    if (!bus) return wrap(std::move(bus).error(), "snapshot");
    out.push_back({std::string(pci_->state_name()), std::move(*bus)});
  }
  return out;
}

Result<void> DeviceManager::restore_states(const std::vector<NamedState>& states) {
  std::vector<std::string> names;
  for (const auto& p : platform_) names.emplace_back(p->state_name());
  for (const auto& v : virtio_) {
    names.emplace_back(v.device->state_name());
    names.emplace_back(v.transport->name());
  }
  if (pci_) names.emplace_back(pci_->state_name());
  for (size_t i = 0; i < std::max(names.size(), states.size()); ++i) {
    if (i < names.size() && i < states.size() && names[i] == states[i].name) continue;
    return make_error(ErrorCode::kInvalidArgument,
                      "the snapshot's devices differ from this VM's: the snapshot has {} where this VM has {}; "
                      "restore with the configuration the snapshot was taken with",
                      i < states.size() ? fmt::format("`{}`", states[i].name) : std::string("nothing"),
                      i < names.size() ? fmt::format("`{}`", names[i]) : std::string("nothing"));
  }
  size_t i = 0;
  for (const auto& p : platform_) RETURN_IF_ERROR(p->restore(states[i++].data));
  // Each backend before its transport: the transport re-activates the backend it restores.
  for (const auto& v : virtio_) {
    RETURN_IF_ERROR(v.device->restore(states[i++].data));
    RETURN_IF_ERROR(v.transport->restore(states[i++].data));
  }
  // The bus last: it maps every BAR where the restored config spaces say.
  if (pci_) RETURN_IF_ERROR(pci_->restore(states[i++].data));
  return Ok();
}

Result<void> DeviceManager::flush_disks() {
  for (const auto& b : blocks_)
    if (auto r = b.device->flush(); !r) return wrap(std::move(r).error(), "flushing disk {} ({})", b.device->name(), b.path);
  return Ok();
}

void DeviceManager::stop_workers() {
  if (stopped_) return;
  stopped_ = true;
  for (auto& v : virtio_) v.device->reset();
}

std::string DeviceManager::stats_text() const {
  std::string out;
  for (const auto& line : extra_stats_) out += line();
  for (const auto& [dev, path] : blocks_) {
    const BlockStats& s = dev->stats();
    out += fmt::format(
        "  {} ({}): reads {} ({} bytes), writes {} ({} bytes), flushes {}, discards {}, "
        "write-zeroes {}, I/O errors {}, bad requests {}, unsupported {}, polls that found "
        "requests {} (that did not {}), batched serves {} (kicks deferred {}), merged {}, chained "
        "passes {}, late completion passes {}; kicks {}, interrupts {}\n",
        dev->name(), path, s.reads.load(), s.bytes_read.load(), s.writes.load(), s.bytes_written.load(),
        s.flushes.load(), s.discards.load(), s.write_zeroes.load(), s.io_errors.load(), s.bad_requests.load(),
        s.unsupported.load(), s.poll_hits.load(), s.poll_misses.load(), s.batches.load(), s.deferred.load(),
        s.merged.load(), s.chained.load(), s.late_reaps.load(), s.kicks.load(), s.interrupts.load());
  }
  for (const auto& dev : nets_) {
    const NetStats& s = dev->stats();
    out += fmt::format(
        "  {}: rx {} frames ({} bytes), rx drops {}, rx errors {}; tx {} frames ({} bytes), "
        "tx drops {}, tx errors {}, tx parked {}, ctrl errors {}, tx batches {} (kicks deferred {}, passes "
        "riding on receive {}), tx pinned to another queue {}; kicks rx {} tx {}, "
        "interrupts rx {} tx {} (early {}); workers raised to nice {:+} {} times\n",
        dev->name(), s.rx_frames.load(), s.rx_bytes.load(), s.rx_drops.load(), s.rx_errors.load(),
        s.tx_frames.load(), s.tx_bytes.load(), s.tx_drops.load(), s.tx_errors.load(), s.tx_parked.load(),
        s.ctrl_errors.load(), s.tx_batches.load(), s.tx_deferred.load(), s.tx_rx_polls.load(),
        s.tx_pinned.load(), s.rx_kicks.load(), s.tx_kicks.load(), s.rx_interrupts.load(),
        s.tx_interrupts.load(), s.tx_early_interrupts.load(), s.worker_nice.load(), s.worker_boosts.load());
  }
  return out;
}

nlohmann::json DeviceManager::metrics() const {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [dev, path] : blocks_) {
    const BlockStats& s = dev->stats();
    out["block"][std::string(dev->name())] = {
        {"read_count", s.reads.load()},      {"read_bytes", s.bytes_read.load()},
        {"write_count", s.writes.load()},    {"write_bytes", s.bytes_written.load()},
        {"flush_count", s.flushes.load()},   {"discard_count", s.discards.load()},
        {"io_errors", s.io_errors.load()},   {"invalid_reqs_count", s.bad_requests.load()},
        {"merged", s.merged.load()},         {"queue_kicks", s.kicks.load()},
        {"interrupts", s.interrupts.load()}, {"unsupported", s.unsupported.load()}};
  }
  for (const auto& dev : nets_) {
    const NetStats& s = dev->stats();
    out["net"][std::string(dev->name())] = {
        {"rx_packets_count", s.rx_frames.load()},  {"rx_bytes_count", s.rx_bytes.load()},
        {"rx_drops", s.rx_drops.load()},           {"rx_errors", s.rx_errors.load()},
        {"tx_packets_count", s.tx_frames.load()},  {"tx_bytes_count", s.tx_bytes.load()},
        {"tx_drops", s.tx_drops.load()},           {"tx_errors", s.tx_errors.load()},
        {"rx_queue_kicks", s.rx_kicks.load()},     {"tx_queue_kicks", s.tx_kicks.load()},
        {"rx_interrupts", s.rx_interrupts.load()}, {"tx_interrupts", s.tx_interrupts.load()}};
  }
  return out;
}

}  // namespace ringvm
