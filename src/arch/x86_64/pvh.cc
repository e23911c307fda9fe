#include "arch/x86_64/pvh.h"

#include <elf.h>

#include <algorithm>
#include <cstring>
#include <string_view>

#include "arch/x86_64/layout.h"

namespace ringvm::x86 {

namespace {

constexpr uint64_t kMaxMemmapEntries = (kZeroPageAddr - kPvhMemmapAddr) / sizeof(HvmMemmapEntry);
static_assert(kPvhStartInfoAddr + sizeof(HvmStartInfo) <= kPvhModlistAddr);
static_assert(kPvhModlistAddr + sizeof(HvmModlistEntry) <= kPvhMemmapAddr);

// Copies a T out of the file at `off` if it lies wholly inside.
template <typename T>
Result<T> read_at(std::span<const uint8_t> file, uint64_t off, const char* what) {
  if (off > file.size() || sizeof(T) > file.size() - off)
    return make_error(ErrorCode::kCorrupt,
                      "KERNEL: truncated ELF: {} at offset {:#x} needs {} bytes, file has {}", what, off,
                      sizeof(T), file.size());
  T v;
  // SAFETY: T is a POD from <elf.h>; [off, off + sizeof(T)) is inside the file (checked above).
  std::memcpy(reinterpret_cast<uint8_t*>(&v), file.data() + off, sizeof(T));
  return v;
}

constexpr uint64_t align4(uint64_t v) { return (v + 3) & ~uint64_t{3}; }

// Walks the notes of one PT_NOTE segment; sets `entry` when it finds Xen's PHYS32_ENTRY.
Result<void> scan_notes(std::span<const uint8_t> notes, uint32_t* entry) {
  uint64_t off = 0;
  while (notes.size() - off >= sizeof(Elf64_Nhdr)) {
    const auto nh = TRY(read_at<Elf64_Nhdr>(notes, off, "note header"));
    const uint64_t name_off = off + sizeof(Elf64_Nhdr);
    const uint64_t desc_off = name_off + align4(nh.n_namesz);
    const uint64_t next = desc_off + align4(nh.n_descsz);
    if (next > notes.size())
      return make_error(ErrorCode::kCorrupt, "KERNEL: ELF note at {:#x} runs past its segment", off);
    // SAFETY: [name_off, name_off + n_namesz) is inside `notes` (next <= size, checked above).
    const std::string_view name(reinterpret_cast<const char*>(notes.data() + name_off), nh.n_namesz);
    if (name == std::string_view("Xen\0", 4) && nh.n_type == kXenElfnotePhys32Entry) {
      uint64_t value = 0;
      if (nh.n_descsz == 4) {
        value = TRY(read_at<uint32_t>(notes, desc_off, "PVH entry"));
      } else if (nh.n_descsz == 8) {
        value = TRY(read_at<uint64_t>(notes, desc_off, "PVH entry"));
      } else {
        return make_error(ErrorCode::kCorrupt, "KERNEL: PVH entry note has a {}-byte value; expected 4 or 8",
                          nh.n_descsz);
      }
      if (value > UINT32_MAX)
        return make_error(ErrorCode::kCorrupt, "KERNEL: PVH entry {:#x} is above 4 GiB", value);
      *entry = static_cast<uint32_t>(value);
    }
    off = next;
  }
  return Ok();
}

}  // namespace

bool is_elf(std::span<const uint8_t> file) {
  return file.size() >= SELFMAG && std::memcmp(file.data(), ELFMAG, SELFMAG) == 0;
}

Result<LinuxImage> parse_pvh_elf(std::span<const uint8_t> file) {
  const auto eh = TRY(read_at<Elf64_Ehdr>(file, 0, "ELF header"));
  if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB || eh.e_machine != EM_X86_64)
    return make_error(ErrorCode::kUnsupported, "KERNEL: ELF kernel is not a little-endian x86-64 ELF64 file");
  if (eh.e_type != ET_EXEC)
    return make_error(ErrorCode::kUnsupported, "KERNEL: ELF kernel is not an executable (e_type {})",
                      eh.e_type);
  if (eh.e_phentsize != sizeof(Elf64_Phdr))
    return make_error(ErrorCode::kCorrupt, "KERNEL: ELF program header size {} is not {}", eh.e_phentsize,
                      sizeof(Elf64_Phdr));
  LinuxImage img;
  img.kind = LinuxImage::Kind::kPvhElf;
  bool have_entry = false;
  for (uint32_t i = 0; i < eh.e_phnum; ++i) {
    const auto ph =
        TRY(read_at<Elf64_Phdr>(file, eh.e_phoff + uint64_t{i} * sizeof(Elf64_Phdr), "program header"));
    if (ph.p_type != PT_LOAD && ph.p_type != PT_NOTE) continue;
    if (ph.p_offset > file.size() || ph.p_filesz > file.size() - ph.p_offset)
      return make_error(ErrorCode::kCorrupt,
                        "KERNEL: truncated ELF: segment {} needs bytes [{:#x}, +{:#x}), file has {}", i,
                        ph.p_offset, ph.p_filesz, file.size());
    const auto bytes = file.subspan(ph.p_offset, ph.p_filesz);
    if (ph.p_type == PT_NOTE) {
      uint32_t entry = 0;
      RETURN_IF_ERROR(scan_notes(bytes, &entry));
      if (entry != 0) {
        img.pvh_entry = entry;
        have_entry = true;
      }
      continue;
    }
    if (ph.p_memsz < ph.p_filesz)
      return make_error(ErrorCode::kCorrupt, "KERNEL: ELF segment {} has p_memsz < p_filesz", i);
    if (ph.p_paddr < kHighMemoryStart || ph.p_paddr + ph.p_memsz < ph.p_paddr)
      return make_error(ErrorCode::kCorrupt, "KERNEL: ELF segment {} at {:#x} is below 1 MiB or wraps", i,
                        ph.p_paddr);
    img.segments.push_back({ph.p_paddr, bytes, ph.p_memsz});
  }
  if (!have_entry)
    return make_error(ErrorCode::kUnsupported,
                      "KERNEL: ELF kernel has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); build it with "
                      "CONFIG_PVH=y or boot its bzImage");
  if (img.segments.empty())
    return make_error(ErrorCode::kCorrupt, "KERNEL: ELF kernel has no PT_LOAD segment");
  return img;
}

