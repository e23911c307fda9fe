#include "devices/virtio/block/virtio_block.h"

#include <endian.h>
#include <limits.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <sys/uio.h>

#include <algorithm>
#include <cstring>

#include "base/log.h"
#include "base/state_codec.h"
#include "devices/virtio/chain_io.h"
#include "devices/virtio/ring_abi.h"
#include "memory/guest_memory.h"

namespace ringvm {

namespace {

constexpr uint64_t kSector = 512;
constexpr uint64_t bit(unsigned b) { return 1ULL << b; }
// handle()'s "no status yet": the request went to io_uring and completes later.
constexpr int kAsync = -1;
// The poll window a closed one reopens at, and below which it closes.
constexpr uint64_t kPollStartNs = 4000;
// save()/restore()'s layout; a change to it is a new version.
constexpr uint32_t kStateVersion = 1;

}  // namespace

Result<std::unique_ptr<VirtioBlock>> VirtioBlock::create(std::shared_ptr<Disk> disk, VirtioBlockOptions options) {
  if (!disk) return make_error(ErrorCode::kInvalidArgument, "virtio-blk {}: no disk", options.id);
  if (options.serial.size() > VIRTIO_BLK_ID_BYTES)
    return make_error(ErrorCode::kInvalidArgument, "virtio-blk {}: serial '{}' is longer than {} bytes",
                      options.id, options.serial, VIRTIO_BLK_ID_BYTES);
  if (options.queues == 0 || options.queues > kMaxQueues)
    return make_error(ErrorCode::kInvalidArgument, "virtio-blk {}: {} queues requested, allowed 1..{}", options.id,
                      options.queues, kMaxQueues);
  if (options.queue_size < 4 || options.queue_size > 1024 || (options.queue_size & (options.queue_size - 1)))
    return make_error(ErrorCode::kInvalidArgument,
                      "virtio-blk {}: queue size {} must be a power of two between 4 and 1024", options.id,
                      options.queue_size);
  if (options.chain_passes == 0)
    return make_error(ErrorCode::kInvalidArgument, "virtio-blk {}: chain_passes must be at least 1", options.id);
  return std::unique_ptr<VirtioBlock>(new VirtioBlock(std::move(disk), std::move(options)));
}

VirtioBlock::VirtioBlock(std::shared_ptr<Disk> disk, VirtioBlockOptions options)
    : disk_(std::move(disk)), options_(std::move(options)) {
  read_only_ = options_.read_only || disk_->read_only();
  // A trailing partial sector is invisible to the guest (the capacity is in whole sectors).
  capacity_sectors_ = disk_->size() / kSector;
  features_ = bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_RING_F_EVENT_IDX) | bit(VIRTIO_RING_F_INDIRECT_DESC) |
              bit(VIRTIO_BLK_F_FLUSH) | bit(VIRTIO_BLK_F_SEG_MAX) | bit(VIRTIO_BLK_F_BLK_SIZE);
  if (read_only_) features_ |= bit(VIRTIO_BLK_F_RO);
  else features_ |= bit(VIRTIO_BLK_F_DISCARD) | bit(VIRTIO_BLK_F_WRITE_ZEROES);
  if (options_.queues > 1) features_ |= bit(VIRTIO_BLK_F_MQ);

  config_.capacity = htole64(capacity_sectors_);
  // Header and status take two descriptors of a chain no longer than the queue.
  config_.seg_max = htole32(options_.queue_size - 2u);
  config_.blk_size = htole32(kSector);
  config_.num_queues = htole16(options_.queues);
  config_.max_discard_sectors = htole32(kMaxDiscardSectors);
  config_.max_discard_seg = htole32(kMaxDiscardSegments);
  config_.discard_sector_alignment = htole32(1);
  config_.max_write_zeroes_sectors = htole32(kMaxDiscardSectors);
  config_.max_write_zeroes_seg = htole32(kMaxDiscardSegments);
  config_.write_zeroes_may_unmap = 1;
}

VirtioBlock::~VirtioBlock() { reset(); }

uint32_t VirtioBlock::device_type() const { return VIRTIO_ID_BLOCK; }

std::vector<uint16_t> VirtioBlock::queue_max_sizes() const {
  return std::vector<uint16_t>(options_.queues, options_.queue_size);
}

