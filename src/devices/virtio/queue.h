// VirtQueue: the device side of a virtio split virtqueue (virtio 1.x, section 2.7).
//
// The transport configures the queue (size, ring addresses, ready) while the device is inactive;
// the device calls activate() once the driver set DRIVER_OK and from then on is the only user of
// the processing API (pop, add_used, needs_notification), from one thread at a time.
//
// Every guest structure is hostile. Each descriptor is copied out of guest memory before it is
// checked, and a chain is only handed to the device once all of it was validated. A malformed
// chain is consumed, returned to the driver with a used length of 0 and counted per error kind,
// so a bad request never stalls the queue and good requests behind it are still served. An avail
// index that runs more than the queue size ahead of the device cannot be recovered from (the
// driver and device disagree on what is outstanding): the queue is marked broken, stops, and
// the transport reports DEVICE_NEEDS_RESET.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace ringvm {

class GuestMemory;
class StateReader;
class StateWriter;

// One guest buffer of a chain, already checked to lie wholly inside guest memory.
struct DescriptorBuffer {
  uint64_t addr = 0;
  uint32_t len = 0;
};

// A validated descriptor chain: the device-readable buffers, then the device-writable ones.
struct DescriptorChain {
  uint16_t head = 0;  // the id to give back in add_used()
  std::vector<DescriptorBuffer> readable;
  std::vector<DescriptorBuffer> writable;

  uint64_t readable_bytes() const;
  uint64_t writable_bytes() const;
};

// Why a chain was rejected. Each kind has its own counter.
enum class ChainError : uint8_t {
  kHeadOutOfRange,         // the avail ring names a head >= queue size
  kNextOutOfRange,         // a `next` field >= table size
  kChainTooLong,           // more descriptors than allowed: a loop or an oversized chain
  kZeroLength,             // a buffer of length 0
  kBufferOutsideMemory,    // a buffer not wholly inside guest memory (or wrapping)
  kReadableAfterWritable,  // a device-readable buffer after a device-writable one
  kIndirectNotNegotiated,  // INDIRECT flag without VIRTIO_RING_F_INDIRECT_DESC
  kIndirectBadLength,      // indirect table length 0, not a multiple of 16, or too large
  kIndirectWithNext,       // INDIRECT and NEXT set on the same descriptor
  kNestedIndirect,         // an INDIRECT descriptor inside an indirect table
  kRingUnreadable,         // the descriptor table or avail ring could not be read
  kCount,
};
inline constexpr size_t kChainErrorCount = static_cast<size_t>(ChainError::kCount);
std::string_view chain_error_name(ChainError e);

// Counters readable from any thread (for --stats) while the queue runs.
struct QueueStats {
  std::atomic<uint64_t> chains{0};          // valid chains handed to the device
  std::atomic<uint64_t> notifications{0};   // needs_notification() said yes
  std::atomic<uint64_t> suppressed{0};      // needs_notification() said no
  std::array<std::atomic<uint64_t>, kChainErrorCount> errors{};
  uint64_t error(ChainError e) const { return errors[static_cast<size_t>(e)].load(); }
  uint64_t total_errors() const;
};

class VirtQueue {
 public:
  explicit VirtQueue(uint16_t max_size);
  VirtQueue(const VirtQueue&) = delete;
  VirtQueue& operator=(const VirtQueue&) = delete;

  // --- Configuration (transport, while the device is inactive). ---
  uint16_t max_size() const { return max_size_; }
  uint16_t size() const { return size_; }
  void set_size(uint16_t size) { size_ = size; }
  void set_desc_addr(uint64_t a) { desc_addr_ = a; }
  void set_avail_addr(uint64_t a) { avail_addr_ = a; }
  void set_used_addr(uint64_t a) { used_addr_ = a; }
  uint64_t desc_addr() const { return desc_addr_; }
  uint64_t avail_addr() const { return avail_addr_; }
  uint64_t used_addr() const { return used_addr_; }
  void set_ready(bool ready) { ready_ = ready; }
  bool ready() const { return ready_; }
  // Back to the power-on state: size = max_size, addresses 0, not ready, indices 0, not broken.
  // Counters are kept (they describe the device's life, not one driver session).
  void reset();

