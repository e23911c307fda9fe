#include "devices/virtio/virtio_pci.h"

#include <linux/pci_regs.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <linux/virtio_pci.h>
#include <unistd.h>

#include <array>
#include <bit>
#include <cstddef>
#include <cstring>

#include "base/log.h"
#include "base/state_codec.h"
#include "devices/virtio/worker.h"
#include "memory/guest_memory.h"

namespace ringvm {
namespace {

constexpr uint16_t kNoVector = VIRTIO_MSI_NO_VECTOR;
constexpr uint8_t kIsrQueue = 0x1;                      // ISR bit 0: a queue was used
constexpr uint8_t kIsrConfig = VIRTIO_PCI_ISR_CONFIG;   // ISR bit 1: configuration changed
// The common config as Linux 6.x sees it: virtio_pci_common_cfg, then queue_notify_data and
// queue_reset (both 16-bit; zero here since we offer neither feature).
constexpr size_t kCommonSize = sizeof(virtio_pci_common_cfg) + 4;
constexpr size_t kIsrSize = 1;
// Transport features this implementation does not support, whatever the device offers.
constexpr uint64_t kUnsupportedTransportFeatures =
    (1ULL << 38 /* VIRTIO_F_NOTIFICATION_DATA */) | (1ULL << 39 /* VIRTIO_F_NOTIF_CONFIG_DATA */) |
    (1ULL << VIRTIO_F_RING_RESET);

uint32_t class_code(uint32_t type) {
  switch (type) {
    case VIRTIO_ID_NET: return 0x020000;      // network controller, Ethernet
    case VIRTIO_ID_BLOCK: return 0x010000;    // mass storage, SCSI (as QEMU)
    case VIRTIO_ID_CONSOLE: return 0x078000;  // communication controller, other
    case VIRTIO_ID_VSOCK: return 0x078000;
    default: return 0xFF0000;                 // device does not fit a defined class
  }
}

std::vector<uint8_t> vendor_cap(uint8_t cfg_type, uint32_t offset, uint32_t length, int bar = VirtioPciDevice::kBar) {
  virtio_pci_cap cap{};
  cap.cap_vndr = PCI_CAP_ID_VNDR;
  cap.cap_len = sizeof(cap);
  cap.cfg_type = cfg_type;
  cap.bar = static_cast<uint8_t>(bar);
  cap.offset = offset;
  cap.length = length;
  std::vector<uint8_t> out(sizeof(cap));
  std::memcpy(out.data(), &cap, sizeof(cap));
  return out;
}

bool overlaps(uint64_t offset, size_t len, size_t field, size_t field_len) {
  return offset < field + field_len && field < offset + len;
}

uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }

}  // namespace

VirtioPciDevice::VirtioPciDevice(std::shared_ptr<VirtioDevice> device, const GuestMemory& mem,
                                 InterruptController& ic, bool pio_notify)
    : device_(std::move(device)),
      mem_(mem),
      ic_(ic),
      name_(fmt::format("virtio-pci-{}", device_->name())),
      cfg_(PciIds{kVendor, static_cast<uint16_t>(kDeviceIdBase + device_->device_type()), 1,
                  class_code(device_->device_type()), kVendor, kSubsystemId}),
      pio_notify_(pio_notify),
      config_vector_(kNoVector) {}

Result<std::shared_ptr<VirtioPciDevice>> VirtioPciDevice::create(std::shared_ptr<VirtioDevice> device,
                                                                 const GuestMemory& mem, InterruptController& ic,
                                                                 MsiRouter& router,
                                                                 const VirtioPciOptions& options) {
  if (!device) return make_error(ErrorCode::kInvalidArgument, "virtio-pci: no device given");
  if (device->device_type() == 0 || device->device_type() > 0x3F)
    return make_error(ErrorCode::kInvalidArgument, "virtio-pci {}: device type {} has no modern PCI ID",
                      device->name(), device->device_type());
  std::shared_ptr<VirtioPciDevice> d(new VirtioPciDevice(std::move(device), mem, ic, options.pio_notify));
  RETURN_IF_ERROR(d->init(router));
  return d;
}

