// The qcow2 on-disk format (QEMU docs/interop/qcow2.txt): constants, big-endian helpers, and the
// header with its extensions. Every field is validated by parse_qcow2_header() before use.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "base/result.h"

namespace ringvm::qcow2 {

inline constexpr uint32_t kMagic = 0x514649fb;  // "QFI\xfb"
inline constexpr uint32_t kV2HeaderLength = 72;
inline constexpr uint32_t kV3HeaderLength = 104;
inline constexpr uint32_t kHeaderWriteLength = 112;  // v3 with the compression type field, padded
inline constexpr uint32_t kMinClusterBits = 9;
inline constexpr uint32_t kMaxClusterBits = 21;
inline constexpr uint32_t kMaxBackingNameLength = 1023;
// QEMU's limits: tables larger than these are refused as absurd.
inline constexpr uint64_t kMaxL1Bytes = 32ull << 20;
inline constexpr uint64_t kMaxRefcountTableBytes = 8ull << 20;
inline constexpr uint32_t kMaxSnapshots = 65536;
inline constexpr int kMaxBackingDepth = 16;

// Header extension types.
inline constexpr uint32_t kExtEnd = 0;
inline constexpr uint32_t kExtBackingFormat = 0xE2792ACA;
inline constexpr uint32_t kExtFeatureTable = 0x6803f857;

// Incompatible feature bits.
inline constexpr uint64_t kIncompatDirty = 1ull << 0;        // refcounts may be stale (lazy refcounts)
inline constexpr uint64_t kIncompatCorrupt = 1ull << 1;      // metadata known corrupt: no writes
inline constexpr uint64_t kIncompatDataFile = 1ull << 2;     // external data file
inline constexpr uint64_t kIncompatCompression = 1ull << 3;  // compression_type field is non-zero
inline constexpr uint64_t kIncompatExtendedL2 = 1ull << 4;   // subclusters in extended L2 entries
inline constexpr uint64_t kIncompatKnown = (1ull << 5) - 1;
// Compatible feature bits.
inline constexpr uint64_t kCompatLazyRefcounts = 1ull << 0;  // refcount updates may be deferred

// L1/L2 entry layout.
inline constexpr uint64_t kOflagCopied = 1ull << 63;      // refcount is exactly one: writable in place
inline constexpr uint64_t kOflagCompressed = 1ull << 62;  // L2: compressed cluster descriptor
inline constexpr uint64_t kOflagZero = 1ull << 0;         // L2 (v3): reads as zeros
inline constexpr uint64_t kOffsetMask = 0x00fffffffffffe00ull;  // bits 9-55
inline constexpr uint64_t kL1Reserved = 0x7f000000000001ffull;
inline constexpr uint64_t kL2StdReserved = 0x3f000000000001feull;
inline constexpr uint64_t kRefTableOffsetMask = 0xfffffffffffffe00ull;

enum class CompressionType : uint8_t {
  kZlib = 0,  // raw deflate, 4 KiB window
  kZstd = 1,  // zstd frames
};

inline uint16_t load_be16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }
inline uint32_t load_be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}
inline uint64_t load_be64(const uint8_t* p) { return (uint64_t{load_be32(p)} << 32) | load_be32(p + 4); }
inline void store_be16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
inline void store_be32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (24 - 8 * i));
}
inline void store_be64(uint8_t* p, uint64_t v) {
  store_be32(p, static_cast<uint32_t>(v >> 32));
  store_be32(p + 4, static_cast<uint32_t>(v));
}

struct FeatureName {
  uint8_t type = 0;  // 0 incompatible, 1 compatible, 2 autoclear
  uint8_t bit = 0;
  std::string name;
};

// A header extension ringvm does not interpret, kept to be written back unchanged.
struct UnknownExtension {
  uint32_t type = 0;
  std::vector<uint8_t> data;
};

struct Header {
  uint32_t version = 3;
  uint64_t backing_file_offset = 0;
  uint32_t backing_file_size = 0;
  uint32_t cluster_bits = 16;
  uint64_t size = 0;
  uint32_t crypt_method = 0;
  uint32_t l1_size = 0;
  uint64_t l1_table_offset = 0;
  uint64_t refcount_table_offset = 0;
  uint32_t refcount_table_clusters = 0;
  uint32_t nb_snapshots = 0;
  uint64_t snapshots_offset = 0;
  uint64_t incompatible_features = 0;
  uint64_t compatible_features = 0;
  uint64_t autoclear_features = 0;
  uint32_t refcount_order = 4;
  uint32_t header_length = kHeaderWriteLength;
  CompressionType compression_type = CompressionType::kZlib;

  std::string backing_file;
  std::string backing_format;  // empty: no backing format extension
  std::vector<FeatureName> feature_names;
  std::vector<UnknownExtension> unknown_extensions;

  uint64_t cluster_size() const { return uint64_t{1} << cluster_bits; }
  uint32_t refcount_bits() const { return 1u << refcount_order; }
};

// Parses and validates the header from the image's first cluster (or fewer bytes if the file is
// shorter). `file_size` bounds every offset. `name` prefixes each error.
Result<Header> parse_header(std::span<const uint8_t> first, uint64_t file_size, const std::string& name);

// Serializes header, extensions (backing format, feature names, preserved unknown ones, end) and
// backing file name into one buffer that must fit in the first cluster.
Result<std::vector<uint8_t>> serialize_header(const Header& h);

// Entries needed in an L1 table for a virtual size.
uint64_t l1_entries_for(uint64_t virtual_size, uint32_t cluster_bits);

// "dirty, corrupt" style names of incompatible bits, using the image's feature table if present.
std::string feature_bit_names(const Header& h, uint64_t bits);

}  // namespace ringvm::qcow2
