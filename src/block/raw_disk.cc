#include "block/raw_disk.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace ringvm {

namespace {

uint64_t iov_bytes(std::span<const iovec> iov) {
  uint64_t n = 0;
  for (const auto& v : iov) n += v.iov_len;
  return n;
}

// Drops the first `done` bytes from a copy of the vector, for resuming after a short transfer.
void advance(std::vector<iovec>& iov, size_t& first, uint64_t done) {
  while (done > 0 && first < iov.size()) {
    if (done >= iov[first].iov_len) {
      done -= iov[first].iov_len;
      ++first;
    } else {
      // SAFETY: iov_base points at a caller buffer of iov_len bytes; done < iov_len.
      iov[first].iov_base = static_cast<uint8_t*>(iov[first].iov_base) + done;
      iov[first].iov_len -= done;
      done = 0;
    }
  }
}

int iov_count(size_t n) { return static_cast<int>(std::min<size_t>(n, IOV_MAX)); }

}  // namespace

Result<std::unique_ptr<RawDisk>> RawDisk::open(const std::string& path, bool read_only, bool direct_io_hint) {
  const int base = (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
  bool direct = direct_io_hint;
  UniqueFd fd(::open(path.c_str(), base | (direct ? O_DIRECT : 0)));
  if (!fd && direct && errno == EINVAL) {
    direct = false;  // the filesystem has no O_DIRECT (tmpfs): buffered I/O still works
    fd.reset(::open(path.c_str(), base));
  }
  if (!fd)
    return sys_error(fmt::format("open disk image {}{}", path,
                                 (errno == EACCES || errno == EROFS) && !read_only
                                     ? " (use read_only if the image is not writable)"
                                     : ""));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return sys_error(fmt::format("stat disk image {}", path));
  uint64_t size = 0;
  const bool blk = S_ISBLK(st.st_mode);
  if (blk) {
    if (::ioctl(fd.get(), BLKGETSIZE64, &size) != 0)
      return sys_error(fmt::format("BLKGETSIZE64 on block device {}", path));
  } else if (S_ISREG(st.st_mode)) {
    size = static_cast<uint64_t>(st.st_size);
  } else {
    return make_error(ErrorCode::kInvalidArgument, "disk image {} is neither a regular file nor a block device",
                      path);
  }
  return std::unique_ptr<RawDisk>(new RawDisk(path, std::move(fd), size, read_only, blk, direct));
}

Result<void> RawDisk::check_range(const char* op, uint64_t offset, uint64_t length) const {
  if (offset > size_ || length > size_ - offset)
    return make_error(ErrorCode::kOutOfRange, "{} of {} bytes at offset {} is past the end of disk {} ({} bytes)",
                      op, length, offset, path_, size_);
  if (read_only_ && std::strcmp(op, "read") != 0)
    return Error{ErrorCode::kPermissionDenied, EROFS, fmt::format("{} on read-only disk {}", op, path_)};
  return Ok();
}

Result<void> RawDisk::readv(uint64_t offset, std::span<const iovec> iov) { return transfer(false, offset, iov); }

Result<void> RawDisk::writev(uint64_t offset, std::span<const iovec> iov) { return transfer(true, offset, iov); }

Result<void> RawDisk::transfer(bool write, uint64_t offset, std::span<const iovec> iov) {
  const char* op = write ? "write" : "read";
  const uint64_t total = iov_bytes(iov);
  RETURN_IF_ERROR(check_range(op, offset, total));
  std::vector<iovec> v(iov.begin(), iov.end());
  size_t first = 0;
  uint64_t done = 0;
  while (done < total) {
    const int count = iov_count(v.size() - first);
    const auto at = static_cast<off_t>(offset + done);
    const ssize_t n = write ? ::pwritev(fd_.get(), v.data() + first, count, at)
                            : ::preadv(fd_.get(), v.data() + first, count, at);
    if (n < 0) {
      if (errno == EINTR) continue;
      return sys_error(fmt::format("{} {} bytes at offset {} on disk {}", op, total - done, offset + done, path_));
    }
    if (n == 0) {
      if (write)
        return Error{ErrorCode::kIo, ENOSPC,
                     fmt::format("write at offset {} to disk {} made no progress", offset + done, path_)};
      // The file shrank under us (or a block device lies about its size): what is past the end
      // reads as zeros, like a hole.
      for (size_t i = first; i < v.size(); ++i) std::memset(v[i].iov_base, 0, v[i].iov_len);
      return Ok();
    }
    done += static_cast<uint64_t>(n);
    advance(v, first, static_cast<uint64_t>(n));
  }
  return Ok();
}

Result<void> RawDisk::flush() {
  if (read_only_) return Ok();
  if (::fdatasync(fd_.get()) != 0) return sys_error(fmt::format("fdatasync disk {}", path_));
  return Ok();
}

Result<void> RawDisk::discard(uint64_t offset, uint64_t length) {
  RETURN_IF_ERROR(check_range("discard", offset, length));
  if (length == 0) return Ok();
  if (block_device_) {
    uint64_t range[2] = {offset, length};
    if (::ioctl(fd_.get(), BLKDISCARD, range) != 0 && errno != EOPNOTSUPP)
      return sys_error(fmt::format("BLKDISCARD {} bytes at {} on {}", length, offset, path_));
    return Ok();
  }
  if (::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                  static_cast<off_t>(length)) != 0) {
    // Discard is a hint: a filesystem without hole punching simply keeps the blocks.
    if (errno == EOPNOTSUPP) return Ok();
    return sys_error(fmt::format("punch hole of {} bytes at {} in {}", length, offset, path_));
  }
  return Ok();
}

Result<void> RawDisk::write_zeroes(uint64_t offset, uint64_t length, bool may_unmap) {
  RETURN_IF_ERROR(check_range("write_zeroes", offset, length));
  if (length == 0) return Ok();
  if (!block_device_) {
    const int mode = may_unmap ? (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE) : FALLOC_FL_ZERO_RANGE;
    if (::fallocate(fd_.get(), mode, static_cast<off_t>(offset), static_cast<off_t>(length)) == 0) return Ok();
    if (errno != EOPNOTSUPP && errno != EINVAL)
      return sys_error(fmt::format("zero {} bytes at {} in {}", length, offset, path_));
  } else {
    uint64_t range[2] = {offset, length};
    if (::ioctl(fd_.get(), BLKZEROOUT, range) == 0) return Ok();
  }
  return write_zeros_slow(offset, length);
}

Result<void> RawDisk::write_zeros_slow(uint64_t offset, uint64_t length) {
  // A 4 KiB-aligned buffer so that O_DIRECT files accept it (callers pass sector multiples).
  constexpr size_t kChunk = 1 << 20;
  void* raw = nullptr;
  if (::posix_memalign(&raw, 4096, kChunk) != 0)
    return make_error(ErrorCode::kResourceExhausted, "zero buffer for {}", path_);
  std::unique_ptr<void, decltype(&::free)> buf(raw, &::free);
  std::memset(raw, 0, kChunk);
  while (length > 0) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(length, kChunk));
    iovec v{raw, n};
    RETURN_IF_ERROR(writev(offset, {&v, 1}));
    offset += n;
    length -= n;
  }
  return Ok();
}

}  // namespace ringvm
