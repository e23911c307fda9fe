// ImageFile: positional I/O on an image file with full-length loops and errors naming the path.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <span>
#include <string>

#include "base/result.h"
#include "base/unique_fd.h"

namespace ringvm::qcow2 {

class ImageFile final {
 public:
  static Result<ImageFile> open(const std::string& path, bool read_only);
  // Creates (or truncates) a file for writing.
  static Result<ImageFile> create(const std::string& path);

  const std::string& path() const { return path_; }
  int fd() const { return fd_.get(); }
  Result<uint64_t> size() const;
  // Bytes the file occupies on disk (st_blocks).
  Result<uint64_t> allocated_bytes() const;

  Result<void> pread(uint64_t offset, std::span<uint8_t> buf) const;  // past EOF reads zeros
  Result<void> pwrite(uint64_t offset, std::span<const uint8_t> buf) const;
  Result<void> preadv(uint64_t offset, std::span<const iovec> iov) const;
  Result<void> pwritev(uint64_t offset, std::span<const iovec> iov) const;
  Result<void> truncate(uint64_t size) const;
  Result<void> datasync() const;
  // cache=unsafe (convert's output, as qemu-img does): datasync() becomes a no-op. A crash then
  // leaves a half-written file, which for a fresh conversion output is no worse than no file.
  void set_unsafe_no_sync(bool v) { no_sync_ = v; }
  // Deallocates a byte range (punch hole); silently a no-op where the filesystem cannot.
  void punch_hole(uint64_t offset, uint64_t length) const;

 private:
  ImageFile(std::string path, UniqueFd fd) : path_(std::move(path)), fd_(std::move(fd)) {}
  std::string path_;
  UniqueFd fd_;
  bool no_sync_ = false;
};

}  // namespace ringvm::qcow2
