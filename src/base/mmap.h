// MappedRegion: an owned mmap(2) mapping, unmapped on destruction.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>

#include "base/result.h"

namespace ringvm {

class MappedRegion {
 public:
  MappedRegion() = default;
  MappedRegion(const MappedRegion&) = delete;
  MappedRegion& operator=(const MappedRegion&) = delete;
  MappedRegion(MappedRegion&& o) noexcept
      : addr_(std::exchange(o.addr_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  MappedRegion& operator=(MappedRegion&& o) noexcept {
    if (this != &o) {
      reset();
      addr_ = std::exchange(o.addr_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  ~MappedRegion() { reset(); }

  // Anonymous private memory (guest RAM). `size` must be a multiple of the page size.
  static Result<MappedRegion> anonymous(size_t size, int extra_flags = MAP_NORESERVE);
  // Like anonymous(), with the start aligned to `align` bytes (a power of two, at least a page),
  // so that a 2 MiB-aligned guest address range maps onto 2 MiB-aligned host memory and both the
  // host's transparent huge pages and KVM's large stage-2 mappings can back it.
  static Result<MappedRegion> anonymous_aligned(size_t size, size_t align);
  // A private, writable copy-on-write mapping of `fd` at `offset` (a snapshot's memory file):
  // pages are read from the file on first touch, shared with every other private mapping of
  // the same file until written, and writes never reach the file.
  static Result<MappedRegion> private_file(int fd, size_t size, off_t offset);
  // A shared mapping of `fd` (e.g. the kvm_run area of a vCPU).
  static Result<MappedRegion> shared(int fd, size_t size, off_t offset = 0);

  uint8_t* data() const { return static_cast<uint8_t*>(addr_); }
  size_t size() const { return size_; }
  std::span<uint8_t> span() const { return {data(), size_}; }

 private:
  MappedRegion(void* addr, size_t size) : addr_(addr), size_(size) {}
  void reset();

  void* addr_ = nullptr;
  size_t size_ = 0;
};

}  // namespace ringvm
