// KvmVm: one VM fd — memory slots, the in-kernel irqchip and PIT, irqfd, ioeventfd, vCPUs.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"
#include "kvm/vm_state.h"
#include "memory/guest_memory.h"

namespace ringvm {

class KvmSystem;
class KvmVcpu;

// One KVM memory slot as this VM registered it.
struct MemorySlot {
  uint32_t slot = 0;
  uint64_t gpa = 0;
  uint64_t size = 0;   // bytes
  uint32_t flags = 0;  // KVM_MEM_* (KVM_MEM_LOG_DIRTY_PAGES for dirty tracking)
};

class KvmVm {
 public:
  // The dirty log has one bit per page of this size.
  static constexpr uint64_t kDirtyPageSize = 4096;

  KvmVm(UniqueFd fd, const KvmSystem* sys) : fd_(std::move(fd)), sys_(sys) {}
  int fd() const { return fd_.get(); }
  const KvmSystem& system() const { return *sys_; }
  int check_extension(long cap) const;

  // Registers every region of `mem` as a memory slot: mem.regions()[i] becomes slot
  // first_slot + i, with `flags` (KVM_MEM_LOG_DIRTY_PAGES to track dirty pages).
  Result<void> map_memory(const GuestMemory& mem, uint32_t first_slot = 0, uint32_t flags = 0);
  // size 0 deletes the slot.
  Result<void> set_user_memory_region(uint32_t slot, uint64_t gpa, uint64_t size, void* host, uint32_t flags = 0);
  // Every slot registered so far, in slot order.
  const std::vector<MemorySlot>& memory_slots() const { return slots_; }

  // KVM_GET_DIRTY_LOG: the pages of `slot` written since the last call (or since the slot was
  // registered), one bit per kDirtyPageSize page from the slot's start, bit i of word i / 64 for
  // page i; ceil(pages / 64) words. The slot must have been registered with
  // KVM_MEM_LOG_DIRTY_PAGES and `slot_bytes` must be its size. KVM clears the log as it returns
  // it, unless manual protection is enabled (below): then clear_dirty_log() does that.
  Result<std::vector<uint64_t>> get_dirty_log(uint32_t slot, uint64_t slot_bytes);
  // KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 (Linux 5.3+): KVM_GET_DIRTY_LOG no longer re-protects the
  // pages it reports; the caller clears (re-protects) ranges after it has copied them, which
  // keeps large VMs from stalling on one big write-protect.
  bool manual_dirty_log_protect_supported() const;
  // Enable it before registering slots with KVM_MEM_LOG_DIRTY_PAGES.
  Result<void> enable_manual_dirty_log_protect();
  // KVM_CLEAR_DIRTY_LOG: re-protects the pages whose bits are set in `bitmap` (bit i: page
  // first_page + i) among [first_page, first_page + num_pages). first_page must be a multiple of
  // 64, and num_pages too unless the range ends at the slot's end.
  Result<void> clear_dirty_log(uint32_t slot, uint64_t first_page, uint32_t num_pages,
                               std::span<const uint64_t> bitmap);

  // x86 housekeeping that must precede vCPU creation on Intel (harmless elsewhere).
  Result<void> set_tss_addr(uint64_t addr);
  Result<void> set_identity_map_addr(uint64_t addr);

  Result<void> create_irqchip();          // PIC + IOAPIC + LAPICs in the kernel
  bool has_irqchip() const { return has_irqchip_; }
  // KVM_CAP_HALT_POLL: the longest a halted vCPU's thread polls for a wake-up before it sleeps
  // (overrides the kvm.halt_poll_ns module parameter for this VM; 0 turns polling off).
  Result<void> set_max_halt_poll_ns(uint32_t ns);
  Result<void> create_pit2();             // fails on PVM hosts: callers treat that as optional
  bool has_pit() const { return has_pit_; }
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

  // The in-kernel PICs, IOAPIC and PIT (those this VM has) and the kvmclock. Save with every
  // vCPU stopped; the clock is read last.
  Result<KvmVmState> save_state() const;
  // Puts `s` back. The VM must have what the state has: an in-kernel irqchip exactly when the
  // state has one, and a PIT when the state has one (a VM with a PIT takes a state without one:
  // its PIT stays in reset state). Call after every vCPU's KvmVcpu::restore_state() and right
  // before the vCPUs run (after kvmclock_ctrl()): the kvmclock is set last, and the guest's
  // clock runs from that moment.
  //   clock_realtime false: the guest's kvmclock continues from the snapshot's value, as if no
  //     time had passed (KVM_SET_CLOCK with the saved clock).
  //   clock_realtime true: it is advanced by the real time elapsed since the snapshot, so the
  //     guest's wall clock is right at once. With KVM_CLOCK_REALTIME (Linux 5.16+, a TSC-based
  //     host clock) KVM computes the advance from the saved (clock, realtime) pair; otherwise
  //     this adds CLOCK_REALTIME now minus the CLOCK_REALTIME read at save (a few microseconds
  //     less exact: the save-side pair was not read atomically). Never moved backwards.
  Result<void> restore_state(const KvmVmState& s, bool clock_realtime);

 private:
  UniqueFd fd_;
  const KvmSystem* sys_;
  bool has_irqchip_ = false;
  bool has_pit_ = false;
  std::vector<MemorySlot> slots_;  // sorted by slot
};

}  // namespace ringvm
