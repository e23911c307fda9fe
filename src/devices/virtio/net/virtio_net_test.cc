#include "devices/virtio/net/virtio_net.h"

#include <gtest/gtest.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <thread>

#include "devices/virtio/net/net_test_driver.h"
#include "devices/virtio/net/net_test_util.h"

namespace ringvm {
namespace {

double cpu_seconds() {
  timespec ts{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

template <typename Pred>
bool wait_for(Pred p) {
  for (int i = 0; i < 400; ++i) {
    if (p()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return p();
}


using testing::bit;
using testing::ip_frame;
using testing::kBase;
using testing::kMrg;
using testing::NetTestDriver;
using testing::SocketBackend;


std::vector<uint8_t> frame(size_t len, uint8_t seed, virtio_net_hdr_v1 hdr = {}) {
  // SAFETY: the header is a trivially-copyable UAPI struct of kNetHdrSize bytes.
  const auto* h = reinterpret_cast<const uint8_t*>(&hdr);
  std::vector<uint8_t> f(h, h + kNetHdrSize);
  for (size_t i = 0; i < len; ++i) f.push_back(static_cast<uint8_t>(seed + i * 7));
  return f;
}

class VirtioNetTest : public ::testing::Test {
 protected:
  // `before` runs once the driver exists and before the device is activated (to have buffers
  // waiting when a worker starts).
  void start(size_t pairs = 1, uint64_t features = kMrg, bool workers = false, bool ufo = false,
             uint32_t batch_us = 0, const std::function<void()>& before = {}) {
    auto backend = std::make_unique<SocketBackend>(pairs, ufo);
    be_ = backend.get();
    VirtioNetOptions o;
    o.mac = {0x52, 0x54, 0, 0x12, 0x34, 0x56};
    o.run_workers = workers;
    o.batch_us = batch_us;
    o.pin_flows = pin_flows_;
    o.tx_early_irq_bytes = tx_early_irq_bytes_;
    o.workers = worker_threads_;
    o.worker_nice = worker_nice_;
    o.worker_nice_always = worker_nice_always_;
    auto d = VirtioNet::create(std::move(backend), o);
    ASSERT_TRUE(d.ok()) << d.error().message();
    net_ = std::move(*d);
    const size_t nq = net_->queue_max_sizes().size();
    drv_ = std::make_unique<NetTestDriver>(nq, 64);
    queues_.clear();
    kicks_.clear();
    for (size_t i = 0; i < nq; ++i) queues_.push_back(std::make_unique<VirtQueue>(256));
    irqs_ = std::make_unique<std::atomic<int>[]>(nq);
    std::vector<ActivatedQueue> aq;
    for (size_t i = 0; i < nq; ++i) {
      drv_->configure(i, *queues_[i]);
      UniqueFd kick(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
      aq.push_back(ActivatedQueue{queues_[i].get(), kick.get(), [this, i] {
                                    ++irqs_[i];
                                    if (!workers_) irq_used_idx_.emplace_back(i, drv_->used_idx(i));
                                  }});
      kicks_.push_back(std::move(kick));
    }
    workers_ = workers;
    irq_used_idx_.clear();
    if (before) before();
    ASSERT_TRUE(net_->activate(drv_->mem(), features, std::move(aq)).ok());
  }
  void TearDown() override {
    if (net_) net_->reset();
  }
  void kick(size_t q) {
    const uint64_t one = 1;
    ASSERT_EQ(::write(kicks_[q].get(), &one, sizeof one), 8);
  }
  std::vector<uint8_t> host_recv(size_t pair = 0) {
    std::vector<uint8_t> buf(70000);
    const ssize_t n = ::recv(be_->host(pair), buf.data(), buf.size(), MSG_DONTWAIT);
    buf.resize(n < 0 ? 0 : static_cast<size_t>(n));
    return buf;
  }
  void host_send(const std::vector<uint8_t>& f, size_t pair = 0) {
    ASSERT_EQ(::send(be_->host(pair), f.data(), f.size(), 0), static_cast<ssize_t>(f.size()));
  }

  // Sends control command (cls, cmd) with a 16-bit argument on control queue `ctrl_queue`;
  // returns the device's ack byte.
  uint8_t ctrl_cmd(size_t ctrl_queue, uint8_t cls, uint8_t cmd, uint16_t arg) {
    std::vector<uint8_t> out{cls, cmd, static_cast<uint8_t>(arg), static_cast<uint8_t>(arg >> 8)};
    const uint64_t in = drv_->alloc(static_cast<uint32_t>(out.size()));
    drv_->write(in, out);
    const uint64_t ack = drv_->alloc(1);
    drv_->write(ack, std::vector<uint8_t>{0xee});
    drv_->add_chain(ctrl_queue, {{in, 4}}, {{ack, 1}});
    net_->poll_ctrl();
    return drv_->read(ack, 1)[0];
  }
  uint8_t set_pairs(size_t ctrl_queue, uint16_t pairs) {
    return ctrl_cmd(ctrl_queue, VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, pairs);
  }

  bool pin_flows_ = true;
  uint64_t tx_early_irq_bytes_ = VirtioNetOptions::kDefaultTxEarlyIrqBytes;
  uint32_t worker_threads_ = 0;  // VirtioNetOptions::workers
  int worker_nice_ = VirtioNetOptions::kDefaultWorkerNice;
  bool worker_nice_always_ = false;
  bool workers_ = false;
  // Without workers: each interrupt as (queue, the queue's used idx when it was raised).
  std::vector<std::pair<size_t, uint16_t>> irq_used_idx_;
  SocketBackend* be_ = nullptr;
  std::unique_ptr<VirtioNet> net_;
  std::unique_ptr<NetTestDriver> drv_;
  std::vector<std::unique_ptr<VirtQueue>> queues_;
  std::vector<UniqueFd> kicks_;
  std::unique_ptr<std::atomic<int>[]> irqs_;  // interrupts per queue, raised from worker threads
};

TEST_F(VirtioNetTest, FeaturesAndConfig) {
  start(4);
  const uint64_t f = net_->device_features();
  for (int b : {VIRTIO_F_VERSION_1, VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_HOST_TSO4,
                     VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
                     VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS, VIRTIO_NET_F_CTRL_VQ,
                     VIRTIO_NET_F_MQ, VIRTIO_RING_F_EVENT_IDX})
    EXPECT_TRUE(f & bit(static_cast<unsigned>(b))) << "feature bit " << b;
  EXPECT_FALSE(f & bit(VIRTIO_NET_F_HOST_UFO));  // the backend does not take UFO
  EXPECT_EQ(net_->queue_max_sizes().size(), 9u);
  virtio_net_config cfg{};
  net_->read_config(0, {reinterpret_cast<uint8_t*>(&cfg), sizeof cfg});
  EXPECT_EQ(format_mac({cfg.mac[0], cfg.mac[1], cfg.mac[2], cfg.mac[3], cfg.mac[4], cfg.mac[5]}),
            "52:54:00:12:34:56");
  EXPECT_EQ(le16toh(cfg.status), VIRTIO_NET_S_LINK_UP);
  EXPECT_EQ(le16toh(cfg.max_virtqueue_pairs), 4);
  uint8_t tail[4] = {1, 2, 3, 4};
  net_->read_config(sizeof cfg + 8, tail);
  EXPECT_EQ(tail[0] | tail[3], 0);
}

TEST_F(VirtioNetTest, SinglePairOffersNoMqAndUfoFollowsBackend) {
  start(1, kMrg, false, /*ufo=*/true);
  EXPECT_FALSE(net_->device_features() & bit(VIRTIO_NET_F_MQ));
  EXPECT_TRUE(net_->device_features() & bit(VIRTIO_NET_F_HOST_UFO));
  EXPECT_TRUE(net_->device_features() & bit(VIRTIO_NET_F_GUEST_UFO));
  EXPECT_EQ(net_->queue_max_sizes().size(), 3u);
}

TEST_F(VirtioNetTest, OffloadsFollowGuestFeatures) {
  start(1, kMrg);
  EXPECT_EQ(be_->offload, unsigned{TUN_F_CSUM | TUN_F_TSO4});
  net_->reset();
  start(1, kMrg & ~bit(VIRTIO_NET_F_GUEST_CSUM));
  EXPECT_EQ(be_->offload, 0u);  // without GUEST_CSUM the kernel must checksum and segment for us
}

TEST_F(VirtioNetTest, TransmitsSplitFrameWithHeader) {
  start();
  virtio_net_hdr_v1 h{};
  h.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  h.csum_start = htole16(34);
  h.csum_offset = htole16(6);
  const auto f = frame(1000, 3, h);
  const uint16_t head = drv_->add_out(1, f, 100);  // 11 descriptors; the header split too
  net_->poll_pair(0);
  EXPECT_EQ(host_recv(), f);
  EXPECT_EQ(drv_->used_idx(1), 1);
  EXPECT_EQ(drv_->used(1, 0).id, head);
  EXPECT_EQ(drv_->used(1, 0).len, 0u);
  EXPECT_EQ(net_->stats().tx_frames.load(), 1u);
  EXPECT_EQ(net_->stats().tx_bytes.load(), 1000u);
  EXPECT_EQ(irqs_[1].load(), 1);
}

// tx_early_irq_bytes: a large frame is announced as soon as it is written (the driver, which
// asks for every interrupt here, hears of frame 1 before frame 2 is sent); small frames, and by
// default every frame, wait for the end of the pass: one interrupt for the whole pass.
TEST_F(VirtioNetTest, LargeTransmittedFramesAreAnnouncedAtOnce) {
  EXPECT_EQ(VirtioNetOptions{}.tx_early_irq_bytes, 16u * 1024);
  for (uint64_t early : {uint64_t{0}, uint64_t{1024}}) {
    SCOPED_TRACE(early);
    tx_early_irq_bytes_ = early;
    start();
    const auto big = frame(2000, 1, virtio_net_hdr_v1{});
    const auto small = frame(500, 2, virtio_net_hdr_v1{});
    drv_->add_out(1, big, 4096);
    drv_->add_out(1, big, 4096);
    drv_->add_out(1, small, 4096);
    net_->poll_pair(0);
    for (const auto& f : {big, big, small}) EXPECT_EQ(host_recv(), f);
    ASSERT_EQ(drv_->used_idx(1), 3);
    std::vector<std::pair<size_t, uint16_t>> want{{1, 3}};  // one, after the pass
    if (early != 0) want = {{1, 1}, {1, 2}, {1, 3}};         // each big frame, then the pass's end
    EXPECT_EQ(irq_used_idx_, want);
    EXPECT_EQ(net_->stats().tx_early_interrupts.load(), early != 0 ? 2u : 0u);
    EXPECT_EQ(net_->stats().tx_interrupts.load(), want.size());
    net_->reset();
  }
}

TEST_F(VirtioNetTest, DropsAndCountsMalformedFramesAndKeepsGoing) {
  start();
  std::vector<uint8_t> short_hdr(8, 0);
  drv_->add_out(1, short_hdr);
  drv_->add_out(1, frame(5, 0));  // runt
  drv_->add_out(1, frame(kMaxFrameBytes + 1, 0));
  virtio_net_hdr_v1 h{};
  h.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  h.csum_start = htole16(34);
  h.csum_offset = htole16(16);
  h.gso_type = VIRTIO_NET_HDR_GSO_TCPV4;
  h.gso_size = 0;
  h.hdr_len = htole16(54);
  drv_->add_out(1, frame(2000, 0, h));  // gso_size 0
  h.gso_size = htole16(1448);
  h.gso_type = VIRTIO_NET_HDR_GSO_UDP;
  drv_->add_out(1, frame(2000, 0, h));  // UFO not negotiated
  const auto good = frame(60, 9);
  drv_->add_out(1, good);
  net_->poll_pair(0);
  EXPECT_EQ(net_->stats().tx_drops.load(), 5u);
  EXPECT_EQ(net_->stats().tx_frames.load(), 1u);
  EXPECT_EQ(drv_->used_idx(1), 6);
  EXPECT_EQ(host_recv(), good);
  EXPECT_TRUE(host_recv().empty());
}

TEST_F(VirtioNetTest, FullBackendParksTheQueueAndResumes) {
  start();
  // Fill the socket until it refuses: the device must park, not spin or drop.
  int sent = 0;
  for (; sent < 1000 && !net_->tx_parked(0); ++sent) {
    drv_->add_out(1, frame(1000, static_cast<uint8_t>(sent)));
    net_->poll_pair(0);
  }
  ASSERT_TRUE(net_->tx_parked(0)) << "the socket never filled";
  EXPECT_GE(net_->stats().tx_parked.load(), 1u);
  const uint64_t done = net_->stats().tx_frames.load();
  EXPECT_EQ(done + 1, static_cast<uint64_t>(sent));
  EXPECT_EQ(drv_->used_idx(1), done);  // the parked chain is still the device's
  // Drain the host side; the parked frame goes out next, in order.
  for (uint64_t i = 0; i < done; ++i) ASSERT_EQ(host_recv()[kNetHdrSize], static_cast<uint8_t>(i));
  net_->poll_pair(0);
  EXPECT_FALSE(net_->tx_parked(0));
  EXPECT_EQ(host_recv()[kNetHdrSize], static_cast<uint8_t>(done));
  EXPECT_EQ(drv_->used_idx(1), done + 1);
  EXPECT_EQ(net_->stats().tx_drops.load(), 0u);
}

TEST_F(VirtioNetTest, ReceivesIntoMergeableBuffers) {
  start();
  std::vector<uint64_t> bufs;
  for (int i = 0; i < 4; ++i) bufs.push_back(drv_->add_in(0, 1500));
  const auto f = frame(3000, 1);  // 3012 bytes: 1500 + 1500 + 12
  host_send(f);
  net_->poll_pair(0);
  ASSERT_EQ(drv_->used_idx(0), 3);
  EXPECT_EQ(drv_->used(0, 0).len, 1500u);
  EXPECT_EQ(drv_->used(0, 1).len, 1500u);
  EXPECT_EQ(drv_->used(0, 2).len, 12u);
  std::vector<uint8_t> got;
  for (int i = 0; i < 3; ++i) {
    auto part = drv_->read(bufs[static_cast<size_t>(i)], drv_->used(0, static_cast<uint16_t>(i)).len);
    got.insert(got.end(), part.begin(), part.end());
  }
  virtio_net_hdr_v1 h{};
  std::memcpy(&h, got.data(), sizeof h);
  EXPECT_EQ(le16toh(h.num_buffers), 3);
  EXPECT_TRUE(std::equal(f.begin() + kNetHdrSize, f.end(), got.begin() + kNetHdrSize));
  EXPECT_EQ(net_->stats().rx_frames.load(), 1u);
  EXPECT_EQ(net_->stats().rx_bytes.load(), 3000u);
  EXPECT_EQ(irqs_[0].load(), 1);
}

TEST_F(VirtioNetTest, ReceivesStraightIntoBuffersWhenTheLargestFrameFits) {
  start();
  std::vector<uint64_t> bufs;
  for (int i = 0; i < 17; ++i) bufs.push_back(drv_->add_in(0, 4096));  // 68 KiB: room for any frame
  host_send(std::vector<uint8_t>(5, 0xee));  // a runt: counted, nothing published
  const auto f1 = frame(6000, 3);           // 6012 bytes: 4096 + 1916, read straight into the guest
  const auto f2 = frame(100, 9);            // 15 buffers left (< 64 KiB): goes through the bounce path
  host_send(f1);
  host_send(f2);
  net_->poll_pair(0);
  EXPECT_EQ(net_->stats().rx_errors.load(), 1u);
  ASSERT_EQ(drv_->used_idx(0), 3);
  EXPECT_EQ(drv_->used(0, 0).len, 4096u);
  EXPECT_EQ(drv_->used(0, 1).len, 1916u);
  EXPECT_EQ(drv_->used(0, 2).len, 112u);
  std::vector<uint8_t> got = drv_->read(bufs[0], 4096);
  const auto tail = drv_->read(bufs[1], 1916);
  got.insert(got.end(), tail.begin(), tail.end());
  virtio_net_hdr_v1 h{};
  std::memcpy(&h, got.data(), sizeof h);
  EXPECT_EQ(le16toh(h.num_buffers), 2);
  EXPECT_TRUE(std::equal(f1.begin() + kNetHdrSize, f1.end(), got.begin() + kNetHdrSize));
  const auto second = drv_->read(bufs[2], 112);
  std::memcpy(&h, second.data(), sizeof h);
  EXPECT_EQ(le16toh(h.num_buffers), 1);
  EXPECT_TRUE(std::equal(f2.begin() + kNetHdrSize, f2.end(), second.begin() + kNetHdrSize));
  EXPECT_EQ(net_->stats().rx_frames.load(), 2u);
  EXPECT_EQ(net_->stats().rx_bytes.load(), 6100u);
  EXPECT_EQ(irqs_[0].load(), 1);  // both frames, one interrupt
}

TEST_F(VirtioNetTest, BusyTransmitQueueBatchesWithoutKicksThenAsksForThemAgain) {
  // Two frames waiting when the worker starts: its first pass sends both, so the queue counts as
  // busy and asks for no kick for the next frames.
  start(1, kMrg | bit(VIRTIO_RING_F_EVENT_IDX), /*workers=*/true, false, /*batch_us=*/200'000, [this] {
    drv_->add_out(1, frame(100, 1));
    drv_->add_out(1, frame(100, 2));
  });
  ASSERT_TRUE(wait_for([&] { return drv_->used_idx(1) == 2 && net_->stats().tx_batches.load() == 1; }));
  EXPECT_EQ(drv_->avail_event(1), 0) << "a busy transmit queue asked for a kick";
  // The next frame goes out on the worker's timer, with no kick.
  drv_->add_out(1, frame(100, 3));
  ASSERT_TRUE(wait_for([&] { return drv_->used_idx(1) == 3; })) << "not sent without a kick while batching";
  for (int seed = 1; seed <= 3; ++seed) EXPECT_EQ(host_recv(), frame(100, static_cast<uint8_t>(seed)));
  // That pass sent one frame: light load again, so it asked for a kick and sleeps.
  ASSERT_TRUE(wait_for([&] { return drv_->avail_event(1) == 3; }));
  drv_->add_out(1, frame(100, 4));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // longer than any batch window
  EXPECT_EQ(drv_->used_idx(1), 3) << "sent without a kick after the queue went idle";
  kick(1);
  ASSERT_TRUE(wait_for([&] { return drv_->used_idx(1) == 4; }));
  EXPECT_EQ(host_recv(), frame(100, 4));
  EXPECT_EQ(net_->stats().tx_batches.load(), 1u);
  // That kick came within 4 x batch_us of the busy pass: the frame went out on the timer.
  EXPECT_EQ(net_->stats().tx_deferred.load(), 1u);
}

TEST_F(VirtioNetTest, AcksWhileReceivingGoOutWithoutKicks) {
  // With batch_us, a transmit pass right after a receive pass that delivered (a stream coming in)
  // asks for no kick: the guest's ACKs go out on the next receive pass or the timer.
  start(1, kMrg | bit(VIRTIO_RING_F_EVENT_IDX), /*workers=*/true, false, /*batch_us=*/200'000, [this] {
    for (int i = 0; i < 34; ++i) drv_->add_in(0, 4096);  // room for two of the largest frames
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the worker's first (idle) round
  const uint16_t armed_at = drv_->avail_event(1);
  host_send(frame(3000, 1));
  ASSERT_TRUE(wait_for([&] { return drv_->used_idx(0) == 1 && net_->stats().tx_rx_polls.load() >= 1; }));
  // The ACK: made available without a kick, past the avail_event the idle worker had asked for.
  drv_->add_out(1, frame(60, 2));
  ASSERT_TRUE(wait_for([&] { return drv_->used_idx(1) == 1; })) << "an ACK while receiving waited for a kick";
  EXPECT_EQ(host_recv(), frame(60, 2));
  EXPECT_EQ(net_->stats().tx_kicks.load(), 0u);
  // Once a receive pass finds nothing (the timer's), the transmit side asks for kicks again.
  ASSERT_TRUE(wait_for([&] { return drv_->avail_event(1) == 1; })) << "kicks were not asked for again";
  EXPECT_EQ(armed_at, 0);
  drv_->add_out(1, frame(60, 3));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // longer than any batch window
  EXPECT_EQ(drv_->used_idx(1), 1) << "sent without a kick after the stream stopped";
  kick(1);
  ASSERT_TRUE(wait_for([&] { return drv_->used_idx(1) == 2; }));
  EXPECT_EQ(host_recv(), frame(60, 3));
}

TEST_F(VirtioNetTest, TransmitKickOnAQueueThatWentQuietIsServedAtOnce) {
  start(1, kMrg | bit(VIRTIO_RING_F_EVENT_IDX), /*workers=*/true, false, /*batch_us=*/20'000, [this] {
    drv_->add_out(1, frame(100, 1));
    drv_->add_out(1, frame(100, 2));
  });
  ASSERT_TRUE(wait_for([&] { return drv_->used_idx(1) == 2 && drv_->avail_event(1) == 2; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(150));  // past 4 x batch_us
  drv_->add_out(1, frame(100, 3));
  kick(1);
  ASSERT_TRUE(wait_for([&] { return drv_->used_idx(1) == 3; }));
  for (int seed = 1; seed <= 3; ++seed) EXPECT_EQ(host_recv(), frame(100, static_cast<uint8_t>(seed)));
  EXPECT_EQ(net_->stats().tx_deferred.load(), 0u) << "a kick on a quiet queue waited for the timer";
}

// The receive path under its real worker thread against a driver thread that behaves like
// Linux's (mergeable buffers of mixed sizes, reposted as frames are consumed, EVENT_IDX kicks,
// pauses that run the device out of buffers): thousands of frames of every size arrive intact,
// in order, with no stall. A lost wakeup anywhere in the receive path shows as a timeout.
TEST_F(VirtioNetTest, ReceiveStressWithWorkerAndEventIdx) {
  start(1, kMrg | bit(VIRTIO_RING_F_EVENT_IDX), /*workers=*/true);
  constexpr int kFrames = 3000;
  constexpr uint16_t kRing = 64;
  constexpr uint32_t kBufMax = 4096;
  std::array<uint64_t, kRing> buf{};
  std::array<uint32_t, kRing> len{};
  uint32_t rng = 12345;
  auto next_rand = [&rng] { return rng = rng * 1103515245u + 12345u, rng >> 8; };
  for (auto& b : buf) b = drv_->alloc(kBufMax);
  uint16_t repost = 0;  // descriptors are consumed and reposted in ring order
  auto post = [&](int n) {
    const uint16_t old = drv_->avail_idx(0);
    for (int k = 0; k < n; ++k) {
      // Linux's mergeable buffers are 1526 bytes (a full Ethernet frame and header) or more.
      len[repost] = 1526 + next_rand() % (kBufMax - 1525);
      drv_->add_chain(0, {}, {{buf[repost], len[repost]}});
      repost = static_cast<uint16_t>((repost + 1) % kRing);
    }
    std::atomic_thread_fence(std::memory_order_seq_cst);
    const uint16_t now = drv_->avail_idx(0);
    if (vring_need_event(drv_->avail_event(0), now, old)) kick(0);
  };
  auto sizes = [](int i) -> size_t {
    // Every shape: runts-to-MTU, around buffer boundaries, and GSO-sized frames up to the maximum.
    const size_t pick[] = {60, 1514, 4084, 4085, 9000, 32768, kMaxFrameBytes};
    return i % 3 == 0 ? pick[(i / 3) % 7] : 60 + (static_cast<size_t>(i) * 7919) % 20000;
  };
  std::atomic<bool> stop{false};
  std::thread sender([&] {
    for (int i = 0; i < kFrames && !stop; ++i) {
      auto f = frame(sizes(i), static_cast<uint8_t>(i));
      std::memcpy(f.data() + kNetHdrSize, &i, sizeof i);
      while (!stop && ::send(be_->host(0), f.data(), f.size(), 0) < 0) {
        pollfd p{be_->host(0), POLLOUT, 0};
        ::poll(&p, 1, 100);
      }
    }
  });
  post(kRing);
  uint16_t seen = 0;
  int got = 0, outstanding = kRing;
  auto last_progress = std::chrono::steady_clock::now();
  while (got < kFrames) {
    if (drv_->used_idx(0) == seen) {
      if (std::chrono::steady_clock::now() - last_progress > std::chrono::seconds(10)) break;
      std::this_thread::yield();
      continue;
    }
    std::atomic_thread_fence(std::memory_order_acquire);
    // One frame: its first buffer's header says how many buffers it spans.
    const auto first = drv_->used(0, seen);
    ASSERT_LT(first.id, kRing);
    virtio_net_hdr_v1 h{};
    ASSERT_GE(first.len, kNetHdrSize);
    const auto head = drv_->read(buf[first.id], kNetHdrSize);
    std::memcpy(&h, head.data(), sizeof h);
    const uint16_t nb = le16toh(h.num_buffers);
    ASSERT_GE(nb, 1);
    ASSERT_LE(static_cast<uint16_t>(drv_->used_idx(0) - seen), kRing);
    ASSERT_GE(static_cast<uint16_t>(drv_->used_idx(0) - seen), nb) << "a frame's buffers published apart";
    std::vector<uint8_t> data;
    for (uint16_t k = 0; k < nb; ++k) {
      const auto e = drv_->used(0, static_cast<uint16_t>(seen + k));
      ASSERT_LE(e.len, len[e.id]);
      const auto part = drv_->read(buf[e.id], e.len);
      data.insert(data.end(), part.begin(), part.end());
    }
    seen = static_cast<uint16_t>(seen + nb);
    outstanding -= nb;
    auto want = frame(sizes(got), static_cast<uint8_t>(got));
    std::memcpy(want.data() + kNetHdrSize, &got, sizeof got);
    want[offsetof(virtio_net_hdr_v1, num_buffers)] = static_cast<uint8_t>(nb);
    want[offsetof(virtio_net_hdr_v1, num_buffers) + 1] = static_cast<uint8_t>(nb >> 8);
    ASSERT_EQ(data.size(), want.size()) << "frame " << got;
    ASSERT_TRUE(data == want) << "frame " << got << " corrupted";
    ++got;
    last_progress = std::chrono::steady_clock::now();
    // Like a guest under load: sometimes late with its refill, sometimes a few buffers at a time.
    if (next_rand() % 50 == 0) std::this_thread::sleep_for(std::chrono::microseconds(next_rand() % 2000));
    const int room = kRing - outstanding;
    const int n = next_rand() % 4 == 0 ? std::min(room, 1 + static_cast<int>(next_rand() % 4)) : room;
    post(n);
    outstanding += n;
    if (outstanding == 0) {
      post(1);
      outstanding = 1;
    }
  }
  stop = true;
  sender.join();
  ASSERT_EQ(got, kFrames) << "receive stalled after " << got << " frames: used idx " << drv_->used_idx(0)
                          << ", avail idx " << drv_->avail_idx(0) << ", device's next avail "
                          << queues_[0]->next_avail() << " (queue broken " << queues_[0]->broken() << ", bad chains "
                          << queues_[0]->stats().total_errors() << "), avail_event " << drv_->avail_event(0)
                          << ", buffers posted and not used " << outstanding << ", device holds a frame "
                          << net_->rx_held(0) << ", frames delivered " << net_->stats().rx_frames.load();
  EXPECT_EQ(net_->stats().rx_frames.load(), static_cast<uint64_t>(kFrames));
  EXPECT_EQ(net_->stats().rx_drops.load(), 0u);
}

TEST_F(VirtioNetTest, HoldsFrameUntilTheGuestAddsBuffers) {
  start();
  host_send(frame(2500, 4));
  host_send(frame(100, 5));
  net_->poll_pair(0);
  EXPECT_TRUE(net_->rx_held(0));
  drv_->add_in(0, 1500);  // not enough for 2512 bytes: taken, but the frame still waits
  net_->poll_pair(0);
  EXPECT_TRUE(net_->rx_held(0));
  EXPECT_EQ(drv_->used_idx(0), 0);
  const uint64_t second = drv_->add_in(0, 1500);
  net_->poll_pair(0);
  ASSERT_EQ(drv_->used_idx(0), 2);
  virtio_net_hdr_v1 h{};
  std::memcpy(&h, drv_->read(drv_->used(0, 0).id == 0 ? NetTestDriver::kDataAddr : second, 12).data(), 12);
  EXPECT_EQ(le16toh(h.num_buffers), 2);
  EXPECT_TRUE(net_->rx_held(0));  // the second frame read, waiting for a buffer
  drv_->add_in(0, 1500);
  net_->poll_pair(0);
  EXPECT_FALSE(net_->rx_held(0));
  EXPECT_EQ(drv_->used_idx(0), 3);
  EXPECT_EQ(net_->stats().rx_frames.load(), 2u);
  EXPECT_EQ(net_->stats().rx_drops.load(), 0u);
}

TEST_F(VirtioNetTest, WithoutMergeableBuffersOneChainHoldsAFrame) {
  start(1, kBase);
  const uint64_t small = drv_->add_in(0, 1000);
  host_send(frame(1500, 1));  // too big for the 1000-byte chain: dropped, chain kept
  host_send(frame(500, 2));
  net_->poll_pair(0);
  EXPECT_EQ(net_->stats().rx_drops.load(), 1u);
  ASSERT_EQ(drv_->used_idx(0), 1);
  EXPECT_EQ(drv_->used(0, 0).len, 512u);
  const auto got = drv_->read(small, 512);
  virtio_net_hdr_v1 h{};
  std::memcpy(&h, got.data(), sizeof h);
  EXPECT_EQ(le16toh(h.num_buffers), 1);
  EXPECT_EQ(got[kNetHdrSize], 2);
}

TEST_F(VirtioNetTest, ControlQueueSetsQueuePairs) {
  start(4, kMrg | bit(VIRTIO_NET_F_MQ));
  EXPECT_EQ(be_->active, 1u);
  auto cmd = [&](uint8_t cls, uint8_t c, uint16_t pairs) { return ctrl_cmd(8, cls, c, pairs); };
  EXPECT_EQ(cmd(VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, 3), VIRTIO_NET_OK);
  EXPECT_EQ(net_->active_pairs(), 3u);
  EXPECT_EQ(be_->active, 3u);
  EXPECT_EQ(cmd(VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, 0), VIRTIO_NET_ERR);
  EXPECT_EQ(cmd(VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, 5), VIRTIO_NET_ERR);
  EXPECT_EQ(cmd(0 /* CTRL_RX, not offered */, 0, 1), VIRTIO_NET_ERR);
  EXPECT_EQ(net_->active_pairs(), 3u);
  EXPECT_EQ(net_->stats().ctrl_errors.load(), 3u);
  EXPECT_EQ(drv_->used_idx(8), 4);
  // Traffic on pair 2 flows through backend queue 2.
  const auto f = frame(80, 7);
  drv_->add_out(5, f);
  net_->poll_pair(2);
  EXPECT_EQ(host_recv(2), f);
}

// With two pairs, a flow's pure ACKs leave through the tap queue its first frame or its last data
// frame used, whichever transmit queue the guest put them on (the tap then steers the flow's
// incoming frames to that queue only); data leaves through its own pair's queue;
// pin_flows=off keeps every frame on its own pair's queue.
TEST_F(VirtioNetTest, FlowsArePinnedToOneTapQueue) {
  for (const bool pin : {true, false}) {
    SCOPED_TRACE(pin ? "pin_flows=on" : "pin_flows=off");
    if (net_) net_->reset();
    pin_flows_ = pin;
    start(2, kMrg | bit(VIRTIO_NET_F_MQ));
    ASSERT_EQ(set_pairs(4, 2), VIRTIO_NET_OK);
    const std::array<uint8_t, 4> a{10, 0, 2, 2}, b{10, 0, 2, 1};
    const auto ack = ip_frame(a, 40000, b, 5201, 6, 0, 0), data = ip_frame(b, 5201, a, 40000, 6, 0, 100);
    // The guest sends one on pair 1's transmit queue (3), the other on pair 0's (1).
    drv_->add_out(3, ack);
    drv_->add_out(1, data);
    net_->poll_pair(0);
    net_->poll_pair(1);
    const auto q0 = host_recv(0), q1 = host_recv(1);
    const auto q0b = host_recv(0), q1b = host_recv(1);
    if (pin) {
      // Pair 0 is served first, so the flow's first frame is `data`, on queue 0: `ack` follows it.
      EXPECT_EQ(q0, data);
      EXPECT_EQ(q0b, ack) << "an ACK of the flow left through the other queue";
      EXPECT_TRUE(q1.empty());
      EXPECT_EQ(net_->stats().tx_pinned.load(), 1u);
      // Data sent on pair 1 leaves through pair 1's queue and takes the flow along: the next ACK,
      // sent on pair 0, follows it there.
      drv_->add_out(3, data);
      net_->poll_pair(1);
      EXPECT_EQ(host_recv(1), data) << "data left through another pair's queue";
      drv_->add_out(1, ack);
      net_->poll_pair(0);
      EXPECT_EQ(host_recv(1), ack) << "an ACK did not follow the flow's data to pair 1";
      EXPECT_TRUE(host_recv(0).empty());
      EXPECT_EQ(net_->stats().tx_pinned.load(), 2u);
      // A flow quiet for a second has nothing in flight: its next frame picks the queue afresh.
      std::this_thread::sleep_for(std::chrono::milliseconds(1100));
      drv_->add_out(1, ack);
      net_->poll_pair(0);
      EXPECT_EQ(host_recv(0), ack) << "a flow idle for a second kept its old queue";
      EXPECT_EQ(net_->stats().tx_pinned.load(), 2u);
    } else {
      EXPECT_EQ(q0, data);
      EXPECT_EQ(q1, ack);
      EXPECT_EQ(net_->stats().tx_pinned.load(), 0u);
    }
    EXPECT_EQ(net_->stats().tx_frames.load(), pin ? 5u : 2u);
  }
}

TEST_F(VirtioNetTest, WithoutMqTheControlQueueIsQueueTwo) {
  start(4, kMrg);  // MQ offered but not acked
  const uint64_t in = drv_->alloc(4);
  drv_->write(in, std::vector<uint8_t>{VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, 2, 0});
  const uint64_t ack = drv_->alloc(1);
  drv_->add_chain(2, {{in, 4}}, {{ack, 1}});
  net_->poll_ctrl();
  EXPECT_EQ(drv_->used_idx(2), 1);
  EXPECT_EQ(drv_->read(ack, 1)[0], VIRTIO_NET_ERR);  // MQ was not negotiated
  EXPECT_EQ(net_->active_pairs(), 1u);
}


TEST_F(VirtioNetTest, WorkersServeKicksAndNeverSpin) {
  start(2, kMrg | bit(VIRTIO_NET_F_MQ), /*workers=*/true);
  const auto f = frame(200, 8);
  drv_->add_out(1, f);
  kick(1);
  std::vector<uint8_t> got;
  ASSERT_TRUE(wait_for([&] { return !(got = host_recv()).empty(); }));
  EXPECT_EQ(got, f);
  // A frame arrives with no receive buffer: held, and the worker must sleep, not poll.
  host_send(frame(300, 9));
  ASSERT_TRUE(wait_for([&] { return net_->rx_held(0); }));
  const double before = cpu_seconds();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_LT(cpu_seconds() - before, 0.05) << "a worker spins while the guest has no buffers";
  drv_->add_in(0, 1500);
  kick(0);
  ASSERT_TRUE(wait_for([&] { return drv_->used_idx(0) == 1; }));
  EXPECT_EQ(drv_->used(0, 0).len, 312u);
  EXPECT_TRUE(wait_for([&] { return irqs_[0].load() >= 1; }));
  // The counters --stats prints: one doorbell each way, and the interrupts the driver got.
  EXPECT_EQ(net_->stats().tx_kicks.load(), 1u);
  EXPECT_EQ(net_->stats().rx_kicks.load(), 1u);
  EXPECT_EQ(net_->stats().rx_interrupts.load(), static_cast<uint64_t>(irqs_[0].load()));
  EXPECT_EQ(net_->stats().tx_interrupts.load(), static_cast<uint64_t>(irqs_[1].load()));
}

size_t threads_named(std::string_view prefix) {
  size_t n = 0;
  for (const auto& t : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(t.path() / "comm");
    std::string name;
    if (std::getline(comm, name) && name.starts_with(prefix)) ++n;
  }
  return n;
}

// workers=1: one thread serves every pair, the control queue included, and each pair's traffic
// still flows through its own tap queue both ways.
TEST_F(VirtioNetTest, OneWorkerServesEveryPair) {
  worker_threads_ = 1;
  start(3, kMrg | bit(VIRTIO_NET_F_MQ) | bit(VIRTIO_NET_F_CTRL_VQ), /*workers=*/true);
  // (The thread names itself when it starts.)
  EXPECT_TRUE(wait_for([] { return threads_named("net-qs") == 1; }));
  // VQ_PAIRS_SET 3 through the control queue (queue 6), served by the worker.
  const uint64_t in = drv_->alloc(4), ack = drv_->alloc(1);
  drv_->write(in, std::vector<uint8_t>{VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, 3, 0});
  drv_->add_chain(6, {{in, 4}}, {{ack, 1}});
  kick(6);
  ASSERT_TRUE(wait_for([&] { return drv_->used_idx(6) == 1; }));
  EXPECT_EQ(drv_->read(ack, 1)[0], VIRTIO_NET_OK);
  ASSERT_EQ(net_->active_pairs(), 3u);
  for (size_t pair = 0; pair < 3; ++pair) {
    SCOPED_TRACE(pair);
    const auto out = frame(100 + pair, static_cast<uint8_t>(pair));
    drv_->add_out(2 * pair + 1, out);
    kick(2 * pair + 1);
    std::vector<uint8_t> got;
    ASSERT_TRUE(wait_for([&] { return !(got = host_recv(pair)).empty(); }));
    EXPECT_EQ(got, out);
    drv_->add_in(2 * pair, 1500);
    kick(2 * pair);
    host_send(frame(200 + pair, 3), pair);
    ASSERT_TRUE(wait_for([&] { return drv_->used_idx(2 * pair) == 1; }));
    EXPECT_EQ(drv_->used(2 * pair, 0).len, kNetHdrSize + 200 + pair);
  }
  EXPECT_EQ(net_->stats().tx_frames.load(), 3u);
  EXPECT_EQ(net_->stats().rx_frames.load(), 3u);
  EXPECT_EQ(threads_named("net-q"), 1u) << "one thread for three pairs";
}

// The nice value of this process's thread named `name` (field 19 of its stat), or nullopt.
std::optional<int> nice_of_thread(std::string_view name) {
  for (const auto& t : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(t.path() / "comm");
    std::string got;
    if (!std::getline(comm, got) || got != name) continue;
    std::ifstream stat(t.path() / "stat");
    std::string line;
    std::getline(stat, line);
    std::istringstream rest(line.substr(line.rfind(')') + 2));  // after "pid (comm) "
    std::string field;
    for (int i = 3; i <= 19 && rest >> field; ++i) {
      if (i == 19) return std::stoi(field);
    }
  }
  return std::nullopt;
}

// nice=N: while the guest sends in bulk (frames of 16 KiB or more within the last 100 ms) a worker
// runs N nice steps from the process's own nice where the host allows raising a thread's priority
// (root, CAP_SYS_NICE, RLIMIT_NICE), and at the process's nice otherwise and the rest of the time;
// NetStats says which; frames flow either way.
TEST_F(VirtioNetTest, WorkersAreRaisedWhileTheGuestSendsInBulk) {
  const int base = ::getpriority(PRIO_PROCESS, static_cast<id_t>(::getpid()));
  bool may = false;  // whether this host lets a thread of ours go 3 steps above the process
  std::thread([&] {
    may = ::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), base - 3) == 0;
  }).join();
  worker_nice_ = -3;
  start(1, kMrg, /*workers=*/true);
  auto send = [&](size_t len, uint8_t seed) {
    const auto out = frame(len, seed);
    drv_->add_out(1, out);
    kick(1);
    std::vector<uint8_t> got;
    ASSERT_TRUE(wait_for([&] { return !(got = host_recv()).empty(); }));
    EXPECT_EQ(got, out);
  };
  send(64, 1);
  EXPECT_EQ(nice_of_thread("net-q0"), base) << "small frames: no boost";
  EXPECT_EQ(net_->stats().worker_boosts.load(), 0u);
  send(20000, 2);
  // The worker looks at its priority after the pass that sent the frame.
  EXPECT_TRUE(wait_for([&] { return nice_of_thread("net-q0") == base - (may ? 3 : 0); })) << "may: " << may;
  EXPECT_EQ(net_->stats().worker_nice.load(), may ? -3 : 0);
  EXPECT_EQ(net_->stats().worker_boosts.load(), may ? 1u : 0u);
  ::usleep(150'000);  // past the bulk window
  send(64, 3);
  EXPECT_TRUE(wait_for([&] { return nice_of_thread("net-q0") == base; })) << "back once the bulk stopped";
  EXPECT_EQ(::getpriority(PRIO_PROCESS, static_cast<id_t>(::getpid())), base)
      << "the process (and the vCPU threads it starts) keeps its own";
}

// nice_when=always: raised from the start.
TEST_F(VirtioNetTest, WorkersRaisedAlwaysWhenAsked) {
  const int base = ::getpriority(PRIO_PROCESS, static_cast<id_t>(::getpid()));
  bool may = false;
  std::thread([&] {
    may = ::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), base - 2) == 0;
  }).join();
  worker_nice_ = -2;
  worker_nice_always_ = true;
  start(1, kMrg, /*workers=*/true);
  EXPECT_TRUE(wait_for([&] { return nice_of_thread("net-q0") == base - (may ? 2 : 0); })) << "may: " << may;
  EXPECT_EQ(net_->stats().worker_boosts.load(), may ? 1u : 0u);
}

TEST(MacTest, ParsesAndRefuses) {
  auto m = parse_mac("52:54:00:AB:cd:0f");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(format_mac(*m), "52:54:00:ab:cd:0f");
  EXPECT_TRUE(parse_mac("52-54-00-ab-cd-0f").ok());
  for (const char* bad : {"", "52:54:00:ab:cd", "52:54:00:ab:cd:0f:11", "52:54:00:ab:cd:0g",
                          "5:54:00:ab:cd:0f", "52:54:00:ab:cd:0f ", "zz"}) {
    auto r = parse_mac(bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_NE(r.error().message().find("52:54:00:12:34:56"), std::string::npos) << r.error().message();
    }
  }
  auto mc = parse_mac("01:00:5e:00:00:01");
  ASSERT_FALSE(mc.ok());
  EXPECT_NE(mc.error().message().find("multicast"), std::string::npos);
  const MacAddress r = random_mac();
  EXPECT_EQ(r[0] & 3, 2);  // locally administered unicast
}

}  // namespace
}  // namespace ringvm
