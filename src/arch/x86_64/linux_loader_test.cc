#include "arch/x86_64/linux_loader.h"

#include <asm/bootparam.h>
#include <elf.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "arch/x86_64/layout.h"
#include "arch/x86_64/pvh.h"

namespace ringvm::x86 {
namespace {

using Bytes = std::vector<uint8_t>;

template <typename T>
void put(Bytes& b, size_t off, T v) {
  // SAFETY: test helper; the caller sized `b` to hold the field.
  std::memcpy(b.data() + off, reinterpret_cast<const uint8_t*>(&v), sizeof(T));
}

// A minimal bzImage: 4 setup sectors + boot sector, then `pm_size` bytes of "kernel".
Bytes fake_bzimage(uint32_t pm_size = 0x2000) {
  Bytes b(5 * 512 + pm_size, 0);
  b[0x1f1] = 4;                           // setup_sects
  put<uint32_t>(b, 0x1f4, pm_size / 16);  // syssize
  put<uint16_t>(b, 0x1fe, 0xAA55);        // boot_flag
  b[0x201] = 0x6a;                        // header runs to 0x26c
  std::memcpy(b.data() + 0x202, "HdrS", 4);
  put<uint16_t>(b, 0x206, 0x020f);      // protocol 2.15
  b[0x211] = 0x01;                      // loadflags: LOADED_HIGH
  put<uint32_t>(b, 0x22c, 0x7fffffff);  // initrd_addr_max
  put<uint32_t>(b, 0x230, 0x200000);    // kernel_alignment
  b[0x234] = 1;                         // relocatable_kernel
  put<uint16_t>(b, 0x236, 0x0003);      // xloadflags: KERNEL_64 | CAN_BE_LOADED_ABOVE_4G
  put<uint32_t>(b, 0x238, 2047);        // cmdline_size
  put<uint64_t>(b, 0x258, 0x1000000);   // pref_address
  put<uint32_t>(b, 0x260, 0x400000);    // init_size
  for (uint32_t i = 0; i < pm_size; ++i) b[5 * 512 + i] = static_cast<uint8_t>(i * 7 + 1);
  return b;
}

std::string parse_error(const Bytes& b) {
  auto r = LinuxImage::parse(b);
  return r.ok() ? std::string("(parsed)") : r.error().message();
}

std::optional<std::filesystem::path> stock_kernel() {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/boot", ec))
    if (e.path().filename().string().rfind("vmlinuz-", 0) == 0) return e.path();
  return std::nullopt;
}

Bytes read_file(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(f), {});
}

GuestMemory memory(uint64_t bytes) {
  auto m = GuestMemory::create_x86(bytes);
  EXPECT_TRUE(m.ok());
  return std::move(m).value();
}

TEST(LinuxLoader, ParsesStockDebianKernel) {
  auto path = stock_kernel();
  if (!path) GTEST_SKIP() << "no /boot/vmlinuz-* on this machine (install linux-image-amd64)";
  const Bytes file = read_file(*path);
  auto img = LinuxImage::parse(file);
  ASSERT_TRUE(img.ok()) << img.error().message();
  EXPECT_EQ(img->kind, LinuxImage::Kind::kBzImage);
  EXPECT_GE(img->protocol, 0x020a);
  EXPECT_TRUE(img->xloadflags & 1) << "XLF_KERNEL_64";
  EXPECT_TRUE(img->relocatable);
  EXPECT_EQ(img->pref_address, 0x1000000u);
  EXPECT_EQ(img->kernel_alignment & (img->kernel_alignment - 1), 0u);
  EXPECT_GT(img->init_size, img->protected_mode.size());
  EXPECT_GE(img->cmdline_size, 255u);
  EXPECT_EQ((img->setup_sects + 1) * 512 + img->protected_mode.size() <= file.size(), true);
}

TEST(LinuxLoader, LoadsStockKernelWithInitrd) {
  auto path = stock_kernel();
  if (!path) GTEST_SKIP() << "no /boot/vmlinuz-* on this machine (install linux-image-amd64)";
  const Bytes file = read_file(*path);
  GuestMemory mem = memory(256 * kMiB);
  const auto e820 = build_e820(mem).value();
  const Bytes initrd(3 * kMiB + 5, 0x5a);
  auto k = load_linux(mem, file, initrd, "console=ttyS0 panic=-1", e820, kRsdpAddr);
  ASSERT_TRUE(k.ok()) << k.error().message();
  EXPECT_EQ(k->mode, BootMode::kLinux64);
  EXPECT_EQ(k->entry, 0x1000000u + 0x200);
  EXPECT_EQ(k->zero_page, kZeroPageAddr);
  EXPECT_EQ(k->initrd_addr % 4096, 0u);
  EXPECT_GE(k->initrd_addr, k->kernel_end);
  EXPECT_LE(k->initrd_addr + initrd.size(), 256 * kMiB);
  EXPECT_GT(k->initrd_addr + initrd.size() + 4096, 256 * kMiB) << "initrd goes as high as it can";

  const auto bp = mem.read_obj<boot_params>(kZeroPageAddr).value();
  EXPECT_EQ(bp.hdr.type_of_loader, 0xff);
  EXPECT_EQ(std::memcmp(&bp.hdr.header, "HdrS", 4), 0);
  EXPECT_EQ(bp.hdr.cmd_line_ptr, kCmdlineAddr);
  EXPECT_EQ(bp.hdr.ramdisk_image, k->initrd_addr);
  EXPECT_EQ(bp.hdr.ramdisk_size, initrd.size());
  EXPECT_EQ(bp.acpi_rsdp_addr, kRsdpAddr);
  ASSERT_EQ(bp.e820_entries, e820.size());
  EXPECT_EQ(bp.e820_table[2].addr, kHighMemoryStart);
  EXPECT_EQ(bp.e820_table[2].type, 1u);
  char cmd[32] = {};
  ASSERT_TRUE(mem.read(kCmdlineAddr, {reinterpret_cast<uint8_t*>(cmd), sizeof(cmd)}).ok());
  EXPECT_STREQ(cmd, "console=ttyS0 panic=-1");
  const auto img = LinuxImage::parse(file).value();
  Bytes loaded(img.protected_mode.size());
  ASSERT_TRUE(mem.read(0x1000000, loaded).ok());
  EXPECT_TRUE(std::equal(loaded.begin(), loaded.end(), img.protected_mode.begin()));
  Bytes rd(16);
  ASSERT_TRUE(mem.read(k->initrd_addr, rd).ok());
  EXPECT_EQ(rd, Bytes(16, 0x5a));
}

TEST(LinuxLoader, TruncatedImagesAreClearErrors) {
  const Bytes full = fake_bzimage();
  EXPECT_NE(parse_error(Bytes{}).find("empty"), std::string::npos);
  for (size_t len : {size_t{100}, size_t{0x1f0}, size_t{0x250}}) {
    const std::string e = parse_error(Bytes(full.begin(), full.begin() + static_cast<long>(len)));
    EXPECT_NE(e.find("neither an ELF vmlinux nor a bzImage"), std::string::npos) << len << ": " << e;
  }
  // Inside the setup sectors.
  std::string e = parse_error(Bytes(full.begin(), full.begin() + 0x400));
  EXPECT_NE(e.find("KERNEL: truncated bzImage: setup needs 2560 bytes, file has 1024"), std::string::npos)
      << e;
  // Inside the protected-mode part.
  e = parse_error(Bytes(full.begin(), full.end() - 100));
  EXPECT_NE(e.find("truncated bzImage: protected-mode kernel needs 8192 bytes"), std::string::npos) << e;
  EXPECT_TRUE(LinuxImage::parse(full).ok());
}

TEST(LinuxLoader, CorruptHeadersAreClearErrors) {
  Bytes b = fake_bzimage();
  b[0x203] = 'x';
  EXPECT_NE(parse_error(b).find("no \"HdrS\" magic"), std::string::npos);

  b = fake_bzimage();
  put<uint16_t>(b, 0x206, 0x0209);
  EXPECT_NE(parse_error(b).find("boot protocol 2.09 is too old"), std::string::npos) << parse_error(b);

  b = fake_bzimage();
  b[0x1f1] = 0xff;
  EXPECT_NE(parse_error(b).find("setup needs 131072 bytes"), std::string::npos) << parse_error(b);

  b = fake_bzimage();
  put<uint32_t>(b, 0x1f4, 0xffffffff);
  EXPECT_NE(parse_error(b).find("protected-mode kernel needs 68719476720 bytes"), std::string::npos)
      << parse_error(b);

  b = fake_bzimage();
  put<uint16_t>(b, 0x236, 0);
  EXPECT_NE(parse_error(b).find("XLF_KERNEL_64"), std::string::npos);

  b = fake_bzimage();
  b[0x211] = 0;
  EXPECT_NE(parse_error(b).find("LOADED_HIGH"), std::string::npos);

  b = fake_bzimage();
  put<uint32_t>(b, 0x230, 0x300000);
  EXPECT_NE(parse_error(b).find("kernel_alignment 0x300000"), std::string::npos);

  b = fake_bzimage();
  b[0x201] = 0x50;  // header too short for init_size
  EXPECT_NE(parse_error(b).find("setup header ends at 0x252"), std::string::npos) << parse_error(b);
}

TEST(LinuxLoader, CommandLineLongerThanCmdlineSizeIsRejected) {
  GuestMemory mem = memory(64 * kMiB);
  const auto e820 = build_e820(mem).value();
  const std::string ok(2047, 'a');
  EXPECT_TRUE(load_linux(mem, fake_bzimage(), {}, ok, e820, 0).ok());
  auto r = load_linux(mem, fake_bzimage(), {}, ok + "b", e820, 0);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("command line of 2048 bytes is longer than the kernel's limit of 2047"),
            std::string::npos)
      << r.error().message();
}

