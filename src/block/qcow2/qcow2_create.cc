// Qcow2Image: creating images, preallocation, resize and backing file changes.
#include <fcntl.h>

#include <algorithm>
#include <bit>

#include "block/qcow2/qcow2_image.h"

namespace ringvm {

using namespace qcow2;  // NOLINT(google-build-using-namespace)

Result<void> Qcow2Image::create(const std::string& path, const Qcow2CreateOptions& o) {
  const uint32_t cs32 = o.cluster_size;
  if (cs32 < 512 || cs32 > (2u << 20) || !std::has_single_bit(cs32))
    return make_error(ErrorCode::kInvalidArgument,
                      "{}: cluster_size {} must be a power of two between 512 and 2M", path, cs32);
  if (o.refcount_bits == 0 || o.refcount_bits > 64 || !std::has_single_bit(o.refcount_bits))
    return make_error(ErrorCode::kInvalidArgument, "{}: refcount_bits {} must be a power of two from 1 to 64", path,
                      o.refcount_bits);
  if (o.version != 2 && o.version != 3)
    return make_error(ErrorCode::kInvalidArgument, "{}: qcow2 version must be 2 (compat=0.10) or 3 (compat=1.1)", path);
  if (o.version == 2 && (o.refcount_bits != 16 || o.lazy_refcounts || o.compression != CompressionType::kZlib))
    return make_error(ErrorCode::kInvalidArgument,
                      "{}: compat=0.10 supports only refcount_bits=16, no lazy_refcounts and zlib compression", path);
  if (!o.backing_file.empty() && o.backing_format != "raw" && o.backing_format != "qcow2")
    return make_error(ErrorCode::kInvalidArgument, "{}: backing format '{}' must be raw or qcow2 (-F)", path,
                      o.backing_format);
  Header h;
  h.version = o.version;
  h.cluster_bits = static_cast<uint32_t>(std::countr_zero(cs32));
  h.refcount_order = static_cast<uint32_t>(std::countr_zero(o.refcount_bits));
  h.size = o.size;
  h.compression_type = o.compression;
  if (o.compression != CompressionType::kZlib) h.incompatible_features |= kIncompatCompression;
  if (o.lazy_refcounts) h.compatible_features |= kCompatLazyRefcounts;
  h.backing_file = o.backing_file;
  h.backing_format = o.backing_file.empty() ? "" : o.backing_format;
  const uint64_t cs = cs32;
  const uint64_t l1_entries = l1_entries_for(o.size, h.cluster_bits);
  if (l1_entries * 8 > kMaxL1Bytes)
    return make_error(ErrorCode::kInvalidArgument, "{}: size {} is too large for cluster_size {} (L1 table > 32 MiB)",
                      path, o.size, cs);
  h.l1_size = static_cast<uint32_t>(l1_entries);
  auto hdr = TRY(serialize_header(h));  // validates the backing name length and fit

  // Layout: header | refcount table | refcount blocks | L1, sized until the blocks cover it all.
  const uint64_t rb_entries = cs * 8 / o.refcount_bits;
  const uint64_t l1_clusters = std::max<uint64_t>(1, (l1_entries * 8 + cs - 1) / cs);
  uint64_t rt_clusters = 1, rb_count = 1;
  for (;;) {
    const uint64_t total = 1 + rt_clusters + rb_count + l1_clusters;
    const uint64_t rb = (total + rb_entries - 1) / rb_entries;
    const uint64_t rt = std::max<uint64_t>(1, (rb * 8 + cs - 1) / cs);
    if (rb == rb_count && rt == rt_clusters) break;
    rb_count = rb;
    rt_clusters = rt;
  }
  if (rt_clusters * cs > kMaxRefcountTableBytes)
    return make_error(ErrorCode::kInvalidArgument, "{}: image metadata too large", path);
  const uint64_t total = 1 + rt_clusters + rb_count + l1_clusters;
  h.refcount_table_offset = cs;
  h.refcount_table_clusters = static_cast<uint32_t>(rt_clusters);
  h.l1_table_offset = (1 + rt_clusters + rb_count) * cs;
  hdr = TRY(serialize_header(h));

  auto file = TRY(ImageFile::create(path));
  std::vector<uint8_t> meta((1 + rt_clusters + rb_count) * cs, 0);
  std::copy(hdr.begin(), hdr.end(), meta.begin());
  for (uint64_t i = 0; i < rb_count; ++i) store_be64(meta.data() + cs + i * 8, (1 + rt_clusters + i) * cs);
  // A throwaway image object knows how to pack refcounts of any width.
  Qcow2Image packer(path, std::move(file), h, false);
  packer.closed_ = true;
  for (uint64_t c = 0; c < total; ++c)
    packer.refcount_set(meta.data() + (1 + rt_clusters + c / rb_entries) * cs, c % rb_entries, 1);
  RETURN_IF_ERROR(packer.file_.pwrite(0, meta));
  RETURN_IF_ERROR(packer.file_.truncate(total * cs));
  RETURN_IF_ERROR(packer.file_.datasync());

  if (o.preallocation != Qcow2Preallocation::kOff) {
    Qcow2OpenOptions oo;
    oo.read_only = false;
    oo.open_backing = false;
    auto img = TRY(open(path, oo));
    RETURN_IF_ERROR(img->preallocate(o.preallocation));
    RETURN_IF_ERROR(img->close());
  }
  return Ok();
}

Result<void> Qcow2Image::preallocate(Qcow2Preallocation mode) {
  std::lock_guard lock(mu_);
  const uint64_t clusters = (size() + cluster_size_ - 1) / cluster_size_;
  // One contiguous run of data clusters per L2 table, as qemu-img lays it out.
  for (uint64_t vc = 0; vc < clusters;) {
    const uint64_t n = std::min(clusters - vc, l2_entries_ - vc % l2_entries_);
    const uint64_t host = TRY(alloc_clusters(n));
    for (uint64_t i = 0; i < n; ++i) RETURN_IF_ERROR(set_l2_entry(vc + i, (host + i * cluster_size_) | kOflagCopied));
    vc += n;
  }
  if (mode == Qcow2Preallocation::kFull &&
      ::posix_fallocate(file_.fd(), 0, static_cast<off_t>(end_offset_)) == 0) {
    // Host space reserved; reads of the fresh clusters return zeros.
  } else {
    RETURN_IF_ERROR(file_.truncate(end_offset_));
  }
  return flush_locked();
}

Result<void> Qcow2Image::resize(uint64_t new_size) {
  if (read_only_) return make_error(ErrorCode::kPermissionDenied, "{}: image is open read-only", path_);
  if (!snapshots_.empty())
    return make_error(ErrorCode::kUnsupported, "{}: cannot resize an image with internal snapshots", path_);
  std::lock_guard lock(mu_);
  const uint64_t need = l1_entries_for(new_size, cluster_bits_);
  if (need * 8 > kMaxL1Bytes)
    return make_error(ErrorCode::kInvalidArgument, "{}: size {} too large for this cluster size", path_, new_size);
  if (new_size < header_.size) {
    // Drop every cluster wholly past the new end; its refcount falls after the L2 update is durable.
    const uint64_t first = (new_size + cluster_size_ - 1) / cluster_size_;
    const uint64_t end = (header_.size + cluster_size_ - 1) / cluster_size_;
    for (uint64_t c = first; c < end; ++c) {
      const uint64_t e = TRY(get_l2_entry(c));
      if (e == 0) continue;
      RETURN_IF_ERROR(set_l2_entry(c, 0));
      RETURN_IF_ERROR(release_mapping(decode_l2(e)));
    }
  }
  RETURN_IF_ERROR(flush_locked());
  if (need > l1_.size()) {
    // A bigger L1 table goes to new clusters; the header switches to it once it is durable.
    const uint64_t clusters = (need * 8 + cluster_size_ - 1) / cluster_size_;
    const uint64_t off = TRY(alloc_clusters(clusters));
    const uint64_t old_off = header_.l1_table_offset, old_bytes = l1_.size() * 8;
    l1_.resize(need, 0);
    std::vector<uint8_t> raw(clusters * cluster_size_, 0);
    for (size_t i = 0; i < l1_.size(); ++i) store_be64(raw.data() + i * 8, l1_[i]);
    RETURN_IF_ERROR(file_.pwrite(off, raw));
    RETURN_IF_ERROR(write_refblocks());
    RETURN_IF_ERROR(file_.datasync());
    header_.l1_table_offset = off;
    header_.l1_size = static_cast<uint32_t>(need);
    header_.size = new_size;
    RETURN_IF_ERROR(write_header_fields());
    RETURN_IF_ERROR(file_.datasync());
    if (old_bytes)
      for (uint64_t c = old_off / cluster_size_; c * cluster_size_ < old_off + old_bytes; ++c)
        RETURN_IF_ERROR(set_refcount(c, 0));
    return flush_locked();
  }
  header_.size = new_size;
  RETURN_IF_ERROR(write_header_fields());
  return file_.datasync();
}

Result<void> Qcow2Image::set_backing(const std::string& file, const std::string& format) {
  if (read_only_) return make_error(ErrorCode::kPermissionDenied, "{}: image is open read-only", path_);
  std::lock_guard lock(mu_);
  RETURN_IF_ERROR(flush_locked());
  Header h = header_;
  h.backing_file = file;
  h.backing_format = file.empty() ? "" : format;
  h.backing_file_offset = 0;
  h.backing_file_size = 0;
  auto raw = serialize_header(h);
  if (!raw.ok()) return wrap(std::move(raw).error(), "{}", path_);
  // The header cluster belongs to the header alone, so the rewrite stays inside it.
  raw->resize(cluster_size_, 0);
  RETURN_IF_ERROR(file_.pwrite(0, *raw));
  RETURN_IF_ERROR(file_.datasync());
  header_ = std::move(h);
  return Ok();
}

}  // namespace ringvm
