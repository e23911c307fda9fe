// Qcow2Image::check: rebuilds every cluster's reference count from the metadata (header, L1/L2
// of the active image and of each snapshot, refcount structures) and compares it with the stored
// refcounts. Leaks (stored > used) are harmless; stored < used is corruption (a cluster could be
// handed out twice). Repairs follow qemu-img: -r leaks lowers leaked refcounts, -r all also raises
// refcounts that are too low, fixes COPIED flags and drops mappings that point outside the file.
#include <algorithm>

#include "block/qcow2/qcow2_image.h"

namespace ringvm {

using namespace qcow2;  // NOLINT(google-build-using-namespace)

namespace {
constexpr uint64_t kMaxCheckClusters = 1ull << 28;  // 512 MiB of counters at most
}  // namespace

Result<Qcow2CheckResult> Qcow2Image::check(Qcow2Repair repair) {
  if (repair != Qcow2Repair::kNone && read_only_)
    return make_error(ErrorCode::kPermissionDenied, "{}: open the image writable to repair it", path_);
  std::lock_guard lock(mu_);
  RETURN_IF_ERROR(flush_locked());
  Qcow2CheckResult r;
  const uint64_t cs = cluster_size_;
  const uint64_t file_size = TRY(file_.size());
  const uint64_t nb = (std::max(file_size, end_offset_) + cs - 1) / cs;
  if (nb > kMaxCheckClusters)
    return make_error(ErrorCode::kResourceExhausted, "{}: image has too many clusters ({}) to check", path_, nb);
  std::vector<uint16_t> ref(nb, 0);
  r.total_clusters = (header_.size + cs - 1) / cs;

  // Counts one reference to every cluster of [off, off + len); false if it lies past the file.
  auto inc = [&](uint64_t off, uint64_t len, const char* what) {
    const uint64_t first = off / cs, last = (off + len - 1) / cs;
    if (last >= nb) {
      r.corruptions++;
      r.messages.push_back(fmt::format("ERROR {} at offset 0x{:x} lies past the end of the image", what, off));
      return false;
    }
    for (uint64_t c = first; c <= last; ++c) ref[c] = static_cast<uint16_t>(std::min<uint32_t>(ref[c] + 1u, 0xffff));
    return true;
  };
  // Mappings to drop under -r all because they point outside the file: (vcluster).
  std::vector<uint64_t> bad_active;
  uint64_t last_host = 0;

  auto walk_l1 = [&](const std::vector<uint64_t>& l1, bool active) -> Result<void> {
    std::vector<uint8_t> l2(cs);
    for (uint64_t i = 0; i < l1.size(); ++i) {
      const uint64_t l2_off = l1[i] & kOffsetMask;
      if (l2_off == 0) continue;
      if (l2_off % cs) {
        r.corruptions++;
        r.messages.push_back(fmt::format("ERROR l2_offset=0x{:x}: Table is not cluster aligned; L1 entry corrupted", l2_off));
        continue;
      }
      if (!inc(l2_off, cs, "L2 table")) continue;
      if (auto rd = file_.pread(l2_off, l2); !rd.ok()) {
        r.check_errors++;
        continue;
      }
      for (uint64_t j = 0; j < l2_entries_; ++j) {
        const uint64_t vc = i * l2_entries_ + j;
        const Mapping m = decode_l2(load_be64(l2.data() + j * 8));
        if (m.kind == Qcow2ClusterKind::kCompressed) {
          if (active) {
            r.allocated_clusters++;
            r.compressed_clusters++;
          }
          inc(m.host & ~uint64_t{511}, m.comp_bytes, "compressed cluster");
          continue;
        }
        if (m.host == 0) continue;
        if (m.kind == Qcow2ClusterKind::kData && active) {
          r.allocated_clusters++;
          if (last_host && m.host != last_host + cs) r.fragmented_clusters++;
          last_host = m.host;
        }
        if (m.host % cs) {
          r.corruptions++;
          r.messages.push_back(fmt::format("ERROR offset=0x{:x}: Cluster is not properly aligned; L2 entry corrupted", m.host));
          continue;
        }
        if (!inc(m.host, cs, "data cluster") && active) bad_active.push_back(vc);
      }
    }
    return Ok();
  };

  inc(0, cs, "header");
  if (header_.l1_size) inc(header_.l1_table_offset, uint64_t{header_.l1_size} * 8, "L1 table");
  RETURN_IF_ERROR(walk_l1(l1_, true));
  for (const auto& s : snapshots_) {
    if (!s.l1_size) continue;
    if (!inc(s.l1_table_offset, uint64_t{s.l1_size} * 8, "snapshot L1 table")) continue;
    std::vector<uint8_t> raw(uint64_t{s.l1_size} * 8);
    RETURN_IF_ERROR(file_.pread(s.l1_table_offset, raw));
    std::vector<uint64_t> l1(s.l1_size);
    for (size_t i = 0; i < l1.size(); ++i) l1[i] = load_be64(raw.data() + i * 8);
    RETURN_IF_ERROR(walk_l1(l1, false));
  }
  if (header_.nb_snapshots) inc(header_.snapshots_offset, snapshot_table_bytes_, "snapshot table");
  inc(header_.refcount_table_offset, uint64_t{header_.refcount_table_clusters} * cs, "refcount table");
  for (uint64_t i = 0; i < reftable_.size(); ++i) {
    const uint64_t off = reftable_[i] & kRefTableOffsetMask;
    if (!off) continue;
    if (off % cs) {
      r.corruptions++;
      r.messages.push_back(fmt::format("ERROR refcount block {} is not cluster aligned; refcount table corrupted", i));
      continue;
    }
    inc(off, cs, "refcount block");
  }

  // Mappings pointing past the end of the file: -r all drops them (the data was never there).
  if (repair == Qcow2Repair::kAll) {
    for (uint64_t vc : bad_active) {
      RETURN_IF_ERROR(set_l2_entry(vc, 0));
      r.corruptions_fixed++;
    }
    if (!bad_active.empty()) {
      // set_l2_entry may have copied L2 tables or allocated: recount from scratch next pass.
      RETURN_IF_ERROR(flush_locked());
    }
  }

  // Compare with the stored refcounts, over the file and whatever the refcount table covers.
  const uint64_t covered = std::min<uint64_t>(reftable_.size() * refblock_entries_, kMaxCheckClusters);
  const uint64_t limit = std::max(nb, covered);
  for (uint64_t c = 0; c < limit; ++c) {
    if (c >= nb && (c % refblock_entries_) == 0 && c / refblock_entries_ < reftable_.size() &&
        reftable_[c / refblock_entries_] == 0) {
      c += refblock_entries_ - 1;  // no block: all zero
      continue;
    }
    auto stored_r = get_refcount(c);
    if (!stored_r.ok()) {
      r.check_errors++;
      r.messages.push_back(fmt::format("ERROR cluster {}: cannot read its refcount: {}", c, stored_r.error().message()));
      c = (c / refblock_entries_ + 1) * refblock_entries_ - 1;
      continue;
    }
    const uint64_t stored = *stored_r;
    const uint64_t used = c < nb ? ref[c] : 0;
    if (used) r.image_end_offset = (c + 1) * cs;
    if (stored == used || (used == 0xffff && stored >= used)) continue;
    const bool leak = stored > used;
    r.messages.push_back(fmt::format("{} cluster {} refcount={} reference={}", leak ? "Leaked" : "ERROR", c, stored, used));
    if (leak) r.leaks++;
    else r.corruptions++;
    if (repair == Qcow2Repair::kAll || (repair == Qcow2Repair::kLeaks && leak)) {
      RETURN_IF_ERROR(set_refcount(c, used));
      if (leak) r.leaks_fixed++;
      else r.corruptions_fixed++;
    }
  }

  // COPIED flags of the active tables must say "refcount is exactly one".
  for (uint64_t i = 0; i < l1_.size(); ++i) {
    const uint64_t l2_off = l1_[i] & kOffsetMask;
    if (!l2_off || l2_off % cs || l2_off / cs >= nb) continue;
    const uint64_t rc = TRY(get_refcount(l2_off / cs));
    if ((rc == 1) != ((l1_[i] & kOflagCopied) != 0)) {
      r.corruptions++;
      r.messages.push_back(fmt::format("ERROR OFLAG_COPIED L2 cluster: l1_index={} l1_entry={:x} refcount={}", i, l1_[i], rc));
      if (repair == Qcow2Repair::kAll) {
        l1_[i] = rc == 1 ? (l1_[i] | kOflagCopied) : (l1_[i] & ~kOflagCopied);
        l1_dirty_ = true;
        r.corruptions_fixed++;
      }
    }
    auto* t = TRY(load_l2(l2_off));
    std::vector<uint8_t> l2 = t->data;
    bool changed = false;
    for (uint64_t j = 0; j < l2_entries_; ++j) {
      const Mapping m = decode_l2(load_be64(l2.data() + j * 8));
      if (m.kind == Qcow2ClusterKind::kCompressed || !m.host || m.host % cs || m.host / cs >= nb) continue;
      const uint64_t drc = TRY(get_refcount(m.host / cs));
      if ((drc == 1) == m.copied) continue;
      r.corruptions++;
      r.messages.push_back(fmt::format("ERROR OFLAG_COPIED data cluster: l2_entry={:x} refcount={}", m.entry, drc));
      if (repair == Qcow2Repair::kAll) {
        store_be64(l2.data() + j * 8, drc == 1 ? (m.entry | kOflagCopied) : (m.entry & ~kOflagCopied));
        changed = true;
        r.corruptions_fixed++;
      }
    }
    if (changed) {
      auto* t2 = TRY(l2_cache_->insert(l2_off, std::move(l2), true));
      (void)t2;
    }
  }

  if (repair != Qcow2Repair::kNone) {
    RETURN_IF_ERROR(flush_locked());
    if (r.corruptions == r.corruptions_fixed && (header_.incompatible_features & kIncompatCorrupt)) {
      header_.incompatible_features &= ~kIncompatCorrupt;
      RETURN_IF_ERROR(write_header_fields());
      RETURN_IF_ERROR(file_.datasync());
    }
  }
  return r;
}

}  // namespace ringvm
