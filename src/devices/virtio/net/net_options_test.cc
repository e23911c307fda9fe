// Option parsing, the factory's errors, and the real tap backend (inside a private network
// namespace, so the host's network is never touched; skipped where tun or namespaces are denied).
#include "devices/virtio/net/net_options.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/capability.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>

#include <chrono>
#include <map>
#include <thread>

#include "devices/virtio/net/net_test_driver.h"

namespace ringvm {
namespace {

constexpr uint64_t bit(unsigned b) { return 1ULL << b; }

std::string parse_error(std::string_view spec) {
  auto r = parse_net_spec(spec);
  return r.ok() ? "" : r.error().message();
}

NetSpec tuned(std::string_view key, std::string_view value) {
  NetSpec spec = *parse_net_spec("tap=a");
  auto r = apply_net_tuning(spec, key, value);
  EXPECT_TRUE(r.ok()) << key << "=" << value << ": " << r.error().message();
  return spec;
}

std::string tune_error(std::string_view key, std::string_view value) {
  NetSpec spec = *parse_net_spec("tap=a");
  auto r = apply_net_tuning(spec, key, value);
  return r.ok() ? std::string("(accepted)") : r.error().message();
}

TEST(NetSpecTest, ParsesTapAndFdForms) {
  auto s = parse_net_spec("tap=tap0,mac=52:54:00:12:34:56,queues=4");
  ASSERT_TRUE(s.ok()) << s.error().message();
  EXPECT_EQ(s->tap, "tap0");
  EXPECT_EQ(s->fd, -1);
  ASSERT_TRUE(s->mac.has_value());
  EXPECT_EQ(format_mac(*s->mac), "52:54:00:12:34:56");
  EXPECT_EQ(s->queues, 4);
  auto f = parse_net_spec("fd=7,id=lan");
  ASSERT_TRUE(f.ok()) << f.error().message();
  EXPECT_EQ(f->fd, 7);
  EXPECT_EQ(f->id, "lan");
  EXPECT_FALSE(f->mac.has_value());
  EXPECT_EQ(f->queues, 0);
}

TEST(NetSpecTest, ClearErrors) {
  EXPECT_NE(parse_error("tap=tap0,mac=52:54:00:12:34").find("mac=52:54:00:12:34: expected six hex pairs"),
            std::string::npos);
  EXPECT_NE(parse_error("fd=").find("fd= needs the number of an open tap fd"), std::string::npos);
  EXPECT_NE(parse_error("fd=abc").find("fd=abc must be a number"), std::string::npos);
  EXPECT_NE(parse_error("mac=52:54:00:12:34:56").find("no backend; add tap=NAME"), std::string::npos);
  EXPECT_NE(parse_error("tap=a,fd=3").find("either tap=NAME or fd=N"), std::string::npos);
  EXPECT_NE(parse_error("tap=a,colour=red").find("unknown option 'colour'"), std::string::npos);
  EXPECT_NE(parse_error("tap=a,tap=b").find("given twice"), std::string::npos);
  EXPECT_NE(parse_error("tap=a,queues=0").find("queues=0 must be a number between 1 and 64"),
            std::string::npos);
  EXPECT_NE(parse_error("fd=3,queues=2").find("use tap=NAME for multiqueue"), std::string::npos);
  EXPECT_NE(parse_error("").find("empty"), std::string::npos);
  EXPECT_NE(parse_error("tap").find("not key=value"), std::string::npos);
}

// The heuristics' constants are not --net options: each refusal names the tuning spelling.
TEST(NetSpecTest, TuningConstantsAreNotOptions) {
  for (std::string_view key : kNetTuningKeys) {
    const std::string msg = parse_error(fmt::format("tap=a,{}=1", key));
    EXPECT_NE(msg.find(fmt::format("RINGVM_TUNING=net.{}=1", key)), std::string::npos) << msg;
  }
}

// RINGVM_TUNING=net.KEY=VALUE (apply_net_tuning): the measured defaults and the values allowed.
TEST(NetSpecTest, TuningConstants) {
  EXPECT_NE(tune_error("batch_us", "10001").find("batch_us=10001"), std::string::npos);
  EXPECT_FALSE(parse_net_spec("tap=a")->batch_us.has_value());  // auto: the VMM decides
  EXPECT_FALSE(tuned("batch_us", "auto").batch_us.has_value());
  EXPECT_EQ(tuned("batch_us", "2000").batch_us, 2000u);
  EXPECT_EQ(tuned("batch_us", "0").batch_us, 0u);
  EXPECT_NE(tune_error("batch_us", "soon").find("batch_us"), std::string::npos);
  EXPECT_EQ(parse_net_spec("tap=a")->tx_early_irq_kib, 16u);
  EXPECT_EQ(tuned("tx_early_irq_kib", "0").tx_early_irq_kib, 0u);
  EXPECT_EQ(tuned("tx_early_irq_kib", "64").tx_early_irq_kib, 64u);
  EXPECT_NE(tune_error("tx_early_irq_kib", "65").find("tx_early_irq_kib"), std::string::npos);
  EXPECT_NE(tune_error("tx_early_irq_kib", "x").find("tx_early_irq_kib"), std::string::npos);
  EXPECT_FALSE(parse_net_spec("tap=a")->workers.has_value()) << "auto by default";
  EXPECT_FALSE(tuned("workers", "auto").workers.has_value());
  EXPECT_EQ(tuned("workers", "0").workers, 0u);
  EXPECT_EQ(tuned("workers", "1").workers, 1u);
  EXPECT_NE(tune_error("workers", "65").find("workers"), std::string::npos);
  EXPECT_EQ(parse_net_spec("tap=a")->worker_nice, -5) << "workers get more CPU weight than vCPUs by default";
  EXPECT_EQ(tuned("nice", "0").worker_nice, 0);
  EXPECT_EQ(tuned("nice", "-20").worker_nice, -20);
  EXPECT_EQ(tuned("nice", "19").worker_nice, 19);
  for (const char* bad : {"-21", "20", "", "-", "--1", "+3", "high"})
    EXPECT_NE(tune_error("nice", bad).find("must be a whole number of nice steps between -20 and 19"),
              std::string::npos)
        << bad;
  EXPECT_FALSE(parse_net_spec("tap=a")->worker_nice_always) << "only while sending by default";
  EXPECT_TRUE(tuned("nice_when", "always").worker_nice_always);
  EXPECT_FALSE(tuned("nice_when", "sending").worker_nice_always);
  EXPECT_NE(tune_error("nice_when", "never").find("nice_when=never: use sending"), std::string::npos);
  EXPECT_TRUE(parse_net_spec("tap=a")->pin_flows);
  EXPECT_FALSE(tuned("pin_flows", "off").pin_flows);
  EXPECT_TRUE(tuned("pin_flows", "on").pin_flows);
  EXPECT_NE(tune_error("pin_flows", "yes").find("pin_flows=yes: use on or off"), std::string::npos);
}

// workers=auto: a thread per pair while the host has a spare CPU for each, never fewer than one.
TEST(NetSpecTest, AutoWorkersFollowSpareHostCpus) {
  EXPECT_EQ(auto_net_workers(2, 2, 2), 1u) << "the lab's L1: no CPU beyond the vCPUs";
  EXPECT_EQ(auto_net_workers(2, 3, 2), 1u);
  EXPECT_EQ(auto_net_workers(2, 4, 2), 2u);
  EXPECT_EQ(auto_net_workers(4, 64, 4), 4u) << "a big host: one per pair";
  EXPECT_EQ(auto_net_workers(4, 6, 4), 2u);
  EXPECT_EQ(auto_net_workers(1, 1, 8), 1u);
}

TEST(NetSpecTest, MissingOrWrongFdIsAClearError) {
  NetSpec s;
  s.fd = 987;  // not open in this process
  auto r = make_virtio_net(s, 1);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("fd=987: not an open file descriptor"), std::string::npos)
      << r.error().message();
  s.fd = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  ASSERT_GE(s.fd, 0);
  r = make_virtio_net(s, 1);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("not an attached tun/tap fd"), std::string::npos) << r.error().message();
}

