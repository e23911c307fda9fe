// Runs the tiny guests of tests/guests through ringvm's KVM layer (KvmSystem, KvmVm, GuestMemory,
// KvmVcpu::run with port I/O and MMIO buses, VcpuThread) on the host's /dev/kvm, and checks every
// exit the guest causes: the bytes it writes, the value it reads, the MMIO write, the HLT and the
// exit counters.
#include <gtest/gtest.h>
#include <linux/kvm.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "devices/bus.h"
#include "devices/device.h"
#include "kvm/system.h"
#include "kvm/vcpu.h"
#include "kvm/vcpu_thread.h"
#include "kvm/vm.h"
#include "memory/guest_memory.h"
#include "vmm/bus_exit_handler.h"

namespace ringvm {
namespace {

using namespace std::chrono_literals;

constexpr uint64_t kLoadAddr = 0x1000;   // every guest is linked and entered here
constexpr uint16_t kSerialPort = 0x3f8;  // the guests write "OK" here
constexpr uint16_t kTestPort = 0x510;    // the guests read a 32-bit value here
constexpr uint32_t kTestPortValue = 0x12345677;
constexpr uint64_t kRealModeMmio = 0xd0010;      // real-mode guest: segment 0xd000, offset 0x10
constexpr uint64_t kLongModeMmio = 0x1000'0000;  // 64-bit guest: identity-mapped, outside RAM
// A guest that has not halted by then is stuck (PVM emulates non-PVM guests at ~2M instr/s; the
// guests run a dozen instructions).
constexpr auto kGuestDeadline = 20s;

std::vector<uint8_t> read_guest_binary(const std::string& name) {
  const std::string path = std::string(RINGVM_GUESTS_DIR) + "/" + name;
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot read test guest " << path << ": build target ringvm_test_guests";
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Records every access; reads return `read_value` (little-endian, truncated to the access size).
class RecordingDevice final : public Device {
 public:
  struct Access {
    bool is_write;
    uint64_t offset;
    std::vector<uint8_t> data;
  };
  RecordingDevice(std::string name, uint32_t read_value) : name_(std::move(name)), read_value_(read_value) {}
  std::string_view name() const override { return name_; }
  void read(uint64_t offset, std::span<uint8_t> data) override {
    for (size_t i = 0; i < data.size(); ++i)
      data[i] = i < 4 ? static_cast<uint8_t>(read_value_ >> (8 * i)) : 0;
    std::lock_guard lock(mu_);
    accesses_.push_back({false, offset, {data.begin(), data.end()}});
  }
  void write(uint64_t offset, std::span<const uint8_t> data) override {
    std::lock_guard lock(mu_);
    accesses_.push_back({true, offset, {data.begin(), data.end()}});
  }
  std::vector<Access> accesses() const {
    std::lock_guard lock(mu_);
    return accesses_;
  }

 private:
  std::string name_;
  uint32_t read_value_;
  mutable std::mutex mu_;
  std::vector<Access> accesses_;
};

uint32_t le32(const std::vector<uint8_t>& b) {
  uint32_t v = 0;
  for (size_t i = 0; i < b.size() && i < 4; ++i) v |= static_cast<uint32_t>(b[i]) << (8 * i);
  return v;
}

// One VM with one vCPU, its RAM at guest-physical 0, and recording devices on both buses.
class GuestRunTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto sys = KvmSystem::open();
    if (!sys) GTEST_SKIP() << "host KVM unusable, skipping: " << sys.error().message();
    sys_ = std::make_unique<KvmSystem>(std::move(*sys));
    serial_ = std::make_shared<RecordingDevice>("test-serial", 0);
    test_port_ = std::make_shared<RecordingDevice>("test-port", kTestPortValue);
    ASSERT_TRUE(pio_.insert(kSerialPort, 8, serial_).ok());
    ASSERT_TRUE(pio_.insert(kTestPort, 4, test_port_).ok());
  }

