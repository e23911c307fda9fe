// A hostile guest against ringvm's virtio-blk on the host's /dev/kvm: a VM assembled from
// ringvm's own parts (GuestMemory, KvmVm with its in-kernel irqchip, PciBus, MsiRouter,
// VirtioPciDevice over a VirtioBlock on a scratch raw file, a SerialPort) runs the tiny driver of
// tests/guests/hostile_virtio_blk.s. It finds the device on PCI, sets up a queue and posts a loop,
// a buffer outside guest memory, a chain longer than the queue, an indirect table inside an
// indirect table and a zero-length buffer, then one good read. The test checks that every bad
// chain was rejected and counted, the good read completed with the file's bytes, the device never
// asked for a reset, and the UART still answers. Skips where /dev/kvm is missing or unusable.
#include <gtest/gtest.h>
#include <linux/kvm.h>
#include <linux/virtio_blk.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <iterator>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "block/raw_disk.h"
#include "devices/bus.h"
#include "devices/legacy/serial.h"
#include "devices/pci/interrupt_controller.h"
#include "devices/pci/msi.h"
#include "devices/pci/pci_bus.h"
#include "devices/pci/testing/test_pci_bus.h"
#include "devices/virtio/block/virtio_block.h"
#include "devices/virtio/queue.h"
#include "devices/virtio/ring_abi.h"
#include "devices/virtio/virtio_pci.h"
#include "kvm/system.h"
#include "kvm/vcpu.h"
#include "kvm/vcpu_thread.h"
#include "kvm/vm.h"
#include "memory/guest_memory.h"
#include "vmm/bus_exit_handler.h"

namespace ringvm {
namespace {

using namespace std::chrono_literals;

// The guest's layout (tests/guests/hostile_virtio_blk.s).
constexpr uint64_t kLoadAddr = 0x1000;
constexpr uint64_t kRamBytes = 1 << 20;
constexpr uint64_t kUsedRing = 0x12000;
constexpr uint64_t kDataBuffer = 0x15000;
constexpr uint64_t kStatusByte = 0x15200;
constexpr uint16_t kReportPort = 0x510;
constexpr uint16_t kSerialPort = 0x3f8;
constexpr uint32_t kDone = 0xD0D0'D0D0;
constexpr uint16_t kQueueSize = 8;  // the device's maximum: a 9-descriptor chain is too long
// The guest runs a few thousand instructions; PVM emulates them at ~2M instr/s, plus the poll.
constexpr auto kGuestDeadline = 60s;

// Records the guest's 32-bit reports; the done word makes the vCPU leave KVM_RUN.
class ReportPort final : public Device {
 public:
  explicit ReportPort(const KvmVcpu* const* vcpu) : vcpu_(vcpu) {}
  std::string_view name() const override { return "report"; }
  void read(uint64_t, std::span<uint8_t> data) override { std::fill(data.begin(), data.end(), 0); }
  void write(uint64_t offset, std::span<const uint8_t> data) override {
    if (offset != 0 || data.size() != 4) return;
    const uint32_t v = data[0] | data[1] << 8 | data[2] << 16 | static_cast<uint32_t>(data[3]) << 24;
    std::lock_guard lock(mu_);
    values_.push_back(v);
    // Done or failed: stop the vCPU instead of waiting for a HLT the in-kernel LAPIC keeps.
    if ((v == kDone || (v >> 20) == 0xBAD) && *vcpu_ != nullptr) (*vcpu_)->request_exit();
  }
  std::vector<uint32_t> values() const {
    std::lock_guard lock(mu_);
    return values_;
  }

 private:
  const KvmVcpu* const* vcpu_;
  mutable std::mutex mu_;
  std::vector<uint32_t> values_;
};

// Passes everything to the VirtioBlock and keeps the activated queue, whose VirtQueue (owned by
// the transport) carries the per-kind counters of rejected chains.
class QueueSpy final : public VirtioDevice {
 public:
  Result<void> pause() override { return Ok(); }
  Result<void> resume() override { return Ok(); }
  explicit QueueSpy(std::shared_ptr<VirtioBlock> blk) : blk_(std::move(blk)) {}
  std::string_view name() const override { return blk_->name(); }
  uint32_t device_type() const override { return blk_->device_type(); }
  uint64_t device_features() const override { return blk_->device_features(); }
  std::vector<uint16_t> queue_max_sizes() const override { return blk_->queue_max_sizes(); }
  void read_config(uint64_t offset, std::span<uint8_t> data) const override {
    blk_->read_config(offset, data);
  }
  void write_config(uint64_t offset, std::span<const uint8_t> data) override {
    blk_->write_config(offset, data);
  }
  Result<void> activate(const GuestMemory& mem, uint64_t features,
                        std::vector<ActivatedQueue> queues) override {
    queue_ = queues.empty() ? nullptr : queues[0].queue;
    features_ = features;
    return blk_->activate(mem, features, std::move(queues));
  }
  void reset() override { blk_->reset(); }

