#include "block/qcow2/compress.h"

#include <zlib.h>
#include <zstd.h>

namespace ringvm::qcow2 {

namespace {

Result<void> inflate_raw(std::span<const uint8_t> in, std::span<uint8_t> out) {
  z_stream s{};
  // A 32 KiB window accepts streams written with any smaller window (QEMU uses 4 KiB).
  if (inflateInit2(&s, -15) != Z_OK) return make_error(ErrorCode::kResourceExhausted, "zlib init failed");
  s.next_in = const_cast<Bytef*>(in.data());
  s.avail_in = static_cast<uInt>(in.size());
  s.next_out = out.data();
  s.avail_out = static_cast<uInt>(out.size());
  const int rc = inflate(&s, Z_FINISH);
  const bool full = s.avail_out == 0;
  inflateEnd(&s);
  // Z_BUF_ERROR with a full output buffer: the stream continues past the cluster; QEMU accepts it.
  if ((rc != Z_STREAM_END && rc != Z_BUF_ERROR) || !full)
    return make_error(ErrorCode::kCorrupt, "compressed cluster does not inflate to a full cluster (zlib rc {})", rc);
  return Ok();
}

Result<void> zstd_decompress(std::span<const uint8_t> in, std::span<uint8_t> out) {
  ZSTD_DCtx* ctx = ZSTD_createDCtx();
  if (!ctx) return make_error(ErrorCode::kResourceExhausted, "zstd init failed");
  ZSTD_inBuffer ib{in.data(), in.size(), 0};
  ZSTD_outBuffer ob{out.data(), out.size(), 0};
  size_t rc = 0;
  // Several frames may follow each other; stop once the cluster is full.
  while (ob.pos < ob.size && ib.pos < ib.size) {
    rc = ZSTD_decompressStream(ctx, &ob, &ib);
    if (ZSTD_isError(rc)) break;
    if (rc != 0 && ib.pos == ib.size) break;
  }
  ZSTD_freeDCtx(ctx);
  if (ZSTD_isError(rc)) return make_error(ErrorCode::kCorrupt, "compressed cluster: zstd: {}", ZSTD_getErrorName(rc));
  if (ob.pos != ob.size) return make_error(ErrorCode::kCorrupt, "compressed cluster is truncated (zstd)");
  return Ok();
}

}  // namespace

Result<void> decompress_cluster(CompressionType type, std::span<const uint8_t> in, std::span<uint8_t> out) {
  return type == CompressionType::kZstd ? zstd_decompress(in, out) : inflate_raw(in, out);
}

std::optional<std::vector<uint8_t>> compress_cluster(CompressionType type, std::span<const uint8_t> in) {
  std::vector<uint8_t> out(in.size());
  if (type == CompressionType::kZstd) {
    // One frame with the content size: QEMU's reader takes it; level 1 is zstd's fast default here.
    const size_t n = ZSTD_compress(out.data(), out.size(), in.data(), in.size(), 1);
    if (ZSTD_isError(n) || n >= in.size()) return std::nullopt;
    out.resize(n);
    return out;
  }
  z_stream s{};
  if (deflateInit2(&s, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY) != Z_OK) return std::nullopt;
  s.next_in = const_cast<Bytef*>(in.data());
  s.avail_in = static_cast<uInt>(in.size());
  s.next_out = out.data();
  s.avail_out = static_cast<uInt>(out.size());
  const int rc = deflate(&s, Z_FINISH);
  const size_t n = out.size() - s.avail_out;
  deflateEnd(&s);
  if (rc != Z_STREAM_END || n >= in.size()) return std::nullopt;
  out.resize(n);
  return out;
}

}  // namespace ringvm::qcow2
