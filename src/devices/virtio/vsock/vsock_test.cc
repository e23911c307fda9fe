#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <filesystem>
#include <thread>

#include "base/state_codec.h"
#include "devices/virtio/net/chain_state.h"
#include "devices/virtio/net/net_test_driver.h"
#include "devices/virtio/vsock/virtio_vsock.h"

namespace ringvm {
namespace {

constexpr uint64_t kCid = 42;

virtio_vsock_hdr from_guest(uint16_t op, uint32_t guest_port, uint32_t host_port, uint32_t len = 0,
                            uint32_t flags = 0, uint32_t buf_alloc = 1 << 20, uint32_t fwd_cnt = 0) {
  virtio_vsock_hdr h{};
  h.src_cid = htole64(kCid);
  h.dst_cid = htole64(2);
  h.src_port = htole32(guest_port);
  h.dst_port = htole32(host_port);
  h.len = htole32(len);
  h.type = htole16(VIRTIO_VSOCK_TYPE_STREAM);
  h.op = htole16(op);
  h.flags = htole32(flags);
  h.buf_alloc = htole32(buf_alloc);
  h.fwd_cnt = htole32(fwd_cnt);
  return h;
}

std::span<const uint8_t> bytes(std::string_view s) {
  // SAFETY: viewing a string's characters as bytes.
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

UniqueFd unix_connect(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
  // SAFETY: sockaddr_un is AF_UNIX's address type.
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0) return UniqueFd();
  return fd;
}

UniqueFd unix_listen(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
  // SAFETY: sockaddr_un is AF_UNIX's address type.
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0 || ::listen(fd.get(), 4) != 0)
    return UniqueFd();
  return fd;
}

std::string read_some(int fd) {
  char buf[256];
  const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
}

class VsockMuxerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ringvm-vsock-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/v.sock";
    auto m = VsockMuxer::create(kCid, path_);
    ASSERT_TRUE(m.ok()) << m.error().message();
    mux_ = std::move(*m);
  }
  void TearDown() override {
    mux_.reset();
    std::filesystem::remove_all(dir_);
  }
  virtio_vsock_hdr next(uint16_t want_op, std::vector<uint8_t>* payload = nullptr) {
    auto p = mux_->next_for_guest(VsockMuxer::kMaxPayload);
    EXPECT_TRUE(p.has_value());
    if (!p) return {};
    EXPECT_EQ(le16toh(p->first.op), want_op);
    EXPECT_EQ(le64toh(p->first.src_cid), 2u);
    EXPECT_EQ(le64toh(p->first.dst_cid), kCid);
    EXPECT_EQ(le32toh(p->first.len), p->second.size());
    if (payload) *payload = p->second;
    return p->first;
  }
  // A host-initiated connection to guest port 1234, established; returns (host socket, host port).
  std::pair<UniqueFd, uint32_t> host_connect(uint32_t guest_buf_alloc = 1 << 20) {
    UniqueFd c = unix_connect(path_);
    EXPECT_TRUE(c.valid());
    EXPECT_EQ(::send(c.get(), "CONNECT 1234\n", 13, 0), 13);
    mux_->process_host_events();  // accept
    mux_->process_host_events();  // the CONNECT line
    const auto req = next(VIRTIO_VSOCK_OP_REQUEST);
    EXPECT_EQ(le32toh(req.dst_port), 1234u);
    const uint32_t hp = le32toh(req.src_port);
    EXPECT_GE(hp, 1u << 30);
    mux_->handle_guest(from_guest(VIRTIO_VSOCK_OP_RESPONSE, 1234, hp, 0, 0, guest_buf_alloc), {});
    EXPECT_EQ(read_some(c.get()), fmt::format("OK {}\n", hp));
    return {std::move(c), hp};
  }

  std::string dir_, path_;
  std::unique_ptr<VsockMuxer> mux_;
};

TEST_F(VsockMuxerTest, HostInitiatedConnectionCarriesDataBothWays) {
  auto [c, hp] = host_connect();
  EXPECT_EQ(mux_->connection_count(), 1u);
  ASSERT_EQ(::send(c.get(), "hello", 5, 0), 5);
  mux_->process_host_events();
  ASSERT_TRUE(mux_->has_packet_for_guest());
  std::vector<uint8_t> data;
  const auto rw = next(VIRTIO_VSOCK_OP_RW, &data);
  EXPECT_EQ(std::string(data.begin(), data.end()), "hello");
  EXPECT_EQ(le32toh(rw.dst_port), 1234u);
  EXPECT_EQ(le32toh(rw.buf_alloc), VsockMuxer::kBufAlloc);
  mux_->handle_guest(from_guest(VIRTIO_VSOCK_OP_RW, 1234, hp, 5), bytes("world"));
  EXPECT_EQ(read_some(c.get()), "world");
  EXPECT_EQ(mux_->stats().tx_bytes.load(), 5u);
  EXPECT_EQ(mux_->stats().rx_bytes.load(), 5u);
}

