// VirtioNet: virtio-net (virtio 1.x section 5.1) over a NetBackend (a Linux tap).
//
// Queues: receiveq1, transmitq1, ..., receiveqN, transmitqN, controlq (N = max queue pairs).
// Each queue pair is served by a worker thread (by default its own) bound to the pair's backend
// queue fd, so a multiqueue guest spreads its traffic over host cores and nothing here ever
// blocks the event loop. The worker never spins:
//   - transmit: a full tap (EAGAIN) parks the frame in hand and the worker waits for EPOLLOUT;
//   - receive: a frame with no guest buffer to go to is held, and the worker stops polling the
//     tap for input until the guest adds buffers (its kick);
//   - a down link makes the tap refuse writes (counted as errors) and deliver nothing.
// Every guest frame is validated (net_header.h) and malformed ones are dropped and counted.
#pragma once

#include <sys/uio.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "devices/virtio/net/net_abi.h"
#include "devices/virtio/net/net_header.h"
#include "devices/virtio/net/tap.h"
#include "devices/virtio/queue.h"
#include "devices/virtio/virtio_device.h"
#include "devices/virtio/worker.h"

namespace ringvm {

using MacAddress = std::array<uint8_t, 6>;

struct VirtioNetOptions {
  std::string id = "net0";  // names the device in logs and stats
  MacAddress mac{};         // the guest's MAC (VIRTIO_NET_F_MAC)
  uint16_t queue_size = 256;
  // false: no worker threads; the owner drives poll_pair()/poll_ctrl() itself (tests, fuzzers).
  bool run_workers = true;
  // Transmit kick coalescing while the guest keeps a queue busy, as virtio-blk's batch_us: a pass
  // over a transmit queue that sends two or more frames does not ask for a kick; the worker comes
  // back after about four recent inter-frame gaps (at most batch_us) instead. 0: off. Needs the
  // workers (a timerfd per pair).
  uint32_t batch_us = 0;
  // With several queue pairs, a flow's pure ACKs (TCP segments without payload) leave through the
  // tap queue the flow's last data frame or first frame used (flow_of, symmetric; chosen afresh
  // after a second without frames), not the one the guest sent them on; data frames leave through
  // their own pair's queue and move the flow there. A Linux tap steers a flow's incoming frames to
  // the queue its outgoing ones last came through; a guest sends a received stream's ACKs from
  // whichever vCPU is at hand, so without pinning that flow hops between pairs and frames still in
  // flight on the old one arrive after newer ones: reordering, which TCP takes for loss. A stream
  // the guest sends stays on its sender's pair, as without pinning, and the host's ACKs follow it.
  bool pin_flows = true;
  // A transmitted frame of at least this many bytes raises the driver's interrupt (when the driver
  // asked for one) as soon as it is written, instead of at the end of the worker's pass over the
  // ring. Writing a large frame to the tap takes long (the host's stack runs inside the write),
  // and a guest's TCP sender waits for its completions (TSQ): announcing each at once lets it
  // queue the next frames while the worker writes the rest (docs/networking.md, "Early transmit
  // interrupts"). 0: every pass announces at its end.
  static constexpr uint64_t kDefaultTxEarlyIrqBytes = 16 * 1024;
  uint64_t tx_early_irq_bytes = kDefaultTxEarlyIrqBytes;
  // Worker threads serving the queue pairs (pair i goes to thread i % workers). 0: one per pair,
  // so a multiqueue guest's traffic spreads over host cores; fewer threads wake less often on a
  // host short of CPUs (docs/networking.md, "Workers").
  uint32_t workers = 0;
  // The workers' nice value relative to ringvm's own (its vCPU threads') while the guest sends in
  // bulk: -5 gives a worker about three times a vCPU thread's CPU weight. A guest's TCP sender
  // waits for its frames' completions (TCP small queues), so on a host with no CPU to spare the
  // worker's scheduling delays (queued behind a vCPU thread after a kick, preempted by the host's
  // receiving task between a tap write and the completion interrupt) are the guest's transmit
  // rate. A worker never spins (each pass is budgeted). Receiving, the guest waits on nothing of
  // the worker's, and a worker that preempts the receiving vCPU only cuts its batches, so the
  // boost lasts while transmitted frames of kBulkFrameBytes or more keep coming (kBulkWindowNs
  // after the last), unless worker_nice_always (docs/networking.md, "Worker priority"). Needs
  // CAP_SYS_NICE or RLIMIT_NICE; without them the workers keep ringvm's priority
  // (NetStats::worker_nice says which). 0: never change it.
  static constexpr int kDefaultWorkerNice = -5;
  static constexpr uint64_t kBulkFrameBytes = 16 * 1024;
  static constexpr uint64_t kBulkWindowNs = 100'000'000;
  int worker_nice = kDefaultWorkerNice;
  bool worker_nice_always = false;
};

// Counters for --stats; readable from any thread.
struct NetStats {
  std::atomic<uint64_t> rx_frames{0}, rx_bytes{0};  // delivered to the guest (bytes without header)
  std::atomic<uint64_t> rx_drops{
      0};  // frames dropped: too big for the guest's buffers, or no buffers at reset
  std::atomic<uint64_t> rx_errors{0};  // backend read errors, short frames from the backend, bad rx chains
  std::atomic<uint64_t> tx_frames{0}, tx_bytes{0};  // written to the backend (bytes without header)
  std::atomic<uint64_t> tx_drops{0};                // malformed guest frames (bad header, size, GSO values)
  std::atomic<uint64_t> tx_errors{0};    // the backend refused a frame (link down, kernel said EINVAL)
  std::atomic<uint64_t> tx_parked{0};    // times the backend was full (EAGAIN) and a queue waited
  std::atomic<uint64_t> ctrl_errors{0};  // control commands answered VIRTIO_NET_ERR
  std::atomic<uint64_t> tx_batches{0};   // transmit passes that deferred the next kick (batch_us)
  std::atomic<uint64_t> tx_deferred{0};  // kicks on a busy transmit queue served on the timer (batch_us)
  std::atomic<uint64_t> tx_rx_polls{0};  // transmit passes left unkicked while receiving (batch_us)
  std::atomic<uint64_t> tx_pinned{0};    // frames sent through another pair's tap queue (pin_flows)
  // What the data path cost the guest in exits: the driver's kicks (doorbell writes the workers
  // took from their ioeventfds) and the interrupts raised, per direction.
  std::atomic<uint64_t> rx_kicks{0}, tx_kicks{0};
  std::atomic<uint64_t> rx_interrupts{0}, tx_interrupts{0};
  std::atomic<uint64_t> tx_early_interrupts{0};  // of tx_interrupts: raised right after a large frame
  // The workers' nice relative to ringvm's when boosted (VirtioNetOptions::worker_nice; 0 when
  // the host refused it or before the first boost), and how many times a worker was boosted.
  std::atomic<int> worker_nice{0};
  std::atomic<uint64_t> worker_boosts{0};
};

class VirtioNet final : public VirtioDevice {
 public:
  static constexpr size_t kMaxQueuePairs = 64;

