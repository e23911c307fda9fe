#include "memory/guest_memory.h"

#include <sys/mman.h>

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
  regions_.push_back(GuestRegion{gpa, std::move(host)});
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
