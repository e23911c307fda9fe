#include "kvm/vm.h"

#include <sys/ioctl.h>

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
  return KvmVcpu(std::move(vfd), std::move(run), id);
}

}  // namespace ringvm