  const VirtQueue* queue() const { return queue_; }
  uint64_t features() const { return features_; }

 private:
  std::shared_ptr<VirtioBlock> blk_;
  const VirtQueue* queue_ = nullptr;
  uint64_t features_ = 0;
};

class HostileVirtioTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto sys = KvmSystem::open();
    if (!sys) GTEST_SKIP() << "host KVM unusable, skipping: " << sys.error().message();
    sys_ = std::make_unique<KvmSystem>(std::move(*sys));
    auto vm = sys_->create_vm();
    ASSERT_TRUE(vm.ok()) << vm.error().message();
    vm_ = std::make_unique<KvmVm>(std::move(*vm));
    if (auto r = vm_->create_irqchip(); !r.ok())
      GTEST_SKIP() << "no in-kernel irqchip: " << r.error().message();
    (void)vm_->set_tss_addr(0xfffb'd000);  // Intel without unrestricted guest; PVM refuses, needs none
    ASSERT_TRUE(mem_.add_region(0, kRamBytes).ok());
    ASSERT_TRUE(vm_->map_memory(mem_).ok());
    ic_ = std::make_unique<KvmInterruptController>(*vm_);
    router_ = std::make_unique<MsiRouter>(*ic_);
    auto installed = router_->install();
    ASSERT_TRUE(installed.ok()) << installed.error().message();

    // The disk: 64 KiB whose byte i is (i * 7 + i / 256) & 0xff, so every sector differs.
    disk_path_ =
        std::filesystem::temp_directory_path() / ("ringvm-hostile-" + std::to_string(::getpid()) + ".raw");
    file_bytes_.resize(64 * 1024);
    for (size_t i = 0; i < file_bytes_.size(); ++i) file_bytes_[i] = static_cast<uint8_t>(i * 7 + i / 256);
    std::ofstream(disk_path_, std::ios::binary)
        .write(reinterpret_cast<const char*>(file_bytes_.data()),  // SAFETY: bytes as chars
               static_cast<std::streamsize>(file_bytes_.size()));
    auto disk = RawDisk::open(disk_path_.string(), false);
    ASSERT_TRUE(disk.ok()) << disk.error().message();
    VirtioBlockOptions opts;
    opts.id = "hostile-blk";
    opts.queue_size = kQueueSize;
    auto blk = VirtioBlock::create(std::shared_ptr<Disk>(std::move(*disk)), opts);
    ASSERT_TRUE(blk.ok()) << blk.error().message();
    blk_ = std::shared_ptr<VirtioBlock>(std::move(*blk));
    spy_ = std::make_shared<QueueSpy>(blk_);
    auto pci_dev = VirtioPciDevice::create(spy_, mem_, *ic_, *router_);
    ASSERT_TRUE(pci_dev.ok()) << pci_dev.error().message();
    pci_dev_ = *pci_dev;
    auto bus = PciBus::create(pio_, mmio_, testing::test_pci_bus_config());
    ASSERT_TRUE(bus.ok()) << bus.error().message();
    pci_ = *bus;
    auto slot = pci_->add_device(pci_dev_);
    ASSERT_TRUE(slot.ok()) << slot.error().message();
    slot_ = *slot;

    serial_ = std::make_shared<SerialPort>(
        "ttyS0", [](bool) {},
        [this](std::span<const uint8_t> b) {
          std::lock_guard lock(serial_mu_);
          serial_out_.append(b.begin(), b.end());
        });
    ASSERT_TRUE(pio_.insert(kSerialPort, SerialPort::kSize, serial_).ok());
    report_ = std::make_shared<ReportPort>(&vcpu_raw_);
    ASSERT_TRUE(pio_.insert(kReportPort, 4, report_).ok());
  }

  void TearDown() override {
    if (blk_) blk_->reset();  // stop the worker before the memory and files go
    if (!disk_path_.empty()) std::filesystem::remove(disk_path_);
  }

