// KvmVm: one VM fd — memory slots, the in-kernel irqchip and PIT, irqfd, ioeventfd, vCPUs.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <optional>
#include <span>

#include "base/result.h"
#include "base/unique_fd.h"
#include "memory/guest_memory.h"

namespace ringvm {

class KvmSystem;
class KvmVcpu;

class KvmVm {
 public:
  KvmVm(UniqueFd fd, const KvmSystem* sys) : fd_(std::move(fd)), sys_(sys) {}
  int fd() const { return fd_.get(); }
  const KvmSystem& system() const { return *sys_; }
  int check_extension(long cap) const;

  // Registers every region of `mem` as a memory slot (slot numbers from `first_slot`).
  Result<void> map_memory(const GuestMemory& mem, uint32_t first_slot = 0, uint32_t flags = 0);
  Result<void> set_user_memory_region(uint32_t slot, uint64_t gpa, uint64_t size, void* host, uint32_t flags = 0);

  // x86 housekeeping that must precede vCPU creation on Intel (harmless elsewhere).
  Result<void> set_tss_addr(uint64_t addr);
  Result<void> set_identity_map_addr(uint64_t addr);

  Result<void> create_irqchip();          // PIC + IOAPIC + LAPICs in the kernel
  // KVM_CAP_HALT_POLL: the longest a halted vCPU's thread polls for a wake-up before it sleeps
  // (overrides the kvm.halt_poll_ns module parameter for this VM; 0 turns polling off).
  Result<void> set_max_halt_poll_ns(uint32_t ns);
  Result<void> create_pit2();             // fails on PVM hosts: callers treat that as optional
  Result<void> set_irq_line(uint32_t gsi, bool level);
  // Replaces the whole GSI routing table.
  Result<void> set_gsi_routing(std::span<const kvm_irq_routing_entry> entries);

  // Interrupts without a vCPU exit: signalling `eventfd` injects `gsi`.
  Result<void> register_irqfd(int eventfd, uint32_t gsi, int resample_fd = -1);
  Result<void> unregister_irqfd(int eventfd, uint32_t gsi);
  // Guest writes to [addr, addr+len) (matching `datamatch` if given) signal `eventfd` in-kernel.
  Result<void> register_ioeventfd(int eventfd, uint64_t addr, uint32_t len, bool pio,
                                  std::optional<uint64_t> datamatch = std::nullopt);
  Result<void> unregister_ioeventfd(int eventfd, uint64_t addr, uint32_t len, bool pio,
                                    std::optional<uint64_t> datamatch = std::nullopt);
  // KVM_SIGNAL_MSI: a one-off MSI (when irqfd routing is not set up).
  Result<void> signal_msi(uint64_t address, uint32_t data);

  Result<KvmVcpu> create_vcpu(uint32_t id) const;

 private:
  UniqueFd fd_;
  const KvmSystem* sys_;
};

}  // namespace ringvm