// Runs `fn` on a thread of its own in a fresh network namespace (namespaces are per thread), so
// taps and sockets it creates live there; fds stay usable from any thread afterwards.
template <typename Fn>
std::string in_private_netns(Fn fn) {
  std::string skip;
  std::thread t([&] {
    if (::unshare(CLONE_NEWNET) != 0) {
      skip = fmt::format("unshare(CLONE_NEWNET): {} (needs CAP_SYS_ADMIN)", std::strerror(errno));
      return;
    }
    if (::access("/dev/net/tun", R_OK | W_OK) != 0) {
      skip = fmt::format("/dev/net/tun: {}", std::strerror(errno));
      return;
    }
    skip = fn();
  });
  t.join();
  return skip;
}

std::string link_up(const std::string& name) {
  UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  ifreq ifr{};
  std::snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name.c_str());
  if (::ioctl(s.get(), SIOCGIFFLAGS, &ifr) != 0) return "SIOCGIFFLAGS failed";
  ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
  if (::ioctl(s.get(), SIOCSIFFLAGS, &ifr) != 0) return "SIOCSIFFLAGS failed";
  return "";
}

constexpr uint16_t kTestEtherType = 0x88b5;  // IEEE local experimental: no stack answers it

std::vector<uint8_t> test_frame(uint8_t tag, size_t payload) {
  std::vector<uint8_t> f(14 + payload);
  std::fill_n(f.begin(), 6, 0xff);  // broadcast
  const uint8_t src[6] = {0x52, 0x54, 0, 0x12, 0x34, 0x56};
  std::copy(src, src + 6, f.begin() + 6);
  f[12] = kTestEtherType >> 8;
  f[13] = kTestEtherType & 0xff;
  for (size_t i = 0; i < payload; ++i) f[14 + i] = static_cast<uint8_t>(tag + i);
  return f;
}