Result<void> VirtioPciDevice::init(MsiRouter& router) {
  const auto sizes = device_->queue_max_sizes();
  if (sizes.empty() || sizes.size() > kMaxQueues)
    return make_error(ErrorCode::kInvalidArgument, "{}: {} queues; 1 to {} are supported", name_, sizes.size(),
                      kMaxQueues);
  for (size_t i = 0; i < sizes.size(); ++i) {
    if (!std::has_single_bit(sizes[i]))
      return make_error(ErrorCode::kInvalidArgument, "{}: queue {} maximum size {} is not a power of two", name_,
                        i, sizes[i]);
    auto q = std::make_unique<Queue>(sizes[i]);
    q->kick = TRY(make_eventfd(fmt::format("{} queue {} kick", name_, i)));
    q->msix_vector.store(kNoVector);
    queues_.push_back(std::move(q));
  }
  offered_features_ = device_->device_features() & ~kUnsupportedTransportFeatures;

  // One vector per queue and one for configuration changes, as Linux asks for.
  msix_ = TRY(MsixTable::create(static_cast<uint16_t>(queues_.size() + 1), router));
  pba_offset_ = kMsixTableOffset + align_up(msix_->table_bytes(), 0x1000);
  bar_size_ = std::bit_ceil(pba_offset_ + align_up(msix_->pba_bytes(), 0x1000));

  RETURN_IF_ERROR(cfg_.set_bar(kBar, PciBarInfo{bar_size_, false, true, false}));
  const uint32_t notify_length = static_cast<uint32_t>(queues_.size() * kNotifyMultiplier);
  pio_notify_ = pio_notify_ && queues_.size() <= kMaxPioNotifyQueues;
  if (pio_notify_) {
    io_bar_size_ = std::bit_ceil(uint64_t{notify_length});
    RETURN_IF_ERROR(cfg_.set_bar(kNotifyIoBar, PciBarInfo{io_bar_size_, true, false, false}));
  }
  cfg_.set_interrupt_pin(1);  // INTA, for drivers that do not enable MSI-X
  TRY(cfg_.add_msix_capability(*msix_, kBar, static_cast<uint32_t>(kMsixTableOffset), kBar,
                               static_cast<uint32_t>(pba_offset_)));
  TRY(cfg_.add_capability(vendor_cap(VIRTIO_PCI_CAP_COMMON_CFG, kCommonOffset, sizeof(virtio_pci_common_cfg))));
  TRY(cfg_.add_capability(vendor_cap(VIRTIO_PCI_CAP_ISR_CFG, kIsrOffset, kIsrSize)));
  TRY(cfg_.add_capability(vendor_cap(VIRTIO_PCI_CAP_DEVICE_CFG, kDeviceConfigOffset, kDeviceConfigSize)));
  virtio_pci_notify_cap notify{};
  const auto base = vendor_cap(VIRTIO_PCI_CAP_NOTIFY_CFG, static_cast<uint32_t>(notify_offset()), notify_length,
                               notify_bar());
  std::memcpy(&notify.cap, base.data(), sizeof(notify.cap));
  notify.cap.cap_len = sizeof(notify);
  notify.notify_off_multiplier = kNotifyMultiplier;
  std::vector<uint8_t> notify_bytes(sizeof(notify));
  std::memcpy(notify_bytes.data(), &notify, sizeof(notify));
  TRY(cfg_.add_capability(notify_bytes));
  // The PCI config access window: bar, offset, length and data are the driver's to write.
  virtio_pci_cfg_cap window{};
  const auto window_base = vendor_cap(VIRTIO_PCI_CAP_PCI_CFG, 0, 0);
  std::memcpy(&window.cap, window_base.data(), sizeof(window.cap));
  window.cap.cap_len = sizeof(window);
  std::vector<uint8_t> window_bytes(sizeof(window)), window_mask(sizeof(window), 0);
  std::memcpy(window_bytes.data(), &window, sizeof(window));
  window_mask[offsetof(virtio_pci_cap, bar)] = 0xFF;
  for (size_t i = 0; i < 4; ++i) {
    window_mask[offsetof(virtio_pci_cap, offset) + i] = 0xFF;
    window_mask[offsetof(virtio_pci_cap, length) + i] = 0xFF;
    window_mask[offsetof(virtio_pci_cfg_cap, pci_cfg_data) + i] = 0xFF;
  }
  pci_cfg_cap_ = TRY(cfg_.add_capability(window_bytes, window_mask));

  device_->config_changed = [this] {
    config_generation_.fetch_add(1, std::memory_order_acq_rel);
    signal(config_vector_.load(std::memory_order_acquire), kIsrConfig);
  };
  return Ok();
}

