#include "devices/virtio/block/virtio_block.h"

#include <endian.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>

#include <algorithm>
#include <cstring>

#include "base/log.h"
#include "devices/virtio/chain_io.h"
#include "devices/virtio/ring_abi.h"
#include "memory/guest_memory.h"

namespace ringvm {

namespace {

constexpr uint64_t kSector = 512;
constexpr uint64_t bit(unsigned b) { return 1ULL << b; }

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
  for (size_t i = 0; i < queues_.size(); ++i) {
    if (queues_[i].queue == nullptr) continue;
    auto w = VirtioWorker::start(fmt::format("blk-{}-q{}", options_.id, i), {queues_[i].kick_fd},
                                 [this, i](size_t) { process_queue(i); });
    if (!w.ok()) {
      workers_.clear();
      mem_ = nullptr;
      queues_.clear();
      return std::move(w).error();
    }
    workers_.push_back(std::move(*w));
  }
  return Ok();
}

void VirtioBlock::reset() {
  std::lock_guard lock(mu_);
  workers_.clear();  // joins: no request is in flight after this
  queues_.clear();
  mem_ = nullptr;
}

void VirtioBlock::process_queue(size_t index) {
  if (index >= queues_.size() || queues_[index].queue == nullptr) return;
  auto& aq = queues_[index];
  while (auto chain = aq.queue->pop()) aq.queue->add_used(chain->head, handle(*chain));
  if (aq.queue->needs_notification() && aq.notify) aq.notify();
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

uint32_t VirtioBlock::handle(const DescriptorChain& chain) {
  const uint64_t writable = chain.writable_bytes();
  if (writable == 0) {
    // Nowhere to put a status: the request cannot be answered, only returned.
    stats_.no_status.fetch_add(1, std::memory_order_relaxed);
    return 0;
  }
  // The status byte is the chain's last writable byte; data comes before it.
  const uint64_t data_in = writable - 1;
  uint8_t status = VIRTIO_BLK_S_IOERR;
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
        status = do_rw(type, sector, chain, data_in);
        if (status == VIRTIO_BLK_S_OK) used = static_cast<uint32_t>(writable);
        break;
      case VIRTIO_BLK_T_OUT: status = do_rw(type, sector, chain, data_out); break;
      case VIRTIO_BLK_T_FLUSH: {
        stats_.flushes.fetch_add(1, std::memory_order_relaxed);
        status = VIRTIO_BLK_S_OK;
        if (options_.cache != VirtioBlockOptions::Cache::kUnsafe) {
          // Durable before the guest sees the status: that is the whole point of FLUSH.
          auto r = disk_->flush();
          if (!r.ok()) status = io_error(r.error());
        }
        break;
      }
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
  copy_to_buffers(*mem_, chain.writable, data_in, std::span<const uint8_t>(&status, 1));
  return used;
}

uint8_t VirtioBlock::do_rw(uint32_t type, uint64_t sector, const DescriptorChain& chain, uint64_t data_len) {
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
  auto r = is_read ? disk_->readv(sector * kSector, *iov) : disk_->writev(sector * kSector, *iov);
  if (!r.ok()) return io_error(r.error());
  (is_read ? stats_.reads : stats_.writes).fetch_add(1, std::memory_order_relaxed);
  (is_read ? stats_.bytes_read : stats_.bytes_written).fetch_add(data_len, std::memory_order_relaxed);
  return VIRTIO_BLK_S_OK;
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