// Reads packet-socket frames until one carries our ethertype and `tag`; empty after 2 s.
std::vector<uint8_t> wait_frame(int fd, uint8_t tag) {
  std::vector<uint8_t> buf(70000);
  for (int i = 0; i < 400; ++i) {
    const ssize_t n = ::recv(fd, buf.data(), buf.size(), MSG_DONTWAIT);
    if (n >= 15 && buf[12] == (kTestEtherType >> 8) && buf[13] == (kTestEtherType & 0xff) && buf[14] == tag) {
      buf.resize(static_cast<size_t>(n));
      return buf;
    }
    if (n < 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return {};
}

TEST(TapTest, FramesFlowBothWaysThroughARealTap) {
  std::unique_ptr<Tap> tap;
  UniqueFd pkt;
  int ifindex = 0;
  const std::string skip = in_private_netns([&]() -> std::string {
    auto t = Tap::open("rvmtap0", 2);
    if (!t.ok()) return "Tap::open: " + t.error().message();
    tap = std::move(*t);
    if (auto e = link_up("rvmtap0"); !e.empty()) return e;
    ifindex = static_cast<int>(::if_nametoindex("rvmtap0"));
    pkt.reset(::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL)));
    if (!pkt) return fmt::format("AF_PACKET socket: {}", std::strerror(errno));
    sockaddr_ll sll{};
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = htons(ETH_P_ALL);
    sll.sll_ifindex = ifindex;
    // SAFETY: sockaddr_ll is the address type AF_PACKET's bind takes.
    if (::bind(pkt.get(), reinterpret_cast<const sockaddr*>(&sll), sizeof sll) != 0) return "bind AF_PACKET";
    return "";
  });
  if (!skip.empty()) GTEST_SKIP() << skip;
  ASSERT_EQ(tap->queue_count(), 2u);
  EXPECT_EQ(tap->name(), "rvmtap0");

  VirtioNetOptions o;
  o.run_workers = false;
  auto d = VirtioNet::create(std::move(tap), o);
  ASSERT_TRUE(d.ok()) << d.error().message();
  auto& net = **d;
  testing::NetTestDriver drv(5, 64);
  std::vector<std::unique_ptr<VirtQueue>> qs;
  std::vector<ActivatedQueue> aq;
  for (size_t i = 0; i < 5; ++i) {
    qs.push_back(std::make_unique<VirtQueue>(256));
    drv.configure(i, *qs.back());
    aq.push_back(ActivatedQueue{qs.back().get(), -1, [] {}});
  }
  const uint64_t features = net.device_features() & ~bit(VIRTIO_RING_F_EVENT_IDX);
  ASSERT_TRUE(net.activate(drv.mem(), features, std::move(aq)).ok());

  // Guest -> host, including a TSO frame the kernel takes as one GSO packet.
  std::vector<uint8_t> out(kNetHdrSize, 0);
  const auto f = test_frame(0x41, 200);
  out.insert(out.end(), f.begin(), f.end());
  drv.add_out(1, out, 64);
  std::vector<uint8_t> tso(kNetHdrSize + 14 + 20 + 20 + 2900, 0);
  virtio_net_hdr_v1 h{};
  h.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  h.gso_type = VIRTIO_NET_HDR_GSO_TCPV4;
  h.gso_size = htole16(1448);
  h.hdr_len = htole16(54);
  h.csum_start = htole16(34);
  h.csum_offset = htole16(16);
  std::memcpy(tso.data(), &h, sizeof h);
  uint8_t* e = tso.data() + kNetHdrSize;
  std::fill_n(e, 6, 0xff);
  e[12] = 0x08;  // IPv4
  e[14] = 0x45;  // version 4, 20-byte header
  const uint16_t ip_len = htons(20 + 20 + 2900);
  std::memcpy(e + 16, &ip_len, 2);
  e[22] = 64;                                    // ttl
  e[23] = 6;                                     // TCP
  e[26] = 10, e[29] = 1, e[30] = 10, e[33] = 2;  // 10.0.0.1 -> 10.0.0.2
  e[34 + 12] = 0x50;                             // TCP data offset 5
  drv.add_out(1, tso, 1000);
  net.poll_pair(0);
  EXPECT_EQ(net.stats().tx_frames.load(), 2u) << "tx errors " << net.stats().tx_errors.load();
  EXPECT_EQ(net.stats().tx_errors.load(), 0u);
  EXPECT_EQ(net.stats().tx_drops.load(), 0u);
  EXPECT_EQ(wait_frame(pkt.get(), 0x41), f);

  // Host -> guest through the tap, into mergeable buffers.
  std::map<uint32_t, uint64_t> buffer_at;  // chain head -> guest address
  for (uint32_t i = 0; i < 32; ++i) buffer_at[i] = drv.add_in(0, 1024);
  const auto back = test_frame(0x42, 1400);  // under the MTU; 1426 bytes take two 1024-byte buffers
  sockaddr_ll to{};
  to.sll_family = AF_PACKET;
  to.sll_ifindex = ifindex;
  to.sll_halen = 6;
  std::fill_n(to.sll_addr, 6, 0xff);
  // SAFETY: sockaddr_ll is the address type AF_PACKET's sendto takes.
  ASSERT_EQ(
      ::sendto(pkt.get(), back.data(), back.size(), 0, reinterpret_cast<const sockaddr*>(&to), sizeof to),
      static_cast<ssize_t>(back.size()));
  std::vector<uint8_t> got;
  uint16_t nb_seen = 0;
  for (int i = 0; i < 400 && got.empty(); ++i) {
    net.poll_pair(0);
    // Other frames (IPv6 router solicitations on link-up) may arrive too; look at each.
    for (uint16_t u = 0; u < drv.used_idx(0) && got.empty();) {
      virtio_net_hdr_v1 rh{};
      std::memcpy(&rh, drv.read(buffer_at[drv.used(0, u).id], sizeof rh).data(), sizeof rh);
      const uint16_t nb = std::max<uint16_t>(le16toh(rh.num_buffers), 1);
      std::vector<uint8_t> all;
      for (uint16_t k = 0; k < nb; ++k) {
        const auto el = drv.used(0, static_cast<uint16_t>(u + k));
        auto part = drv.read(buffer_at[el.id], el.len);
        all.insert(all.end(), part.begin(), part.end());
      }
      if (all.size() > kNetHdrSize + 14 && all[kNetHdrSize + 14] == 0x42 && all[kNetHdrSize + 12] == 0x88) {
        got.assign(all.begin() + kNetHdrSize, all.end());
        nb_seen = nb;
      }
      u = static_cast<uint16_t>(u + nb);
    }
    if (got.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(nb_seen, 2);
  EXPECT_EQ(got, back);
  net.reset();
}

TEST(TapTest, MultiQueueAttachDetachAndAdoptedFd) {
  std::string err;
  UniqueFd plain, vnet;
  const std::string skip = in_private_netns([&]() -> std::string {
    auto t = Tap::open("rvmmq0", 4);
    if (!t.ok()) return "Tap::open: " + t.error().message();
    auto r = (*t)->set_active_queues(2);
    if (!r.ok()) err = r.error().message();
    r = (*t)->set_active_queues(4);
    if (!r.ok()) err = r.error().message();
    // A single-queue tap cannot serve 2 queues: the error says how to fix it.
    auto sq = Tap::open("rvmsq0", 1);
    if (!sq.ok()) err = sq.error().message();
    auto two = Tap::open("rvmsq0", 2);
    if (two.ok())
      err = "opened a single-queue tap with 2 queues";
    else if (two.error().message().find("multi_queue") == std::string::npos)
      err = two.error().message();
    for (auto [fd, flags] :
         {std::pair{&plain, IFF_TAP | IFF_NO_PI}, std::pair{&vnet, IFF_TAP | IFF_NO_PI | IFF_VNET_HDR}}) {
      fd->reset(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
      ifreq ifr{};
      std::snprintf(ifr.ifr_name, IFNAMSIZ, "%s", flags & IFF_VNET_HDR ? "rvmfd1" : "rvmfd0");
      ifr.ifr_flags = static_cast<short>(flags);
      if (::ioctl(fd->get(), TUNSETIFF, &ifr) != 0) return "TUNSETIFF for an inherited-fd test tap";
    }
    return "";
  });
  if (!skip.empty()) GTEST_SKIP() << skip;
  EXPECT_EQ(err, "");
  auto bad = Tap::adopt(plain.release());
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message().find("without IFF_VNET_HDR"), std::string::npos) << bad.error().message();
  NetSpec spec;
  spec.fd = vnet.release();
  auto dev = make_virtio_net(spec, 8);
  ASSERT_TRUE(dev.ok()) << dev.error().message();
  EXPECT_EQ((*dev)->queue_pairs(), 1u);  // an inherited fd is one queue whatever the vCPU count
  EXPECT_EQ((*dev)->backend().name(), "rvmfd1");
}

TEST(TapTest, UnprivilegedCreationSaysHowToFixIt) {
  std::string msg;
  const std::string skip = in_private_netns([&]() -> std::string {
    // Drop CAP_NET_ADMIN from this thread only (capabilities are per thread).
    __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2]{};
    if (::syscall(SYS_capget, &hdr, data) != 0) return "capget";
    data[0].effective &= ~(1u << CAP_NET_ADMIN);
    if (::syscall(SYS_capset, &hdr, data) != 0) return "capset";
    NetSpec spec;
    spec.tap = "rvmnopriv0";
    auto r = make_virtio_net(spec, 2);
    msg = r.ok() ? "created a tap without CAP_NET_ADMIN" : r.error().message();
    return "";
  });
  if (!skip.empty()) GTEST_SKIP() << skip;
  EXPECT_NE(msg.find("tap rvmnopriv0: cannot create or attach to it without privilege"), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("ip tuntap add rvmnopriv0 mode tap multi_queue user $USER"), std::string::npos) << msg;
  EXPECT_NE(msg.find("fd=N"), std::string::npos) << msg;
}

}  // namespace
}  // namespace ringvm