  // One queue pair per backend queue.
  static Result<std::unique_ptr<VirtioNet>> create(std::unique_ptr<NetBackend> backend,
                                                   VirtioNetOptions options);
  ~VirtioNet() override;

  std::string_view name() const override { return options_.id; }
  uint32_t device_type() const override;
  uint64_t device_features() const override { return features_; }
  std::vector<uint16_t> queue_max_sizes() const override;
  void read_config(uint64_t offset, std::span<uint8_t> data) const override;
  void write_config(uint64_t offset, std::span<const uint8_t> data) override;
  Result<void> activate(const GuestMemory& mem, uint64_t acked_features,
                        std::vector<ActivatedQueue> queues) override;
  void reset() override;
  // Stateful: every worker finishes its pass and parks.
  Result<void> pause() override;
  Result<void> resume() override;
  // Snapshot state (only while paused): the config's link status and MAC, and, when activated,
  // the negotiated features, the queue pairs the driver enabled (VQ_PAIRS_SET) and per pair the
  // received frame held for the guest, the receive chains gathered for it and the transmit
  // chain parked on a full tap (chain_state.h). Not the tap: the snapshot loader may build the
  // device on another one (network_overrides). Offloads follow from the negotiated features and
  // are set again by activate(); the control queue takes no other command (no CTRL_RX, no
  // CTRL_GUEST_OFFLOADS) so nothing else can have changed.
  Result<std::vector<uint8_t>> save() const override;
  // On a device never activated, built from the same configuration: refuses (naming both values)
  // other offered features, queue pair count or queue size. The link status comes from the
  // state; the MAC stays this device's own (a clone is built with a fresh one; the guest driver
  // reads the MAC only when it probes). The held frames and chains wait for the activate() the
  // transport makes with the saved acked features (others are refused there), which checks every
  // restored chain against guest memory and the queue before using it, re-enables the saved
  // queue pairs on the backend and delivers the held frames as soon as the guest has room.
  Result<void> restore(std::span<const uint8_t> state) override;

  const NetStats& stats() const { return stats_; }
  size_t queue_pairs() const { return pairs_.size(); }
  // Pairs the driver enabled (VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET); 1 until it says otherwise.
  size_t active_pairs() const { return active_pairs_.load(std::memory_order_relaxed); }
  const NetBackend& backend() const { return *backend_; }

  // Serve pair `index` (transmit what the guest queued, then receive what the backend has) and
  // the control queue, as the workers do on any event, until nothing is left to do now. Public
  // so tests and fuzzers can drive a device built with run_workers = false.
  void poll_pair(size_t index);
  void poll_ctrl();
  // A transmit frame waits for the backend to drain (EAGAIN) / a received frame waits for guest
  // buffers.
  bool tx_parked(size_t index) const;
  bool rx_held(size_t index) const;

