#include "base/mmap.h"

namespace ringvm {

Result<MappedRegion> MappedRegion::anonymous(size_t size, int extra_flags) {
  if (size == 0) return make_error(ErrorCode::kInvalidArgument, "mmap of 0 bytes");
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | extra_flags, -1, 0);
  if (p == MAP_FAILED) return sys_error(fmt::format("mmap {} bytes of anonymous memory", size));
  return MappedRegion(p, size);
}

Result<MappedRegion> MappedRegion::shared(int fd, size_t size, off_t offset) {
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, offset);
  if (p == MAP_FAILED) return sys_error(fmt::format("mmap {} bytes of fd {}", size, fd));
  return MappedRegion(p, size);
}

void MappedRegion::reset() {
  if (addr_ != nullptr) ::munmap(addr_, size_);
  addr_ = nullptr;
  size_ = 0;
}

}  // namespace ringvm
