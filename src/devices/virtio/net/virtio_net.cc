#include "devices/virtio/net/virtio_net.h"

#include <endian.h>
#include <linux/if_tun.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <sys/random.h>
#include <sys/uio.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cstring>

#include "base/log.h"
#include "base/state_codec.h"
#include "devices/virtio/chain_io.h"
#include "devices/virtio/net/chain_state.h"
#include "devices/virtio/net/net_worker.h"
#include "devices/virtio/ring_abi.h"
#include "devices/virtio/worker.h"
#include "memory/guest_memory.h"

namespace ringvm {

namespace {

constexpr uint64_t bit(unsigned b) { return 1ULL << b; }
// Frames one poll serves per direction before the worker looks at its other fds again, so a
// guest that transmits without pause cannot starve its receive side (or the stop request).
constexpr int kBudget = 256;
// save()/restore()'s layout; a change to it is a new version.

}  // namespace

Result<std::unique_ptr<VirtioNet>> VirtioNet::create(std::unique_ptr<NetBackend> backend,
                                                     VirtioNetOptions options) {
  if (!backend) return make_error(ErrorCode::kInvalidArgument, "virtio-net {}: no backend", options.id);
  const size_t n = backend->queue_count();
  if (n == 0 || n > kMaxQueuePairs)
    return make_error(ErrorCode::kInvalidArgument, "virtio-net {}: {} queue pairs, allowed 1..{}", options.id,
                      n, kMaxQueuePairs);
  // IOV_MAX bounds a transmit chain's buffers (plus our header copy); a chain holds at most a
  // queue's worth of descriptors.
  if (options.queue_size < 4 || options.queue_size > 512 || (options.queue_size & (options.queue_size - 1)))
    return make_error(ErrorCode::kInvalidArgument,
                      "virtio-net {}: queue size {} must be a power of two between 4 and 512", options.id,
                      options.queue_size);
  if (options.mac[0] & 1)
    return make_error(ErrorCode::kInvalidArgument, "virtio-net {}: MAC {} is a multicast address", options.id,
                      format_mac(options.mac));
  return std::unique_ptr<VirtioNet>(new VirtioNet(std::move(backend), std::move(options)));
}

VirtioNet::VirtioNet(std::unique_ptr<NetBackend> backend, VirtioNetOptions options)
    : backend_(std::move(backend)), options_(std::move(options)), pairs_(backend_->queue_count()) {
  features_ = bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_RING_F_EVENT_IDX) | bit(VIRTIO_RING_F_INDIRECT_DESC) |
              bit(VIRTIO_NET_F_CSUM) | bit(VIRTIO_NET_F_GUEST_CSUM) | bit(VIRTIO_NET_F_HOST_TSO4) |
              bit(VIRTIO_NET_F_HOST_TSO6) | bit(VIRTIO_NET_F_GUEST_TSO4) | bit(VIRTIO_NET_F_GUEST_TSO6) |
              bit(VIRTIO_NET_F_MRG_RXBUF) | bit(VIRTIO_NET_F_MAC) | bit(VIRTIO_NET_F_STATUS) |
              bit(VIRTIO_NET_F_CTRL_VQ);
  if (backend_->ufo_supported()) features_ |= bit(VIRTIO_NET_F_HOST_UFO) | bit(VIRTIO_NET_F_GUEST_UFO);
  if (pairs_.size() > 1) features_ |= bit(VIRTIO_NET_F_MQ);
  std::memcpy(config_.mac, options_.mac.data(), sizeof config_.mac);
  config_.status = htole16(VIRTIO_NET_S_LINK_UP);
  config_.max_virtqueue_pairs = htole16(static_cast<uint16_t>(pairs_.size()));
  for (size_t i = 0; i < pairs_.size(); ++i) pairs_[i].fd = backend_->queue_fd(i);
  if (options_.pin_flows && pairs_.size() > 1) flows_ = std::make_unique<std::atomic<uint64_t>[]>(kFlowSlots);
}

VirtioNet::~VirtioNet() { reset(); }

uint32_t VirtioNet::device_type() const { return VIRTIO_ID_NET; }

std::vector<uint16_t> VirtioNet::queue_max_sizes() const {
  return std::vector<uint16_t>(2 * pairs_.size() + 1, options_.queue_size);
}

