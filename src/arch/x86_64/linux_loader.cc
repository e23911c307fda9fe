#include "arch/x86_64/linux_loader.h"

#include <asm/bootparam.h>

#include <algorithm>
#include <cstring>

#include "arch/x86_64/layout.h"
#include "arch/x86_64/pvh.h"

namespace ringvm::x86 {

namespace {

// Offsets in the bzImage file (boot.rst, "THE REAL-MODE KERNEL HEADER").
constexpr size_t kSetupHeaderOffset = 0x1f1;  // struct setup_header starts here
constexpr size_t kJumpEndOffset = 0x201;      // byte: header length is 0x202 + this
constexpr size_t kMagicOffset = 0x202;        // "HdrS"
constexpr size_t kVersionOffset = 0x206;
// The last field ringvm reads is init_size (protocol 2.10), at 0x260..0x264.
constexpr size_t kMinHeaderEnd = 0x264;
constexpr uint16_t kMinProtocol = 0x020a;
constexpr uint32_t kSectorSize = 512;
constexpr uint32_t kDefaultSetupSects = 4;  // setup_sects == 0 means 4
constexpr uint8_t kLoadedHigh = 0x01;       // loadflags: protected-mode code at 0x100000+
constexpr uint8_t kCanUseHeap = 0x80;       // loadflags: heap_end_ptr is valid
constexpr uint16_t kXlfKernel64 = 0x0001;   // xloadflags: 64-bit entry at load address + 0x200
constexpr uint64_t kEntry64Offset = 0x200;
constexpr uint8_t kLoaderUndefined = 0xff;  // type_of_loader: a boot loader without an assigned id
constexpr uint16_t kVidModeNormal = 0xffff;
constexpr uint16_t kHeapEnd = 0xfe00;  // boot.rst's recommended heap_end_ptr for a modern loader
constexpr uint64_t kPage = 4096;

static_assert(sizeof(boot_params) == 4096, "boot_params is the 4 KiB zero page");
static_assert(offsetof(boot_params, hdr) == kSetupHeaderOffset);
static_assert(offsetof(boot_params, e820_table) == 0x2d0);
static_assert(offsetof(boot_params, acpi_rsdp_addr) == 0x70);

uint16_t le16(std::span<const uint8_t> b, size_t off) {
  return static_cast<uint16_t>(b[off] | (b[off + 1] << 8));
}

constexpr uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

Result<LinuxImage> parse_bzimage(std::span<const uint8_t> file) {
  if (file.size() < kMinHeaderEnd)
    return make_error(
        ErrorCode::kCorrupt,
        "KERNEL: file of {} bytes is neither an ELF vmlinux nor a bzImage (a bzImage setup header "
        "needs {} bytes)",
        file.size(), kMinHeaderEnd);
  if (std::memcmp(file.data() + kMagicOffset, "HdrS", 4) != 0)
    return make_error(ErrorCode::kCorrupt,
                      "KERNEL: not a bzImage (no \"HdrS\" magic at {:#x}) and not an ELF vmlinux",
                      kMagicOffset);
  LinuxImage img;
  img.kind = LinuxImage::Kind::kBzImage;
  img.protocol = le16(file, kVersionOffset);
  if (img.protocol < kMinProtocol)
    return make_error(ErrorCode::kUnsupported,
                      "KERNEL: boot protocol {}.{:02} is too old; ringvm needs 2.10 or later (Linux 2.6.31+)",
                      img.protocol >> 8, img.protocol & 0xff);
  const size_t header_end = kMagicOffset + file[kJumpEndOffset];
  if (header_end < kMinHeaderEnd)
    return make_error(ErrorCode::kCorrupt,
                      "KERNEL: bzImage setup header ends at {:#x} but protocol {:#x} needs it to reach {:#x}",
                      header_end, img.protocol, kMinHeaderEnd);
  const size_t copy_end = std::min(header_end, kSetupHeaderOffset + sizeof(setup_header));
  if (copy_end > file.size())
    return make_error(ErrorCode::kCorrupt,
                      "KERNEL: truncated bzImage: setup header needs {} bytes, file has {}", copy_end,
                      file.size());
  img.setup_header = file.subspan(kSetupHeaderOffset, copy_end - kSetupHeaderOffset);
  setup_header hdr{};
  // SAFETY: setup_header is a packed POD; we copy at most sizeof(hdr) bytes checked above.
  std::memcpy(reinterpret_cast<uint8_t*>(&hdr), img.setup_header.data(), img.setup_header.size());

  img.setup_sects = hdr.setup_sects == 0 ? kDefaultSetupSects : hdr.setup_sects;
  const uint64_t setup_bytes = (uint64_t{img.setup_sects} + 1) * kSectorSize;
  if (setup_bytes > file.size())
    return make_error(ErrorCode::kCorrupt, "KERNEL: truncated bzImage: setup needs {} bytes, file has {}",
                      setup_bytes, file.size());
  const uint64_t pm_bytes = uint64_t{hdr.syssize} * 16;
  if (pm_bytes == 0)
    return make_error(ErrorCode::kCorrupt, "KERNEL: bzImage syssize is 0: no protected-mode kernel");
  if (pm_bytes > file.size() - setup_bytes)
    return make_error(
        ErrorCode::kCorrupt,
        "KERNEL: truncated bzImage: protected-mode kernel needs {} bytes (syssize) after {} bytes of "
        "setup, file has {}",
        pm_bytes, setup_bytes, file.size());
  img.protected_mode = file.subspan(setup_bytes, pm_bytes);
  img.loadflags = hdr.loadflags;
  img.xloadflags = hdr.xloadflags;
  img.kernel_alignment = hdr.kernel_alignment;
  img.relocatable = hdr.relocatable_kernel != 0;
  img.pref_address = hdr.pref_address;
  img.init_size = hdr.init_size;
  img.initrd_addr_max = hdr.initrd_addr_max;
  img.cmdline_size = hdr.cmdline_size;

  if ((img.loadflags & kLoadedHigh) == 0)
    return make_error(ErrorCode::kUnsupported,
                      "KERNEL: a zImage (not LOADED_HIGH) cannot be booted; use a bzImage");
  if ((img.xloadflags & kXlfKernel64) == 0)
    return make_error(
        ErrorCode::kUnsupported,
        "KERNEL: bzImage has no 64-bit entry point (XLF_KERNEL_64): ringvm boots x86-64 kernels only");
  if (img.relocatable &&
      (img.kernel_alignment == 0 || (img.kernel_alignment & (img.kernel_alignment - 1)) != 0))
    return make_error(ErrorCode::kCorrupt, "KERNEL: bzImage kernel_alignment {:#x} is not a power of two",
                      img.kernel_alignment);
  if (img.pref_address < kHighMemoryStart)
    return make_error(ErrorCode::kCorrupt, "KERNEL: bzImage pref_address {:#x} is below 1 MiB",
                      img.pref_address);
  if (img.init_size < pm_bytes)
    return make_error(ErrorCode::kCorrupt,
                      "KERNEL: bzImage init_size {:#x} is smaller than its code ({:#x} bytes)", img.init_size,
                      pm_bytes);
  return img;
}

Result<void> check_cmdline(std::string_view cmdline, uint64_t kernel_limit) {
  if (cmdline.find('\0') != std::string_view::npos)
    return make_error(ErrorCode::kInvalidArgument, "KERNEL: command line contains a NUL byte");
  const uint64_t limit = std::min<uint64_t>(kernel_limit, kCmdlineMaxSize - 1);
  if (cmdline.size() > limit)
    return make_error(
        ErrorCode::kInvalidArgument,
        "KERNEL: command line of {} bytes is longer than the kernel's limit of {} (cmdline_size)",
        cmdline.size(), limit);
  return Ok();
}

// Chooses where the protected-mode kernel goes: pref_address if it fits, otherwise (relocatable
// kernels only) the lowest suitably aligned address above 1 MiB.
Result<uint64_t> choose_load_address(const LinuxImage& img, uint64_t low_end) {
  const uint64_t need = std::max<uint64_t>(img.init_size, img.protected_mode.size());
  if (img.pref_address <= low_end && need <= low_end - img.pref_address) return img.pref_address;
  if (img.relocatable) {
    const uint64_t addr = align_up(kHighMemoryStart, img.kernel_alignment);
    if (addr <= low_end && need <= low_end - addr) return addr;
  }
  return make_error(
      ErrorCode::kResourceExhausted,
      "KERNEL: the kernel needs {} MiB (init_size) from {:#x} but guest memory below 4 GiB ends at "
      "{:#x}: give --memory more",
      (need + kMiB - 1) / kMiB, img.pref_address, low_end);
}

Result<LoadedKernel> load_bzimage(const GuestMemory& mem, const LinuxImage& img,
                                  std::span<const uint8_t> initrd, const std::vector<E820Entry>& e820,
                                  uint64_t acpi_rsdp) {
  if (e820.size() > E820_MAX_ENTRIES_ZEROPAGE)
    return make_error(ErrorCode::kInvalidArgument, "KERNEL: {} e820 entries exceed the zero page's {}",
                      e820.size(), E820_MAX_ENTRIES_ZEROPAGE);
  const uint64_t low_end = TRY(low_ram_end(mem));
  const uint64_t load = TRY(choose_load_address(img, low_end));
  LoadedKernel k;
  k.mode = BootMode::kLinux64;
  k.entry = load + kEntry64Offset;
  k.zero_page = kZeroPageAddr;
  k.kernel_start = load;
  k.kernel_end = load + std::max<uint64_t>(img.init_size, img.protected_mode.size());
  RETURN_IF_ERROR(mem.write(load, img.protected_mode));

  if (!initrd.empty()) {
    const uint64_t limit = std::min<uint64_t>(uint64_t{img.initrd_addr_max} + 1, low_end);
    k.initrd_addr = TRY(place_initrd(initrd.size(), k.kernel_end, limit));
    k.initrd_size = initrd.size();
    RETURN_IF_ERROR(mem.write(k.initrd_addr, initrd));
  }

  boot_params bp{};
  // The kernel expects its own setup header back, with the loader's fields filled in.
  // SAFETY: bp.hdr is a packed POD of at least img.setup_header.size() bytes (checked in parse).
  std::memcpy(reinterpret_cast<uint8_t*>(&bp.hdr), img.setup_header.data(), img.setup_header.size());
  bp.hdr.type_of_loader = kLoaderUndefined;
  bp.hdr.loadflags = static_cast<uint8_t>(bp.hdr.loadflags | kCanUseHeap);
  bp.hdr.heap_end_ptr = kHeapEnd;
  bp.hdr.vid_mode = kVidModeNormal;
  bp.hdr.code32_start = static_cast<uint32_t>(load);
  bp.hdr.cmd_line_ptr = static_cast<uint32_t>(kCmdlineAddr);
  bp.ext_cmd_line_ptr = static_cast<uint32_t>(kCmdlineAddr >> 32);
  bp.hdr.ramdisk_image = static_cast<uint32_t>(k.initrd_addr);
  bp.hdr.ramdisk_size = static_cast<uint32_t>(k.initrd_size);
  bp.ext_ramdisk_image = static_cast<uint32_t>(k.initrd_addr >> 32);
  bp.ext_ramdisk_size = static_cast<uint32_t>(k.initrd_size >> 32);
  bp.acpi_rsdp_addr = acpi_rsdp;
  bp.e820_entries = static_cast<uint8_t>(e820.size());
  for (size_t i = 0; i < e820.size(); ++i) {
    bp.e820_table[i].addr = e820[i].addr;
    bp.e820_table[i].size = e820[i].size;
    bp.e820_table[i].type = static_cast<uint32_t>(e820[i].type);
  }
  RETURN_IF_ERROR(mem.write_obj(kZeroPageAddr, bp));
  return k;
}

}  // namespace

Result<uint64_t> place_initrd(uint64_t size, uint64_t floor, uint64_t limit) {
  if (size > limit || (limit - size) / kPage * kPage < floor)
    return make_error(ErrorCode::kResourceExhausted,
                      "initrd of {} bytes does not fit in guest memory below {:#x}: give --memory more", size,
                      limit);
  return (limit - size) / kPage * kPage;
}

Result<LinuxImage> LinuxImage::parse(std::span<const uint8_t> file) {
  if (file.empty()) return make_error(ErrorCode::kCorrupt, "KERNEL: the kernel file is empty");
  if (is_elf(file)) return parse_pvh_elf(file);
  return parse_bzimage(file);
}

Result<LoadedKernel> load_linux(const GuestMemory& mem, std::span<const uint8_t> kernel_file,
                                std::span<const uint8_t> initrd, std::string_view cmdline,
                                const std::vector<E820Entry>& e820, uint64_t acpi_rsdp) {
  const LinuxImage img = TRY(LinuxImage::parse(kernel_file));
  const bool pvh = img.kind == LinuxImage::Kind::kPvhElf;
  RETURN_IF_ERROR(check_cmdline(cmdline, pvh ? kCmdlineMaxSize - 1 : img.cmdline_size));
  RETURN_IF_ERROR(mem.fill(kCmdlineAddr, 0, cmdline.size() + 1));
  // SAFETY: char and uint8_t have the same size and representation.
  RETURN_IF_ERROR(
      mem.write(kCmdlineAddr, {reinterpret_cast<const uint8_t*>(cmdline.data()), cmdline.size()}));
  if (pvh) return load_pvh(mem, img, initrd, e820, acpi_rsdp);
  return load_bzimage(mem, img, initrd, e820, acpi_rsdp);
}

}  // namespace ringvm::x86