TEST_F(VsockMuxerTest, GuestInitiatedConnectionGoesToPathUnderscorePort) {
  UniqueFd listener = unix_listen(path_ + "_5000");
  ASSERT_TRUE(listener.valid());
  mux_->handle_guest(from_guest(VIRTIO_VSOCK_OP_REQUEST, 777, 5000), {});
  const auto resp = next(VIRTIO_VSOCK_OP_RESPONSE);
  EXPECT_EQ(le32toh(resp.src_port), 5000u);
  EXPECT_EQ(le32toh(resp.dst_port), 777u);
  UniqueFd server(::accept(listener.get(), nullptr, nullptr));
  ASSERT_TRUE(server.valid());
  mux_->handle_guest(from_guest(VIRTIO_VSOCK_OP_RW, 777, 5000, 4), bytes("ping"));
  EXPECT_EQ(read_some(server.get()), "ping");
  // Nobody listens on port 5001: the guest gets RST.
  mux_->handle_guest(from_guest(VIRTIO_VSOCK_OP_REQUEST, 778, 5001), {});
  const auto rst = next(VIRTIO_VSOCK_OP_RST);
  EXPECT_EQ(le32toh(rst.dst_port), 778u);
  EXPECT_EQ(mux_->connection_count(), 1u);
}

TEST_F(VsockMuxerTest, NeverSendsMoreThanTheGuestsCredit) {
  auto [c, hp] = host_connect(/*guest_buf_alloc=*/10);
  const std::string big(100, 'x');
  ASSERT_EQ(::send(c.get(), big.data(), big.size(), 0), 100);
  mux_->process_host_events();
  std::vector<uint8_t> data;
  next(VIRTIO_VSOCK_OP_RW, &data);
  EXPECT_EQ(data.size(), 10u);
  EXPECT_FALSE(mux_->has_packet_for_guest());  // no credit left
  mux_->process_host_events();
  EXPECT_FALSE(mux_->next_for_guest(VsockMuxer::kMaxPayload).has_value());
  // The guest consumed 10 bytes and says so.
  mux_->handle_guest(from_guest(VIRTIO_VSOCK_OP_CREDIT_UPDATE, 1234, hp, 0, 0, 10, 10), {});
  mux_->process_host_events();
  next(VIRTIO_VSOCK_OP_RW, &data);
  EXPECT_EQ(data.size(), 10u);
  // A credit request is answered with our counters.
  mux_->handle_guest(from_guest(VIRTIO_VSOCK_OP_RW, 1234, hp, 3, 0, 10, 20), bytes("abc"));
  mux_->handle_guest(from_guest(VIRTIO_VSOCK_OP_CREDIT_REQUEST, 1234, hp, 0, 0, 10, 20), {});
  const auto upd = next(VIRTIO_VSOCK_OP_CREDIT_UPDATE);
  EXPECT_EQ(le32toh(upd.fwd_cnt), 3u);
}

TEST_F(VsockMuxerTest, GuestExceedingOurCreditIsReset) {
  auto [c, hp] = host_connect();
  // The host never reads; the guest keeps sending past the 256 KiB we allowed.
  const std::vector<uint8_t> chunk(VsockMuxer::kMaxPayload, 'y');
  for (int i = 0; i < 64 && mux_->connection_count() == 1; ++i)
    mux_->handle_guest(from_guest(VIRTIO_VSOCK_OP_RW, 1234, hp, VsockMuxer::kMaxPayload), chunk);
  EXPECT_EQ(mux_->connection_count(), 0u);
  EXPECT_EQ(mux_->stats().credit_violations.load(), 1u);
  // Credit updates for what the socket took came first; the reset is last.
  uint16_t last = 0;
  while (auto p = mux_->next_for_guest(VsockMuxer::kMaxPayload)) last = le16toh(p->first.op);
  EXPECT_EQ(last, VIRTIO_VSOCK_OP_RST);
}