void VirtioNet::read_config(uint64_t offset, std::span<uint8_t> data) const {
  std::fill(data.begin(), data.end(), 0);
  if (offset >= sizeof(config_)) return;
  const size_t n = std::min<uint64_t>(data.size(), sizeof(config_) - offset);
  // SAFETY: config_ is a trivially-copyable UAPI struct; [offset, offset + n) lies inside it.
  std::memcpy(data.data(), reinterpret_cast<const uint8_t*>(&config_) + offset, n);
}

void VirtioNet::write_config(uint64_t offset, std::span<const uint8_t>) {
  // The MAC is only writable in the legacy interface; a modern driver uses CTRL_MAC_ADDR (not offered).
  RINGVM_LOG_RATELIMITED(debug, "virtio-net {}: ignored config write at {:#x}", options_.id, offset);
}

unsigned VirtioNet::tun_offloads(uint64_t acked) {
  // The kernel may hand us partial checksums and large frames only if the guest takes them.
  if (!(acked & bit(VIRTIO_NET_F_GUEST_CSUM))) return 0;
  unsigned f = TUN_F_CSUM;
  if (acked & bit(VIRTIO_NET_F_GUEST_TSO4)) f |= TUN_F_TSO4;
  if (acked & bit(VIRTIO_NET_F_GUEST_TSO6)) f |= TUN_F_TSO6;
  if (acked & bit(VIRTIO_NET_F_GUEST_UFO)) f |= TUN_F_UFO;
  return f;
}

Result<void> VirtioNet::activate(const GuestMemory& mem, uint64_t acked_features,
                                 std::vector<ActivatedQueue> queues) {
  std::lock_guard lock(mu_);
  if (mem_ != nullptr) return make_error(ErrorCode::kInternal, "virtio-net {}: activated twice", options_.id);
  const size_t offered = 2 * pairs_.size() + 1;
  if (queues.size() > offered)
    return make_error(ErrorCode::kInvalidArgument, "virtio-net {}: {} queues given, {} offered", options_.id,
                      queues.size(), offered);
  // A restored state is used by this activation only, whatever becomes of it.
  std::optional<Restored> restored = std::move(restored_);
  restored_.reset();
  if (restored && restored->acked != acked_features)
    return make_error(ErrorCode::kInvalidArgument,
                      "virtio-net {}: the restored state was negotiated with features {:#x}; activated with {:#x}",
                      options_.id, restored->acked, acked_features);
  queues =
      TRY(activate_queues(fmt::format("virtio-net {}", options_.id), mem, acked_features, std::move(queues)));
  queues.resize(offered);
  acked_ = acked_features;
  mergeable_ = (acked_ & bit(VIRTIO_NET_F_MRG_RXBUF)) != 0;
  // Spec 5.1.2: without MQ only the first pair exists and the control queue is queue 2.
  const bool mq = (acked_ & bit(VIRTIO_NET_F_MQ)) != 0;
  const size_t pairs = mq ? pairs_.size() : 1;
  ctrl_ = (acked_ & bit(VIRTIO_NET_F_CTRL_VQ)) ? queues[2 * pairs] : ActivatedQueue{};
  for (size_t i = 0; i < pairs; ++i) {
    pairs_[i].rx = queues[2 * i];
    pairs_[i].tx = queues[2 * i + 1];
    pairs_[i].rx_frame.resize(kNetHdrSize + kMaxFrameBytes);
  }
  if (restored) RETURN_IF_ERROR(apply_restored(*restored, mem, pairs));
  RETURN_IF_ERROR(backend_->set_offload(tun_offloads(acked_)));
  // Until VQ_PAIRS_SET the driver uses the first pair only (spec 5.1.6.5.5); after a restore, the
  // pairs it had enabled.
  const size_t enabled = restored ? restored->active_pairs : 1;
  RETURN_IF_ERROR(backend_->set_active_queues(enabled));
  active_pairs_.store(enabled, std::memory_order_relaxed);
  mem_ = &mem;
  if (!options_.run_workers) return Ok();
  for (size_t i = 0; i < pairs; ++i) {
    auto b = QueueBatcher::create(fmt::format("virtio-net {} pair {}", options_.id, i), options_.batch_us);
    if (b.ok()) pairs_[i].tx_batch = std::move(*b);
    else RINGVM_LOG_RATELIMITED(warn, "virtio-net {}: {}; no transmit batching", options_.id, b.error().message());
  }
  // Pair i goes to worker i % threads.
  const size_t threads = options_.workers == 0 ? pairs : std::min<size_t>(options_.workers, pairs);
  std::vector<std::vector<size_t>> served(threads);
  for (size_t i = 0; i < pairs; ++i) {
    if (pairs_[i].rx.queue == nullptr && pairs_[i].tx.queue == nullptr && (i != 0 || ctrl_.queue == nullptr))
      continue;
    served[i % threads].push_back(i);
  }
  for (auto& set : served) {
    if (set.empty()) continue;
    auto w = PairWorker::start(*this, std::move(set));
    if (!w.ok()) {
      workers_.clear();
      mem_ = nullptr;
      return std::move(w).error();
    }
    workers_.push_back(std::move(*w));
  }
  return Ok();
}

