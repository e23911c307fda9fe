#include "devices/virtio/console/virtio_console.h"

#include <gtest/gtest.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>

#include <sys/eventfd.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>

#include "devices/virtio/testing/fake_driver.h"

namespace ringvm {
namespace {

using testing::FakeDriver;

// Through the device's own worker thread, as in a VM: kicks on eventfds, input signalled by
// enqueue_input. (Calling on_event from the test while the worker runs its first round raced:
// both served the queues, and an extra interrupt showed up now and then.)
// rx uses the FakeDriver's rings; tx's rings are placed by hand higher in the same memory.
TEST(VirtioConsole, RoundTrip) {
  FakeDriver drv(16, 1 << 20);
  VirtQueue rxq(16), txq(16);
  drv.configure(rxq);
  txq.set_size(16);
  txq.set_desc_addr(0x20000);
  txq.set_avail_addr(0x21000);
  txq.set_used_addr(0x22000);
  txq.set_ready(true);

  std::mutex out_mu;
  std::string out;
  auto con = VirtioConsole::create([&](std::span<const uint8_t> b) {
    std::lock_guard lock(out_mu);
    out.append(b.begin(), b.end());
  });
  ASSERT_TRUE(con.ok());
  auto& c = **con;
  EXPECT_EQ(c.device_type(), uint32_t{VIRTIO_ID_CONSOLE});
  std::atomic<int> irqs{0};
  UniqueFd rx_kick(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)), tx_kick(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  std::vector<ActivatedQueue> qs{ActivatedQueue{&rxq, rx_kick.get(), [&irqs] { ++irqs; }},
                                 ActivatedQueue{&txq, tx_kick.get(), [&irqs] { ++irqs; }}};
  ASSERT_TRUE(c.activate(drv.mem(), 1ULL << VIRTIO_F_VERSION_1, std::move(qs)).ok());
  auto wait_for = [](auto done) {
    for (int i = 0; i < 500 && !done(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return done();
  };

  // Input before any receive buffer waits; then lands in the buffer the guest adds.
  const std::string in = "hello guest";
  EXPECT_EQ(c.enqueue_input({reinterpret_cast<const uint8_t*>(in.data()), in.size()}), in.size());
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(drv.used_idx(), 0) << "input delivered with no receive buffer";
  drv.add_chain(0, {}, {64});
  signal_eventfd(rx_kick.get());
  ASSERT_TRUE(wait_for([&] { return drv.used_idx() == 1; }));
  EXPECT_EQ(drv.used(0).len, in.size());
  std::string got(in.size(), '\0');
  ASSERT_TRUE(drv.mem().read(FakeDriver::kDataAddr, {reinterpret_cast<uint8_t*>(got.data()), got.size()}).ok());
  EXPECT_EQ(got, in);

  // Guest output: a tx chain of two readable buffers at the tx rings.
  const std::string a = "hello ", b = "host";
  ASSERT_TRUE(drv.mem().write(0x30000, {reinterpret_cast<const uint8_t*>(a.data()), a.size()}).ok());
  ASSERT_TRUE(drv.mem().write(0x30100, {reinterpret_cast<const uint8_t*>(b.data()), b.size()}).ok());
  drv.set_desc(0, 0x30000, static_cast<uint32_t>(a.size()), VRING_DESC_F_NEXT, 1, 0x20000);
  drv.set_desc(1, 0x30100, static_cast<uint32_t>(b.size()), 0, 0, 0x20000);
  ASSERT_TRUE(drv.mem().write_obj<uint16_t>(0x21000 + 4, 0).ok());
  ASSERT_TRUE(drv.mem().store_shared<uint16_t>(0x21000 + 2, 1).ok());
  signal_eventfd(tx_kick.get());
  ASSERT_TRUE(wait_for([&] { return c.bytes_out() == 10; }));
  {
    std::lock_guard lock(out_mu);
    EXPECT_EQ(out, "hello host");
  }
  ASSERT_TRUE(wait_for([&] { auto idx = drv.mem().load_shared<uint16_t>(0x22000 + 2);
    return idx.ok() && *idx == 1; }));
  // One interrupt per queue for what it used; nothing more after the worker settles.
  ASSERT_TRUE(wait_for([&] { return irqs.load() == 2; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(irqs.load(), 2);
  c.reset();
}

TEST(VirtioConsole, InputIsBounded) {
  auto con = VirtioConsole::create(nullptr);
  ASSERT_TRUE(con.ok());
  std::vector<uint8_t> big(VirtioConsole::kInputBufferBytes + 100, 'x');
  EXPECT_EQ((*con)->enqueue_input(big), VirtioConsole::kInputBufferBytes);
  EXPECT_EQ((*con)->enqueue_input(big), 0u);
}

}  // namespace
}  // namespace ringvm