VirtioPciDevice::~VirtioPciDevice() {
  std::lock_guard lock(mu_);
  if (active_) device_->reset();
  device_->config_changed = nullptr;
  if (notify_base_ != 0) set_ioeventfds_locked(notify_base_, false);
}

uint8_t VirtioPciDevice::status() const {
  std::lock_guard lock(mu_);
  return status_;
}

std::optional<VirtioPciDevice::CfgWindow> VirtioPciDevice::cfg_window_locked(uint16_t offset, uint8_t size) const {
  const auto at = [this](size_t field) { return static_cast<uint16_t>(pci_cfg_cap_ + field); };
  const uint16_t data = at(offsetof(virtio_pci_cfg_cap, pci_cfg_data));
  if (pci_cfg_cap_ == 0 || offset + size <= data || offset >= data + 4) return std::nullopt;
  CfgWindow w;
  w.data_offset = data;
  const uint32_t bar = cfg_.read(at(offsetof(virtio_pci_cap, bar)), 1);
  w.bar = static_cast<int>(bar);
  w.bar_offset = cfg_.read(at(offsetof(virtio_pci_cap, offset)), 4);
  w.length = cfg_.read(at(offsetof(virtio_pci_cap, length)), 4);
  // The spec allows 1, 2 or 4 bytes, naturally aligned, inside a BAR; anything else does nothing.
  const uint64_t bar_bytes = bar == kBar ? bar_size_ : pio_notify_ && bar == kNotifyIoBar ? io_bar_size_ : 0;
  w.valid = (w.length == 1 || w.length == 2 || w.length == 4) && w.bar_offset % w.length == 0 &&
            uint64_t{w.bar_offset} + w.length <= bar_bytes;
  return w;
}

uint32_t VirtioPciDevice::config_read(uint16_t offset, uint8_t size) {
  std::optional<CfgWindow> w;
  {
    std::lock_guard lock(mu_);
    w = cfg_window_locked(offset, size);
    if (!w) return cfg_.read(offset, size);
  }
  // A read of pci_cfg_data is a BAR read (outside mu_: bar_read takes it).
  std::array<uint8_t, 4> bytes{};
  if (w->valid) bar_read(w->bar, w->bar_offset, std::span<uint8_t>(bytes.data(), w->length));
  uint32_t v;
  std::memcpy(&v, bytes.data(), 4);
  std::lock_guard lock(mu_);
  cfg_.write(w->data_offset, 4, v);
  return cfg_.read(offset, size);
}

void VirtioPciDevice::config_write(uint16_t offset, uint8_t size, uint32_t value) {
  std::optional<CfgWindow> w;
  uint32_t v = 0;
  {
    std::lock_guard lock(mu_);
    cfg_.write(offset, size, value);
    w = cfg_window_locked(offset, size);
    if (!w || !w->valid) return;
    v = cfg_.read(w->data_offset, 4);
  }
  // A write of pci_cfg_data is a BAR write of `length` bytes.
  std::array<uint8_t, 4> bytes;
  std::memcpy(bytes.data(), &v, 4);
  bar_write(w->bar, w->bar_offset, std::span<const uint8_t>(bytes.data(), w->length));
}

void VirtioPciDevice::attached(uint8_t /*slot*/, uint32_t intx_gsi) {
  intx_gsi_.store(intx_gsi);
  has_intx_.store(true);
}

void VirtioPciDevice::bar_read(int bar, uint64_t offset, std::span<uint8_t> data) {
  std::memset(data.data(), 0, data.size());
  if (bar != kBar) return;
  if (offset >= kCommonOffset && offset < kCommonOffset + kCommonSize) {
    common_read(offset - kCommonOffset, data);
  } else if (offset == kIsrOffset) {
    data[0] = read_isr();
  } else if (offset >= kDeviceConfigOffset && offset - kDeviceConfigOffset + data.size() <= kDeviceConfigSize) {
    device_->read_config(offset - kDeviceConfigOffset, data);
  } else if (offset >= kMsixTableOffset && offset < kMsixTableOffset + msix_->table_bytes()) {
    msix_->table_read(offset - kMsixTableOffset, data);
  } else if (offset >= pba_offset_ && offset < pba_offset_ + msix_->pba_bytes()) {
    msix_->pba_read(offset - pba_offset_, data);
  }
}