Result<void> VirtioNet::pause() {
  std::lock_guard lock(mu_);
  for (auto& w : workers_) w->pause();
  return Ok();
}

Result<void> VirtioNet::resume() {
  std::lock_guard lock(mu_);
  for (auto& w : workers_) w->resume();
  return Ok();
}

void VirtioNet::reset() {
  std::lock_guard lock(mu_);
  workers_.clear();  // joins: no queue is touched after this
  for (auto& p : pairs_) {
    const int fd = p.fd;
    if (p.rx_pending) stats_.rx_drops.fetch_add(1, std::memory_order_relaxed);
    p = Pair{};
    p.fd = fd;
  }
  ctrl_ = ActivatedQueue{};
  mem_ = nullptr;
  acked_ = 0;
  restored_.reset();
}

bool VirtioNet::tx_parked(size_t index) const {
  return index < pairs_.size() && pairs_[index].tx_chain.has_value();
}
bool VirtioNet::rx_held(size_t index) const { return index < pairs_.size() && pairs_[index].rx_pending; }

void VirtioNet::poll_pair(size_t index) {
  while (poll_pair_budgeted(index)) {
  }
}

bool VirtioNet::poll_pair_budgeted(size_t index) {
  if (mem_ == nullptr || index >= pairs_.size()) return false;
  Pair& p = pairs_[index];
  // Receive first: whether it delivered decides how the transmit pass asks for kicks
  // (rx_busy_until_ns). A detached tap queue answers reads with EBADFD: nothing to receive there.
  const bool rx_more = index < active_pairs() && process_rx(p);
  const bool tx_more = process_tx(p);
  return tx_more || rx_more;
}

void VirtioNet::on_tx_kick(Pair& p) {
  if (!p.tx_chain && p.tx_batch.defer_kick()) {
    p.tx_deferred = true;
    stats_.tx_deferred.fetch_add(1, std::memory_order_relaxed);
  }
}

bool VirtioNet::process_tx(Pair& p) {
  VirtQueue* q = p.tx.queue;
  if (q == nullptr || p.tx_deferred) return false;
  bool used = false;
  bool more = false;
  if (p.tx_chain) {
    if (transmit(p, *p.tx_chain) == TxResult::kParked) return false;
    p.tx_chain.reset();
    used = true;
  }
  // With batch_us, the ring is read without asking for kicks; a pass that found fewer than two
  // frames asks for them at the end (and looks once more), one that found more sets the timer.
  // So does a pass while a stream comes in (rx_busy_until_ns): its ACKs wait for the next receive
  // pass or the timer instead of kicking one by one.
  const bool batching = p.tx_batch.enabled();
  const bool riding = batching && monotonic_ns() < p.rx_busy_until_ns;
  size_t found = 0;
  for (int n = 0;; ++n) {
    if (n == kBudget) {
      more = true;
      break;
    }
    auto chain = q->pop(batching ? VirtQueue::Arm::kNo : VirtQueue::Arm::kYes);
    if (!chain && batching && found < 2 && !riding) chain = q->pop(VirtQueue::Arm::kYes);
    if (!chain) break;
    used = true;
    if (batching) {
      ++found;
      p.tx_batch.note_request();
    }
    if (transmit(p, *chain) == TxResult::kParked) {
      p.tx_chain = std::move(chain);
      break;
    }
  }
  if (batching && (found >= 2 || riding)) {
    if (found >= 2) {
      stats_.tx_batches.fetch_add(1, std::memory_order_relaxed);
      p.tx_batch.mark_busy();
    } else {
      stats_.tx_rx_polls.fetch_add(1, std::memory_order_relaxed);
    }
    // Riding on a stream, the gaps between ACKs say nothing about when the next comes: wait the
    // whole window (or the next receive pass). Without the timer nobody would come back: ask for
    // kicks after all.
    const bool timer = found >= 2 ? p.tx_batch.arm() : p.tx_batch.ensure_armed(/*whole=*/true);
    if (!timer && !more && !p.tx_chain) {
      while (auto chain = q->pop(VirtQueue::Arm::kYes)) {
        if (transmit(p, *chain) == TxResult::kParked) {
          p.tx_chain = std::move(chain);
          break;
        }
      }
    }
  }
  if (used) signal_tx(p);
  return more;
}