void VirtioBlock::read_config(uint64_t offset, std::span<uint8_t> data) const {
  std::fill(data.begin(), data.end(), 0);
  if (offset >= sizeof(config_)) return;
  const size_t n = std::min<uint64_t>(data.size(), sizeof(config_) - offset);
  // SAFETY: config_ is a trivially-copyable UAPI struct; [offset, offset + n) lies inside it.
  std::memcpy(data.data(), reinterpret_cast<const uint8_t*>(&config_) + offset, n);
}

void VirtioBlock::write_config(uint64_t offset, std::span<const uint8_t>) {
  // Nothing in our config is writable (no VIRTIO_BLK_F_CONFIG_WCE).
  RINGVM_LOG_RATELIMITED(debug, "virtio-blk {}: ignored config write at {:#x}", options_.id, offset);
}

Result<void> VirtioBlock::activate(const GuestMemory& mem, uint64_t acked_features,
                                   std::vector<ActivatedQueue> queues) {
  std::lock_guard lock(mu_);
  if (mem_ != nullptr) return make_error(ErrorCode::kInternal, "virtio-blk {}: activated twice", options_.id);
  if (queues.size() > options_.queues)
    return make_error(ErrorCode::kInvalidArgument, "virtio-blk {}: {} queues given, {} offered", options_.id,
                      queues.size(), options_.queues);
  queues_ = TRY(activate_queues(fmt::format("virtio-blk {}", options_.id), mem, acked_features, std::move(queues)));
  mem_ = &mem;
  rings_.clear();
  rings_.resize(queues_.size());
  polls_.clear();
  polls_.resize(queues_.size());
  pending_.clear();
  pending_.resize(queues_.size());
  for (auto& p : polls_) p.window_ns = uint64_t{options_.poll_us} * 1000;
  const bool batching = options_.batch_us > 0 && options_.poll_us == 0;
  const auto fd = disk_->direct_fd();
  for (size_t i = 0; i < queues_.size(); ++i) {
    if (queues_[i].queue == nullptr) continue;
    if (fd && options_.engine == VirtioBlockOptions::Engine::kAuto) {
      auto ring = UringQueue::create(queues_[i].queue->size());
      if (ring.ok()) rings_[i] = std::move(*ring);
      else RINGVM_LOG_RATELIMITED(info, "virtio-blk {}: synchronous I/O: {}", options_.id, ring.error().message());
    }
    const int done_fd = rings_[i] ? rings_[i]->event_fd() : -1;
    if (batching) {
      auto b = QueueBatcher::create(fmt::format("virtio-blk {} queue {}", options_.id, i), options_.batch_us);
      if (b.ok()) polls_[i].batch = std::move(*b);
      else RINGVM_LOG_RATELIMITED(warn, "virtio-blk {}: {}; no batching", options_.id, b.error().message());
    }
    auto w = VirtioWorker::start(fmt::format("blk-{}-q{}", options_.id, i),
                                 {queues_[i].kick_fd, done_fd, polls_[i].batch.fd()},
                                 [this, i](size_t source, uint64_t count) {
                                   if (source == 0) stats_.kicks.fetch_add(count, std::memory_order_relaxed);
                                   if (source == 1) return reap(i);
                                   // The batch timer; the worker's first round calls every source
                                   // once, and a timer still running has not fired.
                                   if (source == 2 && polls_[i].batch.pending()) return;
                                   process_queue(i, source == 0 && count > 0);
                                 },
                                 [this, i] { quiesce(i); });
    if (!w.ok()) {
      workers_.clear();
      rings_.clear();
      mem_ = nullptr;
      queues_.clear();
      return std::move(w).error();
    }
    workers_.push_back(std::move(*w));
  }
  return Ok();
}

void VirtioBlock::quiesce(size_t index) {
  if (index >= rings_.size() || !rings_[index]) return;
  flush_rw(index);
  rings_[index]->drain();
  notify_if_needed(index);
}

