#include "arch/x86_64/bzimage_payload.h"

#include <asm/bootparam.h>
#include <lzma.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cstring>

namespace ringvm::x86 {

namespace {

constexpr size_t kSetupHeaderOffset = 0x1f1;
constexpr size_t kChunk = 4 << 20;

bool starts_with(std::span<const uint8_t> d, std::initializer_list<uint8_t> magic) {
  return d.size() >= magic.size() && std::equal(magic.begin(), magic.end(), d.begin());
}

Result<std::vector<uint8_t>> too_large() {
  return make_error(ErrorCode::kOutOfRange, "KERNEL: the bzImage payload decompresses to more than {} bytes",
                    kMaxVmlinuxBytes);
}

Result<std::vector<uint8_t>> unxz(std::span<const uint8_t> in) {
  lzma_stream s = LZMA_STREAM_INIT;
  if (lzma_stream_decoder(&s, kMaxVmlinuxBytes, 0) != LZMA_OK)
    return make_error(ErrorCode::kInternal, "liblzma: cannot start an xz decoder");
  std::vector<uint8_t> out;
  s.next_in = in.data();
  s.avail_in = in.size();
  lzma_ret r = LZMA_OK;
  while (r == LZMA_OK) {
    if (out.size() >= kMaxVmlinuxBytes) {
      lzma_end(&s);
      return too_large();
    }
    const size_t have = out.size();
    out.resize(have + kChunk);
    s.next_out = out.data() + have;
    s.avail_out = kChunk;
    r = lzma_code(&s, LZMA_FINISH);
    out.resize(out.size() - s.avail_out);
  }
  lzma_end(&s);
  // The kernel appends the decompressed size after the stream: anything after STREAM_END is fine.
  if (r != LZMA_STREAM_END)
    return make_error(ErrorCode::kCorrupt, "KERNEL: the bzImage's xz payload does not decompress (liblzma error {})",
                      static_cast<int>(r));
  return out;
}

Result<std::vector<uint8_t>> gunzip(std::span<const uint8_t> in) {
  z_stream z{};
  if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) return make_error(ErrorCode::kInternal, "zlib: inflateInit2");
  std::vector<uint8_t> out;
  // SAFETY: zlib's next_in is non-const for historic reasons; it does not write through it.
  z.next_in = const_cast<Bytef*>(in.data());
  z.avail_in = static_cast<uInt>(std::min<size_t>(in.size(), UINT32_MAX));
  int r = Z_OK;
  while (r == Z_OK) {
    if (out.size() >= kMaxVmlinuxBytes) {
      inflateEnd(&z);
      return too_large();
    }
    const size_t have = out.size();
    out.resize(have + kChunk);
    z.next_out = out.data() + have;
    z.avail_out = kChunk;
    r = inflate(&z, Z_NO_FLUSH);
    out.resize(out.size() - z.avail_out);
  }
  inflateEnd(&z);
  if (r != Z_STREAM_END)
    return make_error(ErrorCode::kCorrupt, "KERNEL: the bzImage's gzip payload does not decompress (zlib {})", r);
  return out;
}

Result<std::vector<uint8_t>> unzstd(std::span<const uint8_t> in) {
  ZSTD_DStream* d = ZSTD_createDStream();
  if (d == nullptr) return make_error(ErrorCode::kInternal, "zstd: cannot create a decoder");
  std::vector<uint8_t> out;
  ZSTD_inBuffer ib{in.data(), in.size(), 0};
  size_t r = 1;
  while (r != 0 && ib.pos < ib.size) {
    if (out.size() >= kMaxVmlinuxBytes) {
      ZSTD_freeDStream(d);
      return too_large();
    }
    const size_t have = out.size();
    out.resize(have + kChunk);
    ZSTD_outBuffer ob{out.data() + have, kChunk, 0};
    r = ZSTD_decompressStream(d, &ob, &ib);
    out.resize(have + ob.pos);
    if (ZSTD_isError(r)) {
      ZSTD_freeDStream(d);
      return make_error(ErrorCode::kCorrupt, "KERNEL: the bzImage's zstd payload does not decompress: {}",
                        ZSTD_getErrorName(r));
    }
  }
  ZSTD_freeDStream(d);
  if (r != 0) return make_error(ErrorCode::kCorrupt, "KERNEL: the bzImage's zstd payload is truncated");
  return out;
}

}  // namespace

Result<std::vector<uint8_t>> extract_vmlinux(const LinuxImage& img) {
  if (img.kind != LinuxImage::Kind::kBzImage) return make_error(ErrorCode::kInvalidArgument, "not a bzImage");
  setup_header hdr{};
  const size_t need = offsetof(setup_header, payload_length) + sizeof(hdr.payload_length);
  if (img.setup_header.size() < need)
    return make_error(ErrorCode::kUnsupported, "KERNEL: bzImage protocol {:#x} has no payload fields (needs 2.08+)",
                      img.protocol);
  // SAFETY: setup_header is a packed POD and the copy is bounded by both sizes.
  std::memcpy(reinterpret_cast<uint8_t*>(&hdr), img.setup_header.data(),
              std::min(img.setup_header.size(), sizeof(hdr)));
  static_assert(kSetupHeaderOffset == 0x1f1);
  const uint64_t off = hdr.payload_offset, len = hdr.payload_length;
  if (len == 0 || off > img.protected_mode.size() || len > img.protected_mode.size() - off)
    return make_error(ErrorCode::kCorrupt,
                      "KERNEL: bzImage payload [{:#x}, +{:#x}) lies outside its {}-byte protected-mode part", off,
                      len, img.protected_mode.size());
  const auto payload = img.protected_mode.subspan(off, len);
  if (starts_with(payload, {0xFD, '7', 'z', 'X', 'Z', 0x00})) return unxz(payload);
  if (starts_with(payload, {0x1F, 0x8B})) return gunzip(payload);
  if (starts_with(payload, {0x28, 0xB5, 0x2F, 0xFD})) return unzstd(payload);
  return make_error(ErrorCode::kUnsupported,
                    "KERNEL: the bzImage's payload uses a compression ringvm cannot decompress on the host "
                    "(xz, gzip and zstd are supported)");
}

}  // namespace ringvm::x86
