// virtio-net save()/restore(): a device driven into a state (a frame held for the guest, receive
// buffers gathered for it, a transmit frame parked on a full backend, queue pairs enabled through
// the control queue) is saved, a fresh device restores it and, once activated, carries on as the
// first would have. Refused states leave the device as it was.
// (virtio_net.h first: net_abi.h includes <linux/virtio_net.h> the way C++ can.)
#include "devices/virtio/net/virtio_net.h"

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>

#include "devices/virtio/net/net_test_driver.h"
#include "devices/virtio/net/net_test_util.h"

namespace ringvm {
namespace {

using testing::bit;
using testing::kMrg;
using testing::NetTestDriver;
using testing::SocketBackend;

std::vector<uint8_t> frame(size_t len, uint8_t seed) {
  std::vector<uint8_t> f(kNetHdrSize, 0);
  for (size_t i = 0; i < len; ++i) f.push_back(static_cast<uint8_t>(seed + i * 7));
  return f;
}

std::vector<uint8_t> config_of(const VirtioNet& d) {
  std::vector<uint8_t> c(sizeof(virtio_net_config));
  d.read_config(0, c);
  return c;
}

// One device on its own backend, activated on driver queues [first, first + count): the
// restored device gets rings of its own in the same guest memory, positioned at 0 as the saved
// ones' unused part would be (VirtQueue::activate starts at 0; the transport positions them).
struct Dev {
  SocketBackend* be = nullptr;
  std::unique_ptr<VirtioNet> net;
  std::vector<std::unique_ptr<VirtQueue>> queues;

