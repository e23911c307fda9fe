// TableCache: an LRU cache of cluster-sized metadata tables (L2 tables, refcount blocks), keyed by
// host offset. Dirty tables are written back through a callback on eviction, so the owner decides
// the ordering (an L2 table is written only after the refcounts it depends on are durable).
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <unordered_map>
#include <vector>

#include "base/result.h"

namespace ringvm::qcow2 {

class TableCache final {
 public:
  struct Table {
    uint64_t offset = 0;
    std::vector<uint8_t> data;
    bool dirty = false;
  };
  using Writeback = std::function<Result<void>(Table&)>;

  TableCache(size_t capacity, Writeback writeback)
      : capacity_(capacity < 2 ? 2 : capacity), writeback_(std::move(writeback)) {}

  // The cached table at `offset` (marked most recently used), or nullptr.
  Table* find(uint64_t offset);
  // Inserts a table, evicting the least recently used one (written back first if dirty). The
  // returned pointer stays valid until the next insert().
  Result<Table*> insert(uint64_t offset, std::vector<uint8_t> data, bool dirty);
  void erase(uint64_t offset);
  // Calls fn on every dirty table (oldest first) and marks it clean if fn succeeds.
  Result<void> write_dirty(const Writeback& fn);
  bool any_dirty() const;
  size_t capacity() const { return capacity_; }

 private:
  size_t capacity_;
  Writeback writeback_;
  std::list<Table> lru_;  // front: most recently used
  std::unordered_map<uint64_t, std::list<Table>::iterator> index_;
};

}  // namespace ringvm::qcow2
