// NetTestDriver: the driver side of several split virtqueues in one guest memory, for the
// virtio-net and virtio-vsock unit tests and fuzzers (a device sees all its queues through one
// GuestMemory). Header-only; it builds well-formed chains and reads back the used rings.
#pragma once

#include <endian.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <vector>

#include "base/unique_fd.h"
#include "devices/virtio/net/tap.h"
#include "devices/virtio/queue.h"
#include "devices/virtio/ring_abi.h"
#include "memory/guest_memory.h"

namespace ringvm::testing {

class NetTestDriver {
 public:
  // Queue q's rings live at [q * kQueueStride, +kQueueStride); buffers from kDataAddr up.
  static constexpr uint64_t kQueueStride = 0x4000;
  static constexpr uint64_t kDataAddr = 0x100000;

  NetTestDriver(size_t queues, uint16_t size, uint64_t mem_bytes = 16 << 20) : queues_(queues), size_(size) {
    if (!mem_.add_region(0, mem_bytes).ok()) std::abort();
  }

  const GuestMemory& mem() const { return mem_; }

  void configure(size_t q, VirtQueue& vq) const {
    vq.set_size(size_);
    vq.set_desc_addr(desc(q));
    vq.set_avail_addr(avail(q));
    vq.set_used_addr(used_ring(q));
    vq.set_ready(true);
  }

  struct Buf {
    uint64_t addr;
    uint32_t len;
  };
  // Publishes a chain of readable then writable buffers on queue q; returns its head.
  uint16_t add_chain(size_t q, const std::vector<Buf>& readable, const std::vector<Buf>& writable) {
    auto& st = queues_[q];
    const size_t n = readable.size() + writable.size();
    const uint16_t head = st.next_desc;
    for (size_t k = 0; k < n; ++k) {
      const bool w = k >= readable.size();
      const Buf& b = w ? writable[k - readable.size()] : readable[k];
      const uint16_t i = static_cast<uint16_t>((head + k) % size_);
      uint16_t flags = w ? VRING_DESC_F_WRITE : 0;
      if (k + 1 < n) flags |= VRING_DESC_F_NEXT;
      vring_desc d{htole64(b.addr), htole32(b.len), htole16(flags),
                   htole16(static_cast<uint16_t>((i + 1) % size_))};
      (void)mem_.write_obj(desc(q) + uint64_t{i} * sizeof(vring_desc), d);
    }
    st.next_desc = static_cast<uint16_t>((head + n) % size_);
    (void)mem_.store_shared<uint16_t>(avail(q) + 4 + 2 * (st.avail_idx % size_), htole16(head));
    ++st.avail_idx;
    (void)mem_.store_shared<uint16_t>(avail(q) + 2, htole16(st.avail_idx));
    return head;
  }
  // A readable chain carrying `bytes`, split into pieces of at most `piece` bytes.
  uint16_t add_out(size_t q, std::span<const uint8_t> bytes, uint32_t piece = 1u << 20) {
    std::vector<Buf> r;
    for (size_t at = 0; at < bytes.size();) {
      const uint32_t n = static_cast<uint32_t>(std::min<size_t>(piece, bytes.size() - at));
      const uint64_t a = alloc(n);
      (void)mem_.write(a, bytes.subspan(at, n));
      r.push_back({a, n});
      at += n;
    }
    return add_chain(q, r, {});
  }
  // A writable chain of one buffer of `len` bytes; returns its address.
  uint64_t add_in(size_t q, uint32_t len) {
    const uint64_t a = alloc(len);
    add_chain(q, {}, {{a, len}});
    return a;
  }

  uint16_t used_idx(size_t q) const { return le16toh(*mem_.load_shared<uint16_t>(used_ring(q) + 2)); }
  uint16_t avail_idx(size_t q) const { return queues_[q].avail_idx; }
  // The device's EVENT_IDX request: kick when the avail idx moves past this.
  uint16_t avail_event(size_t q) const {
    return le16toh(*mem_.load_shared<uint16_t>(used_ring(q) + 4 + 8 * uint64_t{size_}));
  }
  vring_used_elem used(size_t q, uint16_t i) const {
    auto e =
        *mem_.read_obj<vring_used_elem>(used_ring(q) + 4 + 8 * uint64_t{static_cast<uint16_t>(i % size_)});
    return {le32toh(e.id), le32toh(e.len)};
  }
  std::vector<uint8_t> read(uint64_t addr, size_t len) const {
    std::vector<uint8_t> v(len);
    (void)mem_.read(addr, v);
    return v;
  }
  void write(uint64_t addr, std::span<const uint8_t> bytes) { (void)mem_.write(addr, bytes); }

  uint64_t alloc(uint32_t len) {
    const uint64_t a = next_data_;
    next_data_ += (len + 15) & ~uint64_t{15};
    if (next_data_ > mem_.total_size()) std::abort();
    return a;
  }

 private:
  struct QueueState {
    uint16_t avail_idx = 0;
    uint16_t next_desc = 0;
  };
  static uint64_t desc(size_t q) { return q * kQueueStride; }
  static uint64_t avail(size_t q) { return q * kQueueStride + 0x1000; }
  static uint64_t used_ring(size_t q) { return q * kQueueStride + 0x2000; }

  GuestMemory mem_;
  std::vector<QueueState> queues_;
  uint16_t size_;
  uint64_t next_data_ = kDataAddr;
};

// A backend of datagram socketpairs: the device gets one end of each, the test plays the host
// network on the other. Datagrams keep frame boundaries, as a tap does.
class SocketBackend final : public NetBackend {
 public:
  explicit SocketBackend(size_t queues, bool ufo = false) : ufo_(ufo) {
    for (size_t i = 0; i < queues; ++i) {
      int sv[2];
      if (::socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) std::abort();
      dev_.emplace_back(sv[0]);
      host_.emplace_back(sv[1]);
    }
  }
  std::string_view name() const override { return "socketpair"; }
  size_t queue_count() const override { return dev_.size(); }
  int queue_fd(size_t i) const override { return dev_[i].get(); }
  Result<void> set_offload(unsigned f) override {
    offload = f;
    return Ok();
  }
  Result<void> set_active_queues(size_t n) override {
    active = n;
    return Ok();
  }
  bool ufo_supported() const override { return ufo_; }

  int host(size_t i) const { return host_[i].get(); }
  unsigned offload = ~0u;
  size_t active = 0;

 private:
  bool ufo_;
  std::vector<UniqueFd> dev_, host_;
};

}  // namespace ringvm::testing