  // Creates the VM with `ram_bytes` of RAM, loads `guest` at kLoadAddr and an MMIO recorder at
  // `mmio_base`.
  void make_vm(uint64_t ram_bytes, const std::string& guest, uint64_t mmio_base) {
    auto vm = sys_->create_vm();
    ASSERT_TRUE(vm.ok()) << vm.error().message();
    vm_ = std::make_unique<KvmVm>(std::move(*vm));
    // Intel without unrestricted guest needs these for real mode; elsewhere they are harmless.
    // PVM rejects them, and needs neither.
    (void)vm_->set_tss_addr(0xfffb'd000);
    (void)vm_->set_identity_map_addr(0xfffb'c000);
    ASSERT_TRUE(mem_.add_region(0, ram_bytes).ok());
    ASSERT_TRUE(vm_->map_memory(mem_).ok());
    const auto code = read_guest_binary(guest);
    ASSERT_FALSE(code.empty());
    ASSERT_TRUE(mem_.write(kLoadAddr, code).ok());
    mmio_dev_ = std::make_shared<RecordingDevice>("test-mmio", 0);
    ASSERT_TRUE(mmio_.insert(mmio_base, 0x1000, mmio_dev_).ok());
    auto vcpu = vm_->create_vcpu(0);
    ASSERT_TRUE(vcpu.ok()) << vcpu.error().message();
    vcpu_ = std::make_unique<KvmVcpu>(std::move(*vcpu));
  }

  void enter_real_mode() {
    auto r = vcpu_->enter_real_mode(kLoadAddr);
    ASSERT_TRUE(r.ok()) << r.error().message();
  }

  // Identity-maps the first 1 GiB with 2 MiB pages, installs a GDT with a 64-bit code segment and
  // enters long mode directly at kLoadAddr.
  void enter_long_mode() {
    constexpr uint64_t kGdt = 0x500, kPml4 = 0x10000, kPdpt = 0x11000, kPd = 0x12000;
    constexpr uint64_t kPresentWritable = 0x3, kPageSize2M = 0x80;
    ASSERT_TRUE(mem_.write_obj<uint64_t>(kPml4, kPdpt | kPresentWritable).ok());
    ASSERT_TRUE(mem_.write_obj<uint64_t>(kPdpt, kPd | kPresentWritable).ok());
    for (uint64_t i = 0; i < 512; ++i)
      ASSERT_TRUE(mem_.write_obj<uint64_t>(kPd + i * 8, (i << 21) | kPresentWritable | kPageSize2M).ok());
    // Null, 64-bit code (L=1, P, DPL0, execute/read), data (P, read/write, 4 GiB flat).
    const uint64_t gdt[3] = {0, 0x00af'9a00'0000'ffff, 0x00cf'9200'0000'ffff};
    ASSERT_TRUE(mem_.write_obj(kGdt, gdt).ok());

    auto sregs = vcpu_->get_sregs();
    ASSERT_TRUE(sregs.ok()) << sregs.error().message();
    kvm_sregs s = *sregs;
    kvm_segment code{};
    code.base = 0;
    code.limit = 0xffff'ffff;
    code.selector = 0x8;
    code.type = 0xb;  // execute/read, accessed
    code.present = 1;
    code.s = 1;
    code.l = 1;
    code.g = 1;
    kvm_segment data = code;
    data.selector = 0x10;
    data.type = 0x3;  // read/write, accessed
    data.l = 0;
    data.db = 1;
    s.cs = code;
    s.ds = s.es = s.fs = s.gs = s.ss = data;
    s.gdt.base = kGdt;
    s.gdt.limit = sizeof(gdt) - 1;
    s.cr3 = kPml4;
    s.cr4 = 1u << 5;                                         // PAE
    s.cr0 = (1u << 0) | (1u << 4) | (1u << 5) | (1u << 31);  // PE, ET, NE, PG
    s.efer = (1u << 8) | (1u << 10);                         // LME, LMA
    ASSERT_TRUE(vcpu_->set_sregs(s).ok());
    kvm_regs r{};
    r.rip = kLoadAddr;
    r.rflags = 0x2;
    r.rsp = 0x8000;
    ASSERT_TRUE(vcpu_->set_regs(r).ok());
  }

  // Runs the vCPU on its own thread; kicks it out if it has not returned by `deadline`.
  Result<VcpuExit> run_bounded(std::chrono::seconds deadline, std::chrono::milliseconds* took = nullptr) {
    std::promise<Result<VcpuExit>> done;
    auto fut = done.get_future();
    VcpuThread thread;
    const auto start = std::chrono::steady_clock::now();
    thread.start(vcpu_.get(), [&] { done.set_value(vcpu_->run(exits_, &counters_)); });
    if (fut.wait_for(deadline) != std::future_status::ready) {
      ADD_FAILURE() << "the guest did not exit within " << deadline.count() << " s; kicking it";
      while (fut.wait_for(100ms) != std::future_status::ready) thread.kick();
    }
    if (took != nullptr)
      *took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
    thread.join();
    return fut.get();
  }

  uint64_t exits(uint32_t reason) const { return counters_.by_reason[reason].load(); }

  // What both PIO/MMIO guests must have done; their MMIO write lands at `mmio_offset` in the page.
  void expect_guest_conversation(uint64_t mmio_offset) {
    const auto serial = serial_->accesses();
    ASSERT_EQ(serial.size(), 2u);
    EXPECT_TRUE(serial[0].is_write);
    EXPECT_EQ(serial[0].offset, 0u);
    EXPECT_EQ(serial[0].data, std::vector<uint8_t>{'O'});
    EXPECT_TRUE(serial[1].is_write);
    EXPECT_EQ(serial[1].data, std::vector<uint8_t>{'K'});

    const auto port = test_port_->accesses();
    ASSERT_EQ(port.size(), 1u);
    EXPECT_FALSE(port[0].is_write);
    EXPECT_EQ(port[0].offset, 0u);
    EXPECT_EQ(port[0].data.size(), 4u);

    const auto mmio = mmio_dev_->accesses();
    ASSERT_EQ(mmio.size(), 1u);
    EXPECT_TRUE(mmio[0].is_write);
    EXPECT_EQ(mmio[0].offset, mmio_offset);
    ASSERT_EQ(mmio[0].data.size(), 4u);
    EXPECT_EQ(le32(mmio[0].data), kTestPortValue + 1) << "the guest writes back what it read plus one";

    EXPECT_EQ(exits(KVM_EXIT_IO), 3u);
    EXPECT_EQ(exits(KVM_EXIT_MMIO), 1u);
    EXPECT_EQ(exits(KVM_EXIT_HLT), 1u);
    EXPECT_EQ(counters_.pio_unclaimed.load(), 0u);
    EXPECT_EQ(counters_.mmio_unclaimed.load(), 0u);
    EXPECT_EQ(pio_.unclaimed(), 0u);
    EXPECT_EQ(mmio_.unclaimed(), 0u);
  }

  std::unique_ptr<KvmSystem> sys_;
  std::unique_ptr<KvmVm> vm_;
  GuestMemory mem_;
  std::unique_ptr<KvmVcpu> vcpu_;
  Bus pio_{"pio"};
  Bus mmio_{"mmio"};
  BusExitHandler exits_{pio_, mmio_};
  std::shared_ptr<RecordingDevice> serial_, test_port_, mmio_dev_;
  ExitCounters counters_;
};

TEST_F(GuestRunTest, LongModeGuestDoesPortIoMmioAndHalts) {
  ASSERT_NO_FATAL_FAILURE(make_vm(2 << 20, "pio_mmio_long64.bin", kLongModeMmio));
  ASSERT_NO_FATAL_FAILURE(enter_long_mode());
  auto exit = run_bounded(kGuestDeadline);
  ASSERT_TRUE(exit.ok()) << exit.error().message();
  EXPECT_EQ(exit->kind, VcpuExitKind::kHalt) << kvm_exit_reason_name(exit->raw_reason) << "\n"
                                             << vcpu_->dump_state();
  EXPECT_EQ(exit->raw_reason, static_cast<uint32_t>(KVM_EXIT_HLT));
  expect_guest_conversation(0);
  auto regs = vcpu_->get_regs();
  ASSERT_TRUE(regs.ok());
  EXPECT_EQ(regs->rax & 0xffff'ffff, kTestPortValue + 1);
  EXPECT_EQ(regs->rbx, kLongModeMmio);
}

TEST_F(GuestRunTest, RealModeGuestDoesPortIoMmioAndHalts) {
  ASSERT_NO_FATAL_FAILURE(make_vm(512 << 10, "pio_mmio_real16.bin", kRealModeMmio & ~0xfffull));
  ASSERT_NO_FATAL_FAILURE(enter_real_mode());
  auto exit = run_bounded(kGuestDeadline);
  ASSERT_TRUE(exit.ok()) << exit.error().message();
  EXPECT_EQ(exit->kind, VcpuExitKind::kHalt) << kvm_exit_reason_name(exit->raw_reason) << "\n"
                                             << vcpu_->dump_state();
  EXPECT_EQ(exit->raw_reason, static_cast<uint32_t>(KVM_EXIT_HLT));
  expect_guest_conversation(kRealModeMmio & 0xfff);
  auto regs = vcpu_->get_regs();
  ASSERT_TRUE(regs.ok());
  EXPECT_EQ(regs->rax & 0xffff'ffff, kTestPortValue + 1);
  auto sregs = vcpu_->get_sregs();
  ASSERT_TRUE(sregs.ok());
  EXPECT_EQ(sregs->ds.selector, 0xd000) << "the guest addressed MMIO through DS";
  EXPECT_EQ(sregs->cr0 & 1, 0u) << "the guest ran in real mode";
}

TEST_F(GuestRunTest, VcpuThreadKickStopsASpinningGuest) {
  ASSERT_NO_FATAL_FAILURE(make_vm(2 << 20, "spin.bin", kLongModeMmio));
  ASSERT_NO_FATAL_FAILURE(enter_long_mode());
  std::promise<Result<VcpuExit>> done;
  auto fut = done.get_future();
  VcpuThread thread;
  thread.start(vcpu_.get(), [&] { done.set_value(vcpu_->run(exits_, &counters_)); });
  // Long enough that the vCPU is inside KVM_RUN spinning, not just about to enter it.
  EXPECT_EQ(fut.wait_for(300ms), std::future_status::timeout) << "the spinning guest exited on its own";
  const auto kicked_at = std::chrono::steady_clock::now();
  thread.kick();
  const bool returned = fut.wait_for(2s) == std::future_status::ready;
  const auto latency = std::chrono::steady_clock::now() - kicked_at;
  if (!returned) {
    ADD_FAILURE() << "run() did not return within 2 s of kick()";
    while (fut.wait_for(100ms) != std::future_status::ready) thread.kick();
  }
  thread.join();
  auto exit = fut.get();
  ASSERT_TRUE(exit.ok()) << exit.error().message();
  EXPECT_EQ(exit->kind, VcpuExitKind::kKicked);
  EXPECT_LT(latency, 2s);
  // The kick is consumed: the next run() enters the guest again instead of returning at once.
  EXPECT_EQ(vcpu_->run_area()->immediate_exit, 0);
  auto regs = vcpu_->get_regs();
  ASSERT_TRUE(regs.ok());
  EXPECT_EQ(regs->rip, kLoadAddr) << "the guest spins on its first instruction";
}

// --halt-poll-us: KVM_CAP_HALT_POLL is a per-VM override of kvm.halt_poll_ns (Linux 5.8+).
TEST_F(GuestRunTest, VmTakesPerVmHaltPollingLimit) {
  auto vm = sys_->create_vm();
  ASSERT_TRUE(vm.ok()) << vm.error().message();
  if (vm->check_extension(KVM_CAP_HALT_POLL) <= 0) GTEST_SKIP() << "host KVM lacks KVM_CAP_HALT_POLL (Linux < 5.8)";
  EXPECT_TRUE(vm->set_max_halt_poll_ns(0).ok()) << "polling off";
  auto r = vm->set_max_halt_poll_ns(50'000);
  EXPECT_TRUE(r.ok()) << r.error().message();
}

}  // namespace
}  // namespace ringvm
