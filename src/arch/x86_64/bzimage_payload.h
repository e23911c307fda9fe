// The ELF vmlinux inside a bzImage, decompressed on the host.
//
// A bzImage's protected-mode part is a small decompressor plus the compressed vmlinux (the setup
// header's payload_offset/payload_length, boot protocol 2.08+). Under nested virtualization the
// guest's own decompression of a 30 MB xz payload costs seconds of emulated CPU; decompressing on
// the host and entering the ELF through its PVH note (CONFIG_PVH) skips all of it.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "arch/x86_64/linux_loader.h"
#include "base/result.h"

namespace ringvm::x86 {

// Largest vmlinux we decompress; a hostile payload cannot make us allocate more.
inline constexpr uint64_t kMaxVmlinuxBytes = 512ULL << 20;

// `img` is a parsed bzImage. Supports xz (liblzma), gzip (zlib) and zstd payloads; any other
// compression is kUnsupported naming it. The result is an ELF file (not yet checked for a PVH note).
Result<std::vector<uint8_t>> extract_vmlinux(const LinuxImage& img);

}  // namespace ringvm::x86
