// Host-KVM checks of the PCI interrupt plumbing: the routing table MsiRouter builds is accepted by
// KVM_SET_GSI_ROUTING, MSI-X vectors really hold irqfds, and virtio-pci doorbells really are
// ioeventfds that follow the BAR. No vCPU runs. Skips where /dev/kvm is missing or unusable.
#include <gtest/gtest.h>
#include <linux/pci_regs.h>
#include <sys/eventfd.h>

#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>

#include "base/unique_fd.h"
#include "devices/bus.h"
#include "devices/pci/interrupt_controller.h"
#include "devices/pci/msi.h"
#include "devices/pci/msix.h"
#include "devices/pci/pci_bus.h"
#include "devices/pci/testing/test_pci_bus.h"
#include "devices/virtio/virtio_pci.h"
#include "kvm/system.h"
#include "kvm/vm.h"
#include "memory/guest_memory.h"

namespace ringvm {
namespace {

class OneQueueDevice final : public VirtioDevice {
 public:
  Result<void> pause() override { return Ok(); }
  Result<void> resume() override { return Ok(); }
  std::string_view name() const override { return "kvm-test"; }
  uint32_t device_type() const override { return VIRTIO_ID_RNG; }
  uint64_t device_features() const override { return 1ULL << VIRTIO_F_VERSION_1; }
  std::vector<uint16_t> queue_max_sizes() const override { return {64}; }
  void read_config(uint64_t, std::span<uint8_t>) const override {}
  void write_config(uint64_t, std::span<const uint8_t>) override {}
  Result<void> activate(const GuestMemory&, uint64_t, std::vector<ActivatedQueue>) override { return Ok(); }
  void reset() override {}
};

class PciKvmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto sys = KvmSystem::open();
    if (!sys) GTEST_SKIP() << "host KVM unusable, skipping: " << sys.error().message();
    sys_ = std::make_unique<KvmSystem>(std::move(*sys));
    auto vm = sys_->create_vm();
    ASSERT_TRUE(vm.ok()) << vm.error().message();
    vm_ = std::make_unique<KvmVm>(std::move(*vm));
    if (auto r = vm_->create_irqchip(); !r.ok()) GTEST_SKIP() << "no in-kernel irqchip: " << r.error().message();
    if (vm_->check_extension(KVM_CAP_IRQ_ROUTING) == 0 || vm_->check_extension(KVM_CAP_IRQFD) == 0 ||
        vm_->check_extension(KVM_CAP_IOEVENTFD) == 0)
      GTEST_SKIP() << "host KVM lacks GSI routing, irqfd or ioeventfd";
    ic_ = std::make_unique<KvmInterruptController>(*vm_);
    router_ = std::make_unique<MsiRouter>(*ic_);
    auto installed = router_->install();
    ASSERT_TRUE(installed.ok()) << installed.error().message();
  }

  std::unique_ptr<KvmSystem> sys_;
  std::unique_ptr<KvmVm> vm_;
  std::unique_ptr<KvmInterruptController> ic_;
  std::unique_ptr<MsiRouter> router_;
};

TEST_F(PciKvmTest, MsixVectorsHoldRealIrqfdsAndRoutes) {
  auto table = MsixTable::create(2, *router_);
  ASSERT_TRUE(table.ok()) << table.error().message();
  MsixTable& t = **table;
  // KVM refuses a second irqfd for the same eventfd: proof that the first is in place.
  auto again = vm_->register_irqfd(t.eventfd(0), t.gsi(0));
  EXPECT_FALSE(again.ok());
  // Program and unmask vector 1, enable MSI-X, fire: the route commit must be accepted.
  std::array<uint8_t, 4> addr = {0x00, 0x00, 0xE0, 0xFE}, data = {0x31, 0, 0, 0}, unmask = {0, 0, 0, 0};
  t.table_write(16 + PCI_MSIX_ENTRY_LOWER_ADDR, addr);
  t.table_write(16 + PCI_MSIX_ENTRY_DATA, data);
  t.table_write(16 + PCI_MSIX_ENTRY_VECTOR_CTRL, unmask);
  t.write_message_control(PCI_MSIX_FLAGS_ENABLE);
  t.fire(1);
  EXPECT_FALSE(t.pending(1)) << "the route was refused, so the vector stayed pending";
  // Releasing the table unbinds the irqfds: the eventfd can be bound again.
  const uint32_t gsi = t.gsi(0);
  UniqueFd fd(::eventfd(0, EFD_CLOEXEC));
  table->reset();
  EXPECT_TRUE(vm_->register_irqfd(fd.get(), gsi).ok());
  EXPECT_TRUE(vm_->unregister_irqfd(fd.get(), gsi).ok());
}

