// VirtioBlock: virtio-blk (virtio 1.x section 5.2) over any Disk (raw, qcow2).
//
// Each queue is served by its own worker thread (see worker.h) that pops requests, validates
// them completely (header, status byte, direction of every buffer, sector range without
// overflow, discard segment count) and runs them against the Disk. Anything a guest or the host
// disk gets wrong reaches the guest as a status byte (IOERR or UNSUPP) and a counter; it never
// stops the VMM or the queue.
#pragma once

#include <linux/virtio_blk.h>

#include <array>
#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "block/disk.h"
#include "devices/virtio/block/uring_queue.h"
#include "devices/virtio/queue.h"
#include "devices/virtio/virtio_device.h"
#include "devices/virtio/worker.h"

namespace ringvm {

struct VirtioBlockOptions {
  enum class Cache : uint8_t {
    kWriteback,  // FLUSH makes completed writes durable (fdatasync) before it completes
    kUnsafe,     // FLUSH is a no-op: fast, and a host crash may lose what the guest flushed
  };
  std::string id = "blk0";  // names the device in logs and stats
  bool read_only = false;   // also forced when the Disk itself is read-only
  std::string serial;       // GET_ID answer, at most 20 bytes
  uint16_t queues = 1;      // 1..16; > 1 offers VIRTIO_BLK_F_MQ
  uint16_t queue_size = 256;
  Cache cache = Cache::kWriteback;
  enum class Engine : uint8_t {
    kAuto,  // io_uring on disks with a direct_fd() (raw), where the host allows it; else kSync
    kSync,  // Disk calls on the queue's worker thread, one request at a time
  };
  Engine engine = Engine::kAuto;
  // After serving its ring a queue's worker keeps looking at it (and at io_uring completions) for
  // up to this long before it asks the driver for a kick and sleeps: a driver that submits again
  // within the window needs no kick (no VM exit). Adaptive, as QEMU's iothread poll-max-ns: the
  // window halves when a poll finds nothing and doubles when a kick comes soon after the worker
  // went to sleep, so a queue that idles stops polling. 0: never poll.
  uint32_t poll_us = 0;
  // Batching (kick and interrupt coalescing) for a queue the guest keeps busy: when one pass over
  // the ring finds two or more requests, the worker does not ask for a kick but comes back after
  // a window of about four recent inter-request gaps (at most batch_us) and serves what arrived
  // meanwhile, all completions with one interrupt. A pass that finds fewer than two asks for
  // kicks again, so a guest with one request at a time never waits. 0: never batch. Ignored
  // while poll_us is set.
  // A kick that comes soon after a pass that found two or more (within 4 x batch_us) is not
  // served at once either: the driver does not kick again for what it adds meanwhile, and the
  // timer serves it all in one pass. A queue that has not been busy lately is served at once.
  uint32_t batch_us = 0;
  // Passes over the ring that may share one interrupt. A pass whose host I/O completed during
  // its own submission (a RAM disk, the page cache, a 1 MiB copy) often finds, when it ends,
  // that the driver added requests meanwhile: with chain_passes above 1 the worker serves those
  // before it raises the interrupt, so the driver hears of both batches at once. At most this
  // many passes, only while requests keep arriving during the I/O, and only after passes that
  // moved less than chain_max_bytes: a pass of large transfers is announced at once by default.
  // 1: interrupt after every pass.
  static constexpr uint16_t kDefaultChainPasses = 4;
  uint16_t chain_passes = kDefaultChainPasses;
  // A pass that moved this much data or more raises its interrupt rather than chain the next: in
  // the lab, chaining after 1 MiB requests left the guest idle for the next pass's copy (more
  // halts and timer exits than it saved), while 4 KiB passes chained cut exits by a fifth.
  static constexpr uint64_t kDefaultChainMaxBytes = 128 * 1024;
  uint64_t chain_max_bytes = kDefaultChainMaxBytes;
  // Request merging (io_uring path): adjacent reads or writes found in one pass become one host
  // I/O while it stays within this many bytes (and IOV_MAX buffers). 0: never merge.
  static constexpr uint64_t kDefaultMergeBytes = 4u << 20;
  uint64_t merge_bytes = kDefaultMergeBytes;
};

// Counters for --stats; readable from any thread.
struct BlockStats {
  std::atomic<uint64_t> reads{0}, writes{0}, flushes{0}, get_ids{0}, discards{0}, write_zeroes{0};
  std::atomic<uint64_t> unsupported{0};   // unknown request types or flags (UNSUPP)
  std::atomic<uint64_t> bytes_read{0}, bytes_written{0};
  std::atomic<uint64_t> io_errors{0};     // the host Disk failed: IOERR
  std::atomic<uint64_t> bad_requests{0};  // well-formed chain, invalid request: IOERR
  std::atomic<uint64_t> no_status{0};     // no writable status byte: returned with length 0
  std::atomic<uint64_t> poll_hits{0};     // polls that found a new request (a kick saved)
  std::atomic<uint64_t> poll_misses{0};   // polls that ran out (the window then halves)
  std::atomic<uint64_t> batches{0};       // passes that found 2+ requests and deferred the next
  std::atomic<uint64_t> merged{0};        // reads/writes joined to the previous one (one host I/O)
  std::atomic<uint64_t> deferred{0};      // kicks on a busy queue served on the batch timer
  std::atomic<uint64_t> kicks{0};         // the driver's doorbell writes (each a VM exit)
  std::atomic<uint64_t> interrupts{0};    // interrupts raised (used buffers the driver asked to hear of)
  // Completions that came after the submitting pass (through io_uring's eventfd), each reap of
  // them one more chance of an interrupt; the rest completed during the submit itself.
  std::atomic<uint64_t> late_reaps{0};
  // Passes served after another one before its interrupt (chain_passes).
  std::atomic<uint64_t> chained{0};
};

class VirtioBlock final : public VirtioDevice {
 public:
  static constexpr uint32_t kMaxQueues = 16;
  static constexpr uint32_t kMaxDiscardSegments = 32;
  static constexpr uint32_t kMaxDiscardSectors = 1u << 22;  // 2 GiB per segment