  // --- Snapshot (base/state_codec.h): the transport saves and restores its queues while the
  // device is paused (no pop/add_used running) or not activated. ---
  // Configuration plus processing position. `active`: the queue was activated when saved, so the
  // indices are the device's; an inactive queue's indices are 0. The negotiated ring features
  // (EVENT_IDX, INDIRECT_DESC) are not here: activate() takes them from the transport again.
  struct State {
    uint16_t size = 0;
    uint64_t desc_addr = 0;
    uint64_t avail_addr = 0;
    uint64_t used_addr = 0;
    bool ready = false;
    bool active = false;
    uint16_t next_avail = 0;
    uint16_t next_used = 0;
    uint16_t signalled_used = 0;  // next_used at the last notification decision (EVENT_IDX)
    bool broken = false;
  };
  State state() const;
  void save_state(StateWriter& w) const;
  // Reads and checks a state save_state() wrote, against this queue's max_size(); changes
  // nothing. Refused (kCorrupt): a size that is not a power of two in [1, max_size()], an inactive
  // queue with non-zero indices or broken, an active queue with more chains outstanding
  // (next_avail - next_used) than its size, or whose rings are misaligned or (with `mem`, the
  // memory it will be activated against; null skips that check) not wholly inside guest memory.
  Result<State> read_state(StateReader& r, const GuestMemory* mem) const;
  // Takes a state read_state() accepted. The queue must not be active (a freshly built or reset
  // queue). If s.active, the next activate() keeps the restored indices (and a broken flag)
  // instead of starting at 0: the device continues exactly where the saved one stopped.
  void restore_state(const State& s);

  // --- Processing (device, after DRIVER_OK). ---
  // Checks the configured geometry (size a power of two <= max_size, ring alignment, every ring
  // wholly inside `mem`) and binds the queue to `mem` (which must outlive the activation) and the
  // negotiated features (VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC are honoured).
  // After restore_state() of an active queue, the indices are kept (see there); otherwise they
  // start at 0.
  Result<void> activate(const GuestMemory& mem, uint64_t features);
  bool active() const { return mem_ != nullptr; }

  // The next valid chain, or nullopt when the ring is empty (or the queue is broken or inactive).
  // Malformed chains met on the way are consumed (add_used(head, 0)) and counted. With EVENT_IDX,
  // an empty ring publishes avail_event so the driver kicks on its next buffer.
  //
  // Arm::kNo leaves avail_event where it is (the driver does not kick for what it adds next):
  // for a device that goes on polling the ring (has_available()) before it sleeps. It must end
  // with a pop(Arm::kYes) that returns nullopt, or the driver may never kick again.
  enum class Arm : uint8_t { kYes, kNo };
  std::optional<DescriptorChain> pop(Arm arm = Arm::kYes);
  // Whether the driver made buffers available that pop() has not taken; no side effects.
  bool has_available() const;
  // Returns `head` to the driver with `len` bytes written into its writable buffers.
  void add_used(uint16_t head, uint32_t len);
  // Returns several chains at once and publishes them with one used-idx update, so the driver
  // never sees some of them without the rest (a mergeable receive frame spanning buffers).
  void add_used_batch(std::span<const std::pair<uint16_t, uint32_t>> used);
  // Whether the driver wants an interrupt for what was added since the last call (EVENT_IDX's
  // used_event, else VRING_AVAIL_F_NO_INTERRUPT). Call after a batch of add_used().
  bool needs_notification();

  // The driver broke the ring protocol (avail idx ran ahead, rings unreadable): the queue stops
  // until reset() and the transport should set DEVICE_NEEDS_RESET.
  bool broken() const { return broken_.load(std::memory_order_acquire); }
  const QueueStats& stats() const { return stats_; }
  uint16_t next_avail() const { return next_avail_; }
  uint16_t next_used() const { return next_used_; }

 private:
  struct Walk;
  // Validates the chain starting at `head`; on success fills `chain`.
  bool walk_chain(uint16_t head, DescriptorChain& chain);
  void reject(uint16_t head, ChainError e);
  void mark_broken(std::string_view why);
  Result<uint16_t> read_avail_idx() const;
  // Size, alignment and (with `mem`) placement of the rings; the error says what is wrong.
  static Result<void> check_geometry(uint16_t size, uint16_t max_size, uint64_t desc, uint64_t avail,
                                     uint64_t used, const GuestMemory* mem);

  const uint16_t max_size_;
  uint16_t size_;
  uint64_t desc_addr_ = 0;
  uint64_t avail_addr_ = 0;
  uint64_t used_addr_ = 0;
  bool ready_ = false;

  const GuestMemory* mem_ = nullptr;
  bool event_idx_ = false;
  bool indirect_ = false;
  uint16_t next_avail_ = 0;
  uint16_t next_used_ = 0;
  uint16_t signalled_used_ = 0;  // next_used_ at the last notification decision
  std::atomic<bool> broken_{false};
  bool positioned_ = false;  // restore_state() set the indices: activate() keeps them
  QueueStats stats_;
};

}  // namespace ringvm