TEST(LinuxLoader, InitrdPlacement) {
  EXPECT_EQ(place_initrd(4096, 0x1000000, 0x2000000).value(), 0x2000000u - 4096);
  EXPECT_EQ(place_initrd(5000, 0x1000000, 0x2000000).value(), 0x2000000u - 8192);
  EXPECT_EQ(place_initrd(0x1000000, 0x1000000, 0x2000000).value(), 0x1000000u);
  auto r = place_initrd(0x1000001, 0x1000000, 0x2000000);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message(),
            "initrd of 16777217 bytes does not fit in guest memory below 0x2000000: give --memory more");
  EXPECT_FALSE(place_initrd(0x3000000, 0, 0x2000000).ok());

  // initrd_addr_max below the end of RAM bounds the placement.
  Bytes k = fake_bzimage();
  put<uint32_t>(k, 0x22c, 0x03ffffff);
  GuestMemory mem = memory(256 * kMiB);
  const auto e820 = build_e820(mem).value();
  auto loaded = load_linux(mem, k, Bytes(kMiB, 1), "", e820, 0);
  ASSERT_TRUE(loaded.ok()) << loaded.error().message();
  EXPECT_EQ(loaded->initrd_addr, 0x4000000u - kMiB);

  // Too big for the memory between the kernel and initrd_addr_max.
  auto big = load_linux(mem, k, Bytes(60 * kMiB, 1), "", e820, 0);
  ASSERT_FALSE(big.ok());
  EXPECT_NE(
      big.error().message().find("initrd of 62914560 bytes does not fit in guest memory below 0x4000000"),
      std::string::npos)
      << big.error().message();
}