Result<LoadedKernel> load_pvh(const GuestMemory& mem, const LinuxImage& img, std::span<const uint8_t> initrd,
                              const std::vector<E820Entry>& e820, uint64_t acpi_rsdp) {
  if (e820.size() > kMaxMemmapEntries)
    return make_error(ErrorCode::kInvalidArgument, "KERNEL: {} e820 entries exceed the PVH memmap's {}",
                      e820.size(), kMaxMemmapEntries);
  LoadedKernel k;
  k.mode = BootMode::kPvh32;
  k.entry = img.pvh_entry;
  k.start_info = kPvhStartInfoAddr;
  k.kernel_start = UINT64_MAX;
  for (const ElfSegment& s : img.segments) {
    if (!mem.contains(s.paddr, s.mem_size))
      return make_error(ErrorCode::kResourceExhausted,
                        "KERNEL: ELF segment [{:#x}, +{:#x}) is outside guest memory: give --memory more",
                        s.paddr, s.mem_size);
    RETURN_IF_ERROR(mem.write(s.paddr, s.data));
    RETURN_IF_ERROR(mem.fill(s.paddr + s.data.size(), 0, s.mem_size - s.data.size()));
    k.kernel_start = std::min(k.kernel_start, s.paddr);
    k.kernel_end = std::max(k.kernel_end, s.paddr + s.mem_size);
  }
  HvmStartInfo si{};
  si.magic = kHvmStartMagic;
  si.version = 1;
  si.cmdline_paddr = kCmdlineAddr;
  si.rsdp_paddr = acpi_rsdp;
  si.memmap_paddr = kPvhMemmapAddr;
  si.memmap_entries = static_cast<uint32_t>(e820.size());
  if (!initrd.empty()) {
    const uint64_t low_end = TRY(low_ram_end(mem));
    k.initrd_addr = TRY(place_initrd(initrd.size(), k.kernel_end, low_end));
    k.initrd_size = initrd.size();
    RETURN_IF_ERROR(mem.write(k.initrd_addr, initrd));
    RETURN_IF_ERROR(mem.write_obj(kPvhModlistAddr, HvmModlistEntry{k.initrd_addr, k.initrd_size, 0, 0}));
    si.nr_modules = 1;
    si.modlist_paddr = kPvhModlistAddr;
  }
  for (size_t i = 0; i < e820.size(); ++i) {
    const HvmMemmapEntry e{e820[i].addr, e820[i].size, static_cast<uint32_t>(e820[i].type), 0};
    RETURN_IF_ERROR(mem.write_obj(kPvhMemmapAddr + i * sizeof(HvmMemmapEntry), e));
  }
  RETURN_IF_ERROR(mem.write_obj(kPvhStartInfoAddr, si));
  return k;
}

}  // namespace ringvm::x86
