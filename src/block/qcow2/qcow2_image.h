// Qcow2Image: a qcow2 (v2/v3) virtual disk implementing Disk, plus what `ringvm img` needs (create,
// check/repair, map, resize, rebase, snapshot listing, compressed writes).
//
// Metadata lives in memory (L1 table, refcount table) and in two LRU caches (L2 tables, refcount
// blocks). Crash consistency comes from write ordering, never from the dirty bit alone:
//   data -> refcount blocks -> fdatasync -> L2 tables -> fdatasync -> L1 table -> fdatasync,
// and refcount decrements (discard, copy-on-write) are applied only once the L2/L1 entries that
// dropped the cluster are durable. A crash therefore leaves at most leaked clusters.
//
// Thread-safe: one mutex guards metadata; reads of allocated data run outside it.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "block/disk.h"
#include "block/qcow2/image_file.h"
#include "block/qcow2/qcow2_format.h"
#include "block/qcow2/table_cache.h"

namespace ringvm {

struct Qcow2OpenOptions {
  bool read_only = true;
  uint64_t l2_cache_bytes = 4ull << 20;  // QEMU's default is 1 MiB; 4 MiB maps 32 GiB at 64 KiB clusters
  // Backing chain: open it (default) or ignore it (info, rebase -u, check of the top image alone).
  bool open_backing = true;
  // Overrides the backing format recorded in the image (e.g. a user's -F). Empty: use the image's.
  std::string backing_format_override;
  // Opens a writable image even if it is marked corrupt (only for check -r).
  bool allow_corrupt = false;
  int depth = 0;  // position in a backing chain (0 = top)
  // Skip every fdatasync (qemu-img's cache=unsafe, used for convert output). Never for VM disks.
  bool unsafe_no_sync = false;
};

enum class Qcow2Preallocation { kOff, kMetadata, kFull };

struct Qcow2CreateOptions {
  uint64_t size = 0;
  uint32_t cluster_size = 65536;
  uint32_t version = 3;  // 2 = compat 0.10, 3 = compat 1.1
  uint32_t refcount_bits = 16;
  qcow2::CompressionType compression = qcow2::CompressionType::kZlib;
  bool lazy_refcounts = false;
  Qcow2Preallocation preallocation = Qcow2Preallocation::kOff;
  std::string backing_file;    // as recorded in the header (relative to the image's directory)
  std::string backing_format;  // "raw" or "qcow2"; required with backing_file
};

struct Qcow2Snapshot {
  std::string id;
  std::string name;
  uint64_t l1_table_offset = 0;
  uint32_t l1_size = 0;
  uint32_t date_sec = 0;
  uint32_t date_nsec = 0;
  uint64_t vm_clock_nsec = 0;
  uint64_t vm_state_size = 0;
  uint64_t disk_size = 0;  // 0 if the entry does not record it
  std::optional<uint64_t> icount;
};

enum class Qcow2ClusterKind { kUnallocated, kZero, kData, kCompressed };

// A run of clusters with the same state, from block_status().
struct Qcow2Extent {
  uint64_t offset = 0;  // virtual
  uint64_t length = 0;
  Qcow2ClusterKind kind = Qcow2ClusterKind::kUnallocated;
  uint64_t host_offset = 0;  // kData only
};

enum class Qcow2Repair { kNone, kLeaks, kAll };

struct Qcow2CheckResult {
  uint64_t corruptions = 0;
  uint64_t leaks = 0;
  uint64_t corruptions_fixed = 0;
  uint64_t leaks_fixed = 0;
  uint64_t check_errors = 0;  // I/O errors: the check did not complete
  uint64_t allocated_clusters = 0;
  uint64_t total_clusters = 0;  // virtual size in clusters
  uint64_t fragmented_clusters = 0;
  uint64_t compressed_clusters = 0;
  uint64_t image_end_offset = 0;
  std::vector<std::string> messages;  // one line per problem found, qemu-img style
};

class Qcow2Image final : public Disk {
 public:
  static Result<std::unique_ptr<Qcow2Image>> open(const std::string& path, const Qcow2OpenOptions& opts);
  static Result<void> create(const std::string& path, const Qcow2CreateOptions& opts);
  ~Qcow2Image() override;

  // Disk
  const std::string& path() const override { return path_; }
  uint64_t size() const override { return header_.size; }
  bool read_only() const override { return read_only_; }
  Result<void> readv(uint64_t offset, std::span<const iovec> iov) override;
  Result<void> writev(uint64_t offset, std::span<const iovec> iov) override;
  Result<void> flush() override;
  Result<void> discard(uint64_t offset, uint64_t length) override;
  Result<void> write_zeroes(uint64_t offset, uint64_t length, bool may_unmap) override;

  // Flushes and clears the dirty bit; the destructor does this too but cannot report errors.
  Result<void> close();

  const qcow2::Header& header() const { return header_; }
  uint64_t cluster_size() const { return cluster_size_; }
  Disk* backing() const { return backing_.get(); }
  // The backing file path as resolved against this image's directory ("" if none).
  std::string full_backing_filename() const;
  const std::vector<Qcow2Snapshot>& snapshots() const { return snapshots_; }