TEST_F(PciKvmTest, DoorbellIoeventfdsFollowTheBar) {
  GuestMemory mem;
  ASSERT_TRUE(mem.add_region(0, 1 << 20).ok());
  VirtioPciOptions mmio_notify;
  mmio_notify.pio_notify = false;
  auto dev = VirtioPciDevice::create(std::make_shared<OneQueueDevice>(), mem, *ic_, *router_, mmio_notify);
  ASSERT_TRUE(dev.ok()) << dev.error().message();
  Bus pio("pio"), mmio("mmio");
  auto bus = PciBus::create(pio, mmio, testing::test_pci_bus_config());
  ASSERT_TRUE(bus.ok());
  auto slot = (*bus)->add_device(*dev);
  ASSERT_TRUE(slot.ok()) << slot.error().message();
  const uint64_t base = (*bus)->bar_address(*slot, VirtioPciDevice::kBar);
  const uint64_t doorbell = base + VirtioPciDevice::kNotifyOffset;
  const int kick = (*dev)->kick_fd(0);
  // Registered: KVM refuses the same registration twice (EEXIST).
  EXPECT_FALSE(vm_->register_ioeventfd(kick, doorbell, 2, false).ok());
  // Moved: the old doorbell is free, the new one taken.
  const uint64_t moved = base + 0x10'0000;
  (*bus)->config_write(*slot, PCI_BASE_ADDRESS_0, 4, static_cast<uint32_t>(moved));
  ASSERT_EQ((*bus)->bar_address(*slot, VirtioPciDevice::kBar), moved);
  EXPECT_TRUE(vm_->register_ioeventfd(kick, doorbell, 2, false).ok());
  EXPECT_TRUE(vm_->unregister_ioeventfd(kick, doorbell, 2, false).ok());
  EXPECT_FALSE(vm_->register_ioeventfd(kick, moved + VirtioPciDevice::kNotifyOffset, 2, false).ok());
}

TEST_F(PciKvmTest, PortDoorbellIoeventfdsFollowTheIoBar) {
  GuestMemory mem;
  ASSERT_TRUE(mem.add_region(0, 1 << 20).ok());
  auto dev = VirtioPciDevice::create(std::make_shared<OneQueueDevice>(), mem, *ic_, *router_);
  ASSERT_TRUE(dev.ok()) << dev.error().message();
  ASSERT_TRUE((*dev)->pio_notify());
  Bus pio("pio"), mmio("mmio");
  auto bus = PciBus::create(pio, mmio, testing::test_pci_bus_config());
  ASSERT_TRUE(bus.ok());
  auto slot = (*bus)->add_device(*dev);
  ASSERT_TRUE(slot.ok()) << slot.error().message();
  const uint64_t port = (*bus)->bar_address(*slot, VirtioPciDevice::kNotifyIoBar);
  ASSERT_GE(port, 0xC000u);
  const int kick = (*dev)->kick_fd(0);
  // A port ioeventfd is in place (EEXIST), and nothing on the memory BAR.
  EXPECT_FALSE(vm_->register_ioeventfd(kick, port, 2, true).ok());
  const uint64_t mem_doorbell = (*bus)->bar_address(*slot, VirtioPciDevice::kBar) + VirtioPciDevice::kNotifyOffset;
  EXPECT_TRUE(vm_->register_ioeventfd(kick, mem_doorbell, 2, false).ok());
  EXPECT_TRUE(vm_->unregister_ioeventfd(kick, mem_doorbell, 2, false).ok());
  // The guest moves the I/O BAR: the old port is free, the new one taken.
  const uint64_t moved = port + 0x100;
  (*bus)->config_write(*slot, PCI_BASE_ADDRESS_0 + 4 * VirtioPciDevice::kNotifyIoBar, 4,
                       static_cast<uint32_t>(moved) | PCI_BASE_ADDRESS_SPACE_IO);
  ASSERT_EQ((*bus)->bar_address(*slot, VirtioPciDevice::kNotifyIoBar), moved);
  EXPECT_TRUE(vm_->register_ioeventfd(kick, port, 2, true).ok());
  EXPECT_TRUE(vm_->unregister_ioeventfd(kick, port, 2, true).ok());
  EXPECT_FALSE(vm_->register_ioeventfd(kick, moved, 2, true).ok());
}

}  // namespace
}  // namespace ringvm