// GCC 12 at -O3 sees StateWriter's vector growth inlined here and warns of a write past a
// 4-byte allocation that cannot happen (its -Wstringop-overflow false positive on
// vector::insert after a reallocation).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstringop-overflow"
#endif
Result<std::vector<uint8_t>> VirtioBlock::save() const {
  StateWriter w;
  w.u32(kStateVersion);
  w.u64(features_);
  w.u16(options_.queues);
  w.u16(options_.queue_size);
  w.u64(capacity_sectors_);
  w.boolean(read_only_);
  w.str(options_.serial);
  return w.take();
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

Result<void> VirtioBlock::restore(std::span<const uint8_t> state) {
  StateReader r(state, fmt::format("virtio-blk {}", options_.id));
  const uint32_t version = TRY(r.u32("version"));
  if (version != kStateVersion)
    return r.corrupt(fmt::format("state version {} is not {}, the one this ringvm writes", version, kStateVersion));
  const uint64_t features = TRY(r.u64("features"));
  const uint16_t queues = TRY(r.u16("queues"));
  const uint16_t queue_size = TRY(r.u16("queue_size"));
  const uint64_t capacity = TRY(r.u64("capacity"));
  const bool read_only = TRY(r.boolean("read_only"));
  const std::string serial = TRY(r.str("serial", VIRTIO_BLK_ID_BYTES));
  RETURN_IF_ERROR(r.finish());
  // The disk first: it is the mismatch a user can make (another file, a resized one).
  if (capacity != capacity_sectors_)
    return make_error(ErrorCode::kInvalidArgument,
                      "virtio-blk {}: the snapshot's disk had {} sectors ({} bytes); {} has {} ({} bytes): restore "
                      "onto the disk the snapshot was taken with",
                      options_.id, capacity, capacity * kSector, disk_->path(), capacity_sectors_,
                      capacity_sectors_ * kSector);
  if (read_only != read_only_)
    return make_error(ErrorCode::kInvalidArgument, "virtio-blk {}: the snapshot's disk was {}; {} is {}", options_.id,
                      read_only ? "read-only" : "writable", disk_->path(), read_only_ ? "read-only" : "writable");
  if (queues != options_.queues || queue_size != options_.queue_size)
    return make_error(ErrorCode::kInvalidArgument,
                      "virtio-blk {}: the snapshot has {} queues of size {}; this device has {} of size {}",
                      options_.id, queues, queue_size, options_.queues, options_.queue_size);
  if (serial != options_.serial)
    return make_error(ErrorCode::kInvalidArgument, "virtio-blk {}: the snapshot's serial is '{}'; this device's is '{}'",
                      options_.id, serial, options_.serial);
  if (features != features_)
    return make_error(ErrorCode::kInvalidArgument,
                      "virtio-blk {}: the snapshot was taken offering features {:#x}; this device offers {:#x}",
                      options_.id, features, features_);
  std::lock_guard lock(mu_);
  if (mem_ != nullptr)
    return make_error(ErrorCode::kInternal, "virtio-blk {}: restore on an activated device (reset it first)",
                      options_.id);
  // Everything restorable equals what this device was built with: nothing to change.
  return Ok();
}

Result<void> VirtioBlock::flush() {
  auto r = disk_->flush();
  if (!r.ok()) return wrap(std::move(r).error(), "virtio-blk {}: flushing {}", options_.id, disk_->path());
  return Ok();
}

Result<void> VirtioBlock::pause() {
  std::lock_guard lock(mu_);
  for (auto& w : workers_) w->pause();
  return Ok();
}

Result<void> VirtioBlock::resume() {
  std::lock_guard lock(mu_);
  for (auto& w : workers_) w->resume();
  return Ok();
}

void VirtioBlock::reset() {
  std::lock_guard lock(mu_);
  workers_.clear();  // joins: nothing submits or completes after this
  rings_.clear();    // waits for what the kernel still has in flight
  queues_.clear();
  mem_ = nullptr;
}

void VirtioBlock::process_queue(size_t index, bool kicked) {
  if (index >= queues_.size() || queues_[index].queue == nullptr) return;
  if (index < polls_.size() && polls_[index].batch.enabled()) return serve_batched(index, kicked);
  PollState& poll = polls_[index];
  const uint64_t max_ns = uint64_t{options_.poll_us} * 1000;
  // The window adapts to the gaps between the driver's requests, measured from the moment the
  // ring was found empty to the kick that ended the sleep (QEMU's AioContext polling does the
  // same): a gap longer than the longest window closes it by half (polling would not have
  // caught it); a gap the window just missed widens it.
  if (max_ns > 0 && poll.slept_at_ns != 0) {
    const uint64_t gap = monotonic_ns() - poll.slept_at_ns;
    if (gap > max_ns) poll.window_ns = poll.window_ns / 2 < kPollStartNs ? 0 : poll.window_ns / 2;
    else if (gap > poll.window_ns) poll.window_ns = std::min(max_ns, std::max(poll.window_ns * 2, kPollStartNs));
  }
  for (;;) {
    if (poll.window_ns == 0) {
      serve(index, VirtQueue::Arm::kYes);
      poll.slept_at_ns = max_ns > 0 ? monotonic_ns() : 0;
      return;
    }
    serve(index, VirtQueue::Arm::kNo);
    const uint64_t empty_at = monotonic_ns();
    if (poll_ring(index, poll.window_ns)) {
      stats_.poll_hits.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    // Ask for a kick, and look once more: the driver may have added a request meanwhile. Counted
    // after, so whoever reads the counter knows the kick was asked for.
    const size_t found = serve(index, VirtQueue::Arm::kYes);
    stats_.poll_misses.fetch_add(1, std::memory_order_relaxed);
    if (found == 0) {
      poll.slept_at_ns = empty_at;
      return;
    }
  }
}

void VirtioBlock::serve_batched(size_t index, bool kicked) {
  QueueBatcher& batch = polls_[index].batch;
  if (kicked && batch.defer_kick()) {
    // The guest kept this queue busy a moment ago: what it adds after this kick does not kick
    // again (avail_event stays behind), so let it gather and serve it all on the timer.
    stats_.deferred.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  for (;;) {
    const size_t n = serve(index, VirtQueue::Arm::kNo);
    if (n >= 2) {
      // The guest keeps this queue busy: no kick for what it adds next; the timer brings the
      // worker back (worker.h, QueueBatcher).
      stats_.batches.fetch_add(1, std::memory_order_relaxed);
      batch.mark_busy();
      if (batch.arm()) return;
    }
    // Light load (or no timer): ask for a kick, and look once more.
    if (serve(index, VirtQueue::Arm::kYes) == 0) return;
  }
}

size_t VirtioBlock::serve(size_t index, VirtQueue::Arm arm) {
  auto& aq = queues_[index];
  size_t found = 0;
  QueueBatcher* batch = index < polls_.size() && polls_[index].batch.enabled() ? &polls_[index].batch : nullptr;
  UringQueue* ring = index < rings_.size() ? rings_[index].get() : nullptr;
  for (unsigned pass = 0;; ++pass) {
    const uint64_t bytes_before = polls_[index].completed_bytes;
    size_t n = 0;
    while (auto chain = aq.queue->pop(arm)) {
      ++n;
      if (batch != nullptr) batch->note_request();
      if (auto used = handle(index, *chain)) aq.queue->add_used(chain->head, *used);
    }
    found += n;
    if (ring == nullptr) break;
    flush_rw(index);
    ring->submit();
    // A fast medium (a RAM disk, the page cache, a cached NVMe read) often completes during the
    // submit itself: publish those now, with the same interrupt, instead of after one more trip
    // through the completion eventfd and epoll. (Most completions come later, from the kernel's
    // workers: then this costs no system call.)
    const bool inline_done = ring->reap_if_ready();
    // What the driver added while this pass's I/O ran (it kicked, or will find it served) joins
    // the same interrupt: one interrupt for both batches instead of one each. Only after I/O that
    // completed in the submit, which is when such a pass took long; completions that come later
    // raise their own interrupt anyway (reap()).
    if (n == 0 || !inline_done || pass + 1 >= options_.chain_passes ||
        polls_[index].completed_bytes - bytes_before >= options_.chain_max_bytes || !aq.queue->has_available())
      break;
    stats_.chained.fetch_add(1, std::memory_order_relaxed);
  }
  notify_if_needed(index);
  return found;
}

bool VirtioBlock::poll_ring(size_t index, uint64_t ns) {
  VirtQueue& q = *queues_[index].queue;
  UringQueue* ring = index < rings_.size() ? rings_[index].get() : nullptr;
  const uint64_t deadline = monotonic_ns() + ns;
  for (;;) {
    if (q.has_available()) return true;
    if (ring != nullptr && ring->reap_if_ready()) notify_if_needed(index);
    if (q.broken() || monotonic_ns() >= deadline) return false;
    __builtin_ia32_pause();
  }
}

void VirtioBlock::notify_if_needed(size_t index) {
  auto& aq = queues_[index];
  if (aq.queue->needs_notification() && aq.notify) {
    stats_.interrupts.fetch_add(1, std::memory_order_relaxed);
    aq.notify();
  }
}

size_t VirtioBlock::uring_queues() const {
  return static_cast<size_t>(std::count_if(rings_.begin(), rings_.end(), [](const auto& r) { return r != nullptr; }));
}

void VirtioBlock::reap(size_t index) {
  if (index >= rings_.size() || !rings_[index]) return;
  const size_t before = rings_[index]->in_flight();
  rings_[index]->reap();
  if (rings_[index]->in_flight() < before) stats_.late_reaps.fetch_add(1, std::memory_order_relaxed);
  notify_if_needed(index);
}

void VirtioBlock::complete(size_t queue, uint16_t head, uint64_t status_addr, uint32_t used_ok, int32_t res,
                           uint64_t expected, int kind) {
  uint8_t status = VIRTIO_BLK_S_OK;
  if (res < 0 || static_cast<uint64_t>(res) != expected) {
    status = io_error(res < 0 ? Error{ErrorCode::kIo, -res, fmt::format("io_uring request on {}", disk_->path())}
                              : make_error(ErrorCode::kIo, "short transfer ({} of {} bytes) on {}", res, expected,
                                           disk_->path()));
  } else if (kind == VIRTIO_BLK_T_IN || kind == VIRTIO_BLK_T_OUT) {
    const bool rd = kind == VIRTIO_BLK_T_IN;
    (rd ? stats_.reads : stats_.writes).fetch_add(1, std::memory_order_relaxed);
    (rd ? stats_.bytes_read : stats_.bytes_written).fetch_add(expected, std::memory_order_relaxed);
    polls_[queue].completed_bytes += expected;
  }
  (void)mem_->write_obj(status_addr, status);
  queues_[queue].queue->add_used(head, status == VIRTIO_BLK_S_OK ? used_ok : 1);
}

bool VirtioBlock::range_ok(uint64_t sector, uint64_t bytes) const {
  // Written so nothing overflows: sector <= capacity, then compare sector counts.
  return sector <= capacity_sectors_ && bytes % kSector == 0 && bytes / kSector <= capacity_sectors_ - sector;
}

uint8_t VirtioBlock::io_error(const Error& e) {
  stats_.io_errors.fetch_add(1, std::memory_order_relaxed);
  RINGVM_LOG_RATELIMITED(warn, "virtio-blk {}: {}", options_.id, e.message());
  return VIRTIO_BLK_S_IOERR;
}

std::optional<uint32_t> VirtioBlock::handle(size_t queue, const DescriptorChain& chain) {
  const uint64_t writable = chain.writable_bytes();
  if (writable == 0) {
    // Nowhere to put a status: the request cannot be answered, only returned.
    stats_.no_status.fetch_add(1, std::memory_order_relaxed);
    return 0;
  }
  // The status byte is the chain's last writable byte; data comes before it.
  const uint64_t data_in = writable - 1;
  const DescriptorBuffer& last = chain.writable.back();
  const uint64_t status_addr = last.addr + last.len - 1;
  int status = VIRTIO_BLK_S_IOERR;
  uint32_t used = 1;
  virtio_blk_outhdr hdr{};
  // SAFETY: virtio_blk_outhdr is a trivially-copyable 16-byte UAPI struct; we fill it from a copy.
  std::span<uint8_t> hdr_bytes(reinterpret_cast<uint8_t*>(&hdr), sizeof hdr);
  if (copy_from_buffers(*mem_, chain.readable, 0, hdr_bytes) != sizeof hdr) {
    stats_.bad_requests.fetch_add(1, std::memory_order_relaxed);
  } else {
    const uint32_t type = le32toh(hdr.type);
    const uint64_t sector = le64toh(hdr.sector);
    const uint64_t data_out = chain.readable_bytes() - sizeof hdr;
    switch (type) {
      case VIRTIO_BLK_T_IN:
        status = do_rw(queue, type, sector, chain, data_in, status_addr);
        if (status == VIRTIO_BLK_S_OK) used = static_cast<uint32_t>(writable);
        break;
      case VIRTIO_BLK_T_OUT: status = do_rw(queue, type, sector, chain, data_out, status_addr); break;
      case VIRTIO_BLK_T_FLUSH: status = do_flush(queue, chain, status_addr); break;
      case VIRTIO_BLK_T_GET_ID: {
        stats_.get_ids.fetch_add(1, std::memory_order_relaxed);
        std::array<uint8_t, VIRTIO_BLK_ID_BYTES> id{};
        std::memcpy(id.data(), options_.serial.data(), options_.serial.size());
        const size_t n = std::min<uint64_t>(data_in, id.size());
        copy_to_buffers(*mem_, chain.writable, 0, std::span<const uint8_t>(id.data(), n));
        status = VIRTIO_BLK_S_OK;
        used = static_cast<uint32_t>(n + 1);
        break;
      }
      case VIRTIO_BLK_T_DISCARD:
      case VIRTIO_BLK_T_WRITE_ZEROES: status = do_discard_or_zero(type, chain, data_out); break;
      default:
        stats_.unsupported.fetch_add(1, std::memory_order_relaxed);
        status = VIRTIO_BLK_S_UNSUPP;
        break;
    }
  }
  if (status == kAsync) return std::nullopt;
  (void)mem_->write_obj(status_addr, static_cast<uint8_t>(status));
  return used;
}

int VirtioBlock::do_flush(size_t queue, const DescriptorChain& chain, uint64_t status_addr) {
  stats_.flushes.fetch_add(1, std::memory_order_relaxed);
  if (options_.cache == VirtioBlockOptions::Cache::kUnsafe) return VIRTIO_BLK_S_OK;
  // Durable before the guest sees the status: that is the whole point of FLUSH. The guest only
  // flushes after the writes it covers completed, so the flush need not wait for other I/O.
  if (queue < rings_.size() && rings_[queue]) {
    flush_rw(queue);  // keep submission order
    rings_[queue]->fdatasync(*disk_->direct_fd(), [this, queue, head = chain.head, status_addr](int32_t res) {
      complete(queue, head, status_addr, 1, res, 0, VIRTIO_BLK_T_FLUSH);
    });
    return kAsync;
  }
  auto r = disk_->flush();
  return r.ok() ? VIRTIO_BLK_S_OK : io_error(r.error());
}

int VirtioBlock::do_rw(size_t queue, uint32_t type, uint64_t sector, const DescriptorChain& chain,
                       uint64_t data_len, uint64_t status_addr) {
  const bool is_read = type == VIRTIO_BLK_T_IN;
  if (!is_read && read_only_) {
    stats_.bad_requests.fetch_add(1, std::memory_order_relaxed);
    return VIRTIO_BLK_S_IOERR;
  }
  if (!range_ok(sector, data_len)) {
    stats_.bad_requests.fetch_add(1, std::memory_order_relaxed);
    RINGVM_LOG_RATELIMITED(warn, "virtio-blk {}: {} of {} bytes at sector {} is outside the disk ({} sectors)",
                           options_.id, is_read ? "read" : "write", data_len, sector, capacity_sectors_);
    return VIRTIO_BLK_S_IOERR;
  }
  auto iov = is_read ? buffers_iovecs(*mem_, chain.writable, 0, data_len)
                     : buffers_iovecs(*mem_, chain.readable, sizeof(virtio_blk_outhdr), data_len);
  if (!iov.ok()) return io_error(iov.error());
  if (queue < rings_.size() && rings_[queue]) {
    queue_rw(queue, type, sector, std::move(*iov), chain.head, status_addr, data_len);
    return kAsync;
  }
  auto r = is_read ? disk_->readv(sector * kSector, *iov) : disk_->writev(sector * kSector, *iov);
  if (!r.ok()) return io_error(r.error());
  (is_read ? stats_.reads : stats_.writes).fetch_add(1, std::memory_order_relaxed);
  (is_read ? stats_.bytes_read : stats_.bytes_written).fetch_add(data_len, std::memory_order_relaxed);
  return VIRTIO_BLK_S_OK;
}

void VirtioBlock::queue_rw(size_t queue, uint32_t type, uint64_t sector, std::vector<iovec> iov, uint16_t head,
                           uint64_t status_addr, uint64_t bytes) {
  PendingRw& p = pending_[queue];
  if (!p.parts.empty()) {
    const bool continues = p.type == type && p.sector + p.bytes / kSector == sector &&
                           p.bytes + bytes <= options_.merge_bytes && p.iov.size() + iov.size() <= IOV_MAX;
    if (!continues) flush_rw(queue);
  }
  if (p.parts.empty()) {
    p.type = type;
    p.sector = sector;
    p.bytes = 0;
    p.iov = std::move(iov);  // the common case, one request per host I/O: no copy
  } else {
    stats_.merged.fetch_add(1, std::memory_order_relaxed);
    p.iov.insert(p.iov.end(), iov.begin(), iov.end());
  }
  p.parts.push_back({head, status_addr, bytes});
  p.bytes += bytes;
}

void VirtioBlock::flush_rw(size_t queue) {
  PendingRw& p = pending_[queue];
  if (p.parts.empty()) return;
  const uint32_t type = p.type;
  auto done = [this, queue, type, parts = std::move(p.parts)](int32_t res) {
    // Each request gets its share of the result: all of it when the whole transfer succeeded,
    // the error when it failed, and on a short transfer what was actually covered (the rest fail).
    int64_t left = res;
    for (const auto& part : parts) {
      int32_t mine = res;
      if (res >= 0) {
        mine = static_cast<int32_t>(std::clamp<int64_t>(left, 0, static_cast<int64_t>(part.bytes)));
        left -= mine;
      }
      complete(queue, part.head, part.status_addr,
               static_cast<uint32_t>(type == VIRTIO_BLK_T_IN ? part.bytes + 1 : 1), mine, part.bytes,
               static_cast<int>(type));
    }
  };
  p.parts.clear();
  const int fd = *disk_->direct_fd();
  if (type == VIRTIO_BLK_T_IN) rings_[queue]->readv(fd, p.sector * kSector, std::move(p.iov), std::move(done));
  else rings_[queue]->writev(fd, p.sector * kSector, std::move(p.iov), std::move(done));
}

uint8_t VirtioBlock::do_discard_or_zero(uint32_t type, const DescriptorChain& chain, uint64_t data_len) {
  const bool discard = type == VIRTIO_BLK_T_DISCARD;
  if (read_only_) {
    // Not offered on a read-only disk.
    stats_.unsupported.fetch_add(1, std::memory_order_relaxed);
    return VIRTIO_BLK_S_UNSUPP;
  }
  using Segment = virtio_blk_discard_write_zeroes;
  const uint64_t count = data_len / sizeof(Segment);
  if (data_len % sizeof(Segment) != 0 || count == 0 || count > kMaxDiscardSegments) {
    stats_.bad_requests.fetch_add(1, std::memory_order_relaxed);
    return VIRTIO_BLK_S_IOERR;
  }
  for (uint64_t i = 0; i < count; ++i) {
    Segment seg{};
    // SAFETY: Segment is a trivially-copyable UAPI struct filled from a copy of guest bytes.
    copy_from_buffers(*mem_, chain.readable, sizeof(virtio_blk_outhdr) + i * sizeof seg,
                      {reinterpret_cast<uint8_t*>(&seg), sizeof seg});
    const uint64_t sector = le64toh(seg.sector);
    const uint32_t sectors = le32toh(seg.num_sectors);
    const uint32_t flags = le32toh(seg.flags);
    // Spec 5.2.6.2: unknown flags, or unmap on a discard, are UNSUPP.
    if ((flags & ~uint32_t{VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP}) != 0 || (discard && flags != 0)) {
      stats_.unsupported.fetch_add(1, std::memory_order_relaxed);
      return VIRTIO_BLK_S_UNSUPP;
    }
    if (sectors > kMaxDiscardSectors || !range_ok(sector, uint64_t{sectors} * kSector)) {
      stats_.bad_requests.fetch_add(1, std::memory_order_relaxed);
      return VIRTIO_BLK_S_IOERR;
    }
    auto r = discard ? disk_->discard(sector * kSector, uint64_t{sectors} * kSector)
                     : disk_->write_zeroes(sector * kSector, uint64_t{sectors} * kSector,
                                           (flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) != 0);
    if (!r.ok()) return io_error(r.error());
  }
  (discard ? stats_.discards : stats_.write_zeroes).fetch_add(1, std::memory_order_relaxed);
  return VIRTIO_BLK_S_OK;
}

}  // namespace ringvm
