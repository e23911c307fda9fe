#include "devices/virtio/mmio.h"

#include <linux/virtio_config.h>

#include <algorithm>
#include <cstring>

#include "base/log.h"
#include "devices/virtio/worker.h"

namespace ringvm {

namespace {

constexpr uint32_t kVendor = 0x554d4551;  // the value QEMU and others use; drivers ignore it
constexpr uint32_t kIntUsedBuffer = 1u << 0;
constexpr uint32_t kIntConfigChange = 1u << 1;

uint64_t set_half(uint64_t v, bool high, uint32_t half) {
  return high ? (v & 0xffff'ffffULL) | (uint64_t{half} << 32) : (v & ~0xffff'ffffULL) | half;
}

}  // namespace

std::string virtio_mmio_cmdline(uint64_t base, uint32_t irq, uint64_t size) {
  if (size % (1 << 20) == 0) return fmt::format("virtio_mmio.device={}M@{:#x}:{}", size >> 20, base, irq);
  if (size % 1024 == 0) return fmt::format("virtio_mmio.device={}K@{:#x}:{}", size >> 10, base, irq);
  return fmt::format("virtio_mmio.device={}@{:#x}:{}", size, base, irq);
}

Result<std::unique_ptr<VirtioMmioDevice>> VirtioMmioDevice::create(std::shared_ptr<VirtioDevice> device,
                                                                    const GuestMemory& mem, InterruptLine irq) {
  if (!device) return make_error(ErrorCode::kInvalidArgument, "virtio-mmio: no device");
  std::unique_ptr<VirtioMmioDevice> d(new VirtioMmioDevice(std::move(device), mem, std::move(irq)));
  for (size_t i = 0; i < d->queues_.size(); ++i)
    d->kick_fds_.push_back(TRY(make_eventfd(fmt::format("{} queue {} kick", d->name_, i))));
  return d;
}

VirtioMmioDevice::VirtioMmioDevice(std::shared_ptr<VirtioDevice> device, const GuestMemory& mem, InterruptLine irq)
    : device_(std::move(device)), mem_(mem), irq_(std::move(irq)) {
  name_ = fmt::format("virtio-mmio-{}", device_->name());
  for (uint16_t max : device_->queue_max_sizes()) queues_.push_back(std::make_unique<VirtQueue>(max));
  device_->config_changed = [this] {
    {
      std::lock_guard lock(mu_);
      ++config_generation_;
    }
    raise(kIntConfigChange);
  };
}

VirtioMmioDevice::~VirtioMmioDevice() {
  std::lock_guard lock(mu_);
  if (active_) device_->reset();
  device_->config_changed = nullptr;
}

int VirtioMmioDevice::kick_fd(uint16_t queue) const {
  return queue < kick_fds_.size() ? kick_fds_[queue].get() : -1;
}

uint32_t VirtioMmioDevice::status() const {
  std::lock_guard lock(mu_);
  return status_;
}

void VirtioMmioDevice::raise(uint32_t bits) {
  std::lock_guard lock(irq_mu_);
  interrupt_status_ |= bits;
  if (irq_) irq_(true);
}

VirtQueue* VirtioMmioDevice::selected() {
  return queue_sel_ < queues_.size() ? queues_[queue_sel_].get() : nullptr;
}

void VirtioMmioDevice::read(uint64_t offset, std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), 0);
  if (offset >= kConfig) {
    device_->read_config(offset - kConfig, data);
    return;
  }
  // Registers are 32-bit only (spec 4.2.2.2); other widths read as zero.
  if (data.size() != 4 || offset % 4 != 0) return;
  const uint32_t v = read_reg(offset);
  std::memcpy(data.data(), &v, 4);
}

void VirtioMmioDevice::write(uint64_t offset, std::span<const uint8_t> data) {
  if (offset >= kConfig) {
    std::lock_guard lock(mu_);
    device_->write_config(offset - kConfig, data);
    return;
  }
  if (data.size() != 4 || offset % 4 != 0) {
    RINGVM_LOG_RATELIMITED(warn, "{}: ignored {}-byte register write at {:#x}", name_, data.size(), offset);
    return;
  }
  uint32_t v;
  std::memcpy(&v, data.data(), 4);
  write_reg(offset, v);
}

uint32_t VirtioMmioDevice::read_reg(uint64_t offset) {
  if (offset == kInterruptStatus) {
    std::lock_guard lock(irq_mu_);
    return interrupt_status_;
  }
  std::lock_guard lock(mu_);
  VirtQueue* q = selected();
  switch (offset) {
    case kMagic: return kMagicValue;
    case kVersion: return 2;
    case kDeviceId: return device_->device_type();
    case kVendorId: return kVendor;
    case kDeviceFeatures: {
      const uint64_t f = device_->device_features();
      return device_features_sel_ == 0 ? static_cast<uint32_t>(f)
             : device_features_sel_ == 1 ? static_cast<uint32_t>(f >> 32)
                                         : 0;
    }
    case kQueueNumMax: return q ? q->max_size() : 0;
    case kQueueReady: return q && q->ready() ? 1 : 0;
    case kStatus: {
      // A queue the driver broke (avail idx ran away) needs a reset to recover.
      uint32_t s = status_;
      if (active_)
        for (const auto& vq : queues_)
          if (vq->broken()) s |= VIRTIO_CONFIG_S_NEEDS_RESET;
      return s;
    }
    case kConfigGeneration: return config_generation_;
    default: return 0;
  }
}