namespace ringvm {
namespace {

double cpu_now() {
  timespec ts{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

TEST(TapTest, DetachedQueuesAreIdleUntilTheDriverEnablesThem) {
  std::unique_ptr<Tap> tap;
  UniqueFd pkt;
  const std::string skip = in_private_netns([&]() -> std::string {
    auto t = Tap::open("rvmmqw0", 2);
    if (!t.ok()) return "Tap::open: " + t.error().message();
    tap = std::move(*t);
    if (auto e = link_up("rvmmqw0"); !e.empty()) return e;
    pkt.reset(::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ALL)));
    sockaddr_ll sll{};
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = htons(ETH_P_ALL);
    sll.sll_ifindex = static_cast<int>(::if_nametoindex("rvmmqw0"));
    // SAFETY: sockaddr_ll is the address type AF_PACKET's bind takes.
    if (!pkt || ::bind(pkt.get(), reinterpret_cast<const sockaddr*>(&sll), sizeof sll) != 0)
      return "AF_PACKET";
    return "";
  });
  if (!skip.empty()) GTEST_SKIP() << skip;
  auto d = VirtioNet::create(std::move(tap), VirtioNetOptions{});
  ASSERT_TRUE(d.ok()) << d.error().message();
  auto& net = **d;
  testing::NetTestDriver drv(5, 64);
  std::vector<std::unique_ptr<VirtQueue>> qs;
  std::vector<UniqueFd> kicks;
  std::vector<ActivatedQueue> aq;
  for (size_t i = 0; i < 5; ++i) {
    qs.push_back(std::make_unique<VirtQueue>(256));
    drv.configure(i, *qs.back());
    kicks.emplace_back(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    aq.push_back(ActivatedQueue{qs.back().get(), kicks.back().get(), [] {}});
  }
  ASSERT_TRUE(net.activate(drv.mem(), net.device_features(), std::move(aq)).ok());
  drv.add_in(2, 2048);  // pair 1 has a buffer, but its tap queue is detached
  // A detached tap queue is always "ready" with EPOLLERR: its worker must not spin on it.
  const double before = cpu_now();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_LT(cpu_now() - before, 0.05);
  EXPECT_EQ(net.stats().rx_errors.load(), 0u);
  // The driver enables both pairs through the control queue.
  const uint64_t cmd = drv.alloc(4);
  drv.write(cmd, std::vector<uint8_t>{VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, 2, 0});
  const uint64_t ack = drv.alloc(1);
  drv.add_chain(4, {{cmd, 4}}, {{ack, 1}});
  const uint64_t one = 1;
  ASSERT_EQ(::write(kicks[4].get(), &one, 8), 8);
  for (int i = 0; i < 400 && net.active_pairs() != 2; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_EQ(net.active_pairs(), 2u);
  EXPECT_EQ(drv.read(ack, 1)[0], VIRTIO_NET_OK);
  // Pair 1 now carries traffic to the tap.
  std::vector<uint8_t> out(kNetHdrSize, 0);
  const auto f = test_frame(0x51, 100);
  out.insert(out.end(), f.begin(), f.end());
  drv.add_out(3, out);
  ASSERT_EQ(::write(kicks[3].get(), &one, 8), 8);
  EXPECT_EQ(wait_frame(pkt.get(), 0x51), f);
  EXPECT_EQ(net.stats().rx_errors.load(), 0u);
  net.reset();
}

}  // namespace
}  // namespace ringvm
