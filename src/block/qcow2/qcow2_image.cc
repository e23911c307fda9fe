#include "block/qcow2/qcow2_image.h"

#include <algorithm>

#include "base/log.h"
#include "block/image_open.h"
#include "block/qcow2/compress.h"
#include "block/qcow2/iov.h"

namespace ringvm {

using namespace qcow2;  // NOLINT(google-build-using-namespace): the format's names are the vocabulary here

Qcow2Image::Qcow2Image(std::string path, ImageFile file, Header header, bool read_only)
    : path_(std::move(path)),
      file_(std::move(file)),
      header_(std::move(header)),
      read_only_(read_only),
      cluster_size_(header_.cluster_size()),
      cluster_bits_(header_.cluster_bits),
      l2_entries_(cluster_size_ / 8),
      refblock_entries_(cluster_size_ * 8 / header_.refcount_bits()),
      max_refcount_(header_.refcount_order == 6 ? ~uint64_t{0} : (uint64_t{1} << header_.refcount_bits()) - 1) {}

Qcow2Image::~Qcow2Image() {
  if (closed_ || read_only_) return;
  auto r = close();
  if (!r.ok()) spdlog::error("closing {}: {}", path_, r.error().message());
}

Result<std::unique_ptr<Qcow2Image>> Qcow2Image::open(const std::string& path, const Qcow2OpenOptions& opts) {
  auto file = TRY(ImageFile::open(path, opts.read_only));
  const uint64_t fsize = TRY(file.size());
  // Read the fixed header first to learn the cluster size, then the whole first cluster.
  std::vector<uint8_t> first(std::min<uint64_t>(fsize, 512));
  RETURN_IF_ERROR(file.pread(0, first));
  if (first.size() >= 24) {
    const uint32_t bits = load_be32(first.data() + 20);
    if (bits >= kMinClusterBits && bits <= kMaxClusterBits) {
      first.resize(std::min<uint64_t>(fsize, uint64_t{1} << bits));
      RETURN_IF_ERROR(file.pread(0, first));
    }
  }
  Header h = TRY(parse_header(first, fsize, path));
  if (!opts.read_only && (h.incompatible_features & kIncompatCorrupt) && !opts.allow_corrupt)
    return make_error(ErrorCode::kCorrupt,
                      "{}: image is marked corrupt; repair it with `ringvm img check -r all {}` or open it read-only",
                      path, path);
  std::unique_ptr<Qcow2Image> img(new Qcow2Image(path, std::move(file), std::move(h), opts.read_only));
  img->end_offset_ = fsize;
  img->file_.set_unsafe_no_sync(opts.unsafe_no_sync);
  RETURN_IF_ERROR(img->load_metadata(opts));
  RETURN_IF_ERROR(img->open_backing(opts));
  if (!opts.read_only && (img->header_.incompatible_features & kIncompatDirty)) {
    // Refcounts may be stale (lazy refcounts and an unclean close): rebuild them before writing.
    spdlog::warn("{}: image was not closed cleanly; repairing refcounts", path);
    auto res = TRY(img->check(Qcow2Repair::kAll));
    if (res.corruptions > res.corruptions_fixed)
      return make_error(ErrorCode::kCorrupt, "{}: dirty image could not be repaired; run `ringvm img check -r all {}`",
                        path, path);
    img->header_.incompatible_features &= ~kIncompatDirty;
    RETURN_IF_ERROR(img->write_header_fields());
    RETURN_IF_ERROR(img->file_.datasync());
  }
  return img;
}

Result<void> Qcow2Image::load_metadata(const Qcow2OpenOptions& opts) {
  const uint64_t cs = cluster_size_;
  l1_.resize(header_.l1_size);
  if (header_.l1_size) {
    std::vector<uint8_t> raw(uint64_t{header_.l1_size} * 8);
    RETURN_IF_ERROR(file_.pread(header_.l1_table_offset, raw));
    for (size_t i = 0; i < l1_.size(); ++i) l1_[i] = load_be64(raw.data() + i * 8);
  }
  reftable_disk_entries_ = uint64_t{header_.refcount_table_clusters} * cs / 8;
  reftable_.resize(reftable_disk_entries_);
  {
    std::vector<uint8_t> raw(reftable_disk_entries_ * 8);
    RETURN_IF_ERROR(file_.pread(header_.refcount_table_offset, raw));
    for (size_t i = 0; i < reftable_.size(); ++i) reftable_[i] = load_be64(raw.data() + i * 8);
  }
  const size_t l2_capacity = std::clamp<uint64_t>(opts.l2_cache_bytes / cs, 2, 65536);
  l2_cache_ = std::make_unique<TableCache>(l2_capacity, [this](TableCache::Table& t) { return write_l2(t); });
  refblock_cache_ = std::make_unique<TableCache>(
      std::clamp<uint64_t>((1ull << 20) / cs, 4, 256),
      [this](TableCache::Table& t) { return file_.pwrite(t.offset, t.data); });
  return load_snapshots();
}

Result<void> Qcow2Image::load_snapshots() {
  uint64_t off = header_.snapshots_offset;
  constexpr uint64_t kMaxTableBytes = 64ull << 20;
  for (uint32_t i = 0; i < header_.nb_snapshots; ++i) {
    if (off - header_.snapshots_offset > kMaxTableBytes)
      return make_error(ErrorCode::kCorrupt, "{}: snapshot table larger than 64 MiB", path_);
    uint8_t fixed[40];
    if (off + 40 > end_offset_) return make_error(ErrorCode::kCorrupt, "{}: snapshot table past end of file", path_);
    RETURN_IF_ERROR(file_.pread(off, fixed));
    Qcow2Snapshot s;
    s.l1_table_offset = load_be64(fixed);
    s.l1_size = load_be32(fixed + 8);
    const uint16_t id_len = load_be16(fixed + 12), name_len = load_be16(fixed + 14);
    s.date_sec = load_be32(fixed + 16);
    s.date_nsec = load_be32(fixed + 20);
    s.vm_clock_nsec = load_be64(fixed + 24);
    s.vm_state_size = load_be32(fixed + 32);
    const uint32_t extra = load_be32(fixed + 36);
    if (extra > 1024) return make_error(ErrorCode::kCorrupt, "{}: snapshot {} extra data too large", path_, i);
    const uint64_t entry_len = 40 + uint64_t{extra} + id_len + name_len;
    if (off + entry_len > end_offset_)
      return make_error(ErrorCode::kCorrupt, "{}: snapshot table past end of file", path_);
    std::vector<uint8_t> rest(entry_len - 40);
    RETURN_IF_ERROR(file_.pread(off + 40, rest));
    if (extra >= 8) s.vm_state_size = load_be64(rest.data());
    if (extra >= 16) s.disk_size = load_be64(rest.data() + 8);
    if (extra >= 24) s.icount = load_be64(rest.data() + 16);
    s.id.assign(rest.begin() + extra, rest.begin() + extra + id_len);
    s.name.assign(rest.begin() + extra + id_len, rest.end());
    if (s.l1_table_offset % cluster_size_ || uint64_t{s.l1_size} * 8 > kMaxL1Bytes ||
        s.l1_table_offset + uint64_t{s.l1_size} * 8 > end_offset_)
      return make_error(ErrorCode::kCorrupt, "{}: snapshot '{}' has an invalid L1 table", path_, s.name);
    snapshots_.push_back(std::move(s));
    off += (entry_len + 7) / 8 * 8;
  }
  snapshot_table_bytes_ = off - header_.snapshots_offset;
  return Ok();
}

std::string Qcow2Image::full_backing_filename() const {
  const std::string& b = header_.backing_file;
  if (b.empty() || b.front() == '/') return b;
  const auto slash = path_.rfind('/');
  return slash == std::string::npos ? b : path_.substr(0, slash + 1) + b;
}

Result<void> Qcow2Image::open_backing(const Qcow2OpenOptions& opts) {
  if (header_.backing_file.empty() || !opts.open_backing) return Ok();
  const std::string fmt = opts.backing_format_override.empty() ? header_.backing_format : opts.backing_format_override;
  if (fmt.empty())
    return make_error(ErrorCode::kInvalidArgument,
                      "{}: backing file '{}' has no recorded format and ringvm never guesses one; record it with "
                      "`ringvm img rebase -u -b '{}' -F raw|qcow2 {}`",
                      path_, header_.backing_file, header_.backing_file, path_);
  if (opts.depth + 1 > kMaxBackingDepth)
    return make_error(ErrorCode::kInvalidArgument, "{}: backing chain deeper than {} images (a loop?)", path_,
                      kMaxBackingDepth);
  DiskOpenOptions bo;
  bo.read_only = true;
  bo.depth = opts.depth + 1;
  auto b = open_disk(full_backing_filename(), fmt, bo);
  if (!b.ok()) return wrap(std::move(b).error(), "{}: backing file", path_);
  backing_ = std::move(*b);
  return Ok();
}

Qcow2Image::Mapping Qcow2Image::decode_l2(uint64_t entry) const {
  Mapping m;
  m.entry = entry;
  if (entry & kOflagCompressed) {
    const uint32_t shift = 62 - (cluster_bits_ - 8);
    m.kind = Qcow2ClusterKind::kCompressed;
    m.host = entry & ((uint64_t{1} << shift) - 1);
    m.comp_bytes = (((entry >> shift) & ((uint64_t{1} << (cluster_bits_ - 8)) - 1)) + 1) * 512;
    return m;
  }
  m.host = entry & kOffsetMask;
  m.copied = (entry & kOflagCopied) != 0;
  if (header_.version >= 3 && (entry & kOflagZero)) m.kind = Qcow2ClusterKind::kZero;
  else if (m.host == 0) m.kind = Qcow2ClusterKind::kUnallocated;
  else m.kind = Qcow2ClusterKind::kData;
  return m;
}

Result<void> Qcow2Image::validate_cluster_offset(uint64_t offset, const char* what) const {
  if (offset % cluster_size_)
    return make_error(ErrorCode::kCorrupt, "{}: {} offset 0x{:x} is not cluster aligned", path_, what, offset);
  if (offset == 0) return make_error(ErrorCode::kCorrupt, "{}: {} overlaps the header", path_, what);
  if (offset >= end_offset_)
    return make_error(ErrorCode::kCorrupt, "{}: {} at 0x{:x} lies past the end of the file", path_, what, offset);
  return Ok();
}

Result<TableCache::Table*> Qcow2Image::load_l2(uint64_t l2_offset) {
  if (auto* t = l2_cache_->find(l2_offset)) return t;
  RETURN_IF_ERROR(validate_cluster_offset(l2_offset, "L2 table"));
  std::vector<uint8_t> data(cluster_size_);
  RETURN_IF_ERROR(file_.pread(l2_offset, data));
  return l2_cache_->insert(l2_offset, std::move(data), false);
}

Result<uint64_t> Qcow2Image::get_l2_entry(uint64_t vcluster) {
  const uint64_t l1i = vcluster / l2_entries_;
  if (l1i >= l1_.size()) return uint64_t{0};
  const uint64_t l2_off = l1_[l1i] & kOffsetMask;
  if (l2_off == 0) return uint64_t{0};
  auto* t = TRY(load_l2(l2_off));
  return load_be64(t->data.data() + (vcluster % l2_entries_) * 8);
}

Result<void> Qcow2Image::set_l2_entry(uint64_t vcluster, uint64_t entry) {
  const uint64_t l1i = vcluster / l2_entries_;
  if (l1i >= l1_.size()) return make_error(ErrorCode::kInternal, "{}: cluster {} beyond L1 table", path_, vcluster);
  const uint64_t l1e = l1_[l1i];
  const uint64_t old_off = l1e & kOffsetMask;
  TableCache::Table* t = nullptr;
  if (old_off != 0 && (l1e & kOflagCopied)) {
    t = TRY(load_l2(old_off));
  } else {
    // No L2 table yet, or one shared with a snapshot: give this L1 entry its own copy.
    std::vector<uint8_t> data(cluster_size_, 0);
    if (old_off != 0) data = TRY(load_l2(old_off))->data;
    const uint64_t new_off = TRY(alloc_clusters(1));
    t = TRY(l2_cache_->insert(new_off, std::move(data), true));
    l1_[l1i] = new_off | kOflagCopied;
    l1_dirty_ = true;
    if (old_off != 0) RETURN_IF_ERROR(free_later(old_off, cluster_size_));
  }
  store_be64(t->data.data() + (vcluster % l2_entries_) * 8, entry);
  t->dirty = true;
  return Ok();
}

Result<void> Qcow2Image::read_compressed(const Mapping& m, std::span<uint8_t> out) {
  const uint64_t len = m.comp_bytes - (m.host & 511);
  if (m.host >= end_offset_)
    return make_error(ErrorCode::kCorrupt, "{}: compressed cluster at 0x{:x} lies past the end of the file", path_, m.host);
  std::vector<uint8_t> in(len);
  RETURN_IF_ERROR(file_.pread(m.host, in));
  auto r = decompress_cluster(header_.compression_type, in, out);
  if (!r.ok()) return wrap(std::move(r).error(), "{}: cluster at 0x{:x}", path_, m.host);
  return Ok();
}

Result<void> Qcow2Image::read_backing(uint64_t offset, std::span<const iovec> iov) {
  const uint64_t len = iov_length(iov);
  const uint64_t bsize = backing_ ? backing_->size() : 0;
  if (offset >= bsize) {
    iov_zero(iov);
    return Ok();
  }
  if (offset + len <= bsize) return backing_->readv(offset, iov);
  std::vector<iovec> head, tail;
  iov_slice(iov, 0, bsize - offset, head);
  iov_slice(iov, bsize - offset, offset + len - bsize, tail);
  iov_zero(tail);
  return backing_->readv(offset, head);
}

Result<void> Qcow2Image::read_cluster_locked(uint64_t vcluster, const Mapping& m, std::span<uint8_t> out) {
  switch (m.kind) {
    case Qcow2ClusterKind::kUnallocated: {
      iovec v{out.data(), out.size()};
      return read_backing(vcluster * cluster_size_, {&v, 1});
    }
    case Qcow2ClusterKind::kZero: std::fill(out.begin(), out.end(), 0); return Ok();
    case Qcow2ClusterKind::kData:
      RETURN_IF_ERROR(validate_cluster_offset(m.host, "data cluster"));
      return file_.pread(m.host, out);
    case Qcow2ClusterKind::kCompressed: return read_compressed(m, out);
  }
  return Ok();
}

Result<void> Qcow2Image::readv(uint64_t offset, std::span<const iovec> iov) {
  const uint64_t len = iov_length(iov);
  if (offset > size() || len > size() - offset)
    return make_error(ErrorCode::kOutOfRange, "{}: read of {} bytes at {} past the disk's end", path_, len, offset);
  struct Piece {
    uint64_t pos, len, voff;
    Mapping m;
  };
  std::vector<Piece> pieces;
  {
    std::lock_guard lock(mu_);
    for (uint64_t pos = 0; pos < len;) {
      const uint64_t voff = offset + pos;
      const uint64_t in = voff % cluster_size_;
      const uint64_t n = std::min(len - pos, cluster_size_ - in);
      Mapping m = decode_l2(TRY(get_l2_entry(voff / cluster_size_)));
      if (m.kind == Qcow2ClusterKind::kData) RETURN_IF_ERROR(validate_cluster_offset(m.host, "data cluster"));
      // Merge with the previous piece when host offsets continue it.
      if (!pieces.empty() && m.kind == pieces.back().m.kind && m.kind != Qcow2ClusterKind::kCompressed &&
          (m.kind != Qcow2ClusterKind::kData ||
           pieces.back().m.host + (pieces.back().voff % cluster_size_) + pieces.back().len == m.host + in)) {
        pieces.back().len += n;
      } else {
        pieces.push_back({pos, n, voff, m});
      }
      pos += n;
    }
  }
  std::vector<iovec> sub;
  std::vector<uint8_t> cbuf;
  for (const Piece& p : pieces) {
    sub.clear();
    iov_slice(iov, p.pos, p.len, sub);
    switch (p.m.kind) {
      case Qcow2ClusterKind::kUnallocated: RETURN_IF_ERROR(read_backing(p.voff, sub)); break;
      case Qcow2ClusterKind::kZero: iov_zero(sub); break;
      case Qcow2ClusterKind::kData:
        RETURN_IF_ERROR(file_.preadv(p.m.host + p.voff % cluster_size_, sub));
        break;
      case Qcow2ClusterKind::kCompressed:
        cbuf.resize(cluster_size_);
        RETURN_IF_ERROR(read_compressed(p.m, cbuf));
        buf_to_iov(cbuf.data() + p.voff % cluster_size_, sub);
        break;
    }
  }
  return Ok();
}

Result<void> Qcow2Image::mark_dirty_for_write() {
  if (dirty_bit_set_ || header_.version < 3 || !(header_.compatible_features & kCompatLazyRefcounts)) return Ok();
  header_.incompatible_features |= kIncompatDirty;
  RETURN_IF_ERROR(write_header_fields());
  RETURN_IF_ERROR(file_.datasync());
  dirty_bit_set_ = true;
  return Ok();
}

Result<void> Qcow2Image::release_mapping(const Mapping& m) {
  switch (m.kind) {
    case Qcow2ClusterKind::kData:
    case Qcow2ClusterKind::kZero:
      if (m.host) return free_later(m.host, cluster_size_);
      return Ok();
    case Qcow2ClusterKind::kCompressed: return free_later(m.host & ~uint64_t{511}, m.comp_bytes);
    case Qcow2ClusterKind::kUnallocated: return Ok();
  }
  return Ok();
}

Result<void> Qcow2Image::write_cluster_locked(uint64_t vcluster, uint64_t in_cluster, std::span<const iovec> iov) {
  const uint64_t len = iov_length(iov);
  const Mapping m = decode_l2(TRY(get_l2_entry(vcluster)));
  if (m.kind == Qcow2ClusterKind::kData && m.copied) {
    RETURN_IF_ERROR(validate_cluster_offset(m.host, "data cluster"));
    return file_.pwritev(m.host + in_cluster, iov);
  }
  // A preallocated zero cluster we own is reused; anything else gets a new cluster.
  const bool reuse = m.kind == Qcow2ClusterKind::kZero && m.host != 0 && m.copied;
  const uint64_t host = reuse ? m.host : TRY(alloc_clusters(1));
  if (len == cluster_size_) {
    RETURN_IF_ERROR(file_.pwritev(host, iov));
  } else {
    std::vector<uint8_t> buf(cluster_size_);
    RETURN_IF_ERROR(read_cluster_locked(vcluster, m, buf));
    iov_to_buf(iov, buf.data() + in_cluster);
    RETURN_IF_ERROR(file_.pwrite(host, buf));
  }
  RETURN_IF_ERROR(set_l2_entry(vcluster, host | kOflagCopied));
  if (!reuse) RETURN_IF_ERROR(release_mapping(m));
  return Ok();
}

Result<void> Qcow2Image::writev(uint64_t offset, std::span<const iovec> iov) {
  if (read_only_) return make_error(ErrorCode::kPermissionDenied, "{}: image is open read-only", path_);
  const uint64_t len = iov_length(iov);
  if (offset > size() || len > size() - offset)
    return make_error(ErrorCode::kOutOfRange, "{}: write of {} bytes at {} past the disk's end", path_, len, offset);
  std::lock_guard lock(mu_);
  RETURN_IF_ERROR(mark_dirty_for_write());
  std::vector<iovec> sub;
  for (uint64_t pos = 0; pos < len;) {
    const uint64_t voff = offset + pos;
    const uint64_t in = voff % cluster_size_;
    const uint64_t n = std::min(len - pos, cluster_size_ - in);
    sub.clear();
    iov_slice(iov, pos, n, sub);
    RETURN_IF_ERROR(write_cluster_locked(voff / cluster_size_, in, sub));
    pos += n;
  }
  return Ok();
}

Result<void> Qcow2Image::zero_cluster_locked(uint64_t vcluster, bool may_unmap, bool discard) {
  const uint64_t entry = TRY(get_l2_entry(vcluster));
  const Mapping m = decode_l2(entry);
  uint64_t next = 0;
  bool keep_host = false;
  if (header_.version >= 3) {
    if (discard) {
      next = backing_ ? kOflagZero : 0;  // without a backing file unallocated already reads zeros
    } else if (!may_unmap && (m.kind == Qcow2ClusterKind::kData || m.kind == Qcow2ClusterKind::kZero) && m.copied &&
               m.host) {
      next = m.host | kOflagCopied | kOflagZero;
      keep_host = true;
    } else {
      next = (backing_ || m.kind != Qcow2ClusterKind::kUnallocated) ? kOflagZero : 0;
      if (!backing_ && entry == 0) return Ok();
    }
  } else if (backing_ && !discard) {
    std::vector<uint8_t> zeros(cluster_size_, 0);
    iovec v{zeros.data(), zeros.size()};
    return write_cluster_locked(vcluster, 0, {&v, 1});
  }
  if (next == entry) return Ok();
  RETURN_IF_ERROR(set_l2_entry(vcluster, next));
  if (!keep_host) RETURN_IF_ERROR(release_mapping(m));
  return Ok();
}

Result<void> Qcow2Image::discard(uint64_t offset, uint64_t length) {
  if (read_only_) return make_error(ErrorCode::kPermissionDenied, "{}: image is open read-only", path_);
  if (offset > size() || length > size() - offset)
    return make_error(ErrorCode::kOutOfRange, "{}: discard past the disk's end", path_);
  std::lock_guard lock(mu_);
  RETURN_IF_ERROR(mark_dirty_for_write());
  // Only whole clusters can be dropped; a partial one at either end keeps its data.
  const uint64_t first = (offset + cluster_size_ - 1) / cluster_size_;
  const uint64_t end = offset + length == size() ? (size() + cluster_size_ - 1) / cluster_size_
                                                 : (offset + length) / cluster_size_;
  for (uint64_t c = first; c < end; ++c) RETURN_IF_ERROR(zero_cluster_locked(c, true, true));
  return Ok();
}

Result<void> Qcow2Image::write_zeroes(uint64_t offset, uint64_t length, bool may_unmap) {
  if (read_only_) return make_error(ErrorCode::kPermissionDenied, "{}: image is open read-only", path_);
  if (offset > size() || length > size() - offset)
    return make_error(ErrorCode::kOutOfRange, "{}: write_zeroes past the disk's end", path_);
  std::lock_guard lock(mu_);
  RETURN_IF_ERROR(mark_dirty_for_write());
  std::vector<uint8_t> zeros;
  for (uint64_t pos = offset; pos < offset + length;) {
    const uint64_t in = pos % cluster_size_;
    const uint64_t n = std::min(offset + length - pos, cluster_size_ - in);
    const bool whole = n == cluster_size_ || (in == 0 && pos + n == size());
    if (whole) {
      RETURN_IF_ERROR(zero_cluster_locked(pos / cluster_size_, may_unmap, false));
    } else {
      zeros.assign(n, 0);
      iovec v{zeros.data(), n};
      RETURN_IF_ERROR(write_cluster_locked(pos / cluster_size_, in, {&v, 1}));
    }
    pos += n;
  }
  return Ok();
}

Result<void> Qcow2Image::flush() {
  std::lock_guard lock(mu_);
  return flush_locked();
}

Result<void> Qcow2Image::close() {
  std::lock_guard lock(mu_);
  if (closed_ || read_only_) return Ok();
  RETURN_IF_ERROR(flush_locked());
  if (dirty_bit_set_) {
    header_.incompatible_features &= ~kIncompatDirty;
    RETURN_IF_ERROR(write_header_fields());
    RETURN_IF_ERROR(file_.datasync());
    dirty_bit_set_ = false;
  }
  closed_ = true;
  return Ok();
}

Result<Qcow2Extent> Qcow2Image::block_status(uint64_t offset, uint64_t max_length) {
  if (offset >= size()) return make_error(ErrorCode::kOutOfRange, "{}: block status past the end", path_);
  max_length = std::min(max_length, size() - offset);
  std::lock_guard lock(mu_);
  Qcow2Extent e;
  e.offset = offset;
  uint64_t pos = offset;
  while (pos < offset + max_length) {
    const Mapping m = decode_l2(TRY(get_l2_entry(pos / cluster_size_)));
    const uint64_t n = std::min(offset + max_length - pos, cluster_size_ - pos % cluster_size_);
    if (pos == offset) {
      e.kind = m.kind;
      e.host_offset = m.kind == Qcow2ClusterKind::kData ? m.host + pos % cluster_size_ : 0;
    } else if (m.kind != e.kind || (m.kind == Qcow2ClusterKind::kData && m.host + pos % cluster_size_ != e.host_offset + e.length)) {
      break;
    }
    e.length += n;
    pos += n;
  }
  return e;
}

Result<void> Qcow2Image::write_compressed(uint64_t offset, std::span<const uint8_t> cluster) {
  auto c = compress_cluster(header_.compression_type, cluster);
  if (c) return write_precompressed(offset, *c);
  iovec v{const_cast<uint8_t*>(cluster.data()), cluster.size()};
  return writev(offset, {&v, 1});
}

Result<void> Qcow2Image::write_precompressed(uint64_t offset, std::span<const uint8_t> compressed) {
  if (read_only_) return make_error(ErrorCode::kPermissionDenied, "{}: image is open read-only", path_);
  if (offset % cluster_size_ || offset >= size() || compressed.size() >= cluster_size_)
    return make_error(ErrorCode::kInvalidArgument, "{}: bad compressed write at {}", path_, offset);
  std::lock_guard lock(mu_);
  RETURN_IF_ERROR(mark_dirty_for_write());
  const uint64_t bytes = (compressed.size() + 511) / 512 * 512;
  uint64_t start = 0;
  if (comp_cursor_ % cluster_size_ != 0) {
    const uint64_t cur = comp_cursor_ / cluster_size_ * cluster_size_;
    if (bytes <= cur + cluster_size_ - comp_cursor_) {
      start = comp_cursor_;
      RETURN_IF_ERROR(set_refcount(cur / cluster_size_, TRY(get_refcount(cur / cluster_size_)) + 1));
    } else {
      const uint64_t next = TRY(alloc_clusters(1));
      start = next;
      if (next == cur + cluster_size_) {  // the stream may run on into the next cluster
        start = comp_cursor_;
        RETURN_IF_ERROR(set_refcount(cur / cluster_size_, TRY(get_refcount(cur / cluster_size_)) + 1));
      }
    }
  } else {
    start = TRY(alloc_clusters(1));
  }
  std::vector<uint8_t> buf(bytes, 0);
  std::copy(compressed.begin(), compressed.end(), buf.begin());
  RETURN_IF_ERROR(file_.pwrite(start, buf));
  comp_cursor_ = start + bytes;
  const uint32_t shift = 62 - (cluster_bits_ - 8);
  const uint64_t vc = offset / cluster_size_;
  const Mapping old = decode_l2(TRY(get_l2_entry(vc)));
  RETURN_IF_ERROR(set_l2_entry(vc, kOflagCompressed | ((bytes / 512 - 1) << shift) | start));
  return release_mapping(old);
}

}  // namespace ringvm
