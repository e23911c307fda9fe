#include "devices/pci/msix.h"

#include <linux/pci_regs.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstring>

#include "base/log.h"

namespace ringvm {
namespace {

constexpr uint16_t kControlFunctionMask = PCI_MSIX_FLAGS_MASKALL;  // bit 14
constexpr uint16_t kControlEnable = PCI_MSIX_FLAGS_ENABLE;         // bit 15
constexpr uint32_t kVectorMasked = PCI_MSIX_ENTRY_CTRL_MASKBIT;    // vector control bit 0
constexpr size_t kWordControl = PCI_MSIX_ENTRY_VECTOR_CTRL / 4;

// MSI-X registers are DWORD or QWORD, naturally aligned, and wholly inside a `limit`-byte area.
bool valid_access(uint64_t offset, size_t size, uint64_t limit) {
  return (size == 4 || size == 8) && offset % size == 0 && offset < limit && size <= limit - offset;
}

}  // namespace

Result<std::unique_ptr<MsixTable>> MsixTable::create(uint16_t vectors, MsiRouter& router) {
  if (vectors == 0 || vectors > kMaxVectors)
    return make_error(ErrorCode::kInvalidArgument, "MSI-X: {} vectors requested; 1 to {} are possible",
                      vectors, kMaxVectors);
  std::unique_ptr<MsixTable> t(new MsixTable(router));
  t->entries_.reserve(vectors);
  for (uint16_t i = 0; i < vectors; ++i) {
    Entry e;
    e.eventfd.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!e.eventfd) return sys_error("MSI-X: eventfd for a vector");
    e.gsi = TRY(router.add_vector(e.eventfd.get()));
    t->entries_.push_back(std::move(e));
  }
  return t;
}

MsixTable::~MsixTable() {
  for (const auto& e : entries_) router_.remove_vector(e.gsi, e.eventfd.get());
}

void MsixTable::table_read(uint64_t offset, std::span<uint8_t> data) const {
  std::memset(data.data(), 0, data.size());
  if (!valid_access(offset, data.size(), table_bytes())) return;
  std::lock_guard lock(mu_);
  for (size_t i = 0; i < data.size(); i += 4) {
    const uint64_t off = offset + i;
    const uint32_t w = entries_[off / 16].words[(off % 16) / 4];
    std::memcpy(data.data() + i, &w, 4);
  }
}

void MsixTable::table_write(uint64_t offset, std::span<const uint8_t> data) {
  if (!valid_access(offset, data.size(), table_bytes())) return;
  std::lock_guard lock(mu_);
  for (size_t i = 0; i < data.size(); i += 4) {
    const uint64_t off = offset + i;
    Entry& e = entries_[off / 16];
    const size_t word = (off % 16) / 4;
    uint32_t w;
    std::memcpy(&w, data.data() + i, 4);
    // Vector Control: only the mask bit exists; the rest is reserved and reads as zero.
    e.words[word] = word == kWordControl ? (w & kVectorMasked) : w;
  }
  flush_pending_locked();
}

void MsixTable::pba_read(uint64_t offset, std::span<uint8_t> data) const {
  std::memset(data.data(), 0, data.size());
  if (!valid_access(offset, data.size(), pba_bytes())) return;
  std::lock_guard lock(mu_);
  for (size_t byte = 0; byte < data.size(); ++byte) {
    for (size_t bit = 0; bit < 8; ++bit) {
      const uint64_t v = (offset + byte) * 8 + bit;
      if (v < entries_.size() && entries_[v].pending) data[byte] |= static_cast<uint8_t>(1u << bit);
    }
  }
}

uint16_t MsixTable::message_control() const {
  std::lock_guard lock(mu_);
  uint16_t v = static_cast<uint16_t>(entries_.size() - 1);
  if (function_masked_) v |= kControlFunctionMask;
  if (enabled_) v |= kControlEnable;
  return v;
}

void MsixTable::write_message_control(uint16_t value) {
  std::lock_guard lock(mu_);
  enabled_ = (value & kControlEnable) != 0;
  function_masked_ = (value & kControlFunctionMask) != 0;
  flush_pending_locked();
}

bool MsixTable::enabled() const {
  std::lock_guard lock(mu_);
  return enabled_;
}

bool MsixTable::pending(uint16_t vector) const {
  std::lock_guard lock(mu_);
  return vector < entries_.size() && entries_[vector].pending;
}

bool MsixTable::masked(uint16_t vector) const {
  std::lock_guard lock(mu_);
  return vector < entries_.size() && (entries_[vector].words[kWordControl] & kVectorMasked) != 0;
}

bool MsixTable::deliverable_locked(const Entry& e) const {
  return enabled_ && !function_masked_ && (e.words[kWordControl] & kVectorMasked) == 0;
}

void MsixTable::fire(uint16_t vector) {
  std::lock_guard lock(mu_);
  if (vector >= entries_.size()) return;
  Entry& e = entries_[vector];
  if (deliverable_locked(e)) {
    deliver_locked(e);
  } else {
    e.pending = true;
  }
}

void MsixTable::deliver_locked(Entry& e) {
  const uint64_t address = (uint64_t{e.words[1]} << 32) | e.words[0];
  const uint32_t data = e.words[2];
  if (!e.routed || e.route_address != address || e.route_data != data) {
    if (auto r = router_.set_route(e.gsi, address, data); !r.ok()) {
      RINGVM_LOG_RATELIMITED(warn, "MSI-X: routing GSI {}: {}", e.gsi, r.error().message());
      e.pending = true;
      return;
    }
    e.routed = true;
    e.route_address = address;
    e.route_data = data;
  }
  e.pending = false;
  const uint64_t one = 1;
  if (::write(e.eventfd.get(), &one, sizeof(one)) != sizeof(one))
    RINGVM_LOG_RATELIMITED(warn, "MSI-X: signalling GSI {}: {}", e.gsi, std::strerror(errno));
}

void MsixTable::flush_pending_locked() {
  for (auto& e : entries_)
    if (e.pending && deliverable_locked(e)) deliver_locked(e);
}

}  // namespace ringvm
