// Bus: an interval map from address ranges to devices. There is one for port I/O and one for
// MMIO. Lookups take a shared lock (vCPU threads), changes an exclusive one (PCI BAR moves).
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <shared_mutex>
#include <span>
#include <string>

#include "base/result.h"
#include "devices/device.h"

namespace ringvm {

class Bus {
 public:
  explicit Bus(std::string name) : name_(std::move(name)) {}

  // Maps [base, base+size) to `dev`. Overlap with an existing range is an error.
  Result<void> insert(uint64_t base, uint64_t size, std::shared_ptr<Device> dev);
  // Unmaps the range that starts at `base`.
  Result<void> remove(uint64_t base);

  // Dispatch. Return false when no device claims the address (reads then return all ones).
  bool read(uint64_t addr, std::span<uint8_t> data) const;
  bool write(uint64_t addr, std::span<const uint8_t> data) const;

  // Number of accesses no device claimed (a guest probing, or a missing device).
  uint64_t unclaimed() const { return unclaimed_.load(std::memory_order_relaxed); }
  const std::string& name() const { return name_; }

 private:
  struct Range {
    uint64_t size;
    std::shared_ptr<Device> dev;
  };
  // Returns the device and offset for an access of `len` bytes at `addr`, if one claims it.
  std::pair<Device*, uint64_t> resolve(uint64_t addr, uint64_t len) const;

  std::string name_;
  mutable std::shared_mutex mu_;
  std::map<uint64_t, Range> ranges_;  // base -> range
  mutable std::atomic<uint64_t> unclaimed_{0};
};

}  // namespace ringvm
