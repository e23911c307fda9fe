#include "memory/guest_memory.h"

#include <sys/mman.h>
#include <sys/stat.h>

#include <algorithm>

namespace ringvm {

Result<void> GuestMemory::add_region(uint64_t gpa, uint64_t size, bool huge_pages) {
  if (size == 0 || size % 4096 != 0 || gpa % 4096 != 0)
    return make_error(ErrorCode::kInvalidArgument,
                      "guest memory region at {:#x} of {:#x} bytes: base and size must be 4 KiB multiples",
                      gpa, size);
  if (gpa + size < gpa)
    return make_error(ErrorCode::kOutOfRange, "guest memory region at {:#x} wraps the address space", gpa);
  for (const auto& r : regions_) {
    if (gpa < r.end() && r.gpa < gpa + size)
      return make_error(ErrorCode::kInvalidArgument, "guest memory region at {:#x} overlaps the one at {:#x}",
                        gpa, r.gpa);
  }
  auto host = TRY(MappedRegion::anonymous_aligned(size, kHugePageSize));
  // Ask for transparent huge pages: with 2 MiB host pages KVM maps guest RAM with 2 MiB stage-2
  // (EPT/NPT) entries, which cuts the nested page faults of a boot and the TLB misses after it.
  // Best effort: where THP is off, madvise fails or does nothing, and 4 KiB pages still work.
  (void)::madvise(host.data(), host.size(), huge_pages ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
  regions_.push_back(GuestRegion{gpa, std::move(host), nullptr});
  std::sort(regions_.begin(), regions_.end(), [](const auto& a, const auto& b) { return a.gpa < b.gpa; });
  return Ok();
}

Result<GuestMemory> GuestMemory::create_x86(uint64_t ram_bytes, uint64_t mmio_hole_start, bool huge_pages) {
  if (ram_bytes == 0) return make_error(ErrorCode::kInvalidArgument, "guest memory size is 0: give --memory a size such as 512M");
  GuestMemory mem;
  const uint64_t low = std::min(ram_bytes, mmio_hole_start);
  RETURN_IF_ERROR(mem.add_region(0, low, huge_pages));
  if (ram_bytes > low) RETURN_IF_ERROR(mem.add_region(1ULL << 32, ram_bytes - low, huge_pages));
  return mem;
}

Result<GuestMemory> GuestMemory::create_x86_from_file(uint64_t ram_bytes, uint64_t mmio_hole_start, int fd,
                                                      std::string_view what) {
  struct stat st{};
  if (::fstat(fd, &st) != 0) return sys_error(fmt::format("{}", what));
  if (!S_ISREG(st.st_mode))
    return make_error(ErrorCode::kInvalidArgument, "{}: not a regular file; give the memory file the snapshot wrote",
                      what);
  if (static_cast<uint64_t>(st.st_size) != ram_bytes)
    return make_error(ErrorCode::kInvalidArgument,
                      "{}: {} bytes, but the snapshot's VM has {} bytes of memory: this memory file belongs to "
                      "another snapshot", what, st.st_size, ram_bytes);
  GuestMemory mem;
  const uint64_t low = std::min(ram_bytes, mmio_hole_start);
  auto add = [&](uint64_t gpa, uint64_t size, uint64_t offset) -> Result<void> {
    if (size % 4096 != 0)
      return make_error(ErrorCode::kInvalidArgument, "{}: memory size {:#x} is not a 4 KiB multiple", what, size);
    auto host = TRY(MappedRegion::private_file(fd, size, static_cast<off_t>(offset)));
    mem.regions_.push_back(GuestRegion{gpa, std::move(host), nullptr});
    return Ok();
  };
  RETURN_IF_ERROR(add(0, low, 0));
  if (ram_bytes > low) RETURN_IF_ERROR(add(1ULL << 32, ram_bytes - low, low));
  return mem;
}

void GuestMemory::enable_dirty_tracking() {
  for (auto& r : regions_) {
    const size_t words = (r.size() / kPageSize + 63) / 64;
    r.vmm_dirty = std::make_unique<std::atomic<uint64_t>[]>(words);
  }
}

std::vector<uint64_t> GuestMemory::take_vmm_dirty(size_t region_index) const {
  const GuestRegion& r = regions_.at(region_index);
  const size_t words = (r.size() / kPageSize + 63) / 64;
  std::vector<uint64_t> out(words, 0);
  if (r.vmm_dirty == nullptr) return out;
  for (size_t i = 0; i < words; ++i) out[i] = r.vmm_dirty[i].exchange(0, std::memory_order_relaxed);
  return out;
}

uint64_t GuestMemory::total_size() const {
  uint64_t s = 0;
  for (const auto& r : regions_) s += r.size();
  return s;
}

const GuestRegion* GuestMemory::find(uint64_t gpa) const {
  auto it = std::upper_bound(regions_.begin(), regions_.end(), gpa,
                             [](uint64_t a, const GuestRegion& r) { return a < r.gpa; });
  if (it == regions_.begin()) return nullptr;
  --it;
  return gpa <= it->end() ? &*it : nullptr;
}

Result<std::span<uint8_t>> GuestMemory::span(uint64_t gpa, uint64_t len) const {
  const GuestRegion* r = find(gpa);
  // Written so that no addition can overflow: gpa >= r->gpa and gpa <= r->end() here.
  if (r == nullptr || len > r->end() - gpa)
    return make_error(ErrorCode::kOutOfRange, "guest address range [{:#x}, +{:#x}) is outside guest memory",
                      gpa, len);
  if (r->vmm_dirty != nullptr) [[unlikely]] {
    const uint64_t first = (gpa - r->gpa) / kPageSize;
    const uint64_t last = len == 0 ? first : (gpa - r->gpa + len - 1) / kPageSize;
    for (uint64_t p = first; p <= last && p < r->size() / kPageSize; ++p)
      r->vmm_dirty[p / 64].fetch_or(uint64_t{1} << (p % 64), std::memory_order_relaxed);
  }
  // SAFETY: [gpa - r->gpa, +len) lies within the region's mapping, checked just above.
  return std::span<uint8_t>(r->host.data() + (gpa - r->gpa), len);
}

Result<void> GuestMemory::read(uint64_t gpa, std::span<uint8_t> out) const {
  auto s = TRY(span(gpa, out.size()));
  std::memcpy(out.data(), s.data(), out.size());
  return Ok();
}

Result<void> GuestMemory::write(uint64_t gpa, std::span<const uint8_t> in) const {
  auto s = TRY(span(gpa, in.size()));
  std::memcpy(s.data(), in.data(), in.size());
  return Ok();
}

Result<std::span<uint8_t>> GuestMemory::aligned_span(uint64_t gpa, uint64_t len) const {
  auto s = TRY(span(gpa, len));
  if (reinterpret_cast<uintptr_t>(s.data()) % len != 0)
    return make_error(ErrorCode::kInvalidArgument, "guest address {:#x} is not {}-byte aligned", gpa, len);
  return s;
}

Result<void> GuestMemory::fill(uint64_t gpa, uint8_t value, uint64_t len) const {
  auto s = TRY(span(gpa, len));
  std::memset(s.data(), value, s.size());
  return Ok();
}

}  // namespace ringvm
