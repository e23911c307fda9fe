// Qcow2Image: refcounts, cluster allocation, metadata write-back and its ordering.
#include <algorithm>

#include "block/qcow2/qcow2_image.h"

namespace ringvm {

using namespace qcow2;  // NOLINT(google-build-using-namespace)

uint64_t Qcow2Image::refcount_get(const uint8_t* block, uint64_t index) const {
  const uint32_t order = header_.refcount_order;
  switch (order) {
    case 3: return block[index];
    case 4: return load_be16(block + index * 2);
    case 5: return load_be32(block + index * 4);
    case 6: return load_be64(block + index * 8);
    default: {  // 1, 2 or 4 bits, packed from the least significant bit of each byte
      const uint32_t bits = 1u << order, per_byte = 8 >> order;
      const uint32_t shift = static_cast<uint32_t>(index % per_byte) * bits;
      return (block[index / per_byte] >> shift) & ((1u << bits) - 1);
    }
  }
}

void Qcow2Image::refcount_set(uint8_t* block, uint64_t index, uint64_t value) const {
  const uint32_t order = header_.refcount_order;
  switch (order) {
    case 3: block[index] = static_cast<uint8_t>(value); return;
    case 4: store_be16(block + index * 2, static_cast<uint16_t>(value)); return;
    case 5: store_be32(block + index * 4, static_cast<uint32_t>(value)); return;
    case 6: store_be64(block + index * 8, value); return;
    default: {
      const uint32_t bits = 1u << order, per_byte = 8 >> order;
      const uint32_t shift = static_cast<uint32_t>(index % per_byte) * bits;
      const uint32_t mask = ((1u << bits) - 1) << shift;
      uint8_t& b = block[index / per_byte];
      b = static_cast<uint8_t>((b & ~mask) | ((static_cast<uint32_t>(value) << shift) & mask));
    }
  }
}

Result<TableCache::Table*> Qcow2Image::refblock(uint64_t table_index, bool allocate) {
  if (table_index < reftable_.size()) {
    const uint64_t off = reftable_[table_index] & kRefTableOffsetMask;
    if (off != 0) {
      if (auto* t = refblock_cache_->find(off)) return t;
      RETURN_IF_ERROR(validate_cluster_offset(off, "refcount block"));
      std::vector<uint8_t> data(cluster_size_);
      RETURN_IF_ERROR(file_.pread(off, data));
      return refblock_cache_->insert(off, std::move(data), false);
    }
  }
  if (!allocate) return static_cast<TableCache::Table*>(nullptr);
  if (table_index >= reftable_.size()) {
    if (growing_reftable_)
      return make_error(ErrorCode::kInternal, "{}: refcount table growth recursed", path_);
    RETURN_IF_ERROR(grow_refcount_table(table_index + 1));
    // Growing may already have created this block (to describe the new table).
    if (reftable_[table_index] != 0) return refblock(table_index, false);
  }
  // The new block goes in the first free cluster; if that cluster is one it describes, the block
  // records its own refcount.
  uint64_t c = free_cluster_index_;
  while (TRY(get_refcount(c)) != 0) ++c;
  free_cluster_index_ = c + 1;
  std::vector<uint8_t> data(cluster_size_, 0);
  if (c / refblock_entries_ == table_index) {
    refcount_set(data.data(), c % refblock_entries_, 1);
  } else {
    RETURN_IF_ERROR(set_refcount(c, 1));
  }
  const uint64_t off = c * cluster_size_;
  end_offset_ = std::max(end_offset_, off + cluster_size_);
  // The block must be on disk before the table entry that points to it.
  RETURN_IF_ERROR(file_.pwrite(off, data));
  RETURN_IF_ERROR(file_.datasync());
  reftable_[table_index] = off;
  if (!growing_reftable_ && table_index < reftable_disk_entries_) {
    uint8_t e[8];
    store_be64(e, off);
    RETURN_IF_ERROR(file_.pwrite(header_.refcount_table_offset + table_index * 8, e));
  }
  return refblock_cache_->insert(off, std::move(data), false);
}

Result<uint64_t> Qcow2Image::get_refcount(uint64_t cluster) {
  auto* t = TRY(refblock(cluster / refblock_entries_, false));
  if (!t) return uint64_t{0};
  return refcount_get(t->data.data(), cluster % refblock_entries_);
}

Result<void> Qcow2Image::set_refcount(uint64_t cluster, uint64_t value) {
  if (value > max_refcount_)
    return make_error(ErrorCode::kCorrupt, "{}: refcount overflow for cluster {} (max {})", path_, cluster,
                      max_refcount_);
  auto* t = TRY(refblock(cluster / refblock_entries_, true));
  refcount_set(t->data.data(), cluster % refblock_entries_, value);
  t->dirty = true;
  if (value == 0 && cluster < free_cluster_index_) free_cluster_index_ = cluster;
  return Ok();
}

Result<void> Qcow2Image::grow_refcount_table(uint64_t min_entries) {
  const uint64_t cs = cluster_size_;
  // Place the new table past everything allocated so far; leave room for the blocks that will
  // describe the table itself.
  const uint64_t start = std::max(free_cluster_index_, (end_offset_ + cs - 1) / cs);
  uint64_t entries = std::max({min_entries, uint64_t{reftable_.size()} * 2, (start + 64) / refblock_entries_ + 2});
  const uint64_t clusters = (entries * 8 + cs - 1) / cs;
  entries = clusters * cs / 8;
  if (clusters * cs > kMaxRefcountTableBytes)
    return make_error(ErrorCode::kResourceExhausted, "{}: image too large: its refcount table would exceed {} MiB",
                      path_, kMaxRefcountTableBytes >> 20);
  const uint64_t old_off = header_.refcount_table_offset, old_clusters = header_.refcount_table_clusters;
  growing_reftable_ = true;
  reftable_.resize(entries, 0);
  free_cluster_index_ = start + clusters;
  end_offset_ = std::max(end_offset_, (start + clusters) * cs);
  for (uint64_t c = start; c < start + clusters; ++c) {
    auto r = set_refcount(c, 1);
    if (!r.ok()) {
      growing_reftable_ = false;
      return r;
    }
  }
  growing_reftable_ = false;
  // New blocks, then the new table, then the header switch; a crash before the switch leaks.
  RETURN_IF_ERROR(write_refblocks());
  RETURN_IF_ERROR(file_.datasync());
  std::vector<uint8_t> raw(clusters * cs, 0);
  for (size_t i = 0; i < reftable_.size(); ++i) store_be64(raw.data() + i * 8, reftable_[i]);
  RETURN_IF_ERROR(file_.pwrite(start * cs, raw));
  RETURN_IF_ERROR(file_.datasync());
  header_.refcount_table_offset = start * cs;
  header_.refcount_table_clusters = static_cast<uint32_t>(clusters);
  reftable_disk_entries_ = entries;
  RETURN_IF_ERROR(write_header_fields());
  RETURN_IF_ERROR(file_.datasync());
  for (uint64_t i = 0; i < old_clusters; ++i) RETURN_IF_ERROR(set_refcount(old_off / cs + i, 0));
  return Ok();
}

Result<uint64_t> Qcow2Image::alloc_clusters(uint64_t n) {
  uint64_t start = free_cluster_index_;
  for (;;) {
    uint64_t i = 0;
    while (i < n && TRY(get_refcount(start + i)) == 0) ++i;
    if (i == n) break;
    start += i + 1;
  }
  free_cluster_index_ = start + n;
  for (uint64_t i = 0; i < n; ++i) RETURN_IF_ERROR(set_refcount(start + i, 1));
  end_offset_ = std::max(end_offset_, (start + n) * cluster_size_);
  return start * cluster_size_;
}

Result<void> Qcow2Image::free_later(uint64_t offset, uint64_t length) {
  pending_free_.emplace_back(offset, length);
  return Ok();
}

Result<void> Qcow2Image::write_refblocks() {
  return refblock_cache_->write_dirty([this](TableCache::Table& t) { return file_.pwrite(t.offset, t.data); });
}

Result<void> Qcow2Image::write_l2(TableCache::Table& t) {
  // An L2 table may reach the disk only after the refcounts and data it points to.
  RETURN_IF_ERROR(write_refblocks());
  RETURN_IF_ERROR(file_.datasync());
  return file_.pwrite(t.offset, t.data);
}

Result<void> Qcow2Image::flush_locked() {
  if (read_only_) return Ok();
  RETURN_IF_ERROR(write_refblocks());
  RETURN_IF_ERROR(file_.datasync());
  const bool l2_dirty = l2_cache_->any_dirty();
  if (l2_dirty) {
    RETURN_IF_ERROR(l2_cache_->write_dirty([this](TableCache::Table& t) { return file_.pwrite(t.offset, t.data); }));
    RETURN_IF_ERROR(file_.datasync());
  }
  if (l1_dirty_) {
    std::vector<uint8_t> raw(l1_.size() * 8);
    for (size_t i = 0; i < l1_.size(); ++i) store_be64(raw.data() + i * 8, l1_[i]);
    RETURN_IF_ERROR(file_.pwrite(header_.l1_table_offset, raw));
    RETURN_IF_ERROR(file_.datasync());
    l1_dirty_ = false;
  }
  if (!pending_free_.empty()) {
    // Nothing durable points to these clusters any more: drop their references.
    auto frees = std::move(pending_free_);
    pending_free_.clear();
    comp_cursor_ = 0;
    for (const auto& [off, len] : frees) {
      for (uint64_t c = off / cluster_size_; c * cluster_size_ < off + len; ++c) {
        const uint64_t r = TRY(get_refcount(c));
        if (r == 0) continue;
        RETURN_IF_ERROR(set_refcount(c, r - 1));
        if (r == 1) file_.punch_hole(c * cluster_size_, cluster_size_);
      }
    }
    RETURN_IF_ERROR(write_refblocks());
    RETURN_IF_ERROR(file_.datasync());
  }
  return Ok();
}

Result<void> Qcow2Image::write_header_fields() {
  uint8_t b[kV3HeaderLength - 24];  // bytes 24..103: everything that can change after creation
  RETURN_IF_ERROR(file_.pread(24, b));
  store_be64(b + 0, header_.size);
  store_be32(b + (36 - 24), header_.l1_size);
  store_be64(b + (40 - 24), header_.l1_table_offset);
  store_be64(b + (48 - 24), header_.refcount_table_offset);
  store_be32(b + (56 - 24), header_.refcount_table_clusters);
  size_t len = kV2HeaderLength - 24;
  if (header_.version >= 3) {
    store_be64(b + (72 - 24), header_.incompatible_features);
    store_be64(b + (80 - 24), header_.compatible_features);
    store_be64(b + (88 - 24), header_.autoclear_features);
    len = sizeof(b);
  }
  return file_.pwrite(24, {b, len});
}

}  // namespace ringvm
