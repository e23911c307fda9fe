// MsiRouter: the VM's GSI routing table, owned in one place because KVM_SET_GSI_ROUTING replaces
// the whole table. It keeps the default irqchip routes (GSI 0-15 to the PIC and IOAPIC, 16-23 to
// the IOAPIC only, as KVM sets them at irqchip creation) and adds one MSI route per MSI-X vector.
//
// Each vector gets a GSI above the irqchip pins and an irqfd: firing the vector is a write to its
// eventfd, which KVM turns into the MSI in the kernel (no ioctl and no vCPU exit on the hot path).
// Changing a vector's address/data re-commits the table (a config-path ioctl).
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <span>
#include <vector>

#include "base/result.h"
#include "devices/pci/interrupt_controller.h"

namespace ringvm {

// One MSI route: what set_routes() points `gsi` at.
struct MsiRoute {
  uint32_t gsi = 0;
  uint64_t address = 0;
  uint32_t data = 0;
};

class MsiRouter final {
 public:
  // GSIs [irqchip_pins, max_gsi) are handed to MSI vectors. KVM accepts up to 4096 routes.
  explicit MsiRouter(InterruptController& ic, uint32_t irqchip_pins = 24, uint32_t max_gsi = 4096);
  MsiRouter(const MsiRouter&) = delete;
  MsiRouter& operator=(const MsiRouter&) = delete;

  // Commits the table (irqchip routes plus any MSI routes). Call once after the irqchip exists;
  // harmless to call again.
  Result<void> install();

  // Allocates a GSI for a new MSI vector and binds `eventfd` to it as an irqfd. The vector has no
  // route (a write to `eventfd` injects nothing) until set_route().
  Result<uint32_t> add_vector(int eventfd);
  // Points `gsi` at the MSI (`address`, `data`) and commits the table.
  Result<void> set_route(uint32_t gsi, uint64_t address, uint32_t data);
  // Several routes with one commit (a restore reprograms every vector of a function at once).
  // All or nothing: on error (a GSI not allocated, the commit refused) no route changed.
  Result<void> set_routes(std::span<const MsiRoute> routes);
  // Drops the route and irqfd of `gsi` and frees the GSI. Errors are logged: this runs on teardown.
  void remove_vector(uint32_t gsi, int eventfd);

  // The table as committed (irqchip routes, then MSI routes); for tests and debugging.
  std::vector<kvm_irq_routing_entry> routes() const;

 private:
  struct Vector {
    bool routed = false;
    uint64_t address = 0;
    uint32_t data = 0;
  };
  std::vector<kvm_irq_routing_entry> build_locked() const;
  Result<void> commit_locked();

  InterruptController& ic_;
  const uint32_t irqchip_pins_;
  const uint32_t max_gsi_;
  mutable std::mutex mu_;
  std::map<uint32_t, Vector> vectors_;  // gsi -> its MSI
  std::vector<uint32_t> free_gsis_;     // released GSIs, reused first
  uint32_t next_gsi_;
};

}  // namespace ringvm