TEST_F(VsockMuxerTest, HalfCloseThenFullShutdownResets) {
  auto [c, hp] = host_connect();
  ASSERT_EQ(::shutdown(c.get(), SHUT_WR), 0);
  mux_->process_host_events();
  const auto sd = next(VIRTIO_VSOCK_OP_SHUTDOWN);
  EXPECT_EQ(le32toh(sd.flags), uint32_t{VIRTIO_VSOCK_SHUTDOWN_SEND});
  // Half-closed: the guest may still answer.
  mux_->handle_guest(from_guest(VIRTIO_VSOCK_OP_RW, 1234, hp, 4), bytes("late"));
  EXPECT_EQ(read_some(c.get()), "late");
  EXPECT_EQ(mux_->connection_count(), 1u);
  mux_->handle_guest(from_guest(VIRTIO_VSOCK_OP_SHUTDOWN, 1234, hp, 0,
                                VIRTIO_VSOCK_SHUTDOWN_SEND | VIRTIO_VSOCK_SHUTDOWN_RCV),
                     {});
  next(VIRTIO_VSOCK_OP_RST);
  EXPECT_EQ(mux_->connection_count(), 0u);
  char b;
  EXPECT_EQ(::recv(c.get(), &b, 1, 0), 0);  // the host sees EOF
}

TEST_F(VsockMuxerTest, GuestResetClosesTheHostSocket) {
  auto [c, hp] = host_connect();
  mux_->handle_guest(from_guest(VIRTIO_VSOCK_OP_RST, 1234, hp), {});
  EXPECT_EQ(mux_->connection_count(), 0u);
  EXPECT_FALSE(mux_->has_packet_for_guest());  // no RST in answer to an RST
  char b;
  EXPECT_EQ(::recv(c.get(), &b, 1, 0), 0);
}

TEST_F(VsockMuxerTest, GuestRefusingAHostConnectionClosesIt) {
  UniqueFd c = unix_connect(path_);
  ASSERT_EQ(::send(c.get(), "CONNECT 9\n", 10, 0), 10);
  mux_->process_host_events();
  mux_->process_host_events();
  const auto req = next(VIRTIO_VSOCK_OP_REQUEST);
  mux_->handle_guest(from_guest(VIRTIO_VSOCK_OP_RST, 9, le32toh(req.src_port)), {});
  char b;
  EXPECT_EQ(::recv(c.get(), &b, 1, 0), 0);
}

TEST_F(VsockMuxerTest, BadPacketsAndBadHandshakes) {
  auto h = from_guest(VIRTIO_VSOCK_OP_RW, 1, 2, 0);
  h.src_cid = htole64(7);  // not our guest
  mux_->handle_guest(h, {});
  EXPECT_EQ(mux_->stats().bad_packets.load(), 1u);
  EXPECT_FALSE(mux_->has_packet_for_guest());
  mux_->handle_guest(from_guest(VIRTIO_VSOCK_OP_RW, 1, 2, 3), bytes("abc"));  // no such connection
  next(VIRTIO_VSOCK_OP_RST);
  auto dgram = from_guest(VIRTIO_VSOCK_OP_REQUEST, 1, 2);
  dgram.type = htole16(3);
  mux_->handle_guest(dgram, {});
  next(VIRTIO_VSOCK_OP_RST);
  mux_->handle_guest(from_guest(VIRTIO_VSOCK_OP_RW, 1, 2, 10), bytes("abc"));  // len disagrees
  EXPECT_EQ(mux_->stats().bad_packets.load(), 3u);
  UniqueFd c = unix_connect(path_);
  ASSERT_EQ(::send(c.get(), "HELLO 1\n", 8, 0), 8);
  mux_->process_host_events();
  mux_->process_host_events();
  char b;
  EXPECT_EQ(::recv(c.get(), &b, 1, 0), 0);  // dropped
  EXPECT_FALSE(mux_->has_packet_for_guest());
}

TEST(VsockSpecTest, ParsesAndExplains) {
  auto s = parse_vsock_spec("cid=3,socket=/tmp/v.sock");
  ASSERT_TRUE(s.ok()) << s.error().message();
  EXPECT_EQ(s->cid, 3u);
  EXPECT_EQ(s->socket, "/tmp/v.sock");
  auto msg = [](std::string_view t) {
    auto r = parse_vsock_spec(t);
    return r.ok() ? std::string() : r.error().message();
  };
  EXPECT_NE(msg("socket=/tmp/x").find("cid=N is required"), std::string::npos);
  EXPECT_NE(msg("cid=2,socket=/tmp/x").find("cid=2 must be a number between 3"), std::string::npos);
  EXPECT_NE(msg("cid=5").find("socket=PATH is required"), std::string::npos);
  EXPECT_NE(msg("cid=5,port=3").find("unknown option 'port'"), std::string::npos);
}

