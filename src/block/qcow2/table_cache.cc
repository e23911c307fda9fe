#include "block/qcow2/table_cache.h"

namespace ringvm::qcow2 {

TableCache::Table* TableCache::find(uint64_t offset) {
  auto it = index_.find(offset);
  if (it == index_.end()) return nullptr;
  lru_.splice(lru_.begin(), lru_, it->second);
  return &*it->second;
}

Result<TableCache::Table*> TableCache::insert(uint64_t offset, std::vector<uint8_t> data, bool dirty) {
  if (Table* t = find(offset)) {
    t->data = std::move(data);
    t->dirty = t->dirty || dirty;
    return t;
  }
  while (lru_.size() >= capacity_) {
    Table& victim = lru_.back();
    if (victim.dirty) {
      RETURN_IF_ERROR(writeback_(victim));
      victim.dirty = false;
    }
    index_.erase(victim.offset);
    lru_.pop_back();
  }
  lru_.push_front(Table{offset, std::move(data), dirty});
  index_[offset] = lru_.begin();
  return &lru_.front();
}

void TableCache::erase(uint64_t offset) {
  auto it = index_.find(offset);
  if (it == index_.end()) return;
  lru_.erase(it->second);
  index_.erase(it);
}

Result<void> TableCache::write_dirty(const Writeback& fn) {
  for (auto it = lru_.rbegin(); it != lru_.rend(); ++it) {
    if (!it->dirty) continue;
    RETURN_IF_ERROR(fn(*it));
    it->dirty = false;
  }
  return Ok();
}

bool TableCache::any_dirty() const {
  for (const auto& t : lru_)
    if (t.dirty) return true;
  return false;
}

}  // namespace ringvm::qcow2
