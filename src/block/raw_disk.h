// RawDisk: a raw image file or host block device as a Disk. Byte offsets on the disk equal byte
// offsets in the file, so direct_fd() lets virtio-blk submit io_uring requests on it directly.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "base/unique_fd.h"
#include "block/disk.h"

namespace ringvm {

class RawDisk final : public Disk {
 public:
  // Opens `path` (regular file or block device). `direct_io_hint` asks for O_DIRECT and falls
  // back to buffered I/O where the filesystem refuses it (tmpfs).
  static Result<std::unique_ptr<RawDisk>> open(const std::string& path, bool read_only,
                                               bool direct_io_hint = false);

  const std::string& path() const override { return path_; }
  uint64_t size() const override { return size_; }
  bool read_only() const override { return read_only_; }

  Result<void> readv(uint64_t offset, std::span<const iovec> iov) override;
  Result<void> writev(uint64_t offset, std::span<const iovec> iov) override;
  Result<void> flush() override;
  Result<void> discard(uint64_t offset, uint64_t length) override;
  Result<void> write_zeroes(uint64_t offset, uint64_t length, bool may_unmap) override;
  std::optional<int> direct_fd() const override { return fd_.get(); }

  bool is_block_device() const { return block_device_; }
  bool direct_io() const { return direct_io_; }

 private:
  RawDisk(std::string path, UniqueFd fd, uint64_t size, bool read_only, bool block_device, bool direct_io)
      : path_(std::move(path)), fd_(std::move(fd)), size_(size), read_only_(read_only),
        block_device_(block_device), direct_io_(direct_io) {}

  Result<void> transfer(bool write, uint64_t offset, std::span<const iovec> iov);
  Result<void> check_range(const char* op, uint64_t offset, uint64_t length) const;
  Result<void> write_zeros_slow(uint64_t offset, uint64_t length);

  std::string path_;
  UniqueFd fd_;
  uint64_t size_;
  bool read_only_;
  bool block_device_;
  bool direct_io_;
};

}  // namespace ringvm
