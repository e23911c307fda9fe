// The guest's e820 memory map, derived from GuestMemory and the fixed platform layout.
#pragma once

#include <cstdint>
#include <vector>

#include "base/result.h"
#include "memory/guest_memory.h"

namespace ringvm::x86 {

// E820 range types (ACPI "address range types").
enum class E820Type : uint32_t {
  kRam = 1,       // usable RAM
  kReserved = 2,  // not usable: firmware, holes, MMIO the OS must not allocate
  kAcpi = 3,      // ACPI tables, reclaimable after parsing
  kNvs = 4,       // ACPI non-volatile storage
};

// Our own view of an entry; the zero page and PVH memmap have their own ABI layouts.
struct E820Entry {
  uint64_t addr = 0;
  uint64_t size = 0;
  E820Type type = E820Type::kRam;
  uint64_t end() const { return addr + size; }
  bool operator==(const E820Entry&) const = default;
};

// RAM from `mem`'s regions (the region at 0 split around the EBDA/BIOS hole), the BIOS area
// 0x9FC00..1 MiB reserved (ACPI tables live there) and the PCI ECAM reserved so the kernel
// trusts MCFG. Sorted by address. Fails if `mem` has no region at 0 or less than 1 MiB there.
Result<std::vector<E820Entry>> build_e820(const GuestMemory& mem);

// The exclusive end of the RAM region starting at 0 (below the 32-bit MMIO hole).
Result<uint64_t> low_ram_end(const GuestMemory& mem);

}  // namespace ringvm::x86