  static Dev make(size_t pairs) {
    Dev d;
    auto backend = std::make_unique<SocketBackend>(pairs);
    d.be = backend.get();
    VirtioNetOptions o;
    o.mac = {0x52, 0x54, 0, 0x12, 0x34, 0x56};
    o.run_workers = false;
    auto n = VirtioNet::create(std::move(backend), o);
    if (!n.ok()) std::abort();
    d.net = std::move(*n);
    return d;
  }
  Result<void> activate(NetTestDriver& drv, size_t first, uint64_t features) {
    std::vector<ActivatedQueue> aq;
    for (size_t i = 0; i < net->queue_max_sizes().size(); ++i) {
      queues.push_back(std::make_unique<VirtQueue>(256));
      drv.configure(first + i, *queues.back());
      aq.push_back(ActivatedQueue{queues.back().get(), -1, [] {}});
    }
    return net->activate(drv.mem(), features, std::move(aq));
  }
};

TEST(VirtioNetState, HeldFrameAndGatheredBuffersArriveAfterRestore) {
  NetTestDriver drv(6, 64);
  Dev a = Dev::make(1);
  ASSERT_TRUE(a.activate(drv, 0, kMrg).ok());
  const auto f = frame(2500, 4);  // 2512 bytes: two 1500-byte buffers
  ASSERT_EQ(::send(a.be->host(0), f.data(), f.size(), 0), static_cast<ssize_t>(f.size()));
  const uint64_t first = drv.add_in(0, 1500);
  a.net->poll_pair(0);
  ASSERT_TRUE(a.net->rx_held(0));  // read, one buffer gathered, waiting for the second
  ASSERT_EQ(drv.used_idx(0), 0);
  ASSERT_TRUE(a.net->pause().ok());
  auto state = a.net->save();
  ASSERT_TRUE(state.ok()) << state.error().message();
  a.net->reset();

  Dev b = Dev::make(1);
  ASSERT_TRUE(b.net->restore(*state).ok());
  EXPECT_EQ(config_of(*b.net), config_of(*a.net));
  ASSERT_TRUE(b.activate(drv, 3, kMrg).ok());
  EXPECT_TRUE(b.net->rx_held(0));
  const uint64_t second = drv.add_in(3, 1500);
  b.net->poll_pair(0);
  EXPECT_FALSE(b.net->rx_held(0));
  ASSERT_EQ(drv.used_idx(3), 2);
  EXPECT_EQ(drv.used(3, 0).len, 1500u);  // the buffer gathered before the snapshot comes first
  EXPECT_EQ(drv.used(3, 1).len, 1012u);
  std::vector<uint8_t> got = drv.read(first, 1500);
  const auto tail = drv.read(second, 1012);
  got.insert(got.end(), tail.begin(), tail.end());
  virtio_net_hdr_v1 h{};
  std::memcpy(&h, got.data(), sizeof h);
  EXPECT_EQ(le16toh(h.num_buffers), 2);
  EXPECT_TRUE(std::equal(f.begin() + kNetHdrSize, f.end(), got.begin() + kNetHdrSize));
  EXPECT_EQ(b.net->stats().rx_frames.load(), 1u);
}

TEST(VirtioNetState, ParkedTransmitFrameLeavesThroughTheNewBackend) {
  NetTestDriver drv(6, 64, 64 << 20);
  Dev a = Dev::make(1);
  ASSERT_TRUE(a.activate(drv, 0, kMrg).ok());
  int sent = 0;
  for (; sent < 1000 && !a.net->tx_parked(0); ++sent) {
    drv.add_out(1, frame(1000, static_cast<uint8_t>(sent)));
    a.net->poll_pair(0);
  }
  ASSERT_TRUE(a.net->tx_parked(0));
  const uint16_t parked_at = static_cast<uint16_t>(sent - 1);
  ASSERT_TRUE(a.net->pause().ok());
  auto state = a.net->save();
  ASSERT_TRUE(state.ok()) << state.error().message();
  a.net->reset();

  Dev b = Dev::make(1);
  ASSERT_TRUE(b.net->restore(*state).ok());
  ASSERT_TRUE(b.activate(drv, 3, kMrg).ok());
  EXPECT_TRUE(b.net->tx_parked(0));
  b.net->poll_pair(0);
  EXPECT_FALSE(b.net->tx_parked(0));
  std::vector<uint8_t> buf(2000);
  const ssize_t n = ::recv(b.be->host(0), buf.data(), buf.size(), MSG_DONTWAIT);
  ASSERT_EQ(n, static_cast<ssize_t>(kNetHdrSize + 1000));
  EXPECT_EQ(buf[kNetHdrSize], static_cast<uint8_t>(parked_at));
  ASSERT_EQ(drv.used_idx(4), 1);
  // The chain given back is the one parked: its head in the saved transmit ring.
  EXPECT_EQ(drv.used(4, 0).id, uint32_t{static_cast<uint16_t>(parked_at % 64)});
  EXPECT_EQ(b.net->stats().tx_frames.load(), 1u);
}

TEST(VirtioNetState, EnabledQueuePairsAreEnabledAgain) {
  NetTestDriver drv(14, 64);
  const uint64_t mq = kMrg | bit(VIRTIO_NET_F_MQ);
  Dev a = Dev::make(3);
  ASSERT_TRUE(a.activate(drv, 0, mq).ok());
  const uint64_t in = drv.alloc(4), ack = drv.alloc(1);
  drv.write(in, std::vector<uint8_t>{VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, 2, 0});
  drv.add_chain(6, {{in, 4}}, {{ack, 1}});
  a.net->poll_ctrl();
  ASSERT_EQ(a.net->active_pairs(), 2u);
  ASSERT_TRUE(a.net->pause().ok());
  auto state = a.net->save();
  ASSERT_TRUE(state.ok());

  Dev b = Dev::make(3);
  ASSERT_TRUE(b.net->restore(*state).ok());
  ASSERT_TRUE(b.activate(drv, 7, mq).ok());
  EXPECT_EQ(b.net->active_pairs(), 2u);
  EXPECT_EQ(b.be->active, 2u);
  // Another negotiation than the saved one is refused at activation, by name.
  Dev c = Dev::make(3);
  ASSERT_TRUE(c.net->restore(*state).ok());
  auto r = c.activate(drv, 7, kMrg);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("negotiated with features"), std::string::npos) << r.error().message();
  // A device never activated saves its config only; restoring that needs nothing more.
  Dev d = Dev::make(3);
  auto idle = d.net->save();
  ASSERT_TRUE(idle.ok());
  Dev e = Dev::make(3);
  EXPECT_TRUE(e.net->restore(*idle).ok());
  EXPECT_EQ(config_of(*e.net), config_of(*d.net));
}

TEST(VirtioNetState, RefusesBadStatesAndStaysAsItWas) {
  NetTestDriver drv(6, 64);
  Dev a = Dev::make(1);
  ASSERT_TRUE(a.activate(drv, 0, kMrg).ok());
  const auto f = frame(200, 1);
  ASSERT_EQ(::send(a.be->host(0), f.data(), f.size(), 0), static_cast<ssize_t>(f.size()));
  a.net->poll_pair(0);  // held: no buffers
  ASSERT_TRUE(a.net->pause().ok());
  const std::vector<uint8_t> good = *a.net->save();

  Dev b = Dev::make(1);
  const auto config = config_of(*b.net);
  auto refused = [&](std::vector<uint8_t> s, ErrorCode code, std::string_view says) {
    auto r = b.net->restore(s);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, code) << r.error().message();
    EXPECT_NE(r.error().message().find(says), std::string::npos) << r.error().message();
    EXPECT_EQ(config_of(*b.net), config);
  };
  for (size_t len = 0; len < good.size(); len += 7)
    refused(std::vector<uint8_t>(good.begin(), good.begin() + static_cast<ptrdiff_t>(len)), ErrorCode::kCorrupt,
            "state ends after");
  auto trailing = good;
  trailing.push_back(0);
  refused(trailing, ErrorCode::kCorrupt, "follow the end");
  auto version = good;
  version[0] = 2;
  refused(version, ErrorCode::kCorrupt, "version 2");
  // version u32, features u64, pairs u32, queue size u16, mac 6, status u16, then `active`.
  auto boolean = good;
  boolean[4 + 8 + 4 + 2 + 6 + 2] = 2;
  refused(boolean, ErrorCode::kCorrupt, "not a boolean");
  auto status = good;
  status[4 + 8 + 4 + 2 + 6] = 0x80;
  refused(status, ErrorCode::kCorrupt, "status");
  Dev two = Dev::make(2);
  auto other = two.net->save();
  ASSERT_TRUE(other.ok());
  auto r = b.net->restore(*other);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
  // Either the features (MQ) or the pair count names both values.
  EXPECT_NE(r.error().message().find("this device"), std::string::npos) << r.error().message();
  // A held frame's length beyond the largest frame.
  auto huge = good;
  const size_t frame_len_at = 4 + 8 + 4 + 2 + 6 + 2 + 1 + 8 + 2;
  huge[frame_len_at + 3] = 0x7f;
  refused(huge, ErrorCode::kCorrupt, "rx_frame");
  // Still restorable afterwards, and the held frame arrives.
  ASSERT_TRUE(b.net->restore(good).ok());
  ASSERT_TRUE(b.activate(drv, 3, kMrg).ok());
  drv.add_in(3, 1500);
  b.net->poll_pair(0);
  ASSERT_EQ(drv.used_idx(3), 1);
  EXPECT_EQ(drv.used(3, 0).len, f.size());
}