void VirtioMmioDevice::write_reg(uint64_t offset, uint32_t value) {
  switch (offset) {
    case kQueueNotify:
      // The kick fd is read by the device's worker; a bogus index is simply ignored.
      if (value < kick_fds_.size()) signal_eventfd(kick_fds_[value].get());
      return;
    case kInterruptAck: {
      std::lock_guard lock(irq_mu_);
      interrupt_status_ &= ~value;
      if (interrupt_status_ == 0 && irq_) irq_(false);
      return;
    }
    default: break;
  }
  std::lock_guard lock(mu_);
  // Queue and feature registers are frozen once the device runs (the driver must reset first).
  const bool frozen = active_ || (status_ & VIRTIO_CONFIG_S_FAILED);
  VirtQueue* q = selected();
  switch (offset) {
    case kDeviceFeaturesSel: device_features_sel_ = value; break;
    case kDriverFeaturesSel: driver_features_sel_ = value; break;
    case kDriverFeatures:
      if (frozen || (status_ & VIRTIO_CONFIG_S_FEATURES_OK) || driver_features_sel_ > 1) break;
      driver_features_ = set_half(driver_features_, driver_features_sel_ == 1, value);
      break;
    case kQueueSel: queue_sel_ = value; break;
    case kQueueNum:
      if (q && !frozen) q->set_size(static_cast<uint16_t>(std::min<uint32_t>(value, 0xffff)));
      break;
    case kQueueReady:
      if (q && !frozen) q->set_ready(value == 1);
      break;
    case kQueueDescLow:
    case kQueueDescHigh:
      if (q && !frozen) q->set_desc_addr(set_half(q->desc_addr(), offset == kQueueDescHigh, value));
      break;
    case kQueueDriverLow:
    case kQueueDriverHigh:
      if (q && !frozen) q->set_avail_addr(set_half(q->avail_addr(), offset == kQueueDriverHigh, value));
      break;
    case kQueueDeviceLow:
    case kQueueDeviceHigh:
      if (q && !frozen) q->set_used_addr(set_half(q->used_addr(), offset == kQueueDeviceHigh, value));
      break;
    case kStatus: write_status(value); break;
    default:
      RINGVM_LOG_RATELIMITED(debug, "{}: ignored write {:#x} to register {:#x}", name_, value, offset);
      break;
  }
}

void VirtioMmioDevice::reset_locked() {
  if (active_) device_->reset();  // joins the device's workers: no more notify() calls
  active_ = false;
  for (auto& q : queues_) q->reset();
  status_ = 0;
  driver_features_ = 0;
  device_features_sel_ = driver_features_sel_ = queue_sel_ = 0;
  std::lock_guard lock(irq_mu_);
  interrupt_status_ = 0;
  if (irq_) irq_(false);
}

void VirtioMmioDevice::write_status(uint32_t value) {
  if (value == 0) {
    reset_locked();
    return;
  }
  const uint32_t added = value & ~status_;
  if (added & VIRTIO_CONFIG_S_FEATURES_OK) {
    // Only features we offered, and a virtio 1.x driver: otherwise FEATURES_OK does not stick,
    // which is how the spec tells the driver it was refused.
    const uint64_t offered = device_->device_features();
    if ((driver_features_ & ~offered) != 0 || !(driver_features_ & (1ULL << VIRTIO_F_VERSION_1))) {
      RINGVM_LOG_RATELIMITED(warn, "{}: refused driver features {:#x} (offered {:#x})", name_, driver_features_,
                             offered);
      value &= ~uint32_t{VIRTIO_CONFIG_S_FEATURES_OK};
    }
  }
  status_ = value;
  if ((added & VIRTIO_CONFIG_S_DRIVER_OK) && (status_ & VIRTIO_CONFIG_S_FEATURES_OK) && !active_) {
    std::vector<ActivatedQueue> aqs;
    for (size_t i = 0; i < queues_.size(); ++i) {
      ActivatedQueue aq;
      aq.queue = queues_[i].get();
      aq.kick_fd = kick_fds_[i].get();
      aq.notify = [this] { raise(kIntUsedBuffer); };
      aqs.push_back(std::move(aq));
    }
    auto r = device_->activate(mem_, driver_features_, std::move(aqs));
    if (r.ok()) {
      active_ = true;
    } else {
      RINGVM_LOG_RATELIMITED(warn, "{}: activation failed, device needs reset: {}", name_, r.error().message());
      status_ |= VIRTIO_CONFIG_S_NEEDS_RESET;
      // raise() takes irq_mu_ only, never mu_, so calling it here cannot deadlock.
      raise(kIntConfigChange);
    }
  }
}

}  // namespace ringvm