TEST(VirtioVsockTest, PacketsCrossTheQueues) {
  char tmpl[] = "/tmp/ringvm-vsockdev-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string path = std::string(tmpl) + "/v.sock";
  auto d = VirtioVsock::create(kCid, path);
  ASSERT_TRUE(d.ok()) << d.error().message();
  auto& dev = **d;
  uint64_t cid = 0;
  dev.read_config(0, {reinterpret_cast<uint8_t*>(&cid), 8});
  EXPECT_EQ(le64toh(cid), kCid);
  testing::NetTestDriver drv(3, 16);
  std::vector<std::unique_ptr<VirtQueue>> qs;
  std::vector<ActivatedQueue> aq;
  for (size_t i = 0; i < 3; ++i) {
    qs.push_back(std::make_unique<VirtQueue>(256));
    drv.configure(i, *qs.back());
    aq.push_back(ActivatedQueue{qs.back().get(), -1, [] {}});
  }
  ASSERT_TRUE(
      dev.activate(drv.mem(), dev.device_features() & ~(1ULL << VIRTIO_RING_F_EVENT_IDX), std::move(aq))
          .ok());
  // The receive buffer goes in before the host connects: there is no kick fd here, so a worker
  // that met the CONNECT before the buffer was posted would wait for a kick that never comes.
  const uint64_t rx = drv.add_in(0, 4096);
  UniqueFd c = unix_connect(path);
  ASSERT_EQ(::send(c.get(), "CONNECT 80\n", 11, 0), 11);
  // The worker runs too; wait until it delivered the REQUEST.
  for (int i = 0; i < 400 && drv.used_idx(0) == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_EQ(drv.used_idx(0), 1);
  EXPECT_EQ(drv.used(0, 0).len, 44u);
  virtio_vsock_hdr req{};
  std::memcpy(&req, drv.read(rx, 44).data(), 44);
  EXPECT_EQ(le16toh(req.op), VIRTIO_VSOCK_OP_REQUEST);
  EXPECT_EQ(le32toh(req.dst_port), 80u);
  const auto resp = from_guest(VIRTIO_VSOCK_OP_RESPONSE, 80, le32toh(req.src_port));
  // SAFETY: viewing the packed header's bytes.
  drv.add_out(1, {reinterpret_cast<const uint8_t*>(&resp), 44});
  drv.add_out(1, std::vector<uint8_t>(10, 0));  // malformed: shorter than a header
  dev.on_event(VirtioVsock::kTxQueue);          // no kick fd here: tests call the worker's entry point
  std::string ok;
  for (int i = 0; i < 400 && ok.empty(); ++i) {
    ok = read_some(c.get());
    if (ok.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(ok, fmt::format("OK {}\n", le32toh(req.src_port)));
  dev.reset();
  EXPECT_EQ(dev.muxer().connection_count(), 0u);
  std::filesystem::remove_all(tmpl);
}

// After a restore, connections are gone and the guest is told so: once activated, the device
// uses one event buffer for a VIRTIO_VSOCK_EVENT_TRANSPORT_RESET, and keeps its own CID.
class VirtioVsockStateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ringvm-vsockstate-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::unique_ptr<VirtioVsock> make(uint64_t cid, const std::string& name) {
    auto d = VirtioVsock::create(cid, dir_ + "/" + name);
    EXPECT_TRUE(d.ok());
    return d.ok() ? std::move(*d) : nullptr;
  }
  Result<void> activate(VirtioVsock& dev, testing::NetTestDriver& drv, size_t first) {
    std::vector<ActivatedQueue> aq;
    for (size_t i = 0; i < 3; ++i) {
      qs_.push_back(std::make_unique<VirtQueue>(256));
      drv.configure(first + i, *qs_.back());
      aq.push_back(ActivatedQueue{qs_.back().get(), -1, [this] { ++irqs_; }});
    }
    return dev.activate(drv.mem(), dev.device_features(), std::move(aq));
  }
  std::string dir_;
  std::vector<std::unique_ptr<VirtQueue>> qs_;
  std::atomic<int> irqs_{0};
};

TEST_F(VirtioVsockStateTest, RestoreRaisesOneTransportResetAndKeepsTheNewCid) {
  auto a = make(kCid, "a.sock");
  testing::NetTestDriver drv(6, 16);
  ASSERT_TRUE(activate(*a, drv, 0).ok());
  ASSERT_TRUE(a->pause().ok());
  auto state = a->save();
  ASSERT_TRUE(state.ok()) << state.error().message();
  a->reset();

  auto b = make(kCid + 1, "b.sock");  // a clone: another CID
  ASSERT_TRUE(b->restore(*state).ok());
  uint64_t cid = 0;
  b->read_config(0, {reinterpret_cast<uint8_t*>(&cid), 8});
  EXPECT_EQ(le64toh(cid), kCid + 1);
  // The driver's event buffers, posted before the device is activated (filled with 0xff: the
  // event must overwrite them).
  const uint64_t ev1 = drv.add_in(5, 8);
  drv.write(ev1, std::vector<uint8_t>(8, 0xff));
  drv.add_in(5, 8);
  ASSERT_TRUE(activate(*b, drv, 3).ok());
  for (int i = 0; i < 400 && drv.used_idx(5) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_EQ(drv.used_idx(5), 1);
  EXPECT_EQ(drv.used(5, 0).len, sizeof(virtio_vsock_event));
  EXPECT_EQ(drv.read(ev1, 4), std::vector<uint8_t>(4, 0));  // id 0: VIRTIO_VSOCK_EVENT_TRANSPORT_RESET
  static_assert(VIRTIO_VSOCK_EVENT_TRANSPORT_RESET == 0);
  EXPECT_EQ(drv.read(ev1 + 4, 1)[0], 0xff);
  EXPECT_GE(irqs_.load(), 1);
  // Once: the worker's later passes raise no more.
  b->on_event(VirtioVsock::kEventQueue);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(drv.used_idx(5), 1);
  b->reset();
  // A device that was not restored raises none.
  auto c = make(kCid, "c.sock");
  testing::NetTestDriver drv2(3, 16);
  drv2.add_in(2, 8);
  ASSERT_TRUE(activate(*c, drv2, 0).ok());
  c->on_event(VirtioVsock::kEventQueue);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(drv2.used_idx(2), 0);
  c->reset();
}

TEST_F(VirtioVsockStateTest, RefusesBadStatesAndStaysAsItWas) {
  auto a = make(kCid, "a.sock");
  const std::vector<uint8_t> good = *a->save();
  auto b = make(kCid, "b.sock");
  auto refused = [&](const std::vector<uint8_t>& s, std::string_view says) {
    auto r = b->restore(s);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, ErrorCode::kCorrupt) << r.error().message();
    EXPECT_NE(r.error().message().find(says), std::string::npos) << r.error().message();
  };
  for (size_t len = 0; len < good.size(); ++len)
    refused(std::vector<uint8_t>(good.begin(), good.begin() + static_cast<ptrdiff_t>(len)), "state ends after");
  auto trailing = good;
  trailing.push_back(0);
  refused(trailing, "follow the end");
  auto boolean = good;
  boolean[4 + 8 + 8] = 2;
  refused(boolean, "not a boolean");
  auto cid = good;
  cid[4 + 8] = 2;  // the host's CID
  cid[4 + 8 + 1] = 0;
  refused(cid, "guest_cid");
  uint64_t config_cid = 0;
  b->read_config(0, {reinterpret_cast<uint8_t*>(&config_cid), 8});
  EXPECT_EQ(le64toh(config_cid), kCid);
  // A held receive chain whose buffer lies outside guest memory: refused at activation.
  auto spare = good;
  spare.back() = 1;
  StateWriter w;
  DescriptorChain c;
  c.head = 3;
  c.writable.push_back({uint64_t{1} << 40, 4096});
  save_chain(w, c);
  spare.insert(spare.end(), w.data().begin(), w.data().end());
  ASSERT_TRUE(b->restore(spare).ok());
  testing::NetTestDriver drv(3, 16);
  auto r = activate(*b, drv, 0);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("outside guest memory"), std::string::npos) << r.error().message();
  // The refused activation took the held chain with it: a good state restores and activates.
  ASSERT_TRUE(b->restore(good).ok());
  ASSERT_TRUE(activate(*b, drv, 0).ok());
  b->reset();
}

}  // namespace
}  // namespace ringvm
