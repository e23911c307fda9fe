#include "kvm/vm.h"

#include <sys/ioctl.h>
#include <time.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kvm/kvm_abi.h"
#include "kvm/system.h"
#include "kvm/vcpu.h"

namespace ringvm {

int KvmVm::check_extension(long cap) const {
  const int r = ::ioctl(fd_.get(), KVM_CHECK_EXTENSION, cap);
  return r < 0 ? 0 : r;
}

Result<void> KvmVm::set_user_memory_region(uint32_t slot, uint64_t gpa, uint64_t size, void* host, uint32_t flags) {
  kvm_userspace_memory_region r{};
  r.slot = slot;
  r.flags = flags;
  r.guest_phys_addr = gpa;
  r.memory_size = size;
  r.userspace_addr = reinterpret_cast<uint64_t>(host);
  if (::ioctl(fd_.get(), KVM_SET_USER_MEMORY_REGION, &r) != 0)
    return sys_error(fmt::format("KVM_SET_USER_MEMORY_REGION slot {} at {:#x} size {:#x}", slot, gpa, size));
  auto it = std::lower_bound(slots_.begin(), slots_.end(), slot,
                             [](const MemorySlot& m, uint32_t s) { return m.slot < s; });
  if (it != slots_.end() && it->slot == slot) {
    if (size == 0) {
      slots_.erase(it);
    } else {
      *it = MemorySlot{slot, gpa, size, flags};
    }
  } else if (size != 0) {
    slots_.insert(it, MemorySlot{slot, gpa, size, flags});
  }
  return Ok();
}

namespace {
const MemorySlot* find_slot(const std::vector<MemorySlot>& slots, uint32_t slot) {
  for (const auto& m : slots)
    if (m.slot == slot) return &m;
  return nullptr;
}
}  // namespace

Result<std::vector<uint64_t>> KvmVm::get_dirty_log(uint32_t slot, uint64_t slot_bytes) {
  const MemorySlot* m = find_slot(slots_, slot);
  if (m == nullptr) return make_error(ErrorCode::kNotFound, "KVM_GET_DIRTY_LOG: memory slot {} is not registered", slot);
  // KVM writes a bitmap for the slot's real size: a smaller buffer would be overrun.
  if (slot_bytes != m->size)
    return make_error(ErrorCode::kInvalidArgument, "KVM_GET_DIRTY_LOG: memory slot {} is {:#x} bytes, not {:#x}",
                      slot, m->size, slot_bytes);
  if ((m->flags & KVM_MEM_LOG_DIRTY_PAGES) == 0)
    return make_error(ErrorCode::kInvalidArgument,
                      "KVM_GET_DIRTY_LOG: memory slot {} was registered without KVM_MEM_LOG_DIRTY_PAGES", slot);
  const uint64_t pages = (m->size + kDirtyPageSize - 1) / kDirtyPageSize;
  std::vector<uint64_t> bitmap((pages + 63) / 64, 0);
  kvm_dirty_log log{};
  log.slot = slot;
  log.dirty_bitmap = bitmap.data();
  if (::ioctl(fd_.get(), KVM_GET_DIRTY_LOG, &log) != 0)
    return sys_error(fmt::format("KVM_GET_DIRTY_LOG slot {}", slot));
  return bitmap;
}

bool KvmVm::manual_dirty_log_protect_supported() const {
  return (check_extension(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2) & KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE) != 0;
}

Result<void> KvmVm::enable_manual_dirty_log_protect() {
  kvm_enable_cap cap{};
  cap.cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2;
  cap.args[0] = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE;
  if (::ioctl(fd_.get(), KVM_ENABLE_CAP, &cap) != 0)
    return sys_error("KVM_ENABLE_CAP(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2)");
  return Ok();
}

Result<void> KvmVm::clear_dirty_log(uint32_t slot, uint64_t first_page, uint32_t num_pages,
                                    std::span<const uint64_t> bitmap) {
  const MemorySlot* m = find_slot(slots_, slot);
  if (m == nullptr)
    return make_error(ErrorCode::kNotFound, "KVM_CLEAR_DIRTY_LOG: memory slot {} is not registered", slot);
  const uint64_t pages = (m->size + kDirtyPageSize - 1) / kDirtyPageSize;
  // KVM reads ceil(num_pages / 64) words from `bitmap`.
  if (first_page > pages || num_pages > pages - first_page || bitmap.size() < (uint64_t{num_pages} + 63) / 64)
    return make_error(ErrorCode::kOutOfRange,
                      "KVM_CLEAR_DIRTY_LOG slot {}: pages {}+{} with a {}-word bitmap do not fit a {}-page slot", slot,
                      first_page, num_pages, bitmap.size(), pages);
  kvm_clear_dirty_log c{};
  c.slot = slot;
  c.first_page = first_page;
  c.num_pages = num_pages;
  // SAFETY: KVM only reads the bitmap (checked above to cover num_pages bits).
  c.dirty_bitmap = const_cast<uint64_t*>(bitmap.data());
  if (::ioctl(fd_.get(), KVM_CLEAR_DIRTY_LOG, &c) != 0)
    return sys_error(fmt::format("KVM_CLEAR_DIRTY_LOG slot {} pages {}+{}", slot, first_page, num_pages));
  return Ok();
}

Result<void> KvmVm::map_memory(const GuestMemory& mem, uint32_t first_slot, uint32_t flags) {
  uint32_t slot = first_slot;
  for (const auto& region : mem.regions())
    RETURN_IF_ERROR(set_user_memory_region(slot++, region.gpa, region.size(), region.host.data(), flags));
  return Ok();
}

Result<void> KvmVm::set_tss_addr(uint64_t addr) {
  if (::ioctl(fd_.get(), KVM_SET_TSS_ADDR, static_cast<unsigned long>(addr)) != 0)
    return sys_error("KVM_SET_TSS_ADDR");
  return Ok();
}

Result<void> KvmVm::set_identity_map_addr(uint64_t addr) {
  if (::ioctl(fd_.get(), KVM_SET_IDENTITY_MAP_ADDR, &addr) != 0) return sys_error("KVM_SET_IDENTITY_MAP_ADDR");
  return Ok();
}

Result<void> KvmVm::create_irqchip() {
  if (::ioctl(fd_.get(), KVM_CREATE_IRQCHIP, 0) != 0) return sys_error("KVM_CREATE_IRQCHIP");
  has_irqchip_ = true;
  return Ok();
}

Result<void> KvmVm::set_max_halt_poll_ns(uint32_t ns) {
  kvm_enable_cap cap{};
  cap.cap = KVM_CAP_HALT_POLL;
  cap.args[0] = ns;
  if (::ioctl(fd_.get(), KVM_ENABLE_CAP, &cap) != 0) return sys_error("KVM_ENABLE_CAP(KVM_CAP_HALT_POLL)");
  return Ok();
}

Result<void> KvmVm::create_pit2() {
  kvm_pit_config cfg{};
  cfg.flags = KVM_PIT_SPEAKER_DUMMY;
  if (::ioctl(fd_.get(), KVM_CREATE_PIT2, &cfg) != 0) return sys_error("KVM_CREATE_PIT2");
  has_pit_ = true;
  return Ok();
}

Result<void> KvmVm::set_irq_line(uint32_t gsi, bool level) {
  kvm_irq_level l{};
  l.irq = gsi;
  l.level = level ? 1 : 0;
  if (::ioctl(fd_.get(), KVM_IRQ_LINE, &l) != 0) return sys_error(fmt::format("KVM_IRQ_LINE gsi {}", gsi));
  return Ok();
}

Result<void> KvmVm::set_gsi_routing(std::span<const kvm_irq_routing_entry> entries) {
  // C layout (kvm_abi.h): the header, then the entries.
  std::vector<uint8_t> buf(sizeof(kvm_abi::IrqRoutingHeader) + entries.size_bytes());
  const kvm_abi::IrqRoutingHeader hdr{static_cast<uint32_t>(entries.size()), 0};
  std::memcpy(buf.data(), &hdr, sizeof hdr);
  if (!entries.empty()) std::memcpy(buf.data() + sizeof hdr, entries.data(), entries.size_bytes());
  if (::ioctl(fd_.get(), kvm_abi::kSetGsiRouting, buf.data()) != 0) return sys_error("KVM_SET_GSI_ROUTING");
  return Ok();
}

Result<void> KvmVm::register_irqfd(int eventfd, uint32_t gsi, int resample_fd) {
  kvm_irqfd f{};
  f.fd = static_cast<uint32_t>(eventfd);
  f.gsi = gsi;
  if (resample_fd >= 0) {
    f.flags = KVM_IRQFD_FLAG_RESAMPLE;
    f.resamplefd = static_cast<uint32_t>(resample_fd);
  }
  if (::ioctl(fd_.get(), KVM_IRQFD, &f) != 0) return sys_error(fmt::format("KVM_IRQFD gsi {}", gsi));
  return Ok();
}

Result<void> KvmVm::unregister_irqfd(int eventfd, uint32_t gsi) {
  kvm_irqfd f{};
  f.fd = static_cast<uint32_t>(eventfd);
  f.gsi = gsi;
  f.flags = KVM_IRQFD_FLAG_DEASSIGN;
  if (::ioctl(fd_.get(), KVM_IRQFD, &f) != 0) return sys_error(fmt::format("KVM_IRQFD deassign gsi {}", gsi));
  return Ok();
}

static kvm_ioeventfd make_ioeventfd(int eventfd, uint64_t addr, uint32_t len, bool pio,
                                    std::optional<uint64_t> datamatch) {
  kvm_ioeventfd e{};
  e.addr = addr;
  e.len = len;
  e.fd = eventfd;
  if (pio) e.flags |= KVM_IOEVENTFD_FLAG_PIO;
  if (datamatch) {
    e.flags |= KVM_IOEVENTFD_FLAG_DATAMATCH;
    e.datamatch = *datamatch;
  }
  return e;
}

Result<void> KvmVm::register_ioeventfd(int eventfd, uint64_t addr, uint32_t len, bool pio,
                                       std::optional<uint64_t> datamatch) {
  auto e = make_ioeventfd(eventfd, addr, len, pio, datamatch);
  if (::ioctl(fd_.get(), KVM_IOEVENTFD, &e) != 0)
    return sys_error(fmt::format("KVM_IOEVENTFD at {:#x} ({})", addr, pio ? "pio" : "mmio"));
  return Ok();
}

Result<void> KvmVm::unregister_ioeventfd(int eventfd, uint64_t addr, uint32_t len, bool pio,
                                         std::optional<uint64_t> datamatch) {
  auto e = make_ioeventfd(eventfd, addr, len, pio, datamatch);
  e.flags |= KVM_IOEVENTFD_FLAG_DEASSIGN;
  if (::ioctl(fd_.get(), KVM_IOEVENTFD, &e) != 0)
    return sys_error(fmt::format("KVM_IOEVENTFD deassign at {:#x}", addr));
  return Ok();
}

Result<void> KvmVm::signal_msi(uint64_t address, uint32_t data) {
  kvm_msi m{};
  m.address_lo = static_cast<uint32_t>(address);
  m.address_hi = static_cast<uint32_t>(address >> 32);
  m.data = data;
  if (::ioctl(fd_.get(), KVM_SIGNAL_MSI, &m) < 0) return sys_error("KVM_SIGNAL_MSI");
  return Ok();
}

Result<KvmVcpu> KvmVm::create_vcpu(uint32_t id) const {
  const int fd = ::ioctl(fd_.get(), KVM_CREATE_VCPU, static_cast<unsigned long>(id));
  if (fd < 0) return sys_error(fmt::format("KVM_CREATE_VCPU {}", id));
  UniqueFd vfd(fd);
  const int size = sys_->vcpu_mmap_size();
  if (size < static_cast<int>(sizeof(kvm_run))) return sys_error("KVM_GET_VCPU_MMAP_SIZE");
  auto run = TRY(MappedRegion::shared(vfd.get(), static_cast<size_t>(size)));
  const int xsave2 = check_extension(KVM_CAP_XSAVE2);
  return KvmVcpu(std::move(vfd), std::move(run), id, VcpuHost{sys_, xsave2 > 0 ? static_cast<uint32_t>(xsave2) : 0});
}

namespace {

Result<kvm_irqchip> get_irqchip(int vm_fd, uint32_t chip_id) {
  kvm_irqchip c{};
  c.chip_id = chip_id;
  if (::ioctl(vm_fd, KVM_GET_IRQCHIP, &c) != 0) return sys_error(fmt::format("KVM_GET_IRQCHIP chip {}", chip_id));
  return c;
}

Result<void> set_irqchip(int vm_fd, const kvm_irqchip& c) {
  if (::ioctl(vm_fd, KVM_SET_IRQCHIP, &c) != 0) return sys_error(fmt::format("KVM_SET_IRQCHIP chip {}", c.chip_id));
  return Ok();
}

uint64_t realtime_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

}  // namespace

Result<KvmVmState> KvmVm::save_state() const {
  KvmVmState s;
  if (has_irqchip_) {
    KvmVmState::Irqchip chips;
    chips.pic_master = TRY(get_irqchip(fd_.get(), KVM_IRQCHIP_PIC_MASTER));
    chips.pic_slave = TRY(get_irqchip(fd_.get(), KVM_IRQCHIP_PIC_SLAVE));
    chips.ioapic = TRY(get_irqchip(fd_.get(), KVM_IRQCHIP_IOAPIC));
    s.irqchip = chips;
  }
  if (has_pit_) {
    kvm_pit_state2 pit{};
    if (::ioctl(fd_.get(), KVM_GET_PIT2, &pit) != 0) return sys_error("KVM_GET_PIT2");
    s.pit = pit;
  }
  if (::ioctl(fd_.get(), KVM_GET_CLOCK, &s.clock) != 0) return sys_error("KVM_GET_CLOCK");
  s.host_realtime_ns = realtime_ns();
  // Keep only the flags a state may carry (a newer kernel may report more).
  s.clock.flags &= KvmVmState::kClockFlags;
  return s;
}

Result<void> KvmVm::restore_state(const KvmVmState& s, bool clock_realtime) {
  if (s.irqchip.has_value() != has_irqchip_)
    return make_error(ErrorCode::kInvalidArgument, "{}",
                      s.irqchip ? "the snapshot holds an in-kernel PIC and IOAPIC; this VM has no in-kernel irqchip"
                                : "the snapshot was taken without an in-kernel irqchip; this VM has one");
  if (s.pit && !has_pit_)
    return make_error(ErrorCode::kUnsupported,
                      "the snapshot holds an in-kernel PIT; this VM has none (KVM_CREATE_PIT2 failed or was not "
                      "called: PVM hosts have no in-kernel PIT)");
  if (s.irqchip) {
    RETURN_IF_ERROR(set_irqchip(fd_.get(), s.irqchip->pic_master));
    RETURN_IF_ERROR(set_irqchip(fd_.get(), s.irqchip->pic_slave));
    RETURN_IF_ERROR(set_irqchip(fd_.get(), s.irqchip->ioapic));
  }
  if (s.pit && ::ioctl(fd_.get(), KVM_SET_PIT2, &*s.pit) != 0) return sys_error("KVM_SET_PIT2");

  kvm_clock_data c{};
  c.clock = s.clock.clock;
  if (clock_realtime) {
    const bool kvm_realtime = (s.clock.flags & KVM_CLOCK_REALTIME) != 0 &&
                              (check_extension(KVM_CAP_ADJUST_CLOCK) & KVM_CLOCK_REALTIME) != 0;
    if (kvm_realtime) {
      c.flags = KVM_CLOCK_REALTIME;
      c.realtime = s.clock.realtime;
    } else {
      // The host cannot do it: add the real time elapsed ourselves, from the saved pair when
      // KVM gave one, else from our own reading at save time.
      const uint64_t then = (s.clock.flags & KVM_CLOCK_REALTIME) != 0 ? s.clock.realtime : s.host_realtime_ns;
      const uint64_t now = realtime_ns();
      if (now > then) c.clock += now - then;
    }
  }
  if (::ioctl(fd_.get(), KVM_SET_CLOCK, &c) != 0)
    return sys_error(fmt::format("KVM_SET_CLOCK{}", c.flags != 0 ? " with KVM_CLOCK_REALTIME" : ""));
  return Ok();
}

}  // namespace ringvm