  // The state of the clusters at `offset`, merged over at most `max_length` bytes.
  Result<Qcow2Extent> block_status(uint64_t offset, uint64_t max_length);
  // Writes one whole cluster compressed (the cluster must be unallocated, as in convert -c).
  Result<void> write_compressed(uint64_t offset, std::span<const uint8_t> cluster);
  // Stores an already compressed cluster (from qcow2::compress_cluster, e.g. on worker threads).
  Result<void> write_precompressed(uint64_t offset, std::span<const uint8_t> compressed);
  // Grows or shrinks the virtual size. Shrinking drops (and frees) clusters past the new end.
  Result<void> resize(uint64_t new_size);
  // Rewrites the backing file name and format in the header ("" file: no backing).
  Result<void> set_backing(const std::string& file, const std::string& format);
  Result<Qcow2CheckResult> check(Qcow2Repair repair);

 private:
  struct Mapping {
    Qcow2ClusterKind kind = Qcow2ClusterKind::kUnallocated;
    uint64_t entry = 0;
    uint64_t host = 0;        // data: cluster offset; compressed: byte offset of the stream
    uint64_t comp_bytes = 0;  // compressed: bytes reserved (whole 512-byte sectors)
    bool copied = false;
  };

  Qcow2Image(std::string path, qcow2::ImageFile file, qcow2::Header header, bool read_only);

  Result<void> load_metadata(const Qcow2OpenOptions& opts);
  Result<void> preallocate(Qcow2Preallocation mode);
  Result<void> load_snapshots();
  Result<void> open_backing(const Qcow2OpenOptions& opts);

  // --- mapping (callers hold mu_) ---
  Mapping decode_l2(uint64_t entry) const;
  Result<uint64_t> get_l2_entry(uint64_t vcluster);
  Result<void> set_l2_entry(uint64_t vcluster, uint64_t entry);
  Result<qcow2::TableCache::Table*> load_l2(uint64_t l2_offset);
  Result<void> validate_cluster_offset(uint64_t offset, const char* what) const;
  // Fills a cluster buffer with the current contents of `vcluster` (for partial writes).
  Result<void> read_cluster_locked(uint64_t vcluster, const Mapping& m, std::span<uint8_t> out);
  Result<void> read_compressed(const Mapping& m, std::span<uint8_t> out);
  Result<void> read_backing(uint64_t offset, std::span<const iovec> iov);
  Result<void> write_cluster_locked(uint64_t vcluster, uint64_t in_cluster, std::span<const iovec> iov);
  Result<void> release_mapping(const Mapping& m);
  Result<void> zero_cluster_locked(uint64_t vcluster, bool may_unmap, bool discard);
  Result<void> mark_dirty_for_write();

  // --- refcounts and allocation (callers hold mu_) ---
  uint64_t refcount_get(const uint8_t* block, uint64_t index) const;
  void refcount_set(uint8_t* block, uint64_t index, uint64_t value) const;
  Result<uint64_t> get_refcount(uint64_t cluster);
  Result<void> set_refcount(uint64_t cluster, uint64_t value);
  Result<qcow2::TableCache::Table*> refblock(uint64_t table_index, bool allocate);
  Result<void> grow_refcount_table(uint64_t min_entries);
  Result<uint64_t> alloc_clusters(uint64_t n);  // host offset of n contiguous clusters, refcount 1
  Result<void> free_later(uint64_t offset, uint64_t length);
  Result<void> write_refblocks();
  Result<void> write_l2(qcow2::TableCache::Table& t);
  Result<void> flush_locked();
  Result<void> write_header_fields();

  std::string path_;
  qcow2::ImageFile file_;
  qcow2::Header header_;
  bool read_only_;
  uint64_t cluster_size_;
  uint32_t cluster_bits_;
  uint64_t l2_entries_;
  uint64_t refblock_entries_;
  uint64_t max_refcount_;

  std::mutex mu_;
  std::vector<uint64_t> l1_;
  bool l1_dirty_ = false;
  std::vector<uint64_t> reftable_;
  uint64_t reftable_disk_entries_ = 0;  // entries the on-disk table (header) has room for
  bool growing_reftable_ = false;
  std::unique_ptr<qcow2::TableCache> l2_cache_;
  std::unique_ptr<qcow2::TableCache> refblock_cache_;
  uint64_t free_cluster_index_ = 0;
  uint64_t end_offset_ = 0;  // file size, or the end of the last allocated cluster if larger
  std::vector<std::pair<uint64_t, uint64_t>> pending_free_;
  uint64_t comp_cursor_ = 0;  // next free byte in the cluster that packs compressed clusters
  bool dirty_bit_set_ = false;
  bool closed_ = false;
  std::shared_ptr<Disk> backing_;
  std::vector<Qcow2Snapshot> snapshots_;
  uint64_t snapshot_table_bytes_ = 0;
};

}  // namespace ringvm
