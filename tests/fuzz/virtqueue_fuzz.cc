// Fuzzes VirtQueue: the input becomes the queue's configuration and the guest memory it reads
// (descriptor table, avail ring, indirect tables), then chains are popped until the ring is
// empty. Every outcome is fine except a crash, a hang, a leak or a sanitizer report.
//
// Layout of the input: byte 0 = log2(size) and feature bits, bytes 1..6 = ring page numbers,
// the rest = guest memory contents from address 0.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "base/log.h"
#include "devices/virtio/queue.h"
#include "devices/virtio/ring_abi.h"
#include "memory/guest_memory.h"

namespace {

constexpr uint64_t kMemBytes = 64 * 1024;

const ringvm::GuestMemory& memory() {
  static ringvm::GuestMemory* mem = [] {
    auto* m = new ringvm::GuestMemory();
    if (!m->add_region(0, kMemBytes).ok()) __builtin_trap();
    return m;
  }();
  return *mem;
}

}  // namespace

// Rejected chains are logged (rate-limited); the fuzzer would spend its time formatting them.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 7) return 0;
  const auto& mem = memory();
  (void)mem.fill(0, 0, kMemBytes);
  const size_t n = std::min<size_t>(size - 7, kMemBytes);
  (void)mem.write(0, {data + 7, n});

  const uint16_t qsize = static_cast<uint16_t>(1u << (data[0] & 0x7));  // 1..128
  uint64_t features = 0;
  if (data[0] & 0x40) features |= 1ULL << VIRTIO_RING_F_INDIRECT_DESC;
  if (data[0] & 0x80) features |= 1ULL << VIRTIO_RING_F_EVENT_IDX;
  // Ring addresses: a 256-byte granule, sometimes unaligned or outside memory on purpose.
  auto addr = [&](int i) { return uint64_t{data[i]} * 256 + (data[i + 1] & 0x3); };

  ringvm::VirtQueue q(128);
  q.set_size((data[0] & 0x8) ? static_cast<uint16_t>(qsize + 1) : qsize);  // sometimes invalid
  q.set_desc_addr(addr(1));
  q.set_avail_addr(addr(3));
  q.set_used_addr(addr(5));
  q.set_ready(true);
  if (!q.activate(mem, features).ok()) return 0;
  // Bounded: each pop consumes at least one avail entry and at most `size` are pending.
  for (int i = 0; i < 4 * 128 + 8; ++i) {
    auto chain = q.pop();
    if (!chain) break;
    const uint64_t w = chain->writable_bytes();
    q.add_used(chain->head, static_cast<uint32_t>(w));
    (void)q.needs_notification();
  }
  (void)q.needs_notification();
  return 0;
}