  void load_guest() {
    const std::string path = std::string(RINGVM_GUESTS_DIR) + "/hostile_virtio_blk.bin";
    std::ifstream in(path, std::ios::binary);
    ASSERT_TRUE(in.good()) << "cannot read test guest " << path << ": build target ringvm_test_guests";
    const std::vector<uint8_t> code{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    ASSERT_FALSE(code.empty());
    ASSERT_TRUE(mem_.write(kLoadAddr, code).ok());
  }

  // 32-bit flat protected mode (no paging) at kLoadAddr: BAR 0 sits just above 3 GiB.
  void enter_protected_mode() {
    auto vcpu = vm_->create_vcpu(0);
    ASSERT_TRUE(vcpu.ok()) << vcpu.error().message();
    vcpu_ = std::make_unique<KvmVcpu>(std::move(*vcpu));
    vcpu_raw_ = vcpu_.get();
    constexpr uint64_t kGdt = 0x500;
    // Null, 32-bit code (P, DPL0, execute/read, D=1, 4 GiB), data (P, read/write, B=1, 4 GiB).
    const uint64_t gdt[3] = {0, 0x00cf'9a00'0000'ffff, 0x00cf'9200'0000'ffff};
    ASSERT_TRUE(mem_.write_obj(kGdt, gdt).ok());
    auto sregs = vcpu_->get_sregs();
    ASSERT_TRUE(sregs.ok()) << sregs.error().message();
    kvm_sregs s = *sregs;
    kvm_segment code{};
    code.limit = 0xffff'ffff;
    code.selector = 0x8;
    code.type = 0xb;  // execute/read, accessed
    code.present = 1;
    code.s = 1;
    code.db = 1;
    code.g = 1;
    kvm_segment data = code;
    data.selector = 0x10;
    data.type = 0x3;  // read/write, accessed
    s.cs = code;
    s.ds = s.es = s.fs = s.gs = s.ss = data;
    s.gdt.base = kGdt;
    s.gdt.limit = sizeof(gdt) - 1;
    s.cr0 = (1u << 0) | (1u << 4) | (1u << 5);  // PE, ET, NE
    s.cr4 = 0;
    s.efer = 0;
    ASSERT_TRUE(vcpu_->set_sregs(s).ok());
    kvm_regs r{};
    r.rip = kLoadAddr;
    r.rflags = 0x2;  // interrupts off; bit 1 is reserved and must be set
    ASSERT_TRUE(vcpu_->set_regs(r).ok());
  }

  // Runs the vCPU until the guest reports done (or fails); kicks it out at the deadline.
  Result<VcpuExit> run_bounded() {
    std::promise<Result<VcpuExit>> done;
    auto fut = done.get_future();
    VcpuThread thread;
    thread.start(vcpu_.get(), [&] { done.set_value(vcpu_->run(exits_, &counters_)); });
    if (fut.wait_for(kGuestDeadline) != std::future_status::ready) {
      ADD_FAILURE() << "the guest did not finish within " << kGuestDeadline.count() << " s; kicking it";
      while (fut.wait_for(100ms) != std::future_status::ready) thread.kick();
    }
    thread.join();
    return fut.get();
  }

  std::unique_ptr<KvmSystem> sys_;
  std::unique_ptr<KvmVm> vm_;
  GuestMemory mem_;
  std::unique_ptr<KvmInterruptController> ic_;
  std::unique_ptr<MsiRouter> router_;
  Bus pio_{"pio"};
  Bus mmio_{"mmio"};
  BusExitHandler exits_{pio_, mmio_};
  std::shared_ptr<PciBus> pci_;
  std::filesystem::path disk_path_;
  std::vector<uint8_t> file_bytes_;
  std::shared_ptr<VirtioBlock> blk_;
  std::shared_ptr<QueueSpy> spy_;
  std::shared_ptr<VirtioPciDevice> pci_dev_;
  uint8_t slot_ = 0;
  std::shared_ptr<SerialPort> serial_;
  std::mutex serial_mu_;
  std::string serial_out_;
  std::shared_ptr<ReportPort> report_;
  std::unique_ptr<KvmVcpu> vcpu_;
  const KvmVcpu* vcpu_raw_ = nullptr;
  ExitCounters counters_;
};

TEST_F(HostileVirtioTest, MalformedChainsAreRejectedAndCountedWhileGoodRequestsAndOtherDevicesWork) {
  ASSERT_NO_FATAL_FAILURE(load_guest());
  ASSERT_NO_FATAL_FAILURE(enter_protected_mode());
  auto exit = run_bounded();
  ASSERT_TRUE(exit.ok()) << exit.error().message();
  EXPECT_EQ(exit->kind, VcpuExitKind::kKicked) << kvm_exit_reason_name(exit->raw_reason) << "\n"
                                               << vcpu_->dump_state();

  // The guest's own account, in order (see the guest's header).
  const auto r = report_->values();
  ASSERT_EQ(r.size(), 10u) << "the guest stopped early; last report " << std::hex
                           << (r.empty() ? 0u : r.back()) << "\n"
                           << vcpu_->dump_state();
  EXPECT_EQ(r[0], slot_) << "the guest found the device in its slot through CF8/CFC";
  EXPECT_EQ(r[1], pci_->bar_address(slot_, VirtioPciDevice::kBar)) << "BAR 0 as the bus mapped it";
  const uint64_t offered = uint64_t{r[3]} << 32 | r[2];
  EXPECT_EQ(offered, blk_->device_features());
  EXPECT_EQ(r[4], 0x0bu) << "FEATURES_OK accepted";
  EXPECT_EQ(r[5], 6u) << "all six chains came back in the used ring";
  EXPECT_EQ(r[6], VIRTIO_BLK_S_OK) << "the good read's status byte";
  EXPECT_EQ(r[7], 0x0fu) << "device status: DRIVER_OK and no DEVICE_NEEDS_RESET";
  EXPECT_EQ(r[8], 0xa5u) << "the UART's scratch register answers";
  EXPECT_EQ(r[9], kDone);
  {
    std::lock_guard lock(serial_mu_);
    EXPECT_EQ(serial_out_, "OK");
  }
  EXPECT_EQ(spy_->features(), (1ULL << VIRTIO_F_VERSION_1) | (1ULL << VIRTIO_RING_F_INDIRECT_DESC));

  // Each malformed chain was rejected for its own reason, the good one handed to the device.
  ASSERT_NE(spy_->queue(), nullptr) << "the device was never activated";
  const QueueStats& qs = spy_->queue()->stats();
  EXPECT_EQ(qs.error(ChainError::kChainTooLong), 2u) << "the loop and the 9-descriptor chain";
  EXPECT_EQ(qs.error(ChainError::kBufferOutsideMemory), 1u);
  EXPECT_EQ(qs.error(ChainError::kNestedIndirect), 1u);
  EXPECT_EQ(qs.error(ChainError::kZeroLength), 1u);
  EXPECT_EQ(qs.total_errors(), 5u);
  EXPECT_EQ(qs.chains.load(), 1u);
  EXPECT_FALSE(spy_->queue()->broken());
  const BlockStats& bs = blk_->stats();
  EXPECT_EQ(bs.reads.load(), 1u);
  EXPECT_EQ(bs.bytes_read.load(), 512u);
  EXPECT_EQ(bs.bad_requests.load() + bs.io_errors.load() + bs.no_status.load() + bs.unsupported.load(), 0u);

  // The used ring: rejected heads with length 0, the good one with 512 data bytes + status.
  struct Used {
    uint16_t head;
    uint32_t len;
  };
  const Used expected[] = {{0, 0}, {2, 0}, {3, 0}, {5, 0}, {6, 0}, {7, 513}};
  for (size_t i = 0; i < std::size(expected); ++i) {
    auto elem = mem_.read_obj<vring_used_elem>(kUsedRing + 4 + i * sizeof(vring_used_elem));
    ASSERT_TRUE(elem.ok());
    EXPECT_EQ(elem->id, expected[i].head) << "used ring entry " << i;
    EXPECT_EQ(elem->len, expected[i].len) << "used ring entry " << i;
  }
  std::vector<uint8_t> data(512);
  ASSERT_TRUE(mem_.read(kDataBuffer, data).ok());
  EXPECT_TRUE(std::equal(data.begin(), data.end(), file_bytes_.begin() + 512)) << "sector 1 of the file";
  auto status = mem_.read_obj<uint8_t>(kStatusByte);
  ASSERT_TRUE(status.ok());
  EXPECT_EQ(*status, VIRTIO_BLK_S_OK);
}

}  // namespace
}  // namespace ringvm