void VirtioPciDevice::bar_write(int bar, uint64_t offset, std::span<const uint8_t> data) {
  if (bar == notify_bar() && offset >= notify_offset() &&
      offset < notify_offset() + queues_.size() * kNotifyMultiplier) {
    // Only reached when the ioeventfd did not catch the write (not registered, or another
    // access width): same effect, one exit slower.
    const uint64_t q = (offset - notify_offset()) / kNotifyMultiplier;
    signal_eventfd(queues_[q]->kick.get());
    return;
  }
  if (bar != kBar) return;
  if (offset >= kCommonOffset && offset < kCommonOffset + kCommonSize) {
    common_write(offset - kCommonOffset, data);
  } else if (offset >= kDeviceConfigOffset && offset - kDeviceConfigOffset + data.size() <= kDeviceConfigSize) {
    device_->write_config(offset - kDeviceConfigOffset, data);
  } else if (offset >= kMsixTableOffset && offset < kMsixTableOffset + msix_->table_bytes()) {
    msix_->table_write(offset - kMsixTableOffset, data);
  }
}

void VirtioPciDevice::bar_moved(int bar, uint64_t old_base, uint64_t new_base) {
  if (bar != notify_bar()) return;
  std::lock_guard lock(mu_);
  if (old_base != 0 && old_base == notify_base_) set_ioeventfds_locked(old_base, false);
  notify_base_ = new_base;
  if (new_base != 0) set_ioeventfds_locked(new_base, true);
}

void VirtioPciDevice::set_ioeventfds_locked(uint64_t base, bool assign) {
  // Linux writes the 16-bit queue index to the doorbell; a write of another width falls back to
  // bar_write().
  constexpr uint32_t kDoorbellWidth = 2;
  for (size_t q = 0; q < queues_.size(); ++q) {
    const uint64_t addr = base + notify_offset() + q * kNotifyMultiplier;
    const int fd = queues_[q]->kick.get();
    auto r = assign ? ic_.register_ioeventfd(fd, addr, kDoorbellWidth, pio_notify_)
                    : ic_.unregister_ioeventfd(fd, addr, kDoorbellWidth, pio_notify_);
    if (!r.ok())
      spdlog::warn("{}: queue {} doorbell at {} {:#x} stays on the slow path: {}", name_, q,
                   pio_notify_ ? "port" : "address", addr, r.error().message());
  }
}

std::vector<uint8_t> VirtioPciDevice::common_snapshot_locked() const {
  virtio_pci_common_cfg c{};
  c.device_feature_select = device_feature_select_;
  c.device_feature = device_feature_select_ == 0   ? static_cast<uint32_t>(offered_features_)
                     : device_feature_select_ == 1 ? static_cast<uint32_t>(offered_features_ >> 32)
                                                   : 0;
  c.guest_feature_select = driver_feature_select_;
  c.guest_feature = driver_feature_select_ == 0   ? static_cast<uint32_t>(driver_features_)
                    : driver_feature_select_ == 1 ? static_cast<uint32_t>(driver_features_ >> 32)
                                                  : 0;
  c.msix_config = config_vector_.load();
  c.num_queues = static_cast<uint16_t>(queues_.size());
  c.device_status = status_;
  for (const auto& q : queues_)
    if (q->vq.broken()) c.device_status |= VIRTIO_CONFIG_S_NEEDS_RESET;
  c.config_generation = config_generation_.load();
  c.queue_select = queue_select_;
  if (queue_select_ < queues_.size()) {
    const Queue& q = *queues_[queue_select_];
    c.queue_size = q.vq.size();
    c.queue_msix_vector = q.msix_vector.load();
    c.queue_enable = q.vq.ready() ? 1 : 0;
    c.queue_notify_off = queue_select_;
    c.queue_desc_lo = static_cast<uint32_t>(q.vq.desc_addr());
    c.queue_desc_hi = static_cast<uint32_t>(q.vq.desc_addr() >> 32);
    c.queue_avail_lo = static_cast<uint32_t>(q.vq.avail_addr());
    c.queue_avail_hi = static_cast<uint32_t>(q.vq.avail_addr() >> 32);
    c.queue_used_lo = static_cast<uint32_t>(q.vq.used_addr());
    c.queue_used_hi = static_cast<uint32_t>(q.vq.used_addr() >> 32);
  }
  std::vector<uint8_t> out(kCommonSize, 0);
  std::memcpy(out.data(), &c, sizeof(c));
  return out;
}

