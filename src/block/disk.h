// Disk: the block backend interface virtio-blk uses (raw files, qcow2). Thread-safe: several
// virtio queues may issue requests concurrently. Offsets and lengths are in bytes; callers check
// them against size() first (a Disk still rejects out-of-range requests with kOutOfRange).
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "base/result.h"

namespace ringvm {

class Disk {
 public:
  virtual ~Disk() = default;
  virtual const std::string& path() const = 0;
  virtual uint64_t size() const = 0;  // virtual size in bytes
  virtual bool read_only() const = 0;

  virtual Result<void> readv(uint64_t offset, std::span<const iovec> iov) = 0;
  virtual Result<void> writev(uint64_t offset, std::span<const iovec> iov) = 0;
  // Makes every completed write durable (data and metadata, in a crash-consistent order).
  virtual Result<void> flush() = 0;
  // Deallocates a range (reads back zeros, or unspecified if the format says so).
  virtual Result<void> discard(uint64_t offset, uint64_t length) = 0;
  // Zeroes a range; `may_unmap` lets the backend deallocate instead of writing zeros.
  virtual Result<void> write_zeroes(uint64_t offset, uint64_t length, bool may_unmap) = 0;

  // For raw files only: the fd whose byte offsets equal the disk's, so a caller may submit
  // io_uring requests on it directly. std::nullopt for formats with a mapping layer.
  virtual std::optional<int> direct_fd() const { return std::nullopt; }
};

}  // namespace ringvm
