#include "devices/pci/msi.h"

#include "base/log.h"

namespace ringvm {
namespace {

// The PIC pair covers GSIs 0-15 (master 0-7, slave 8-15); the IOAPIC has a pin per GSI.
constexpr uint32_t kPicGsis = 16;

kvm_irq_routing_entry irqchip_route(uint32_t gsi, uint32_t chip, uint32_t pin) {
  kvm_irq_routing_entry e{};
  e.gsi = gsi;
  e.type = KVM_IRQ_ROUTING_IRQCHIP;
  e.u.irqchip.irqchip = chip;
  e.u.irqchip.pin = pin;
  return e;
}

}  // namespace

MsiRouter::MsiRouter(InterruptController& ic, uint32_t irqchip_pins, uint32_t max_gsi)
    : ic_(ic), irqchip_pins_(irqchip_pins), max_gsi_(max_gsi), next_gsi_(irqchip_pins) {}

std::vector<kvm_irq_routing_entry> MsiRouter::build_locked() const {
  std::vector<kvm_irq_routing_entry> table;
  for (uint32_t gsi = 0; gsi < irqchip_pins_; ++gsi) {
    table.push_back(irqchip_route(gsi, KVM_IRQCHIP_IOAPIC, gsi));
    if (gsi < kPicGsis) {
      const bool master = gsi < 8;
      table.push_back(irqchip_route(gsi, master ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE,
                                    master ? gsi : gsi - 8));
    }
  }
  for (const auto& [gsi, v] : vectors_) {
    if (!v.routed) continue;
    kvm_irq_routing_entry e{};
    e.gsi = gsi;
    e.type = KVM_IRQ_ROUTING_MSI;
    e.u.msi.address_lo = static_cast<uint32_t>(v.address);
    e.u.msi.address_hi = static_cast<uint32_t>(v.address >> 32);
    e.u.msi.data = v.data;
    table.push_back(e);
  }
  return table;
}

Result<void> MsiRouter::commit_locked() {
  const auto table = build_locked();
  return ic_.set_gsi_routing(table);
}

Result<void> MsiRouter::install() {
  std::lock_guard lock(mu_);
  return commit_locked();
}

Result<uint32_t> MsiRouter::add_vector(int eventfd) {
  std::lock_guard lock(mu_);
  uint32_t gsi;
  if (!free_gsis_.empty()) {
    gsi = free_gsis_.back();
  } else if (next_gsi_ < max_gsi_) {
    gsi = next_gsi_;
  } else {
    return make_error(ErrorCode::kResourceExhausted,
                      "MSI routing: all {} GSIs are in use; configure fewer MSI-X vectors (queues)",
                      max_gsi_ - irqchip_pins_);
  }
  RETURN_IF_ERROR(ic_.register_irqfd(eventfd, gsi));
  if (!free_gsis_.empty()) {
    free_gsis_.pop_back();
  } else {
    ++next_gsi_;
  }
  vectors_[gsi] = Vector{};
  return gsi;
}

Result<void> MsiRouter::set_route(uint32_t gsi, uint64_t address, uint32_t data) {
  std::lock_guard lock(mu_);
  auto it = vectors_.find(gsi);
  if (it == vectors_.end())
    return make_error(ErrorCode::kInternal, "MSI routing: GSI {} was not allocated", gsi);
  it->second = Vector{true, address, data};
  return commit_locked();
}

Result<void> MsiRouter::set_routes(std::span<const MsiRoute> routes) {
  std::lock_guard lock(mu_);
  for (const auto& r : routes)
    if (vectors_.find(r.gsi) == vectors_.end())
      return make_error(ErrorCode::kInternal, "MSI routing: GSI {} was not allocated", r.gsi);
  const auto before = vectors_;
  for (const auto& r : routes) vectors_[r.gsi] = Vector{true, r.address, r.data};
  if (auto c = commit_locked(); !c.ok()) {
    vectors_ = before;
    return c;
  }
  return Ok();
}

void MsiRouter::remove_vector(uint32_t gsi, int eventfd) {
  std::lock_guard lock(mu_);
  auto it = vectors_.find(gsi);
  if (it == vectors_.end()) return;
  const bool was_routed = it->second.routed;
  vectors_.erase(it);
  free_gsis_.push_back(gsi);
  if (auto r = ic_.unregister_irqfd(eventfd, gsi); !r.ok())
    spdlog::warn("MSI routing: releasing GSI {}: {}", gsi, r.error().message());
  if (was_routed) {
    if (auto r = commit_locked(); !r.ok())
      spdlog::warn("MSI routing: dropping GSI {}: {}", gsi, r.error().message());
  }
}

std::vector<kvm_irq_routing_entry> MsiRouter::routes() const {
  std::lock_guard lock(mu_);
  return build_locked();
}

}  // namespace ringvm
