#include "devices/bus.h"

#include <algorithm>
#include <mutex>

namespace ringvm {

Result<void> Bus::insert(uint64_t base, uint64_t size, std::shared_ptr<Device> dev) {
  if (size == 0 || base + size < base)
    return make_error(ErrorCode::kInvalidArgument, "{} bus: bad range {:#x}+{:#x} for {}", name_, base, size,
                      dev->name());
  std::unique_lock lock(mu_);
  auto next = ranges_.lower_bound(base);
  if (next != ranges_.end() && next->first < base + size)
    return make_error(ErrorCode::kInvalidArgument, "{} bus: {} at {:#x}+{:#x} overlaps {} at {:#x}", name_,
                      dev->name(), base, size, next->second.dev->name(), next->first);
  if (next != ranges_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second.size > base)
      return make_error(ErrorCode::kInvalidArgument, "{} bus: {} at {:#x}+{:#x} overlaps {} at {:#x}", name_,
                        dev->name(), base, size, prev->second.dev->name(), prev->first);
  }
  ranges_.emplace(base, Range{size, std::move(dev)});
  return Ok();
}

Result<void> Bus::remove(uint64_t base) {
  std::unique_lock lock(mu_);
  if (ranges_.erase(base) == 0)
    return make_error(ErrorCode::kNotFound, "{} bus: nothing mapped at {:#x}", name_, base);
  return Ok();
}

std::pair<Device*, uint64_t> Bus::resolve(uint64_t addr, uint64_t len) const {
  auto it = ranges_.upper_bound(addr);
  if (it == ranges_.begin()) return {nullptr, 0};
  --it;
  const uint64_t off = addr - it->first;
  if (off >= it->second.size || len > it->second.size - off) return {nullptr, 0};
  return {it->second.dev.get(), off};
}

bool Bus::read(uint64_t addr, std::span<uint8_t> data) const {
  std::shared_lock lock(mu_);
  auto [dev, off] = resolve(addr, data.size());
  if (dev == nullptr) {
    std::fill(data.begin(), data.end(), uint8_t{0xff});
    unclaimed_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  dev->read(off, data);
  return true;
}

bool Bus::write(uint64_t addr, std::span<const uint8_t> data) const {
  std::shared_lock lock(mu_);
  auto [dev, off] = resolve(addr, data.size());
  if (dev == nullptr) {
    unclaimed_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  dev->write(off, data);
  return true;
}

}  // namespace ringvm