VirtioNet::TxResult VirtioNet::transmit(Pair& p, const DescriptorChain& chain) {
  VirtQueue* q = p.tx.queue;
  const uint64_t total = chain.readable_bytes();
  auto drop = [&](TxHeaderError why) {
    stats_.tx_drops.fetch_add(1, std::memory_order_relaxed);
    RINGVM_LOG_RATELIMITED(warn, "virtio-net {}: dropped a guest frame ({} bytes): {}", options_.id, total,
                           tx_header_error_name(why));
    q->add_used(chain.head, 0);
    return TxResult::kDone;
  };
  // SAFETY: virtio_net_hdr_v1 is a trivially-copyable UAPI struct filled from a copy of guest
  // bytes; the copy is what we validate and what the kernel sees, so the guest cannot change it
  // after the check.
  std::span<uint8_t> hdr_bytes(reinterpret_cast<uint8_t*>(&p.tx_hdr), kNetHdrSize);
  if (total < kNetHdrSize || copy_from_buffers(*mem_, chain.readable, 0, hdr_bytes) != kNetHdrSize)
    return drop(TxHeaderError::kShortHeader);
  const uint64_t frame_len = total - kNetHdrSize;
  if (const auto err = validate_tx_header(p.tx_hdr, frame_len, acked_); err != TxHeaderError::kOk)
    return drop(err);
  p.tx_hdr.num_buffers = 0;  // receive-only; the kernel ignores it
  auto data = buffers_iovecs(*mem_, chain.readable, kNetHdrSize, frame_len);
  if (!data.ok() || data->size() + 1 > IOV_MAX) return drop(TxHeaderError::kOversize);
  std::vector<iovec> iov;
  iov.reserve(data->size() + 1);
  iov.push_back(iovec{&p.tx_hdr, kNetHdrSize});
  iov.insert(iov.end(), data->begin(), data->end());
  auto write_to = [&](int fd) {
    ssize_t n;
    do {
      n = ::writev(fd, iov.data(), static_cast<int>(iov.size()));
    } while (n < 0 && errno == EINTR);
    return n;
  };
  const int pinned = pinned_fd(p, chain);
  ssize_t w = -1;
  if (pinned >= 0) {
    w = write_to(pinned);
    if (w >= 0) stats_.tx_pinned.fetch_add(1, std::memory_order_relaxed);
  }
  // The pinned queue was full or just detached (VQ_PAIRS_SET): this pair's own queue takes it, and
  // only a full own queue parks the frame.
  if (w < 0) w = write_to(p.fd);
  if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
    stats_.tx_parked.fetch_add(1, std::memory_order_relaxed);
    return TxResult::kParked;
  }
  if (w < 0) {
    // EIO: the tap's link is down; EINVAL: the kernel refused the header. Either way the frame
    // is gone, as on a real wire.
    stats_.tx_errors.fetch_add(1, std::memory_order_relaxed);
    RINGVM_LOG_RATELIMITED(warn, "virtio-net {}: {} refused a frame: {}", options_.id, backend_->name(),
                           std::strerror(errno));
  } else {
    stats_.tx_frames.fetch_add(1, std::memory_order_relaxed);
    if (frame_len >= VirtioNetOptions::kBulkFrameBytes) ++p.tx_bulk_frames;
    stats_.tx_bytes.fetch_add(frame_len, std::memory_order_relaxed);
  }
  q->add_used(chain.head, 0);
  if (options_.tx_early_irq_bytes != 0 && frame_len >= options_.tx_early_irq_bytes && signal_tx(p))
    stats_.tx_early_interrupts.fetch_add(1, std::memory_order_relaxed);
  return TxResult::kDone;
}

