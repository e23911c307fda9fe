#include "arch/x86_64/e820.h"

#include "arch/x86_64/layout.h"

namespace ringvm::x86 {

Result<uint64_t> low_ram_end(const GuestMemory& mem) {
  const auto& regions = mem.regions();
  if (regions.empty() || regions.front().gpa != 0)
    return make_error(ErrorCode::kInvalidArgument,
                      "guest memory has no RAM at address 0: x86 guests need low memory");
  return regions.front().end();
}

Result<std::vector<E820Entry>> build_e820(const GuestMemory& mem) {
  const uint64_t low_end = TRY(low_ram_end(mem));
  if (low_end < kHighMemoryStart + 2 * kMiB)
    return make_error(
        ErrorCode::kInvalidArgument,
        "guest memory below the MMIO hole is {} KiB; an x86 guest needs at least 3 MiB: give --memory more",
        low_end / kKiB);
  if (low_end > kMmioHoleStart)
    return make_error(ErrorCode::kInvalidArgument,
                      "guest RAM at 0 ends at {:#x}, inside the PCI MMIO hole at {:#x}", low_end,
                      kMmioHoleStart);
  std::vector<E820Entry> map;
  map.push_back({0, kEbdaStart, E820Type::kRam});
  // EBDA, VGA window, option ROMs and the BIOS area; the ACPI tables sit at 0xE0000 inside it.
  map.push_back({kEbdaStart, kHighMemoryStart - kEbdaStart, E820Type::kReserved});
  map.push_back({kHighMemoryStart, low_end - kHighMemoryStart, E820Type::kRam});
  map.push_back({kPciEcamBase, kPciEcamSize, E820Type::kReserved});
  for (size_t i = 1; i < mem.regions().size(); ++i) {
    const GuestRegion& r = mem.regions()[i];
    if (r.gpa < kHighRamStart)
      return make_error(
          ErrorCode::kInvalidArgument,
          "guest memory region at {:#x} lies in the 32-bit MMIO hole; x86 RAM above {:#x} starts at 4 GiB",
          r.gpa, low_end);
    map.push_back({r.gpa, r.size(), E820Type::kRam});
  }
  return map;
}

}  // namespace ringvm::x86