  // Checks the options (serial length, queue count and size); the Disk is shared with whoever
  // else needs it (snapshot, stats).
  static Result<std::unique_ptr<VirtioBlock>> create(std::shared_ptr<Disk> disk, VirtioBlockOptions options);
  ~VirtioBlock() override;

  std::string_view name() const override { return options_.id; }
  uint32_t device_type() const override;
  uint64_t device_features() const override { return features_; }
  std::vector<uint16_t> queue_max_sizes() const override;
  void read_config(uint64_t offset, std::span<uint8_t> data) const override;
  void write_config(uint64_t offset, std::span<const uint8_t> data) override;
  Result<void> activate(const GuestMemory& mem, uint64_t acked_features, std::vector<ActivatedQueue> queues) override;
  void reset() override;
  // Stateful: every queue's worker finishes the requests it has in flight, then parks.
  Result<void> pause() override;
  Result<void> resume() override;
  // Snapshot state: what the guest was told (offered features, queue count and size, capacity,
  // read-only, serial). The driver can change nothing here (no VIRTIO_BLK_F_CONFIG_WCE: the
  // cache mode is the host's option, not the guest's), and after pause() nothing is in flight, so
  // there are no requests to carry. restore(), on a device never activated built from the same
  // configuration, refuses a state whose capacity differs from this device's disk (naming the
  // disk and both sizes) or whose features, queues, read-only flag or serial differ: the guest
  // would go on with a disk it does not know.
  Result<std::vector<uint8_t>> save() const override;
  Result<void> restore(std::span<const uint8_t> state) override;
  // Makes every write the guest saw completed durable on the host (the Disk's flush: fdatasync
  // for raw files, qcow2 metadata then data), whatever the cache mode, so a snapshot taken next
  // never depends on the host page cache. Call while paused (nothing is in flight then).
  Result<void> flush();

  const BlockStats& stats() const { return stats_; }
  bool read_only() const { return read_only_; }
  uint64_t capacity_sectors() const { return capacity_sectors_; }