TEST(LinuxLoader, KernelThatDoesNotFitIsAnError) {
  Bytes k = fake_bzimage();
  put<uint32_t>(k, 0x260, 0x4000000);  // init_size 64 MiB
  GuestMemory mem = memory(32 * kMiB);
  auto r = load_linux(mem, k, {}, "", build_e820(mem).value(), 0);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("give --memory more"), std::string::npos) << r.error().message();
}

TEST(LinuxLoader, RelocatableKernelMovesBelowPrefAddressWhenRamIsSmall) {
  GuestMemory mem = memory(12 * kMiB);  // pref_address 16 MiB is past the end
  auto r = load_linux(mem, fake_bzimage(), {}, "", build_e820(mem).value(), 0);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->kernel_start, 0x200000u);
  EXPECT_EQ(r->entry, 0x200200u);
}

// A synthetic ELF64 vmlinux: one PT_LOAD at 1 MiB and one PT_NOTE with Xen's PHYS32_ENTRY.
Bytes fake_pvh_elf(uint32_t entry, uint32_t desc_size = 4, bool with_note = true) {
  Bytes b(0x400, 0);
  Elf64_Ehdr eh{};
  std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
  eh.e_ident[EI_CLASS] = ELFCLASS64;
  eh.e_ident[EI_DATA] = ELFDATA2LSB;
  eh.e_ident[EI_VERSION] = EV_CURRENT;
  eh.e_type = ET_EXEC;
  eh.e_machine = EM_X86_64;
  eh.e_phoff = sizeof(Elf64_Ehdr);
  eh.e_phentsize = sizeof(Elf64_Phdr);
  eh.e_phnum = with_note ? 2 : 1;
  put(b, 0, eh);
  Elf64_Phdr load{};
  load.p_type = PT_LOAD;
  load.p_offset = 0x200;
  load.p_paddr = 0x100000;
  load.p_filesz = 16;
  load.p_memsz = 64;
  put(b, sizeof(Elf64_Ehdr), load);
  for (int i = 0; i < 16; ++i) b[0x200 + i] = static_cast<uint8_t>(0xc0 + i);
  Elf64_Phdr note{};
  note.p_type = PT_NOTE;
  note.p_offset = 0x300;
  note.p_filesz = sizeof(Elf64_Nhdr) + 4 + desc_size;
  put(b, sizeof(Elf64_Ehdr) + sizeof(Elf64_Phdr), note);
  put(b, 0x300, Elf64_Nhdr{4, desc_size, kXenElfnotePhys32Entry});
  std::memcpy(b.data() + 0x300 + sizeof(Elf64_Nhdr), "Xen", 4);
  if (desc_size == 8) {
    put<uint64_t>(b, 0x300 + sizeof(Elf64_Nhdr) + 4, entry);
  } else {
    put<uint32_t>(b, 0x300 + sizeof(Elf64_Nhdr) + 4, entry);
  }
  return b;
}

