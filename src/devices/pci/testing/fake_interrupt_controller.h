// FakeInterruptController: records what PCI devices ask of the VM (lines, routes, irqfds,
// ioeventfds) so tests run without /dev/kvm. Header-only, for test binaries.
#pragma once

#include <map>
#include <mutex>
#include <set>
#include <tuple>
#include <vector>

#include "devices/pci/interrupt_controller.h"

namespace ringvm::testing {

class FakeInterruptController final : public InterruptController {
 public:
  struct IoEventFd {
    int fd;
    uint64_t addr;
    uint32_t len;
    bool pio;
    auto operator<=>(const IoEventFd&) const = default;
  };

  Result<void> set_irq_line(uint32_t gsi, bool level) override {
    std::lock_guard lock(mu);
    lines[gsi] = level;
    line_changes.emplace_back(gsi, level);
    return Ok();
  }
  Result<void> set_gsi_routing(std::span<const kvm_irq_routing_entry> entries) override {
    std::lock_guard lock(mu);
    routing.assign(entries.begin(), entries.end());
    ++routing_commits;
    return Ok();
  }
  Result<void> register_irqfd(int eventfd, uint32_t gsi) override {
    std::lock_guard lock(mu);
    irqfds[gsi] = eventfd;
    return Ok();
  }
  Result<void> unregister_irqfd(int eventfd, uint32_t gsi) override {
    std::lock_guard lock(mu);
    auto it = irqfds.find(gsi);
    if (it == irqfds.end() || it->second != eventfd)
      return make_error(ErrorCode::kNotFound, "no irqfd {} on GSI {}", eventfd, gsi);
    irqfds.erase(it);
    return Ok();
  }
  Result<void> register_ioeventfd(int eventfd, uint64_t addr, uint32_t len, bool pio) override {
    std::lock_guard lock(mu);
    if (!ioeventfds.insert({eventfd, addr, len, pio}).second)
      return make_error(ErrorCode::kInvalidArgument, "ioeventfd at {:#x} registered twice", addr);
    return Ok();
  }
  Result<void> unregister_ioeventfd(int eventfd, uint64_t addr, uint32_t len, bool pio) override {
    std::lock_guard lock(mu);
    if (ioeventfds.erase({eventfd, addr, len, pio}) == 0)
      return make_error(ErrorCode::kNotFound, "no ioeventfd at {:#x}", addr);
    return Ok();
  }

  // The MSI route of `gsi` in the committed table, if any.
  const kvm_irq_routing_entry* msi_route(uint32_t gsi) const {
    for (const auto& e : routing)
      if (e.gsi == gsi && e.type == KVM_IRQ_ROUTING_MSI) return &e;
    return nullptr;
  }

  std::mutex mu;
  std::map<uint32_t, bool> lines;
  std::vector<std::pair<uint32_t, bool>> line_changes;
  std::vector<kvm_irq_routing_entry> routing;
  int routing_commits = 0;
  std::map<uint32_t, int> irqfds;  // gsi -> eventfd
  std::set<IoEventFd> ioeventfds;
};

}  // namespace ringvm::testing
