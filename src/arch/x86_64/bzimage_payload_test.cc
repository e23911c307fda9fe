#include "arch/x86_64/bzimage_payload.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>

namespace ringvm::x86 {
namespace {

std::vector<uint8_t> read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}

std::string host_kernel() {
  std::string best;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/boot", ec))
    if (e.path().filename().string().starts_with("vmlinuz-") && e.path().string() > best) best = e.path().string();
  return best;
}

TEST(BzImagePayload, StockKernelDecompressesToAPvhElf) {
  const std::string path = host_kernel();
  if (path.empty()) GTEST_SKIP() << "no /boot/vmlinuz-* (scripts/setup.sh installs linux-image-amd64)";
  const auto file = read_all(path);
  auto img = LinuxImage::parse(file);
  ASSERT_TRUE(img.ok()) << img.error().message();
  auto elf = extract_vmlinux(*img);
  ASSERT_TRUE(elf.ok()) << elf.error().message();
  ASSERT_GT(elf->size(), file.size());  // decompressed is larger than the whole bzImage
  EXPECT_EQ((*elf)[0], 0x7f);
  EXPECT_EQ((*elf)[1], 'E');
  auto vmlinux = LinuxImage::parse(*elf);
  // Debian's kernels have CONFIG_PVH: the ELF carries the PVH entry note.
  ASSERT_TRUE(vmlinux.ok()) << vmlinux.error().message();
  EXPECT_EQ(vmlinux->kind, LinuxImage::Kind::kPvhElf);
  EXPECT_NE(vmlinux->pvh_entry, 0u);
}

TEST(BzImagePayload, CorruptPayloadIsAnErrorNotACrash) {
  const std::string path = host_kernel();
  if (path.empty()) GTEST_SKIP() << "no /boot/vmlinuz-*";
  auto file = read_all(path);
  auto img = LinuxImage::parse(file);
  ASSERT_TRUE(img.ok());
  // Flip bytes in the middle of the compressed payload, through a copy the parser re-reads.
  const size_t mid = static_cast<size_t>(img->protected_mode.data() - file.data()) + img->protected_mode.size() / 2;
  for (size_t i = 0; i < 4096; ++i) file[mid + i] ^= 0x5a;
  auto bad = LinuxImage::parse(file);
  ASSERT_TRUE(bad.ok());
  auto elf = extract_vmlinux(*bad);
  ASSERT_FALSE(elf.ok());
  EXPECT_NE(elf.error().message().find("KERNEL"), std::string::npos);
}

}  // namespace
}  // namespace ringvm::x86
