// GuestMemory: the guest's RAM as a set of non-overlapping regions of host memory.
//
// Every access is bounds-checked: an address range that is not wholly inside one region is an
// error, never a touch of host memory outside a region. The guest is hostile; all addresses it
// hands us (descriptor tables, buffers, boot structures) go through these accessors.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string_view>
#include <type_traits>
#include <vector>

#include "base/mmap.h"
#include "base/result.h"

namespace ringvm {

struct GuestRegion {
  uint64_t gpa = 0;     // guest-physical base
  MappedRegion host;    // its host mapping (host.size() bytes)
  // Pages ringvm itself wrote (devices, loaders), one bit per 4 KiB page, while dirty tracking
  // is on (GuestMemory::enable_dirty_tracking); KVM's dirty log has the guest's own writes.
  std::unique_ptr<std::atomic<uint64_t>[]> vmm_dirty;
  uint64_t size() const { return host.size(); }
  uint64_t end() const { return gpa + host.size(); }  // exclusive
};

class GuestMemory {
 public:
  // Host mappings of guest RAM start on this boundary and are advised for transparent huge pages.
  static constexpr uint64_t kHugePageSize = 2ULL << 20;

  GuestMemory() = default;
  GuestMemory(GuestMemory&&) = default;
  GuestMemory& operator=(GuestMemory&&) = default;

  // Adds `size` bytes of anonymous memory at `gpa`. Fails on overlap, overflow or a size that is
  // not a multiple of 4 KiB. `huge_pages`: advise transparent huge pages (else advise against).
  Result<void> add_region(uint64_t gpa, uint64_t size, bool huge_pages = true);

  // Standard x86 layout: RAM below `mmio_hole_start` and the rest above 4 GiB.
  static Result<GuestMemory> create_x86(uint64_t ram_bytes, uint64_t mmio_hole_start = 0xC000'0000,
                                        bool huge_pages = true);
  // The same layout backed by a snapshot's memory file (the regions one after the other, in
  // address order), mapped copy-on-write (MappedRegion::private_file). The file must hold
  // exactly `ram_bytes`; `what` names it in errors.
  static Result<GuestMemory> create_x86_from_file(uint64_t ram_bytes, uint64_t mmio_hole_start, int fd,
                                                  std::string_view what);

  // Dirty tracking of ringvm's own writes: from now on every span() (the path of every device
  // access, reads included: conservative) marks its pages. take_vmm_dirty() returns a region's
  // bitmap (64 pages per word) and clears it.
  void enable_dirty_tracking();
  bool dirty_tracking() const { return !regions_.empty() && regions_.front().vmm_dirty != nullptr; }
  std::vector<uint64_t> take_vmm_dirty(size_t region_index) const;
  static constexpr uint64_t kPageSize = 4096;

  const std::vector<GuestRegion>& regions() const { return regions_; }
  uint64_t total_size() const;

  // A host view of [gpa, gpa+len) if it lies wholly in one region. len == 0 is allowed when gpa
  // is inside or at the end of a region.
  Result<std::span<uint8_t>> span(uint64_t gpa, uint64_t len) const;
  bool contains(uint64_t gpa, uint64_t len) const { return span(gpa, len).ok(); }

  Result<void> read(uint64_t gpa, std::span<uint8_t> out) const;
  Result<void> write(uint64_t gpa, std::span<const uint8_t> in) const;
  Result<void> fill(uint64_t gpa, uint8_t value, uint64_t len) const;

  // Trivially-copyable objects; copies, so a guest changing memory underneath cannot race us.
  template <typename T>
  Result<T> read_obj(uint64_t gpa) const {
    static_assert(std::is_trivially_copyable_v<T>);
    T v;
    // SAFETY: T is trivially copyable and `v` is sizeof(T) bytes of our own stack.
    RETURN_IF_ERROR(read(gpa, {reinterpret_cast<uint8_t*>(&v), sizeof(T)}));
    return v;
  }
  template <typename T>
  Result<void> write_obj(uint64_t gpa, const T& v) const {
    static_assert(std::is_trivially_copyable_v<T>);
    // SAFETY: T is trivially copyable; we read exactly sizeof(T) bytes of `v`.
    return write(gpa, {reinterpret_cast<const uint8_t*>(&v), sizeof(T)});
  }

  // One naturally aligned integer that the guest reads or writes concurrently (virtqueue
  // indices, event fields): a single load or store, never torn. read_obj/write_obj go through
  // memcpy, whose small-size paths may store the bytes of a 16-bit value separately (glibc
  // writes the last byte, then the first two), so a reader can see half of an update.
  // Relaxed: callers place the fences the protocol needs. An unaligned gpa is an error.
  template <typename T>
  Result<T> load_shared(uint64_t gpa) const {
    static_assert(std::is_integral_v<T> && sizeof(T) <= 8);
    auto s = TRY(aligned_span(gpa, sizeof(T)));
    // SAFETY: s is sizeof(T) bytes of mapped guest memory aligned for T (checked above).
    return __atomic_load_n(reinterpret_cast<const T*>(s.data()), __ATOMIC_RELAXED);
  }
  template <typename T>
  Result<void> store_shared(uint64_t gpa, T v) const {
    static_assert(std::is_integral_v<T> && sizeof(T) <= 8);
    auto s = TRY(aligned_span(gpa, sizeof(T)));
    // SAFETY: as in load_shared.
    __atomic_store_n(reinterpret_cast<T*>(s.data()), v, __ATOMIC_RELAXED);
    return Ok();
  }

 private:
  const GuestRegion* find(uint64_t gpa) const;
  Result<std::span<uint8_t>> aligned_span(uint64_t gpa, uint64_t len) const;
  std::vector<GuestRegion> regions_;  // sorted by gpa
};

}  // namespace ringvm
