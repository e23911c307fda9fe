// Cluster compression for qcow2: zlib raw deflate (4 KiB window, as QEMU writes it) and zstd.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "base/result.h"
#include "block/qcow2/qcow2_format.h"

namespace ringvm::qcow2 {

// Inflates `in` into exactly out.size() bytes. Trailing bytes in `in` (sector padding) are fine.
Result<void> decompress_cluster(CompressionType type, std::span<const uint8_t> in, std::span<uint8_t> out);

// Compresses one cluster. std::nullopt when the result would not be smaller than the input (the
// caller then stores the cluster uncompressed, as qemu-img does).
std::optional<std::vector<uint8_t>> compress_cluster(CompressionType type, std::span<const uint8_t> in);

}  // namespace ringvm::qcow2
