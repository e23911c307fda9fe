// FakeDriver: the driver side of a split virtqueue, for unit tests and fuzzers. It lays out the
// rings in a GuestMemory it owns, publishes chains of any shape (including malformed ones) and
// reads back the used ring. Header-only so test binaries and fuzz targets can share it.
#pragma once

#include <endian.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "devices/virtio/ring_abi.h"
#include "devices/virtio/queue.h"
#include "memory/guest_memory.h"

namespace ringvm::testing {

class FakeDriver {
 public:
  // Memory: [0, mem_bytes). Rings at fixed addresses below 64 KiB; buffers from 64 KiB up.
  static constexpr uint64_t kDescAddr = 0x1000;
  static constexpr uint64_t kAvailAddr = 0x5000;
  static constexpr uint64_t kUsedAddr = 0x6000;
  static constexpr uint64_t kIndirectAddr = 0x8000;  // scratch for indirect tables
  static constexpr uint64_t kDataAddr = 0x10000;

  explicit FakeDriver(uint16_t size = 16, uint64_t mem_bytes = 1 << 20) : size_(size) {
    if (!mem_.add_region(0, mem_bytes).ok()) std::abort();
  }

  const GuestMemory& mem() const { return mem_; }
  uint16_t size() const { return size_; }

  // Points `q` at this driver's rings.
  void configure(VirtQueue& q) const {
    q.set_size(size_);
    q.set_desc_addr(kDescAddr);
    q.set_avail_addr(kAvailAddr);
    q.set_used_addr(kUsedAddr);
    q.set_ready(true);
  }

  void set_desc(uint16_t i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next = 0,
                uint64_t table = kDescAddr) {
    vring_desc d{htole64(addr), htole32(len), htole16(flags), htole16(next)};
    (void)mem_.write_obj(table + uint64_t{i} * sizeof(vring_desc), d);
  }

  // Publishes `head` in the avail ring and bumps avail idx.
  void publish(uint16_t head) {
    (void)mem_.store_shared<uint16_t>(kAvailAddr + 4 + 2 * (avail_idx_ % size_), htole16(head));
    ++avail_idx_;
    set_avail_idx(avail_idx_);
  }
  void set_avail_idx(uint16_t idx) {
    avail_idx_ = idx;
    (void)mem_.store_shared<uint16_t>(kAvailAddr + 2, htole16(idx));
  }
  void set_avail_flags(uint16_t flags) { (void)mem_.store_shared<uint16_t>(kAvailAddr, htole16(flags)); }
  void set_used_event(uint16_t v) { (void)mem_.store_shared<uint16_t>(kAvailAddr + 4 + 2 * size_, htole16(v)); }
  uint16_t avail_event() const { return le16toh(*mem_.load_shared<uint16_t>(kUsedAddr + 4 + 8 * size_)); }

  uint16_t used_idx() const { return le16toh(*mem_.load_shared<uint16_t>(kUsedAddr + 2)); }
  vring_used_elem used(uint16_t i) const {
    auto e = *mem_.read_obj<vring_used_elem>(kUsedAddr + 4 + 8 * uint64_t{static_cast<uint16_t>(i % size_)});
    return {le32toh(e.id), le32toh(e.len)};
  }

  // Builds a well-formed direct chain at descriptors [first, first+n) of readable then writable
  // buffers of the given lengths, placed in the data area, and publishes it. Returns the head.
  uint16_t add_chain(uint16_t first, const std::vector<uint32_t>& readable, const std::vector<uint32_t>& writable) {
    const size_t n = readable.size() + writable.size();
    for (size_t k = 0; k < n; ++k) {
      const bool w = k >= readable.size();
      const uint32_t len = w ? writable[k - readable.size()] : readable[k];
      uint16_t flags = w ? VRING_DESC_F_WRITE : 0;
      if (k + 1 < n) flags |= VRING_DESC_F_NEXT;
      set_desc(static_cast<uint16_t>(first + k), alloc(len), len, flags, static_cast<uint16_t>(first + k + 1));
    }
    publish(first);
    return first;
  }

  // A buffer of `len` bytes in the data area.
  uint64_t alloc(uint32_t len) {
    const uint64_t a = next_data_;
    next_data_ += (len + 15) & ~uint64_t{15};
    return a;
  }

 private:
  GuestMemory mem_;
  uint16_t size_;
  uint16_t avail_idx_ = 0;
  uint64_t next_data_ = kDataAddr;
};

}  // namespace ringvm::testing
