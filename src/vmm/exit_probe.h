// What one VM exit costs on this host, measured: a throw-away VM whose single vCPU does a few
// dozen port writes (each a round trip guest -> KVM -> this process -> guest) and halts; the
// median of five such runs.
//
// The answer spans three orders of magnitude: ~2-5 µs on hardware-assisted KVM, tens of µs for
// nested virtualization on hardware (a cloud VM running ringvm), hundreds of µs in the lab's
// emulated AMD-V. Devices use it to decide whether coalescing notifications is worth the latency
// it adds (the "auto" batch_us of virtio-blk and virtio-net, docs/virtio.md "Batching").
#pragma once

#include <cstdint>

#include "base/result.h"

namespace ringvm {

class KvmSystem;

struct ExitCost {
  uint64_t round_trip_ns = 0;  // median over five runs of the per-exit mean of `exits`, after a warm-up run
  uint32_t exits = 0;          // per run
};

// Creates and destroys its own VM; `exits` port writes (at least 1). Fails only where a VM
// cannot be created or run (the caller then treats the cost as unknown).
Result<ExitCost> measure_exit_cost(const KvmSystem& kvm, uint32_t exits = 24);

// What a virtio doorbell costs the guest, both kinds, each caught by an ioeventfd in the kernel
// (no exit to userspace): a 16-bit port write and a 16-bit write to an unbacked guest-physical
// address. Real-mode guest, so the MMIO case is the cheapest an MMIO doorbell gets (a Linux
// guest's instruction fetch walks four levels of page tables). ns per write, median of five runs.
struct DoorbellCost {
  uint64_t pio_ns = 0;
  uint64_t mmio_ns = 0;
  uint32_t writes = 0;
};
Result<DoorbellCost> measure_doorbell_cost(const KvmSystem& kvm, uint32_t writes = 64);

// The coalescing window an "auto" batch_us picks for an exit that costs `round_trip_ns`: 0 (no
// coalescing) below kBatchAutoMinExitNs, where a timer wake-up costs as much as the exit it
// saves; otherwise four exits' worth, at most kBatchAutoMaxUs.
inline constexpr uint64_t kBatchAutoMinExitNs = 20'000;
inline constexpr uint32_t kBatchAutoMaxUs = 4000;
uint32_t auto_batch_us(uint64_t round_trip_ns);

}  // namespace ringvm