void VirtioPciDevice::common_read(uint64_t offset, std::span<uint8_t> data) {
  if (offset + data.size() > kCommonSize) return;
  std::lock_guard lock(mu_);
  const auto snap = common_snapshot_locked();
  std::memcpy(data.data(), snap.data() + offset, data.size());
}

void VirtioPciDevice::common_write(uint64_t offset, std::span<const uint8_t> data) {
  if (offset + data.size() > kCommonSize) return;
  std::lock_guard lock(mu_);
  // Merge the write into the current view, then apply every field it touched: this handles any
  // access width the same way.
  auto snap = common_snapshot_locked();
  std::memcpy(snap.data() + offset, data.data(), data.size());
  virtio_pci_common_cfg c;
  std::memcpy(&c, snap.data(), sizeof(c));
#define TOUCHED(field) overlaps(offset, data.size(), offsetof(virtio_pci_common_cfg, field), sizeof(c.field))
  if (TOUCHED(device_feature_select)) device_feature_select_ = c.device_feature_select;
  if (TOUCHED(guest_feature_select)) driver_feature_select_ = c.guest_feature_select;
  if (TOUCHED(guest_feature) && !(status_ & VIRTIO_CONFIG_S_FEATURES_OK) && driver_feature_select_ < 2) {
    const unsigned shift = driver_feature_select_ * 32;
    driver_features_ = (driver_features_ & ~(0xFFFFFFFFULL << shift)) | (uint64_t{c.guest_feature} << shift);
  }
  if (TOUCHED(msix_config)) config_vector_.store(c.msix_config < msix_->size() ? c.msix_config : kNoVector);
  if (TOUCHED(queue_select)) queue_select_ = c.queue_select;
  const bool frozen = (status_ & VIRTIO_CONFIG_S_DRIVER_OK) != 0;
  if (queue_select_ < queues_.size() && !frozen) {
    Queue& q = *queues_[queue_select_];
    if (TOUCHED(queue_size)) {
      if (c.queue_size != 0 && std::has_single_bit(c.queue_size) && c.queue_size <= q.vq.max_size()) {
        q.vq.set_size(c.queue_size);
      } else {
        RINGVM_LOG_RATELIMITED(warn, "{}: queue {} size {} refused (power of two up to {})", name_, queue_select_,
                               c.queue_size, q.vq.max_size());
      }
    }
    if (TOUCHED(queue_msix_vector))
      q.msix_vector.store(c.queue_msix_vector < msix_->size() ? c.queue_msix_vector : kNoVector);
    if (TOUCHED(queue_enable) && c.queue_enable == 1) q.vq.set_ready(true);  // 0 is not allowed
    if (TOUCHED(queue_desc_lo) || TOUCHED(queue_desc_hi))
      q.vq.set_desc_addr((uint64_t{c.queue_desc_hi} << 32) | c.queue_desc_lo);
    if (TOUCHED(queue_avail_lo) || TOUCHED(queue_avail_hi))
      q.vq.set_avail_addr((uint64_t{c.queue_avail_hi} << 32) | c.queue_avail_lo);
    if (TOUCHED(queue_used_lo) || TOUCHED(queue_used_hi))
      q.vq.set_used_addr((uint64_t{c.queue_used_hi} << 32) | c.queue_used_lo);
  }
  if (TOUCHED(device_status)) write_status_locked(c.device_status);
#undef TOUCHED
}

void VirtioPciDevice::write_status_locked(uint8_t value) {
  if (value == 0) {
    reset_locked();
    return;
  }
  // NEEDS_RESET is the device's to set, never the driver's.
  value = static_cast<uint8_t>((value & ~VIRTIO_CONFIG_S_NEEDS_RESET) | (status_ & VIRTIO_CONFIG_S_NEEDS_RESET));
  const auto added = static_cast<uint8_t>(value & ~status_);
  if (added & VIRTIO_CONFIG_S_FEATURES_OK) {
    // Only features we offered, and a virtio 1.x driver: otherwise FEATURES_OK does not stick,
    // which is how the spec tells the driver it was refused.
    if ((driver_features_ & ~offered_features_) != 0 || !(driver_features_ & (1ULL << VIRTIO_F_VERSION_1))) {
      RINGVM_LOG_RATELIMITED(warn, "{}: refused driver features {:#x} (offered {:#x})", name_, driver_features_,
                             offered_features_);
      value = static_cast<uint8_t>(value & ~VIRTIO_CONFIG_S_FEATURES_OK);
    }
  }
  status_ = value;
  if ((added & VIRTIO_CONFIG_S_DRIVER_OK) && (status_ & VIRTIO_CONFIG_S_FEATURES_OK) && !active_) activate_locked();
}