TEST(VirtioNetState, RestoredChainOutsideGuestMemoryIsRefusedAtActivation) {
  NetTestDriver drv(6, 64);
  Dev a = Dev::make(1);
  ASSERT_TRUE(a.activate(drv, 0, kMrg).ok());
  const auto f = frame(2500, 4);
  ASSERT_EQ(::send(a.be->host(0), f.data(), f.size(), 0), static_cast<ssize_t>(f.size()));
  const uint64_t buf = drv.add_in(0, 1500);
  a.net->poll_pair(0);
  ASSERT_TRUE(a.net->pause().ok());
  auto state = *a.net->save();
  // The gathered chain's one writable buffer's address, moved past the end of guest memory.
  const uint8_t want[8] = {static_cast<uint8_t>(buf), static_cast<uint8_t>(buf >> 8),
                           static_cast<uint8_t>(buf >> 16), 0, 0, 0, 0, 0};
  auto at = std::search(state.begin(), state.end(), std::begin(want), std::end(want));
  ASSERT_NE(at, state.end());
  at[5] = 0x10;  // + 1 TiB
  Dev b = Dev::make(1);
  ASSERT_TRUE(b.net->restore(state).ok());
  auto r = b.activate(drv, 3, kMrg);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kCorrupt);
  EXPECT_NE(r.error().message().find("outside guest memory"), std::string::npos) << r.error().message();
}

}  // namespace
}  // namespace ringvm
