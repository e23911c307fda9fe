#include "block/qcow2/image_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace ringvm::qcow2 {

Result<ImageFile> ImageFile::open(const std::string& path, bool read_only) {
  const int fd = ::open(path.c_str(), (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
  if (fd < 0) return sys_error(fmt::format("open {}{}", path, read_only ? "" : " for writing"));
  return ImageFile(path, UniqueFd(fd));
}

Result<ImageFile> ImageFile::create(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return sys_error(fmt::format("create {}", path));
  return ImageFile(path, UniqueFd(fd));
}

Result<uint64_t> ImageFile::size() const {
  struct stat st {};
  if (::fstat(fd_.get(), &st) != 0) return sys_error(fmt::format("stat {}", path_));
  return static_cast<uint64_t>(st.st_size);
}

Result<uint64_t> ImageFile::allocated_bytes() const {
  struct stat st {};
  if (::fstat(fd_.get(), &st) != 0) return sys_error(fmt::format("stat {}", path_));
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

Result<void> ImageFile::pread(uint64_t offset, std::span<uint8_t> buf) const {
  size_t done = 0;
  while (done < buf.size()) {
    const ssize_t n = ::pread(fd_.get(), buf.data() + done, buf.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return sys_error(fmt::format("read {} at offset {}", path_, offset + done));
    }
    if (n == 0) {  // past EOF: zeros, as a sparse tail would read
      std::memset(buf.data() + done, 0, buf.size() - done);
      break;
    }
    done += static_cast<size_t>(n);
  }
  return Ok();
}

Result<void> ImageFile::pwrite(uint64_t offset, std::span<const uint8_t> buf) const {
  size_t done = 0;
  while (done < buf.size()) {
    const ssize_t n = ::pwrite(fd_.get(), buf.data() + done, buf.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return sys_error(fmt::format("write {} at offset {}", path_, offset + done));
    }
    done += static_cast<size_t>(n);
  }
  return Ok();
}

namespace {
// Advances an iovec array past `n` bytes, in a local copy.
void advance(std::vector<iovec>& v, size_t& first, size_t n) {
  while (n > 0 && first < v.size()) {
    const size_t take = std::min(n, v[first].iov_len);
    v[first].iov_base = static_cast<uint8_t*>(v[first].iov_base) + take;
    v[first].iov_len -= take;
    n -= take;
    if (v[first].iov_len == 0) ++first;
  }
}
size_t total(std::span<const iovec> iov) {
  size_t t = 0;
  for (const auto& v : iov) t += v.iov_len;
  return t;
}
}  // namespace

Result<void> ImageFile::preadv(uint64_t offset, std::span<const iovec> iov) const {
  std::vector<iovec> v(iov.begin(), iov.end());
  size_t first = 0, left = total(iov);
  while (left > 0) {
    const int cnt = static_cast<int>(std::min<size_t>(v.size() - first, IOV_MAX));
    const ssize_t n = ::preadv(fd_.get(), v.data() + first, cnt, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return sys_error(fmt::format("read {} at offset {}", path_, offset));
    }
    if (n == 0) {
      for (size_t i = first; i < v.size(); ++i) std::memset(v[i].iov_base, 0, v[i].iov_len);
      break;
    }
    advance(v, first, static_cast<size_t>(n));
    offset += static_cast<uint64_t>(n);
    left -= static_cast<size_t>(n);
  }
  return Ok();
}

Result<void> ImageFile::pwritev(uint64_t offset, std::span<const iovec> iov) const {
  std::vector<iovec> v(iov.begin(), iov.end());
  size_t first = 0, left = total(iov);
  while (left > 0) {
    const int cnt = static_cast<int>(std::min<size_t>(v.size() - first, IOV_MAX));
    const ssize_t n = ::pwritev(fd_.get(), v.data() + first, cnt, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return sys_error(fmt::format("write {} at offset {}", path_, offset));
    }
    advance(v, first, static_cast<size_t>(n));
    offset += static_cast<uint64_t>(n);
    left -= static_cast<size_t>(n);
  }
  return Ok();
}

Result<void> ImageFile::truncate(uint64_t size) const {
  if (::ftruncate(fd_.get(), static_cast<off_t>(size)) != 0)
    return sys_error(fmt::format("resize {} to {} bytes", path_, size));
  return Ok();
}

Result<void> ImageFile::datasync() const {
  if (no_sync_) return Ok();
  if (::fdatasync(fd_.get()) != 0) return sys_error(fmt::format("fdatasync {}", path_));
  return Ok();
}

void ImageFile::punch_hole(uint64_t offset, uint64_t length) const {
  (void)::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                    static_cast<off_t>(length));
}

}  // namespace ringvm::qcow2