bool VirtioNet::signal_tx(Pair& p) {
  if (!p.tx.queue->needs_notification() || !p.tx.notify) return false;
  stats_.tx_interrupts.fetch_add(1, std::memory_order_relaxed);
  p.tx.notify();
  return true;
}

int VirtioNet::pinned_fd(const Pair& p, const DescriptorChain& chain) {
  const size_t n = active_pairs();
  if (!flows_ || n < 2) return -1;  // flows_ exists with pin_flows and two pairs or more
  std::array<uint8_t, kFlowHeaderBytes> head{};
  const size_t got = copy_from_buffers(*mem_, chain.readable, kNetHdrSize, head);
  const auto flow = flow_of(std::span<const uint8_t>(head.data(), got));
  if (!flow) return -1;
  const uint32_t h = flow->hash;
  constexpr uint64_t kStampMask = (1u << 24) - 1;
  constexpr uint64_t kIdle = 1000;  // ~1 s: nothing of the flow can still be in flight
  const uint64_t now = (monotonic_ns() >> 20) & kStampMask;
  const auto own = static_cast<uint64_t>(&p - pairs_.data());
  std::atomic<uint64_t>& slot = flows_[h % kFlowSlots];
  const uint64_t v = slot.load(std::memory_order_relaxed);
  const uint64_t queue = (v >> 24) & 0xff, stamp = v & kStampMask;
  const uint64_t idle = (now - stamp) & kStampMask;
  const bool known = (v >> 32) == h && queue < n && idle < kIdle;
  uint64_t to = own;
  if (known && (!flow->data || queue == own)) {
    // A pure ACK follows the flow's queue: the tap keeps steering what the guest receives to
    // one queue, whichever vCPU acknowledged it.
    to = queue;
    if (idle > 64) slot.store(v - stamp + now, std::memory_order_relaxed);  // refreshed now and then
  } else {
    // A new flow, or data: it leaves through the sending vCPU's own queue, as without pinning
    // (a guest-to-host stream stays on its sender's queue pair, and the host's ACKs follow), and
    // the flow's ACKs from now on go this way too.
    slot.store(uint64_t{h} << 32 | own << 24 | now, std::memory_order_relaxed);
  }
  return to == own ? -1 : pairs_[to].fd;
}

bool VirtioNet::process_rx(Pair& p) {
  VirtQueue* q = p.rx.queue;
  if (q == nullptr) return false;
  bool used = false;
  bool more = false;
  for (int n = 0;; ++n) {
    if (n == kBudget) {
      more = true;
      break;
    }
    if (!p.rx_pending && mergeable_) {
      const DirectRx d = receive_direct(p);
      if (d == DirectRx::kEmpty) break;
      if (d == DirectRx::kRetry) continue;
      if (d == DirectRx::kDelivered) {
        used = true;
        continue;
      }
      // kFallback: the guest has not posted room for a whole frame yet; read into our buffer.
    }
    if (!p.rx_pending) {
      const ssize_t r = ::read(p.fd, p.rx_frame.data(), p.rx_frame.size());
      if (r < 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
          stats_.rx_errors.fetch_add(1, std::memory_order_relaxed);
          RINGVM_LOG_RATELIMITED(warn, "virtio-net {}: reading {}: {}", options_.id, backend_->name(),
                                 std::strerror(errno));
        }
        break;
      }
      if (r == 0) break;  // a closed datagram peer (tests); a tap never returns 0
      if (static_cast<size_t>(r) < kNetHdrSize + kMinFrameBytes) {
        stats_.rx_errors.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      p.rx_len = static_cast<size_t>(r);
      p.rx_pending = true;
    }
    if (!deliver(p)) break;  // held until the guest adds buffers
    used = true;
  }
  if (used && p.tx_batch.enabled()) p.rx_busy_until_ns = monotonic_ns() + 4 * p.tx_batch.max_ns();
  // No receive-side hold: holding the interrupt while the tap keeps delivering (NAPI-style,
  // tried on 2026-11-22) cut 4-stream host-to-guest TCP in the lab to a third; docs/networking.md.
  if (used && q->needs_notification() && p.rx.notify) {
    stats_.rx_interrupts.fetch_add(1, std::memory_order_relaxed);
    p.rx.notify();
  }
  return more;
}

