#include "base/mmap.h"

#include <cstdint>

namespace ringvm {

Result<MappedRegion> MappedRegion::anonymous(size_t size, int extra_flags) {
  if (size == 0) return make_error(ErrorCode::kInvalidArgument, "mmap of 0 bytes");
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | extra_flags, -1, 0);
  if (p == MAP_FAILED) return sys_error(fmt::format("mmap {} bytes of anonymous memory", size));
  return MappedRegion(p, size);
}

Result<MappedRegion> MappedRegion::anonymous_aligned(size_t size, size_t align) {
  if (size == 0) return make_error(ErrorCode::kInvalidArgument, "mmap of 0 bytes");
  if (align < 4096 || (align & (align - 1)) != 0)
    return make_error(ErrorCode::kInvalidArgument, "mmap alignment {:#x} is not a power of two >= 4 KiB", align);
  if (size > SIZE_MAX - align) return make_error(ErrorCode::kOutOfRange, "mmap of {:#x} bytes is too large", size);
  // Over-allocate by `align`, then give back the unaligned head and the tail.
  void* p = ::mmap(nullptr, size + align, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
  if (p == MAP_FAILED) return sys_error(fmt::format("mmap {} bytes of anonymous memory", size + align));
  const auto base = reinterpret_cast<uintptr_t>(p);
  const uintptr_t start = (base + align - 1) & ~(uintptr_t{align} - 1);
  if (start > base) ::munmap(p, start - base);
  const uintptr_t tail = start + size;
  if (base + size + align > tail) ::munmap(reinterpret_cast<void*>(tail), base + size + align - tail);
  return MappedRegion(reinterpret_cast<void*>(start), size);
}

Result<MappedRegion> MappedRegion::shared(int fd, size_t size, off_t offset) {
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, offset);
  if (p == MAP_FAILED) return sys_error(fmt::format("mmap {} bytes of fd {}", size, fd));
  return MappedRegion(p, size);
}

Result<MappedRegion> MappedRegion::private_file(int fd, size_t size, off_t offset) {
  if (size == 0) return make_error(ErrorCode::kInvalidArgument, "mmap of 0 bytes");
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd, offset);
  if (p == MAP_FAILED) return sys_error(fmt::format("mmap {} bytes of fd {} at offset {} (copy-on-write)", size, fd, offset));
  return MappedRegion(p, size);
}

void MappedRegion::reset() {
  if (addr_ != nullptr) ::munmap(addr_, size_);
  addr_ = nullptr;
  size_ = 0;
}

}  // namespace ringvm