 private:
  class PairWorker;  // net_worker.h
  // The state of one queue pair, touched only by its worker (or the poll_* caller).
  struct Pair {
    ActivatedQueue rx, tx;
    int fd = -1;
    // A frame read from the backend and not yet delivered (no guest buffer for it).
    std::vector<uint8_t> rx_frame;
    size_t rx_len = 0;
    bool rx_pending = false;
    // Receive chains popped but not yet used (mergeable buffers gathered for a frame).
    std::deque<DescriptorChain> rx_chains;
    std::vector<iovec> rx_iov;  // receive_direct's view of the held chains, reused per frame
    // A transmit frame the backend refused with EAGAIN: its chain and our copy of the header.
    std::optional<DescriptorChain> tx_chain;
    virtio_net_hdr_v1 tx_hdr{};
    uint64_t tx_bulk_frames = 0;  // frames of kBulkFrameBytes or more sent (the worker's boost)
    QueueBatcher tx_batch;  // batch_us, transmit queue
    // batch_us: a transmit kick on a queue busy lately (tx_batch.defer_kick()) is served on
    // tx_batch's timer; set until that timer fires.
    bool tx_deferred = false;
    // With batch_us: until when the receive side counts as streaming (4 x batch_us after its last
    // pass that delivered). Meanwhile the transmit queue, which then carries the guest's ACKs,
    // asks for no kicks: the worker looks at it after every receive pass and on tx_batch's timer.
    uint64_t rx_busy_until_ns = 0;
  };

  VirtioNet(std::unique_ptr<NetBackend> backend, VirtioNetOptions options);
  // One budget's worth of work; true when the budget ran out with work left.
  bool poll_pair_budgeted(size_t index);
  bool process_tx(Pair& p);
  // A transmit kick arrived: with batch_us, on a queue busy a moment ago, let the frames the guest
  // adds next gather (it does not kick again) and send them on the timer instead of now.
  void on_tx_kick(Pair& p);
  bool process_rx(Pair& p);
  // kDone: the chain went back to the guest (sent or dropped); kParked: the backend is full.
  enum class TxResult { kDone, kParked };
  TxResult transmit(Pair& p, const DescriptorChain& chain);
  // Raises the transmit interrupt if the driver asked for one since the last; true if raised.
  bool signal_tx(Pair& p);
  // The tap queue fd `chain`'s frame should leave through instead of p's own (pin_flows), or -1.
  int pinned_fd(const Pair& p, const DescriptorChain& chain);
  // Moves the held frame into guest buffers; false when the guest has too few.
  bool deliver(Pair& p);
  // With mergeable buffers and room for the largest frame already posted: reads the next frame
  // from the backend straight into the guest's buffers (no bounce copy) and publishes it.
  enum class DirectRx { kDelivered, kEmpty, kRetry, kFallback };
  // Pops receive chains into p.rx_chains until they hold `room` writable bytes; false when the
  // queue ran dry first (what was popped stays held). Chains with no writable buffer go back.
  // `arm`: whether running dry asks the driver to kick for its next buffers.
  bool gather_rx_chains(Pair& p, uint64_t room, VirtQueue::Arm arm);
  DirectRx receive_direct(Pair& p);
  uint8_t handle_ctrl(const DescriptorChain& chain);
  static unsigned tun_offloads(uint64_t acked);

  std::unique_ptr<NetBackend> backend_;
  VirtioNetOptions options_;
  uint64_t features_;
  virtio_net_config config_{};

  // What restore() read, for the next activate(); reset() forgets it.
  struct RestoredPair {
    std::vector<uint8_t> rx_frame;  // empty: none held
    std::deque<DescriptorChain> rx_chains;
    std::optional<DescriptorChain> tx_chain;
  };
  struct Restored {
    uint64_t acked = 0;
    size_t active_pairs = 1;
    std::vector<RestoredPair> pairs;
  };
  // Checks `restored` against the activated queues and guest memory, then hands it to the pairs.
  Result<void> apply_restored(Restored& restored, const GuestMemory& mem, size_t pairs);

  mutable std::mutex mu_;  // activate/reset/save/restore
  std::optional<Restored> restored_;
  const GuestMemory* mem_ = nullptr;
  uint64_t acked_ = 0;
  bool mergeable_ = false;
  std::vector<Pair> pairs_;
  ActivatedQueue ctrl_;
  std::atomic<size_t> active_pairs_{1};
  std::atomic<uint64_t> pairs_gen_{0};  // bumped on every VQ_PAIRS_SET
  // pin_flows: per flow_hash slot, hash << 32 | queue << 24 | last use (~1 ms units, 24 bits). Any
  // worker reads and writes any slot; a race at a flow's start only picks one of two queues.
  static constexpr size_t kFlowSlots = 4096;
  std::unique_ptr<std::atomic<uint64_t>[]> flows_;
  std::vector<std::unique_ptr<PairWorker>> workers_;
  NetStats stats_;
};

// "52:54:00:12:34:56" (or with '-'); refuses multicast addresses, which a NIC cannot own.
Result<MacAddress> parse_mac(std::string_view text);
std::string format_mac(const MacAddress& mac);
// A random locally administered unicast address.
MacAddress random_mac();

}  // namespace ringvm
