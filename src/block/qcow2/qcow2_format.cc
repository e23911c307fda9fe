#include "block/qcow2/qcow2_format.h"

#include <algorithm>

namespace ringvm::qcow2 {

namespace {

Error corrupt(const std::string& name, std::string what) {
  return Error{ErrorCode::kCorrupt, 0, fmt::format("{}: invalid qcow2 header: {}", name, what)};
}

constexpr uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

}  // namespace

uint64_t l1_entries_for(uint64_t virtual_size, uint32_t cluster_bits) {
  const uint64_t l2_bytes = (uint64_t{1} << cluster_bits) / 8 * (uint64_t{1} << cluster_bits);
  return virtual_size / l2_bytes + (virtual_size % l2_bytes != 0 ? 1 : 0);
}

std::string feature_bit_names(const Header& h, uint64_t bits) {
  static const char* const kKnown[] = {"dirty", "corrupt", "external data file", "compression type",
                                       "extended L2 entries"};
  std::string out;
  for (uint8_t bit = 0; bit < 64; ++bit) {
    if (!(bits & (1ull << bit))) continue;
    std::string n;
    for (const auto& f : h.feature_names)
      if (f.type == 0 && f.bit == bit) n = f.name;
    if (n.empty()) n = bit < 5 ? kKnown[bit] : fmt::format("unknown bit {}", bit);
    if (!out.empty()) out += ", ";
    out += n;
  }
  return out;
}

Result<Header> parse_header(std::span<const uint8_t> first, uint64_t file_size, const std::string& name) {
  if (first.size() < kV2HeaderLength) return corrupt(name, "file too short for a qcow2 header");
  const uint8_t* p = first.data();
  if (load_be32(p) != kMagic) return corrupt(name, "bad magic (not a qcow2 image)");
  Header h;
  h.version = load_be32(p + 4);
  if (h.version != 2 && h.version != 3)
    return Error{ErrorCode::kUnsupported, 0,
                 fmt::format("{}: qcow2 version {} is not supported (only 2 and 3)", name, h.version)};
  h.backing_file_offset = load_be64(p + 8);
  h.backing_file_size = load_be32(p + 16);
  h.cluster_bits = load_be32(p + 20);
  h.size = load_be64(p + 24);
  h.crypt_method = load_be32(p + 32);
  h.l1_size = load_be32(p + 36);
  h.l1_table_offset = load_be64(p + 40);
  h.refcount_table_offset = load_be64(p + 48);
  h.refcount_table_clusters = load_be32(p + 56);
  h.nb_snapshots = load_be32(p + 60);
  h.snapshots_offset = load_be64(p + 64);
  if (h.version == 2) {
    h.refcount_order = 4;
    h.header_length = kV2HeaderLength;
  } else {
    if (first.size() < kV3HeaderLength) return corrupt(name, "file too short for a v3 header");
    h.incompatible_features = load_be64(p + 72);
    h.compatible_features = load_be64(p + 80);
    h.autoclear_features = load_be64(p + 88);
    h.refcount_order = load_be32(p + 96);
    h.header_length = load_be32(p + 100);
  }

  if (h.cluster_bits < kMinClusterBits || h.cluster_bits > kMaxClusterBits)
    return corrupt(name, fmt::format("cluster_bits {} outside 9..21", h.cluster_bits));
  const uint64_t cs = h.cluster_size();
  if (h.refcount_order > 6) return corrupt(name, fmt::format("refcount_order {} > 6", h.refcount_order));
  if (h.version == 3 && (h.header_length < kV3HeaderLength || h.header_length > cs || h.header_length % 8))
    return corrupt(name, fmt::format("header_length {} invalid", h.header_length));
  if (h.header_length > first.size()) return corrupt(name, "header extends past end of file");
  if (h.header_length > kV3HeaderLength) {
    const uint8_t ct = p[104];
    if (ct > 1) return Error{ErrorCode::kUnsupported, 0, fmt::format("{}: unknown compression type {}", name, ct)};
    h.compression_type = static_cast<CompressionType>(ct);
  }
  if (((h.incompatible_features & kIncompatCompression) != 0) !=
      (h.compression_type != CompressionType::kZlib))
    return corrupt(name, "compression type bit and compression_type field disagree");
  if (h.crypt_method != 0)
    return Error{ErrorCode::kUnsupported, 0, fmt::format("{}: encrypted qcow2 images are not supported", name)};

  // Extensions: between the header and the first cluster's end (or the backing file name).
  uint64_t off = h.header_length;
  const uint64_t ext_end =
      std::min<uint64_t>(first.size(), h.backing_file_offset > off ? h.backing_file_offset : first.size());
  while (off + 8 <= ext_end) {
    const uint32_t type = load_be32(p + off);
    const uint32_t len = load_be32(p + off + 4);
    off += 8;
    if (type == kExtEnd) break;
    if (len > ext_end - off) return corrupt(name, fmt::format("header extension 0x{:x} overruns its space", type));
    std::span<const uint8_t> data(p + off, len);
    if (type == kExtBackingFormat) {
      h.backing_format.assign(data.begin(), data.end());
      if (h.backing_format.find('\0') != std::string::npos) return corrupt(name, "backing format contains NUL");
    } else if (type == kExtFeatureTable) {
      for (size_t i = 0; i + 48 <= len; i += 48) {
        FeatureName f{data[i], data[i + 1], {}};
        const char* s = reinterpret_cast<const char*>(data.data() + i + 2);  // SAFETY: 46 bytes in span
        f.name.assign(s, strnlen(s, 46));
        h.feature_names.push_back(std::move(f));
      }
    } else {
      h.unknown_extensions.push_back({type, {data.begin(), data.end()}});
    }
    off += align_up(len, 8);
  }

  if (h.incompatible_features & ~kIncompatKnown)
    return Error{ErrorCode::kUnsupported, 0,
                 fmt::format("{}: unsupported qcow2 feature(s): {}; upgrade ringvm or convert the image",
                             name, feature_bit_names(h, h.incompatible_features & ~kIncompatKnown))};
  if (h.incompatible_features & kIncompatDataFile)
    return Error{ErrorCode::kUnsupported, 0, fmt::format("{}: qcow2 external data files are not supported", name)};
  if (h.incompatible_features & kIncompatExtendedL2)
    return Error{ErrorCode::kUnsupported, 0,
                 fmt::format("{}: qcow2 extended L2 entries (subclusters) are not supported; convert with "
                             "`ringvm img convert -O qcow2` after `qemu-img convert -o extended_l2=off`",
                             name)};

  if (h.backing_file_offset != 0) {
    if (h.backing_file_size > kMaxBackingNameLength)
      return corrupt(name, fmt::format("backing file name too long ({} bytes, max {})", h.backing_file_size,
                                       kMaxBackingNameLength));
    if (h.backing_file_offset > first.size() || h.backing_file_size > first.size() - h.backing_file_offset)
      return corrupt(name, "backing file name lies outside the first cluster");
    h.backing_file.assign(p + h.backing_file_offset, p + h.backing_file_offset + h.backing_file_size);
    if (h.backing_file.find('\0') != std::string::npos) return corrupt(name, "backing file name contains NUL");
  }

  // Virtual size and tables.
  if (h.size > (uint64_t{1} << 62)) return corrupt(name, fmt::format("virtual size {} is absurd", h.size));
  const uint64_t need_l1 = l1_entries_for(h.size, h.cluster_bits);
  if (uint64_t{h.l1_size} * 8 > kMaxL1Bytes) return corrupt(name, fmt::format("L1 size {} too large", h.l1_size));
  if (h.l1_size < need_l1)
    return corrupt(name, fmt::format("L1 table has {} entries but the virtual size needs {}", h.l1_size, need_l1));
  auto check_table = [&](const char* what, uint64_t offset, uint64_t bytes) -> Result<void> {
    if (offset % cs) return corrupt(name, fmt::format("{} offset 0x{:x} not cluster aligned", what, offset));
    if (bytes == 0) return Ok();
    if (offset == 0) return corrupt(name, fmt::format("{} overlaps the header", what));
    if (offset > file_size || bytes > file_size - offset)
      return corrupt(name, fmt::format("{} at 0x{:x} (+{} bytes) lies past end of file ({} bytes)", what, offset,
                                       bytes, file_size));
    return Ok();
  };
  RETURN_IF_ERROR(check_table("L1 table", h.l1_table_offset, uint64_t{h.l1_size} * 8));
  if (h.refcount_table_clusters == 0) return corrupt(name, "refcount table has zero clusters");
  if (uint64_t{h.refcount_table_clusters} * cs > kMaxRefcountTableBytes)
    return corrupt(name, fmt::format("refcount table of {} clusters too large", h.refcount_table_clusters));
  RETURN_IF_ERROR(check_table("refcount table", h.refcount_table_offset, uint64_t{h.refcount_table_clusters} * cs));
  if (h.nb_snapshots > kMaxSnapshots) return corrupt(name, fmt::format("{} snapshots is too many", h.nb_snapshots));
  if (h.nb_snapshots) RETURN_IF_ERROR(check_table("snapshot table", h.snapshots_offset, uint64_t{h.nb_snapshots} * 40));
  // Overlaps between L1 and refcount table.
  const uint64_t l1_end = h.l1_table_offset + uint64_t{h.l1_size} * 8;
  const uint64_t rt_end = h.refcount_table_offset + uint64_t{h.refcount_table_clusters} * cs;
  if (h.l1_size && h.l1_table_offset < rt_end && h.refcount_table_offset < l1_end)
    return corrupt(name, "L1 table and refcount table overlap");
  return h;
}

Result<std::vector<uint8_t>> serialize_header(const Header& h) {
  const uint64_t cs = h.cluster_size();
  const uint32_t hlen = h.version == 2 ? kV2HeaderLength : std::max(h.header_length, kHeaderWriteLength);
  std::vector<uint8_t> b(hlen, 0);
  uint8_t* p = b.data();
  store_be32(p, kMagic);
  store_be32(p + 4, h.version);
  store_be32(p + 20, h.cluster_bits);
  store_be64(p + 24, h.size);
  store_be32(p + 32, h.crypt_method);
  store_be32(p + 36, h.l1_size);
  store_be64(p + 40, h.l1_table_offset);
  store_be64(p + 48, h.refcount_table_offset);
  store_be32(p + 56, h.refcount_table_clusters);
  store_be32(p + 60, h.nb_snapshots);
  store_be64(p + 64, h.snapshots_offset);
  if (h.version == 3) {
    store_be64(p + 72, h.incompatible_features);
    store_be64(p + 80, h.compatible_features);
    store_be64(p + 88, h.autoclear_features);
    store_be32(p + 96, h.refcount_order);
    store_be32(p + 100, hlen);
    p[104] = static_cast<uint8_t>(h.compression_type);
  }
  auto add_ext = [&b](uint32_t type, std::span<const uint8_t> data) {
    const size_t at = b.size();
    b.resize(at + 8 + align_up(data.size(), 8), 0);
    store_be32(b.data() + at, type);
    store_be32(b.data() + at + 4, static_cast<uint32_t>(data.size()));
    std::copy(data.begin(), data.end(), b.begin() + static_cast<std::ptrdiff_t>(at + 8));
  };
  if (!h.backing_format.empty())
    add_ext(kExtBackingFormat, {reinterpret_cast<const uint8_t*>(h.backing_format.data()),  // SAFETY: bytes
                                h.backing_format.size()});
  if (h.version == 3) {
    static const FeatureName kTable[] = {{0, 0, "dirty bit"},       {0, 1, "corrupt bit"},
                                         {0, 2, "external data file"}, {0, 3, "compression type"},
                                         {0, 4, "extended L2 entries"}, {1, 0, "lazy refcounts"},
                                         {2, 0, "bitmaps"},          {2, 1, "raw external data"}};
    std::vector<uint8_t> t(std::size(kTable) * 48, 0);
    for (size_t i = 0; i < std::size(kTable); ++i) {
      t[i * 48] = kTable[i].type;
      t[i * 48 + 1] = kTable[i].bit;
      std::copy(kTable[i].name.begin(), kTable[i].name.end(), t.begin() + static_cast<std::ptrdiff_t>(i * 48 + 2));
    }
    add_ext(kExtFeatureTable, t);
  }
  for (const auto& e : h.unknown_extensions) add_ext(e.type, e.data);
  add_ext(kExtEnd, {});
  if (!h.backing_file.empty()) {
    if (h.backing_file.size() > kMaxBackingNameLength)
      return make_error(ErrorCode::kInvalidArgument, "backing file name too long ({} bytes, max {})",
                        h.backing_file.size(), kMaxBackingNameLength);
    store_be64(b.data() + 8, b.size());
    store_be32(b.data() + 16, static_cast<uint32_t>(h.backing_file.size()));
    b.insert(b.end(), h.backing_file.begin(), h.backing_file.end());
  }
  if (b.size() > cs) return make_error(ErrorCode::kInvalidArgument, "qcow2 header does not fit in one cluster");
  return b;
}

}  // namespace ringvm::qcow2
