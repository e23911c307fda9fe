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

// Input the guest had not taken yet when the snapshot was saved reaches it after the restore,
// ahead of input that came later.
TEST(VirtioConsole, PendingInputSurvivesSaveAndRestore) {
  auto wait_for = [](auto done) {
    for (int i = 0; i < 500 && !done(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return done();
  };
  auto a = VirtioConsole::create({});
  ASSERT_TRUE(a.ok());
  FakeDriver drv_a(16, 1 << 20);
  VirtQueue rxa(16);
  drv_a.configure(rxa);
  ASSERT_TRUE((*a)->activate(drv_a.mem(), 1ULL << VIRTIO_F_VERSION_1, {ActivatedQueue{&rxa, -1, [] {}}, ActivatedQueue{}}).ok());
  const std::string in = "typed before the snapshot";
  ASSERT_EQ((*a)->enqueue_input({reinterpret_cast<const uint8_t*>(in.data()), in.size()}), in.size());
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_EQ(drv_a.used_idx(), 0);  // no receive buffer: the input waits
  ASSERT_TRUE((*a)->pause().ok());
  auto state = (*a)->save();
  ASSERT_TRUE(state.ok()) << state.error().message();
  (*a)->reset();

  auto b = VirtioConsole::create({});
  ASSERT_TRUE(b.ok());
  const std::string later = "+after";
  (*b)->enqueue_input({reinterpret_cast<const uint8_t*>(later.data()), later.size()});
  ASSERT_TRUE((*b)->restore(*state).ok());
  std::vector<uint8_t> ca(12), cb(12);
  (*a)->read_config(0, ca);
  (*b)->read_config(0, cb);
  EXPECT_EQ(ca, cb);
  FakeDriver drv(16, 1 << 20);
  VirtQueue rxq(16);
  drv.configure(rxq);
  drv.add_chain(0, {}, {64});
  ASSERT_TRUE((*b)->activate(drv.mem(), 1ULL << VIRTIO_F_VERSION_1, {ActivatedQueue{&rxq, -1, [] {}}, ActivatedQueue{}}).ok());
  ASSERT_TRUE(wait_for([&] { return drv.used_idx() == 1; }));
  const std::string want = in + later;
  ASSERT_EQ(drv.used(0).len, want.size());
  std::string got(want.size(), '\0');
  ASSERT_TRUE(drv.mem().read(FakeDriver::kDataAddr, {reinterpret_cast<uint8_t*>(got.data()), got.size()}).ok());
  EXPECT_EQ(got, want);
  (*b)->reset();
}

TEST(VirtioConsole, RestoreRefusesBadStates) {
  auto a = VirtioConsole::create({});
  ASSERT_TRUE(a.ok());
  const std::string in = "abc";
  (*a)->enqueue_input({reinterpret_cast<const uint8_t*>(in.data()), in.size()});
  const std::vector<uint8_t> good = *(*a)->save();
  auto b = VirtioConsole::create({});
  ASSERT_TRUE(b.ok());
  auto refused = [&](const std::vector<uint8_t>& s, ErrorCode code, std::string_view says) {
    auto r = (*b)->restore(s);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, code) << r.error().message();
    EXPECT_NE(r.error().message().find(says), std::string::npos) << r.error().message();
  };
  for (size_t len = 0; len < good.size(); ++len)
    refused(std::vector<uint8_t>(good.begin(), good.begin() + static_cast<ptrdiff_t>(len)), ErrorCode::kCorrupt,
            "state ends after");
  auto trailing = good;
  trailing.push_back(0);
  refused(trailing, ErrorCode::kCorrupt, "follow the end");
  auto big = good;
  big[4 + 8 + 8 + 2] = 0x10;  // pending input claims 1 MiB + 3 bytes
  refused(big, ErrorCode::kCorrupt, "pending_input");
  auto cols = good;
  cols[4 + 8] = 80;
  refused(cols, ErrorCode::kInvalidArgument, "80x0 with 0 ports; this device's is 0x0 with 0");
  auto features = good;
  features[4 + 4] ^= 1;  // VIRTIO_F_VERSION_1 is bit 32
  refused(features, ErrorCode::kInvalidArgument, "this device offers");
  // Refused states added no input: a good one brings exactly the saved bytes.
  ASSERT_TRUE((*b)->restore(good).ok());
  EXPECT_EQ((*b)->save().value(), good);
}

}  // namespace
}  // namespace ringvm
