#include "devices/pci/msix.h"

#include <linux/pci_regs.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstring>

#include "base/log.h"
#include "base/state_codec.h"

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

namespace ringvm {

void MsixTable::save_state(StateWriter& w) const {
  std::lock_guard lock(mu_);
  w.u16(static_cast<uint16_t>(entries_.size()));
  w.boolean(enabled_);
  w.boolean(function_masked_);
  for (const auto& e : entries_) {
    for (uint32_t word : e.words) w.u32(word);
    w.boolean(e.pending);
  }
}

Result<MsixTable::State> MsixTable::read_state(StateReader& r) const {
  const uint16_t n = TRY(r.u16("MSI-X vector count"));
  if (n != entries_.size())
    return r.corrupt(fmt::format("the MSI-X table has {} vectors; this device has {}", n, entries_.size()));
  State s;
  s.enabled = TRY(r.boolean("MSI-X enable"));
  s.function_masked = TRY(r.boolean("MSI-X function mask"));
  s.words.resize(n);
  s.pending.resize(n);
  for (uint16_t v = 0; v < n; ++v) {
    for (auto& word : s.words[v]) word = TRY(r.u32("MSI-X table entry"));
    if ((s.words[v][kWordControl] & ~kVectorMasked) != 0)
      return r.corrupt(fmt::format("MSI-X vector {} has reserved Vector Control bits set ({:#x})", v,
                                   s.words[v][kWordControl]));
    s.pending[v] = TRY(r.boolean("MSI-X pending bit")) ? 1 : 0;
  }
  return s;
}

Result<void> MsixTable::restore_state(const State& s) {
  if (s.words.size() != entries_.size() || s.pending.size() != entries_.size())
    return make_error(ErrorCode::kInternal, "MSI-X: a state for {} vectors given to a table of {}",
                      s.words.size(), entries_.size());
  std::lock_guard lock(mu_);
  std::vector<MsiRoute> routes;
  for (size_t v = 0; v < entries_.size(); ++v) {
    const auto& w = s.words[v];
    const uint64_t address = (uint64_t{w[1]} << 32) | w[0];
    if (address != 0) routes.push_back({entries_[v].gsi, address, w[2]});
  }
  if (!routes.empty()) RETURN_IF_ERROR(router_.set_routes(routes));
  for (size_t v = 0; v < entries_.size(); ++v) {
    Entry& e = entries_[v];
    std::copy(s.words[v].begin(), s.words[v].end(), e.words);
    e.pending = s.pending[v] != 0;
    e.route_address = (uint64_t{e.words[1]} << 32) | e.words[0];
    e.route_data = e.words[2];
    e.routed = e.route_address != 0;
  }
  enabled_ = s.enabled;
  function_masked_ = s.function_masked;
  flush_pending_locked();
  return Ok();
}

}  // namespace ringvm
