// PVH boot of an ELF vmlinux: the XEN_ELFNOTE_PHYS32_ENTRY note, PT_LOAD segments and the
// hvm_start_info the kernel reads at entry (Xen's public arch-x86/hvm/start_info.h, which no
// Debian header ships, hence the declarations here). Internal to the loader; tests use it.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "arch/x86_64/e820.h"
#include "arch/x86_64/linux_loader.h"
#include "base/result.h"
#include "memory/guest_memory.h"

namespace ringvm::x86 {

inline constexpr uint32_t kXenElfnotePhys32Entry = 18;  // XEN_ELFNOTE_PHYS32_ENTRY
inline constexpr uint32_t kHvmStartMagic = 0x336ec578;  // XEN_HVM_START_MAGIC_VALUE

struct HvmStartInfo {
  uint32_t magic;
  uint32_t version;  // 1: has the memmap fields
  uint32_t flags;
  uint32_t nr_modules;
  uint64_t modlist_paddr;  // hvm_modlist_entry[nr_modules]
  uint64_t cmdline_paddr;
  uint64_t rsdp_paddr;
  uint64_t memmap_paddr;  // hvm_memmap_table_entry[memmap_entries]
  uint32_t memmap_entries;
  uint32_t reserved;
};
static_assert(sizeof(HvmStartInfo) == 56);

struct HvmModlistEntry {
  uint64_t paddr;
  uint64_t size;
  uint64_t cmdline_paddr;
  uint64_t reserved;
};
static_assert(sizeof(HvmModlistEntry) == 32);

struct HvmMemmapEntry {
  uint64_t addr;
  uint64_t size;
  uint32_t type;  // e820 type
  uint32_t reserved;
};
static_assert(sizeof(HvmMemmapEntry) == 24);

bool is_elf(std::span<const uint8_t> file);
// Validates an x86-64 ELF executable and finds its PVH entry note and loadable segments.
Result<LinuxImage> parse_pvh_elf(std::span<const uint8_t> file);
// Loads the segments and initrd and writes hvm_start_info; the command line is already at
// kCmdlineAddr.
Result<LoadedKernel> load_pvh(const GuestMemory& mem, const LinuxImage& img, std::span<const uint8_t> initrd,
                              const std::vector<E820Entry>& e820, uint64_t acpi_rsdp);

}  // namespace ringvm::x86