void VirtioPciDevice::activate_locked() {
  std::vector<ActivatedQueue> aqs;
  for (size_t i = 0; i < queues_.size(); ++i) {
    Queue* q = queues_[i].get();
    ActivatedQueue aq;
    aq.queue = &q->vq;
    aq.kick_fd = q->kick.get();
    aq.notify = [this, q] { signal(q->msix_vector.load(std::memory_order_acquire), kIsrQueue); };
    aqs.push_back(std::move(aq));
  }
  auto r = device_->activate(mem_, driver_features_, std::move(aqs));
  if (r.ok()) {
    active_ = true;
    return;
  }
  RINGVM_LOG_RATELIMITED(warn, "{}: activation failed, device needs reset: {}", name_, r.error().message());
  status_ |= VIRTIO_CONFIG_S_NEEDS_RESET;
  signal(config_vector_.load(), kIsrConfig);  // signal() takes intx_mu_/MSI-X locks only
}

void VirtioPciDevice::reset_locked() {
  if (active_) device_->reset();  // joins the device's workers: no more notify() calls
  active_ = false;
  for (auto& q : queues_) {
    q->vq.reset();
    q->msix_vector.store(kNoVector);
    uint64_t stale;
    while (::read(q->kick.get(), &stale, sizeof(stale)) == sizeof(stale)) {
    }
  }
  status_ = 0;
  driver_features_ = 0;
  device_feature_select_ = driver_feature_select_ = 0;
  queue_select_ = 0;
  config_vector_.store(kNoVector);
  std::lock_guard lock(intx_mu_);
  isr_ = 0;
  if (line_high_) {
    (void)ic_.set_irq_line(intx_gsi_.load(), false);
    line_high_ = false;
  }
}

uint8_t VirtioPciDevice::read_isr() {
  std::lock_guard lock(intx_mu_);
  const uint8_t v = isr_;
  isr_ = 0;
  if (line_high_) {
    if (auto r = ic_.set_irq_line(intx_gsi_.load(), false); !r.ok())
      RINGVM_LOG_RATELIMITED(warn, "{}: lowering INTx: {}", name_, r.error().message());
    line_high_ = false;
  }
  return v;
}

void VirtioPciDevice::signal(uint16_t vector, uint8_t isr_bit) {
  if (msix_->enabled()) {
    if (vector != kNoVector) msix_->fire(vector);
    return;
  }
  std::lock_guard lock(intx_mu_);
  isr_ |= isr_bit;
  if (line_high_ || !has_intx_.load()) return;
  if (auto r = ic_.set_irq_line(intx_gsi_.load(), true); !r.ok()) {
    RINGVM_LOG_RATELIMITED(warn, "{}: raising INTx: {}", name_, r.error().message());
    return;
  }
  line_high_ = true;
}

Result<std::vector<uint8_t>> VirtioPciDevice::save() const {
  StateWriter w;
  std::lock_guard lock(mu_);
  w.u64(offered_features_);
  w.u8(status_);
  w.u32(device_feature_select_);
  w.u32(driver_feature_select_);
  w.u64(driver_features_);
  w.u16(queue_select_);
  w.u16(config_vector_.load());
  w.u8(config_generation_.load());
  w.u16(static_cast<uint16_t>(queues_.size()));
  for (const auto& q : queues_) {
    q->vq.save_state(w);
    w.u16(q->msix_vector.load());
  }
  {
    std::lock_guard intx(intx_mu_);
    w.u8(isr_);
    w.boolean(line_high_);
  }
  msix_->save_state(w);
  cfg_.save_state(w);
  return w.take();
}

