// Loading an unmodified Linux kernel: a bzImage through the 64-bit boot protocol
// (Documentation/arch/x86/boot.rst, protocol >= 2.10), or an ELF vmlinux through its PVH entry
// (XEN_ELFNOTE_PHYS32_ENTRY, entered in 32-bit protected mode with an hvm_start_info).
//
// Every field read from the image is bounds-checked: a truncated or hostile image yields an
// error naming what is wrong, never an out-of-bounds read.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "arch/x86_64/e820.h"
#include "base/result.h"
#include "memory/guest_memory.h"

namespace ringvm::x86 {

// A PT_LOAD segment of an ELF kernel.
struct ElfSegment {
  uint64_t paddr = 0;
  std::span<const uint8_t> data;  // p_filesz bytes of the file
  uint64_t mem_size = 0;          // p_memsz >= data.size(); the rest is zeroed
};

// What the loader learned from a kernel file. The spans point into the file's bytes, which must
// outlive this object.
struct LinuxImage {
  enum class Kind { kBzImage, kPvhElf };
  Kind kind = Kind::kBzImage;

  // bzImage (boot protocol fields, setup_sects already resolved: 0 means 4).
  uint16_t protocol = 0;  // e.g. 0x020f for 2.15
  uint32_t setup_sects = 0;
  std::span<const uint8_t> setup_header;    // file bytes 0x1f1 .. end of the header
  std::span<const uint8_t> protected_mode;  // syssize * 16 bytes after the setup sectors
  uint8_t loadflags = 0;
  uint16_t xloadflags = 0;
  uint32_t kernel_alignment = 0;
  bool relocatable = false;
  uint64_t pref_address = 0;
  uint32_t init_size = 0;        // memory the kernel needs from its load address to decompress
  uint32_t initrd_addr_max = 0;  // highest address the initrd's last byte may have
  uint32_t cmdline_size = 0;     // longest command line, excluding the NUL

  // PVH ELF.
  uint32_t pvh_entry = 0;  // 32-bit physical entry point
  std::vector<ElfSegment> segments;

  // Detects the format and validates it. Errors begin with "KERNEL: ".
  static Result<LinuxImage> parse(std::span<const uint8_t> file);
};

enum class BootMode {
  kLinux64,  // 64-bit boot protocol: long mode, rsi = zero page
  kPvh32,    // PVH: 32-bit protected mode, paging off, ebx = hvm_start_info
};

struct LoadedKernel {
  BootMode mode = BootMode::kLinux64;
  uint64_t entry = 0;         // rip
  uint64_t zero_page = 0;     // kLinux64: boot_params gpa (rsi)
  uint64_t start_info = 0;    // kPvh32: hvm_start_info gpa (ebx)
  uint64_t kernel_start = 0;  // [kernel_start, kernel_end): memory the kernel owns while booting
  uint64_t kernel_end = 0;
  uint64_t initrd_addr = 0;  // 0 when there is no initrd
  uint64_t initrd_size = 0;
};

// Loads `kernel_file` (bzImage or PVH ELF), `initrd` (may be empty) and `cmdline` into `mem` and
// writes the boot structures (zero page or hvm_start_info) with `e820` and the RSDP address
// `acpi_rsdp` (0 when there are no ACPI tables). The initrd goes page-aligned as high as it can
// below both the kernel's initrd_addr_max and the end of low RAM.
Result<LoadedKernel> load_linux(const GuestMemory& mem, std::span<const uint8_t> kernel_file,
                                std::span<const uint8_t> initrd, std::string_view cmdline,
                                const std::vector<E820Entry>& e820, uint64_t acpi_rsdp);

// Where an initrd of `size` bytes goes: the highest 4 KiB-aligned address with the whole initrd
// below `limit` (exclusive) and at or above `floor`. Exposed for tests.
Result<uint64_t> place_initrd(uint64_t size, uint64_t floor, uint64_t limit);

}  // namespace ringvm::x86