  // Serves every available request on queue `index` and raises its interrupt if the driver
  // wants one. Called by the queue's worker; public so tests can drive it synchronously (with
  // Engine::kSync every request is complete when it returns).
  // `kicked`: the driver's doorbell woke the worker (not the batch timer or the first round).
  void process_queue(size_t index, bool kicked = false);
  // How many queues run their I/O through io_uring (the rest are synchronous).
  size_t uring_queues() const;

 private:
  VirtioBlock(std::shared_ptr<Disk> disk, VirtioBlockOptions options);
  // Runs one request; returns the used length (bytes written into the guest's buffers), or
  // nullopt when it went to io_uring and completes later.
  std::optional<uint32_t> handle(size_t queue, const DescriptorChain& chain);
  // kOk/kIoerr/... or kAsync when the request went to the queue's io_uring.
  int do_rw(size_t queue, uint32_t type, uint64_t sector, const DescriptorChain& chain, uint64_t data_len,
            uint64_t status_addr);
  int do_flush(size_t queue, const DescriptorChain& chain, uint64_t status_addr);
  // Completes an io_uring request: status byte, used ring, counters.
  void complete(size_t queue, uint16_t head, uint64_t status_addr, uint32_t used_ok, int32_t res, uint64_t expected,
                int kind);
  void reap(size_t queue);
  // On the queue's worker, before it parks: hands over the pending merge and waits for the disk.
  void quiesce(size_t queue);
  // Queues a read or write for the io_uring, joined to the pending one when it continues it
  // (same direction, next sector, within the limits); the pending one is handed to the ring first
  // otherwise.
  void queue_rw(size_t queue, uint32_t type, uint64_t sector, std::vector<iovec> iov, uint16_t head,
                uint64_t status_addr, uint64_t bytes);
  // Hands the pending (possibly merged) read or write to the queue's io_uring.
  void flush_rw(size_t queue);
  // Pops and runs every available request (pop(arm)), submits and reaps io_uring, raises the
  // interrupt if wanted; returns how many requests it found.
  size_t serve(size_t index, VirtQueue::Arm arm);
  // batch_us: one pass; with 2+ requests found, sets the queue's timer instead of asking for a kick.
  void serve_batched(size_t index, bool kicked);
  // Spins for up to `ns` while nothing new is available, reaping completions meanwhile; true if
  // the driver made a request available.
  bool poll_ring(size_t index, uint64_t ns);
  void notify_if_needed(size_t index);
  uint8_t do_discard_or_zero(uint32_t type, const DescriptorChain& chain, uint64_t data_len);
  uint8_t io_error(const Error& e);
  bool range_ok(uint64_t sector, uint64_t bytes) const;

  std::shared_ptr<Disk> disk_;
  VirtioBlockOptions options_;
  bool read_only_;
  uint64_t capacity_sectors_;
  uint64_t features_;
  virtio_blk_config config_{};

  mutable std::mutex mu_;  // activate/reset/restore
  const GuestMemory* mem_ = nullptr;
  std::vector<ActivatedQueue> queues_;
  std::vector<std::unique_ptr<UringQueue>> rings_;  // per queue; null = synchronous
  std::vector<std::unique_ptr<VirtioWorker>> workers_;
  // Per queue, touched only by its worker: the adaptive poll window and when the worker last
  // went to sleep (steady-clock ns, 0: not yet).
  struct PollState {
    uint64_t window_ns = 0;
    uint64_t slept_at_ns = 0;
    QueueBatcher batch;  // batch_us
    uint64_t completed_bytes = 0;  // data moved by this queue's completed reads and writes
  };
  std::vector<PollState> polls_;
  // Per queue, touched only by its worker: the read or write being merged (queue_rw).
  struct PendingRw {
    struct Part {
      uint16_t head;
      uint64_t status_addr;
      uint64_t bytes;
    };
    uint32_t type = 0;  // VIRTIO_BLK_T_IN or _OUT (meaningful while parts is not empty)
    uint64_t sector = 0;
    uint64_t bytes = 0;
    std::vector<iovec> iov;
    std::vector<Part> parts;
  };
  std::vector<PendingRw> pending_;
  BlockStats stats_;
};

}  // namespace ringvm