Result<void> VirtioPciDevice::restore(std::span<const uint8_t> data) {
  StateReader r(data, name_);
  std::lock_guard lock(mu_);
  if (active_)
    return make_error(ErrorCode::kInvalidArgument, "{}: restore needs a transport that was never activated",
                      name_);
  // Everything is read and checked first; only then is anything changed.
  const uint64_t offered = TRY(r.u64("offered features"));
  if (offered != offered_features_)
    return r.corrupt(fmt::format("the saved device offered features {:#x}; this one offers {:#x}", offered,
                                 offered_features_));
  const uint8_t status = TRY(r.u8("device status"));
  const uint32_t device_feature_select = TRY(r.u32("device feature select"));
  const uint32_t driver_feature_select = TRY(r.u32("driver feature select"));
  const uint64_t driver_features = TRY(r.u64("driver features"));
  if ((status & VIRTIO_CONFIG_S_FEATURES_OK) &&
      ((driver_features & ~offered_features_) != 0 || !(driver_features & (1ULL << VIRTIO_F_VERSION_1))))
    return r.corrupt(
        fmt::format("FEATURES_OK with driver features {:#x}, which were not acceptable (offered {:#x})",
                    driver_features, offered_features_));
  const uint16_t queue_select = TRY(r.u16("queue select"));
  const auto check_vector = [&](std::string_view field, uint16_t v) -> Result<void> {
    if (v != kNoVector && v >= msix_->size())
      return r.corrupt(
          fmt::format("{} {} is neither an MSI-X vector (0..{}) nor NO_VECTOR", field, v, msix_->size() - 1));
    return Ok();
  };
  const uint16_t config_vector = TRY(r.u16("config MSI-X vector"));
  RETURN_IF_ERROR(check_vector("config MSI-X vector", config_vector));
  const uint8_t config_generation = TRY(r.u8("config generation"));
  const uint16_t nqueues = TRY(r.u16("queue count"));
  if (nqueues != queues_.size())
    return r.corrupt(fmt::format("{} queues saved; this device has {}", nqueues, queues_.size()));
  std::vector<VirtQueue::State> qstates;
  std::vector<uint16_t> qvectors;
  for (const auto& q : queues_) {
    qstates.push_back(TRY(q->vq.read_state(r, &mem_)));
    qvectors.push_back(TRY(r.u16("queue MSI-X vector")));
    RETURN_IF_ERROR(check_vector("queue MSI-X vector", qvectors.back()));
  }
  const uint8_t isr = TRY(r.u8("ISR"));
  if ((isr & ~(kIsrQueue | kIsrConfig)) != 0)
    return r.corrupt(fmt::format("ISR {:#x} has undefined bits", isr));
  const bool line_high = TRY(r.boolean("INTx line"));
  const MsixTable::State msix = TRY(msix_->read_state(r));
  const PciConfigSpace::State cfg = TRY(cfg_.read_state(r));
  RETURN_IF_ERROR(r.finish());

  // The only step that can fail (the router refusing the routes) comes first and changes
  // nothing when it does.
  RETURN_IF_ERROR(msix_->restore_state(msix));
  cfg_.restore_state(cfg);
  status_ = status;
  device_feature_select_ = device_feature_select;
  driver_feature_select_ = driver_feature_select;
  driver_features_ = driver_features;
  queue_select_ = queue_select;
  config_vector_.store(config_vector);
  config_generation_.store(config_generation);
  for (size_t i = 0; i < queues_.size(); ++i) {
    queues_[i]->vq.restore_state(qstates[i]);
    queues_[i]->msix_vector.store(qvectors[i]);
  }
  {
    std::lock_guard intx(intx_mu_);
    isr_ = isr;
    if (line_high != line_high_ && has_intx_.load()) {
      // The level the saved VM's line had; the irqchip's own state is the VM's to restore.
      if (auto l = ic_.set_irq_line(intx_gsi_.load(), line_high); l.ok())
        line_high_ = line_high;
      else
        spdlog::warn("{}: restoring the INTx line: {}", name_, l.error().message());
    }
  }
  constexpr uint8_t kLive = VIRTIO_CONFIG_S_DRIVER_OK | VIRTIO_CONFIG_S_FEATURES_OK;
  if ((status_ & kLive) == kLive && !(status_ & VIRTIO_CONFIG_S_NEEDS_RESET)) activate_locked();
  return Ok();
}

}  // namespace ringvm