TEST(PvhLoader, ParsesEntryNote) {
  for (uint32_t desc : {4u, 8u}) {
    auto img = LinuxImage::parse(fake_pvh_elf(0x100004, desc));
    ASSERT_TRUE(img.ok()) << img.error().message();
    EXPECT_EQ(img->kind, LinuxImage::Kind::kPvhElf);
    EXPECT_EQ(img->pvh_entry, 0x100004u);
    ASSERT_EQ(img->segments.size(), 1u);
    EXPECT_EQ(img->segments[0].paddr, 0x100000u);
    EXPECT_EQ(img->segments[0].mem_size, 64u);
  }
  auto none = LinuxImage::parse(fake_pvh_elf(0x100004, 4, false));
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.error().message().find("no PVH entry note"), std::string::npos);

  Bytes truncated = fake_pvh_elf(0x100004);
  truncated.resize(0x300);  // cuts the note segment
  auto t = LinuxImage::parse(truncated);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.error().message().find("truncated ELF"), std::string::npos) << t.error().message();

  Bytes bad_note = fake_pvh_elf(0x100004);
  put<uint32_t>(bad_note, 0x300 + 4, 0x1000);  // n_descsz past the segment
  EXPECT_FALSE(LinuxImage::parse(bad_note).ok());
}

TEST(PvhLoader, LoadsSegmentsAndStartInfo) {
  GuestMemory mem = memory(64 * kMiB);
  ASSERT_TRUE(mem.fill(0x100000, 0xee, 0x100).ok());  // bss must be zeroed over this
  const auto e820 = build_e820(mem).value();
  auto k = load_linux(mem, fake_pvh_elf(0x100004), Bytes(10000, 3), "root=/dev/vda", e820, kRsdpAddr);
  ASSERT_TRUE(k.ok()) << k.error().message();
  EXPECT_EQ(k->mode, BootMode::kPvh32);
  EXPECT_EQ(k->entry, 0x100004u);
  EXPECT_EQ(k->start_info, kPvhStartInfoAddr);
  Bytes seg(64);
  ASSERT_TRUE(mem.read(0x100000, seg).ok());
  EXPECT_EQ(seg[0], 0xc0);
  EXPECT_EQ(seg[15], 0xcf);
  EXPECT_EQ(seg[16], 0);
  EXPECT_EQ(seg[63], 0);
  const auto si = mem.read_obj<HvmStartInfo>(kPvhStartInfoAddr).value();
  EXPECT_EQ(si.magic, kHvmStartMagic);
  EXPECT_EQ(si.version, 1u);
  EXPECT_EQ(si.cmdline_paddr, kCmdlineAddr);
  EXPECT_EQ(si.rsdp_paddr, kRsdpAddr);
  ASSERT_EQ(si.memmap_entries, e820.size());
  const auto m2 = mem.read_obj<HvmMemmapEntry>(si.memmap_paddr + 2 * sizeof(HvmMemmapEntry)).value();
  EXPECT_EQ(m2.addr, kHighMemoryStart);
  EXPECT_EQ(m2.type, 1u);
  ASSERT_EQ(si.nr_modules, 1u);
  const auto mod = mem.read_obj<HvmModlistEntry>(si.modlist_paddr).value();
  EXPECT_EQ(mod.paddr, k->initrd_addr);
  EXPECT_EQ(mod.size, 10000u);
  EXPECT_EQ(mod.paddr % 4096, 0u);
}

// Every prefix and every single-byte corruption of both formats is parsed (and, when it parses,
// loaded) without touching memory outside the buffers; run under the asan-ubsan preset this is a
// bounds check of every read.
TEST(LinuxLoader, MutatedImagesNeverCrash) {
  GuestMemory mem = memory(64 * kMiB);
  const auto e820 = build_e820(mem).value();
  size_t parsed = 0, rejected = 0;
  auto exercise = [&](const Bytes& img) {
    auto r = load_linux(mem, img, Bytes(100, 1), "console=ttyS0", e820, 0);
    r.ok() ? ++parsed : ++rejected;
  };
  for (const Bytes& base : {fake_bzimage(0x200), fake_pvh_elf(0x100004)}) {
    for (size_t len = 0; len < base.size(); len += 3)
      exercise(Bytes(base.begin(), base.begin() + static_cast<long>(len)));
    const size_t span = std::min<size_t>(base.size(), 0x400);
    for (size_t i = 0; i < span; ++i) {
      for (uint8_t v : {uint8_t{0x00}, uint8_t{0x7f}, uint8_t{0xff}}) {
        Bytes m = base;
        m[i] = v;
        exercise(m);
      }
    }
  }
  EXPECT_GT(parsed, 0u);
  EXPECT_GT(rejected, 0u);
}

}  // namespace
}  // namespace ringvm::x86