bool VirtioNet::gather_rx_chains(Pair& p, uint64_t room, VirtQueue::Arm arm) {
  VirtQueue* q = p.rx.queue;
  uint64_t have = 0;
  for (const auto& c : p.rx_chains) have += c.writable_bytes();
  while (have < room) {
    auto c = q->pop(arm);
    if (!c) return false;
    if (c->writable.empty()) {
      stats_.rx_errors.fetch_add(1, std::memory_order_relaxed);
      q->add_used(c->head, 0);
      continue;
    }
    have += c->writable_bytes();
    p.rx_chains.push_back(std::move(*c));
  }
  return true;
}

VirtioNet::DirectRx VirtioNet::receive_direct(Pair& p) {
  VirtQueue* q = p.rx.queue;
  constexpr uint64_t kRoom = kNetHdrSize + kMaxFrameBytes;
  // What was popped stays in rx_chains for the next frame either way. Running dry here asks for
  // a kick although the next frame may still fit: asking only when a frame must wait (as QEMU
  // does) was tried and saved nothing measurable (receive kicks are a few hundred per iperf run;
  // docs/networking.md).
  if (!gather_rx_chains(p, kRoom, VirtQueue::Arm::kYes)) return DirectRx::kFallback;
  // Host views of the guest's buffers, the largest frame's worth. Every buffer was checked against
  // guest memory when its chain was popped.
  std::vector<iovec>& iov = p.rx_iov;  // reused: no allocation per frame once it has grown
  iov.clear();
  uint64_t room = kRoom;
  for (const auto& c : p.rx_chains) {
    if (room == 0) break;
    const uint64_t take = std::min(room, c.writable_bytes());
    if (!append_buffers_iovecs(*mem_, c.writable, 0, take, iov).ok()) return DirectRx::kFallback;
    room -= take;
  }
  if (iov.size() > IOV_MAX) return DirectRx::kFallback;
  ssize_t r;
  do {
    r = ::readv(p.fd, iov.data(), static_cast<int>(iov.size()));
  } while (r < 0 && errno == EINTR);
  if (r < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      stats_.rx_errors.fetch_add(1, std::memory_order_relaxed);
      RINGVM_LOG_RATELIMITED(warn, "virtio-net {}: reading {}: {}", options_.id, backend_->name(),
                             std::strerror(errno));
    }
    return DirectRx::kEmpty;
  }
  if (r == 0) return DirectRx::kEmpty;  // a closed datagram peer (tests); a tap never returns 0
  const auto len = static_cast<uint64_t>(r);
  if (len < kNetHdrSize + kMinFrameBytes) {
    // The buffers stay ours (nothing is published): the next frame overwrites them.
    stats_.rx_errors.fetch_add(1, std::memory_order_relaxed);
    return DirectRx::kRetry;
  }
  size_t count = 0;
  for (uint64_t covered = 0; covered < len; ++count) covered += p.rx_chains[count].writable_bytes();
  // The backend wrote the header's first 10 bytes; num_buffers is ours to fill, and without
  // GUEST_CSUM the checksum flags must be clear (5.1.6.3.1).
  const uint16_t num_buffers = htole16(static_cast<uint16_t>(count));
  const auto& first = p.rx_chains.front().writable;
  copy_to_buffers(*mem_, first, offsetof(virtio_net_hdr_v1, num_buffers),
                  {reinterpret_cast<const uint8_t*>(&num_buffers), sizeof num_buffers});
  if (!(acked_ & bit(VIRTIO_NET_F_GUEST_CSUM))) {
    const uint8_t no_flags = 0;
    copy_to_buffers(*mem_, first, offsetof(virtio_net_hdr_v1, flags), {&no_flags, 1});
  }
  std::vector<std::pair<uint16_t, uint32_t>> used;
  used.reserve(count);
  uint64_t at = 0;
  for (size_t i = 0; i < count; ++i) {
    const uint64_t n = std::min<uint64_t>(p.rx_chains[i].writable_bytes(), len - at);
    used.emplace_back(p.rx_chains[i].head, static_cast<uint32_t>(n));
    at += n;
  }
  p.rx_chains.erase(p.rx_chains.begin(), p.rx_chains.begin() + static_cast<ptrdiff_t>(count));
  q->add_used_batch(used);
  stats_.rx_frames.fetch_add(1, std::memory_order_relaxed);
  stats_.rx_bytes.fetch_add(len - kNetHdrSize, std::memory_order_relaxed);
  return DirectRx::kDelivered;
}

