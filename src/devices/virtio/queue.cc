#include "devices/virtio/queue.h"

#include <endian.h>

#include <bit>
#include <limits>

#include "base/log.h"
#include "base/state_codec.h"
#include "devices/virtio/ring_abi.h"
#include "memory/guest_memory.h"

namespace ringvm {

namespace {

// Byte offsets inside the rings (spec 2.7.6 and 2.7.8); the structs come from the UAPI header.
constexpr uint64_t kAvailRingOffset = offsetof(vring_avail, ring);
constexpr uint64_t kUsedRingOffset = offsetof(vring_used, ring);
constexpr uint64_t kAvailIdxOffset = offsetof(vring_avail, idx);
constexpr uint64_t kUsedIdxOffset = offsetof(vring_used, idx);
static_assert(sizeof(vring_desc) == 16 && sizeof(vring_used_elem) == 8);

// Ring sizes including the trailing event field (used_event / avail_event), which the spec
// counts as part of each ring whether or not EVENT_IDX is negotiated.
uint64_t desc_table_bytes(uint16_t n) { return uint64_t{n} * sizeof(vring_desc); }
uint64_t avail_ring_bytes(uint16_t n) { return kAvailRingOffset + 2 * uint64_t{n} + 2; }
uint64_t used_ring_bytes(uint16_t n) { return kUsedRingOffset + sizeof(vring_used_elem) * uint64_t{n} + 2; }

}  // namespace

std::string_view chain_error_name(ChainError e) {
  switch (e) {
    case ChainError::kHeadOutOfRange: return "head_out_of_range";
    case ChainError::kNextOutOfRange: return "next_out_of_range";
    case ChainError::kChainTooLong: return "chain_too_long";
    case ChainError::kZeroLength: return "zero_length";
    case ChainError::kBufferOutsideMemory: return "buffer_outside_memory";
    case ChainError::kReadableAfterWritable: return "readable_after_writable";
    case ChainError::kIndirectNotNegotiated: return "indirect_not_negotiated";
    case ChainError::kIndirectBadLength: return "indirect_bad_length";
    case ChainError::kIndirectWithNext: return "indirect_with_next";
    case ChainError::kNestedIndirect: return "nested_indirect";
    case ChainError::kRingUnreadable: return "ring_unreadable";
    case ChainError::kCount: break;
  }
  return "unknown";
}

uint64_t DescriptorChain::readable_bytes() const {
  uint64_t n = 0;
  for (const auto& b : readable) n += b.len;
  return n;
}

uint64_t DescriptorChain::writable_bytes() const {
  uint64_t n = 0;
  for (const auto& b : writable) n += b.len;
  return n;
}

uint64_t QueueStats::total_errors() const {
  uint64_t n = 0;
  for (const auto& e : errors) n += e.load();
  return n;
}

VirtQueue::VirtQueue(uint16_t max_size) : max_size_(max_size), size_(max_size) {}

void VirtQueue::reset() {
  size_ = max_size_;
  desc_addr_ = avail_addr_ = used_addr_ = 0;
  ready_ = false;
  mem_ = nullptr;
  event_idx_ = indirect_ = false;
  next_avail_ = next_used_ = signalled_used_ = 0;
  broken_.store(false, std::memory_order_release);
  positioned_ = false;
}

Result<void> VirtQueue::check_geometry(uint16_t size, uint16_t max_size, uint64_t desc, uint64_t avail,
                                       uint64_t used, const GuestMemory* mem) {
  if (size == 0 || size > max_size || !std::has_single_bit(size))
    return make_error(ErrorCode::kInvalidArgument,
                      "virtqueue size {} is invalid: it must be a power of two between 1 and {}", size,
                      max_size);
  if (desc % VRING_DESC_ALIGN_SIZE != 0 || avail % VRING_AVAIL_ALIGN_SIZE != 0 ||
      used % VRING_USED_ALIGN_SIZE != 0)
    return make_error(
        ErrorCode::kInvalidArgument,
        "virtqueue rings misaligned (desc {:#x} needs 16, avail {:#x} needs 2, used {:#x} needs 4)", desc,
        avail, used);
  if (mem == nullptr) return Ok();
  if (!mem->contains(desc, desc_table_bytes(size)))
    return make_error(ErrorCode::kOutOfRange,
                      "virtqueue descriptor table at {:#x} (size {}) is outside guest memory", desc, size);
  if (!mem->contains(avail, avail_ring_bytes(size)))
    return make_error(ErrorCode::kOutOfRange,
                      "virtqueue avail ring at {:#x} (size {}) is outside guest memory", avail, size);
  if (!mem->contains(used, used_ring_bytes(size)))
    return make_error(ErrorCode::kOutOfRange,
                      "virtqueue used ring at {:#x} (size {}) is outside guest memory", used, size);
  return Ok();
}

Result<void> VirtQueue::activate(const GuestMemory& mem, uint64_t features) {
  RETURN_IF_ERROR(check_geometry(size_, max_size_, desc_addr_, avail_addr_, used_addr_, &mem));
  mem_ = &mem;
  event_idx_ = (features & (1ULL << VIRTIO_RING_F_EVENT_IDX)) != 0;
  indirect_ = (features & (1ULL << VIRTIO_RING_F_INDIRECT_DESC)) != 0;
  if (!positioned_) {
    next_avail_ = next_used_ = signalled_used_ = 0;
    broken_.store(false, std::memory_order_release);
  }
  positioned_ = false;
  return Ok();
}

VirtQueue::State VirtQueue::state() const {
  State s;
  s.size = size_;
  s.desc_addr = desc_addr_;
  s.avail_addr = avail_addr_;
  s.used_addr = used_addr_;
  s.ready = ready_;
  // A queue restored but not yet re-activated is still "active" in the snapshot's sense.
  s.active = mem_ != nullptr || positioned_;
  s.next_avail = next_avail_;
  s.next_used = next_used_;
  s.signalled_used = signalled_used_;
  s.broken = broken();
  return s;
}

void VirtQueue::save_state(StateWriter& w) const {
  const State s = state();
  w.u16(s.size);
  w.u64(s.desc_addr);
  w.u64(s.avail_addr);
  w.u64(s.used_addr);
  w.boolean(s.ready);
  w.boolean(s.active);
  w.u16(s.next_avail);
  w.u16(s.next_used);
  w.u16(s.signalled_used);
  w.boolean(s.broken);
}

Result<VirtQueue::State> VirtQueue::read_state(StateReader& r, const GuestMemory* mem) const {
  State s;
  s.size = TRY(r.u16("queue size"));
  s.desc_addr = TRY(r.u64("queue desc address"));
  s.avail_addr = TRY(r.u64("queue avail address"));
  s.used_addr = TRY(r.u64("queue used address"));
  s.ready = TRY(r.boolean("queue ready"));
  s.active = TRY(r.boolean("queue active"));
  s.next_avail = TRY(r.u16("queue next avail"));
  s.next_used = TRY(r.u16("queue next used"));
  s.signalled_used = TRY(r.u16("queue signalled used"));
  s.broken = TRY(r.boolean("queue broken"));
  if (s.size == 0 || s.size > max_size_ || !std::has_single_bit(s.size))
    return r.corrupt(fmt::format("queue size {} is not a power of two between 1 and {}", s.size, max_size_));
  if (!s.active) {
    if (s.next_avail != 0 || s.next_used != 0 || s.signalled_used != 0 || s.broken)
      return r.corrupt(fmt::format("an inactive queue has indices {}/{}/{}{}", s.next_avail, s.next_used,
                                   s.signalled_used, s.broken ? " and is broken" : ""));
    return s;
  }
  const auto outstanding = static_cast<uint16_t>(s.next_avail - s.next_used);
  if (outstanding > s.size)
    return r.corrupt(fmt::format("queue next avail {} is {} chains ahead of next used {}; the size is {}",
                                 s.next_avail, outstanding, s.next_used, s.size));
  if (auto g = check_geometry(s.size, max_size_, s.desc_addr, s.avail_addr, s.used_addr, mem); !g.ok())
    return r.corrupt(g.error().message());
  return s;
}

void VirtQueue::restore_state(const State& s) {
  size_ = s.size;
  desc_addr_ = s.desc_addr;
  avail_addr_ = s.avail_addr;
  used_addr_ = s.used_addr;
  ready_ = s.ready;
  mem_ = nullptr;
  event_idx_ = indirect_ = false;
  next_avail_ = s.next_avail;
  next_used_ = s.next_used;
  signalled_used_ = s.signalled_used;
  broken_.store(s.broken, std::memory_order_release);
  positioned_ = s.active;
}

void VirtQueue::mark_broken(std::string_view why) {
  if (!broken_.exchange(true, std::memory_order_acq_rel))
    RINGVM_LOG_RATELIMITED(warn, "virtqueue stopped, device needs reset: {}", why);
}

void VirtQueue::reject(uint16_t head, ChainError e) {
  stats_.errors[static_cast<size_t>(e)].fetch_add(1, std::memory_order_relaxed);
  RINGVM_LOG_RATELIMITED(warn, "virtqueue: rejected descriptor chain {}: {}", head, chain_error_name(e));
  add_used(head, 0);
}

Result<uint16_t> VirtQueue::read_avail_idx() const {
  auto idx = TRY(mem_->load_shared<uint16_t>(avail_addr_ + kAvailIdxOffset));
  // Pairs with the driver's write barrier before it publishes idx: ring entries below idx are
  // only read after idx itself.
  std::atomic_thread_fence(std::memory_order_acquire);
  return le16toh(idx);
}

// The state of one chain walk: where descriptors come from (the ring's table or one indirect
// table) and the running totals the limits apply to.
struct VirtQueue::Walk {
  uint64_t table = 0;      // guest address of the current table
  uint32_t table_len = 0;  // its entry count
  bool in_indirect = false;
  uint32_t count = 0;  // descriptors seen so far, over all tables
  uint64_t bytes = 0;  // buffer bytes so far
};

bool VirtQueue::walk_chain(uint16_t head, DescriptorChain& chain) {
  chain.head = head;
  chain.readable.clear();
  chain.writable.clear();
  if (head >= size_) {
    reject(head, ChainError::kHeadOutOfRange);
    return false;
  }
  Walk w{desc_addr_, size_, false, 0, 0};
  uint16_t index = head;
  for (;;) {
    // A chain never holds more descriptors than the device's maximum queue size, in direct and
    // indirect tables together (spec 2.7.5.3.1); beyond that it is a loop or an abuse.
    if (++w.count > max_size_) {
      reject(head, ChainError::kChainTooLong);
      return false;
    }
    auto raw = mem_->read_obj<vring_desc>(w.table + uint64_t{index} * sizeof(vring_desc));
    if (!raw.ok()) {
      reject(head, ChainError::kRingUnreadable);
      return false;
    }
    const uint64_t addr = le64toh(raw->addr);
    const uint32_t len = le32toh(raw->len);
    const uint16_t flags = le16toh(raw->flags);
    const uint16_t next = le16toh(raw->next);

    if (flags & VRING_DESC_F_INDIRECT) {
      ChainError bad = ChainError::kCount;
      if (!indirect_) bad = ChainError::kIndirectNotNegotiated;
      else if (w.in_indirect) bad = ChainError::kNestedIndirect;
      else if (flags & VRING_DESC_F_NEXT) bad = ChainError::kIndirectWithNext;
      else if (len == 0 || len % sizeof(vring_desc) != 0 || len / sizeof(vring_desc) > max_size_)
        bad = ChainError::kIndirectBadLength;
      else if (!mem_->contains(addr, len))
        bad = ChainError::kBufferOutsideMemory;
      if (bad != ChainError::kCount) {
        reject(head, bad);
        return false;
      }
      // The indirect descriptor itself is not a buffer; its table replaces the rest of the chain
      // (it must be the last descriptor: NEXT was refused above).
      --w.count;
      w.table = addr;
      w.table_len = len / static_cast<uint32_t>(sizeof(vring_desc));
      w.in_indirect = true;
      index = 0;
      continue;
    }

    if (len == 0) {
      reject(head, ChainError::kZeroLength);
      return false;
    }
    if (!mem_->contains(addr, len)) {
      reject(head, ChainError::kBufferOutsideMemory);
      return false;
    }
    // add_used() reports a u32 length: a chain over 4 GiB is refused (spec 2.7.5.2).
    w.bytes += len;
    if (w.bytes > std::numeric_limits<uint32_t>::max()) {
      reject(head, ChainError::kChainTooLong);
      return false;
    }
    if (flags & VRING_DESC_F_WRITE) {
      chain.writable.push_back({addr, len});
    } else {
      if (!chain.writable.empty()) {
        reject(head, ChainError::kReadableAfterWritable);
        return false;
      }
      chain.readable.push_back({addr, len});
    }

    if (!(flags & VRING_DESC_F_NEXT)) return true;
    if (next >= w.table_len) {
      reject(head, ChainError::kNextOutOfRange);
      return false;
    }
    index = next;
  }
}

bool VirtQueue::has_available() const {
  if (mem_ == nullptr || broken()) return false;
  auto idx = read_avail_idx();
  return idx.ok() && *idx != next_avail_;
}

std::optional<DescriptorChain> VirtQueue::pop(Arm arm) {
  if (mem_ == nullptr || broken()) return std::nullopt;
  for (;;) {
    auto avail_idx = read_avail_idx();
    if (!avail_idx.ok()) {
      stats_.errors[static_cast<size_t>(ChainError::kRingUnreadable)].fetch_add(1);
      mark_broken("avail ring unreadable");
      return std::nullopt;
    }
    const uint16_t pending = static_cast<uint16_t>(*avail_idx - next_avail_);
    if (pending > size_) {
      mark_broken(fmt::format("avail idx {} is {} entries ahead of the device (queue size {})", *avail_idx,
                              pending, size_));
      return std::nullopt;
    }
    if (pending == 0) {
      if (!event_idx_ || arm == Arm::kNo) return std::nullopt;
      // Ask for a kick when the next buffer arrives, then look again: the driver may have added
      // one between our read of idx and its read of avail_event (spec 2.7.10).
      const uint16_t ev = htole16(next_avail_);
      if (!mem_->store_shared(used_addr_ + used_ring_bytes(size_) - 2, ev).ok()) {
        mark_broken("used ring unwritable");
        return std::nullopt;
      }
      std::atomic_thread_fence(std::memory_order_seq_cst);
      auto again = read_avail_idx();
      if (!again.ok() || *again == *avail_idx) return std::nullopt;
      continue;
    }
    const uint64_t slot = avail_addr_ + kAvailRingOffset + 2 * uint64_t{static_cast<uint16_t>(next_avail_ % size_)};
    auto head = mem_->load_shared<uint16_t>(slot);
    if (!head.ok()) {
      mark_broken("avail ring unreadable");
      return std::nullopt;
    }
    ++next_avail_;
    DescriptorChain chain;
    if (walk_chain(le16toh(*head), chain)) {
      stats_.chains.fetch_add(1, std::memory_order_relaxed);
      return chain;
    }
    if (broken()) return std::nullopt;
  }
}

void VirtQueue::add_used(uint16_t head, uint32_t len) {
  const std::pair<uint16_t, uint32_t> one{head, len};
  add_used_batch({&one, 1});
}

void VirtQueue::add_used_batch(std::span<const std::pair<uint16_t, uint32_t>> used) {
  if (mem_ == nullptr || used.empty()) return;
  for (const auto& [head, len] : used) {
    vring_used_elem elem{};
    elem.id = htole32(head);
    elem.len = htole32(len);
    const uint64_t slot = used_addr_ + kUsedRingOffset +
                          sizeof(vring_used_elem) * uint64_t{static_cast<uint16_t>(next_used_ % size_)};
    // Checked at activation: the used ring is inside guest memory, so this cannot fail unless the
    // memory map changed underneath; then the queue stops rather than touch anything else.
    if (!mem_->write_obj(slot, elem).ok()) {
      mark_broken("used ring unwritable");
      return;
    }
    ++next_used_;
  }
  // The elements must be visible before the index that publishes them.
  std::atomic_thread_fence(std::memory_order_release);
  if (!mem_->store_shared(used_addr_ + kUsedIdxOffset, htole16(next_used_)).ok()) mark_broken("used ring unwritable");
}


bool VirtQueue::needs_notification() {
  if (mem_ == nullptr) return false;
  const uint16_t old = signalled_used_;
  const uint16_t now = next_used_;
  // The used idx write must be visible before we read the driver's suppression state, or we may
  // miss an update the driver made after looking at an old idx.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  bool notify = false;
  if (now != old) {
    if (event_idx_) {
      auto used_event = mem_->load_shared<uint16_t>(avail_addr_ + avail_ring_bytes(size_) - 2);
      notify = !used_event.ok() || vring_need_event(le16toh(*used_event), now, old) != 0;
    } else {
      auto flags = mem_->load_shared<uint16_t>(avail_addr_ + offsetof(vring_avail, flags));
      notify = !flags.ok() || (le16toh(*flags) & VRING_AVAIL_F_NO_INTERRUPT) == 0;
    }
  }
  if (now != old) (notify ? stats_.notifications : stats_.suppressed).fetch_add(1, std::memory_order_relaxed);
  signalled_used_ = now;
  return notify;
}

}  // namespace ringvm