bool VirtioNet::deliver(Pair& p) {
  VirtQueue* q = p.rx.queue;
  const uint64_t need = p.rx_len;
  // Gather chains until the frame fits: one (it must hold the whole frame) or, with mergeable
  // buffers, as many as it takes. Chains already popped for a frame we could not finish stay
  // in rx_chains, so nothing the guest gave us is lost while we wait for more.
  // Every held chain has at least one writable byte, so 1 byte of room means one chain.
  if (!gather_rx_chains(p, mergeable_ ? need : 1, VirtQueue::Arm::kYes)) return false;
  p.rx_pending = false;
  if (!mergeable_ && p.rx_chains.front().writable_bytes() < need) {
    // The guest posted buffers too small for this frame (it did not negotiate the offload that
    // produced it, or lied about sizes): drop the frame, keep the buffer for the next one.
    stats_.rx_drops.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  size_t count = 0;
  for (uint64_t covered = 0; covered < need; ++count) covered += p.rx_chains[count].writable_bytes();
  // The backend wrote the first 10 header bytes; num_buffers is ours to fill.
  const uint16_t num_buffers = htole16(static_cast<uint16_t>(count));
  std::memcpy(p.rx_frame.data() + offsetof(virtio_net_hdr_v1, num_buffers), &num_buffers, sizeof num_buffers);
  if (!(acked_ & bit(VIRTIO_NET_F_GUEST_CSUM)))
    p.rx_frame[offsetof(virtio_net_hdr_v1, flags)] = 0;  // 5.1.6.3.1
  uint64_t at = 0;
  std::vector<std::pair<uint16_t, uint32_t>> used;
  used.reserve(count);
  for (size_t i = 0; i < count; ++i) {
    const auto& c = p.rx_chains[i];
    const uint64_t n = std::min<uint64_t>(c.writable_bytes(), need - at);
    const size_t put = copy_to_buffers(
        *mem_, c.writable, 0, std::span<const uint8_t>(p.rx_frame.data() + at, static_cast<size_t>(n)));
    used.emplace_back(c.head, static_cast<uint32_t>(put));
    at += n;
  }
  p.rx_chains.erase(p.rx_chains.begin(), p.rx_chains.begin() + static_cast<ptrdiff_t>(count));
  // All of a frame's buffers become visible together: the driver reads num_buffers from the
  // first and expects the rest to be there already.
  q->add_used_batch(used);
  stats_.rx_frames.fetch_add(1, std::memory_order_relaxed);
  stats_.rx_bytes.fetch_add(need - kNetHdrSize, std::memory_order_relaxed);
  return true;
}

void VirtioNet::poll_ctrl() {
  VirtQueue* q = ctrl_.queue;
  if (mem_ == nullptr || q == nullptr) return;
  bool used = false;
  while (auto c = q->pop()) {
    used = true;
    if (c->writable.empty()) {
      stats_.ctrl_errors.fetch_add(1, std::memory_order_relaxed);
      q->add_used(c->head, 0);
      continue;
    }
    const uint8_t ack = handle_ctrl(*c);
    if (ack != VIRTIO_NET_OK) stats_.ctrl_errors.fetch_add(1, std::memory_order_relaxed);
    const DescriptorBuffer& last = c->writable.back();
    (void)mem_->write_obj(last.addr + last.len - 1, ack);
    q->add_used(c->head, 1);
  }
  if (used && q->needs_notification() && ctrl_.notify) ctrl_.notify();
}

uint8_t VirtioNet::handle_ctrl(const DescriptorChain& chain) {
  virtio_net_ctrl_hdr hdr{};
  // SAFETY: a 2-byte trivially-copyable UAPI struct filled from a copy of guest bytes.
  if (copy_from_buffers(*mem_, chain.readable, 0, {reinterpret_cast<uint8_t*>(&hdr), sizeof hdr}) !=
      sizeof hdr)
    return VIRTIO_NET_ERR;
  if (hdr.class_ == VIRTIO_NET_CTRL_MQ && hdr.cmd == VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET &&
      (acked_ & bit(VIRTIO_NET_F_MQ))) {
    virtio_net_ctrl_mq mq{};
    // SAFETY: as above, a 2-byte UAPI struct from a copy.
    if (copy_from_buffers(*mem_, chain.readable, sizeof hdr, {reinterpret_cast<uint8_t*>(&mq), sizeof mq}) !=
        sizeof mq)
      return VIRTIO_NET_ERR;
    const uint16_t n = le16toh(mq.virtqueue_pairs);
    if (n < VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN || n > pairs_.size()) {
      RINGVM_LOG_RATELIMITED(warn, "virtio-net {}: driver asked for {} queue pairs, the device has {}",
                             options_.id, n, pairs_.size());
      return VIRTIO_NET_ERR;
    }
    if (auto r = backend_->set_active_queues(n); !r.ok()) {
      RINGVM_LOG_RATELIMITED(warn, "virtio-net {}: {}", options_.id, r.error().message());
      return VIRTIO_NET_ERR;
    }
    active_pairs_.store(n, std::memory_order_relaxed);
    pairs_gen_.fetch_add(1);
    // Wake the other pairs' workers so they start (or stop) polling their backend queue.
    for (size_t i = 1; i < pairs_.size(); ++i)
      if (pairs_[i].rx.kick_fd >= 0) signal_eventfd(pairs_[i].rx.kick_fd);
    return VIRTIO_NET_OK;
  }
  RINGVM_LOG_RATELIMITED(debug, "virtio-net {}: unsupported control command class {} cmd {}", options_.id,
                         hdr.class_, hdr.cmd);
  return VIRTIO_NET_ERR;
}

Result<MacAddress> parse_mac(std::string_view text) {
  MacAddress mac{};
  size_t pos = 0;
  for (size_t i = 0; i < mac.size(); ++i) {
    if (i > 0) {
      if (pos >= text.size() || (text[pos] != ':' && text[pos] != '-')) break;
      ++pos;
    }
    unsigned v = 0;
    size_t digits = 0;
    for (; digits < 2 && pos < text.size() && std::isxdigit(static_cast<unsigned char>(text[pos]));
         ++digits, ++pos)
      v = v * 16 +
          static_cast<unsigned>(std::isdigit(static_cast<unsigned char>(text[pos]))
                                    ? text[pos] - '0'
                                    : (std::tolower(static_cast<unsigned char>(text[pos])) - 'a' + 10));
    if (digits != 2)
      return make_error(ErrorCode::kInvalidArgument, "mac={}: expected six hex pairs like 52:54:00:12:34:56",
                        text);
    mac[i] = static_cast<uint8_t>(v);
    if (i == 5 && pos == text.size()) {
      if (mac[0] & 1)
        return make_error(ErrorCode::kInvalidArgument,
                          "mac={}: a multicast address (low bit of the first byte set) cannot be a NIC's",
                          text);
      return mac;
    }
  }
  return make_error(ErrorCode::kInvalidArgument, "mac={}: expected six hex pairs like 52:54:00:12:34:56",
                    text);
}

std::string format_mac(const MacAddress& m) {
  return fmt::format("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5]);
}

MacAddress random_mac() {
  MacAddress m{};
  if (::getrandom(m.data(), m.size(), 0) != static_cast<ssize_t>(m.size())) {
    // getrandom cannot fail for 6 bytes once the pool is ready; a fixed fallback still works.
    m = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
  }
  m[0] = static_cast<uint8_t>((m[0] & 0xfe) | 0x02);  // unicast, locally administered
  return m;
}

}  // namespace ringvm
