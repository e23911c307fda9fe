#include "devices/virtio/vsock/vsock_muxer.h"

#include <endian.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <array>
#include <charconv>
#include <cstring>

#include "base/log.h"
#include "base/unix_address.h"

namespace ringvm {

namespace {

constexpr size_t kMaxControlPackets = 4096;

}  // namespace

struct VsockMuxer::Conn {
  UniqueFd fd;
  uint32_t host_port = 0;
  uint32_t guest_port = 0;
  bool established = false;  // false: host-initiated, waiting for the guest's RESPONSE
  // The guest's receive buffer (from the last header it sent) and our sends against it.
  uint32_t peer_buf_alloc = 0;
  uint32_t peer_fwd_cnt = 0;
  uint32_t tx_cnt = 0;
  // Guest bytes written to the host socket, and the value the guest last heard from us.
  uint32_t fwd_cnt = 0;
  uint32_t fwd_cnt_sent = 0;
  std::vector<uint8_t> to_host;  // guest data the socket has not taken yet (<= kBufAlloc)
  bool host_readable = false;    // the socket has data (or EOF) we have not read yet
  bool host_eof = false;         // the host will send no more; SHUTDOWN(SEND) went to the guest
  bool hung_up = false;          // the socket is gone both ways; no longer polled
  bool guest_shut_send = false;  // the guest will send no more: SHUT_WR once to_host drains
  bool guest_shut_rcv = false;   // the guest takes no more data
  uint32_t interest = 0;
};

Result<std::unique_ptr<VsockMuxer>> VsockMuxer::create(uint64_t guest_cid, std::string uds_path) {
  const sockaddr_un addr = TRY(unix_address(uds_path, "vsock socket"));
  struct stat st {};
  if (::lstat(uds_path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      return make_error(ErrorCode::kInvalidArgument,
                        "vsock socket={}: exists and is not a socket; remove it or pick "
                        "another path",
                        uds_path);
    ::unlink(uds_path.c_str());  // a stale socket from an earlier run
  }
  UniqueFd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!listener) return sys_error("vsock: socket(AF_UNIX)");
  // SAFETY: sockaddr_un is the address type AF_UNIX's bind takes.
  if (::bind(listener.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0)
    return sys_error(fmt::format("vsock socket={}: bind", uds_path));
  if (::listen(listener.get(), 64) != 0) return sys_error(fmt::format("vsock socket={}: listen", uds_path));
  UniqueFd epfd(::epoll_create1(EPOLL_CLOEXEC));
  if (!epfd) return sys_error("vsock: epoll_create1");
  std::unique_ptr<VsockMuxer> m(
      new VsockMuxer(guest_cid, std::move(uds_path), std::move(listener), std::move(epfd)));
  RETURN_IF_ERROR(m->watch(m->listener_.get(), EPOLLIN));
  return m;
}

VsockMuxer::VsockMuxer(uint64_t guest_cid, std::string path, UniqueFd listener, UniqueFd epfd)
    : guest_cid_(guest_cid), path_(std::move(path)), listener_(std::move(listener)), epfd_(std::move(epfd)) {}

VsockMuxer::~VsockMuxer() { ::unlink(path_.c_str()); }

Result<void> VsockMuxer::watch(int fd, uint32_t events) {
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  if (::epoll_ctl(epfd_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) return sys_error("vsock: epoll_ctl add");
  return Ok();
}

void VsockMuxer::drop_all() {
  conns_.clear();  // closing a socket also removes it from the epoll set
  by_fd_.clear();
  handshakes_.clear();
  control_.clear();
}

void VsockMuxer::process_host_events() {
  std::array<epoll_event, 32> events{};
  const int n = ::epoll_wait(epfd_.get(), events.data(), static_cast<int>(events.size()), 0);
  for (int k = 0; k < n; ++k) {
    const int fd = events[static_cast<size_t>(k)].data.fd;
    const uint32_t ev = events[static_cast<size_t>(k)].events;
    if (fd == listener_.get()) {
      accept_host();
    } else if (handshakes_.count(fd)) {
      read_handshake(fd);
    } else if (auto it = by_fd_.find(fd); it != by_fd_.end()) {
      if (auto c = conns_.find(it->second); c != conns_.end()) on_conn_event(*c->second, ev);
    }
  }
}

void VsockMuxer::accept_host() {
  for (;;) {
    UniqueFd fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!fd) return;
    if (conns_.size() + handshakes_.size() >= kMaxConnections) {
      RINGVM_LOG_RATELIMITED(warn, "vsock {}: {} connections already; refusing another", path_,
                             kMaxConnections);
      continue;
    }
    const int raw = fd.get();
    if (!watch(raw, EPOLLIN).ok()) continue;
    handshakes_[raw] = Handshake{std::move(fd), {}};
  }
}

void VsockMuxer::read_handshake(int fd) {
  auto& hs = handshakes_[fd];
  std::array<char, kMaxHandshakeBytes> buf{};
  // Peek first and consume only up to the newline: bytes after it are stream data.
  const ssize_t n = ::recv(fd, buf.data(), kMaxHandshakeBytes - hs.line.size(), MSG_PEEK);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n <= 0) {
    handshakes_.erase(fd);
    return;
  }
  const std::string_view seen(buf.data(), static_cast<size_t>(n));
  const size_t nl = seen.find('\n');
  const size_t take = nl == std::string_view::npos ? seen.size() : nl + 1;
  [[maybe_unused]] auto r = ::recv(fd, buf.data(), take, 0);
  hs.line.append(buf.data(), take);
  if (nl == std::string_view::npos) {
    if (hs.line.size() >= kMaxHandshakeBytes)
      handshakes_.erase(fd);  // no line in sight: not a client of ours
    return;
  }
  uint32_t port = 0;
  constexpr std::string_view kConnect = "CONNECT ";
  const std::string_view line(hs.line.data(), hs.line.size() - 1);
  const bool ok = line.starts_with(kConnect) && line.size() > kConnect.size() &&
                  std::from_chars(line.data() + kConnect.size(), line.data() + line.size(), port).ptr ==
                      line.data() + line.size();
  if (!ok) {
    RINGVM_LOG_RATELIMITED(warn, "vsock {}: a host client sent '{}', expected 'CONNECT <port>'", path_, line);
    handshakes_.erase(fd);
    return;
  }
  auto c = std::make_unique<Conn>();
  c->fd = std::move(hs.fd);
  c->interest = EPOLLIN;  // as the handshake registered it
  handshakes_.erase(fd);
  c->host_port = allocate_host_port();
  c->guest_port = port;
  const Key key{c->host_port, c->guest_port};
  by_fd_[fd] = key;
  Conn& conn = *c;
  conns_[key] = std::move(c);
  update_interest(conn);
  queue_control(conn, VIRTIO_VSOCK_OP_REQUEST);
}

uint32_t VsockMuxer::allocate_host_port() {
  // Ephemeral ports from 2^30 up, skipping ones in use (there are at most kMaxConnections).
  for (;;) {
    const uint32_t p = next_host_port_++;
    if (next_host_port_ == 0) next_host_port_ = 1u << 30;
    bool used = false;
    for (const auto& [key, conn] : conns_) used = used || key.first == p;
    if (!used) return p;
  }
}

virtio_vsock_hdr VsockMuxer::header_for(uint32_t host_port, uint32_t guest_port, uint16_t op) const {
  virtio_vsock_hdr h{};
  h.src_cid = htole64(kHostCid);
  h.dst_cid = htole64(guest_cid_);
  h.src_port = htole32(host_port);
  h.dst_port = htole32(guest_port);
  h.type = htole16(VIRTIO_VSOCK_TYPE_STREAM);
  h.op = htole16(op);
  h.buf_alloc = htole32(kBufAlloc);
  return h;
}

void VsockMuxer::queue_control(Conn& c, uint16_t op, uint32_t flags) {
  if (control_.size() >= kMaxControlPackets) return;  // the guest stopped reading; it will time out
  virtio_vsock_hdr h = header_for(c.host_port, c.guest_port, op);
  h.flags = htole32(flags);
  h.fwd_cnt = htole32(c.fwd_cnt);
  c.fwd_cnt_sent = c.fwd_cnt;
  control_.push_back(h);
}

void VsockMuxer::queue_rst(uint32_t host_port, uint32_t guest_port) {
  stats_.resets.fetch_add(1, std::memory_order_relaxed);
  if (control_.size() < kMaxControlPackets)
    control_.push_back(header_for(host_port, guest_port, VIRTIO_VSOCK_OP_RST));
}

void VsockMuxer::reset(Conn& c) {
  const Key key{c.host_port, c.guest_port};
  queue_rst(c.host_port, c.guest_port);
  close_conn(key);
}

void VsockMuxer::close_conn(const Key& key) {
  auto it = conns_.find(key);
  if (it == conns_.end()) return;
  by_fd_.erase(it->second->fd.get());
  conns_.erase(it);  // closes the socket, which leaves the epoll set
}

uint32_t VsockMuxer::peer_credit(const Conn& c) const {
  // Unsigned wrap-around is the spec's arithmetic: the counters are free-running.
  const uint32_t in_flight = c.tx_cnt - c.peer_fwd_cnt;
  return in_flight >= c.peer_buf_alloc ? 0 : c.peer_buf_alloc - in_flight;
}

void VsockMuxer::update_interest(Conn& c) {
  if (c.hung_up) return;
  uint32_t want = 0;
  if (c.established && !c.host_readable && !c.host_eof && !c.guest_shut_rcv && peer_credit(c) > 0)
    want |= EPOLLIN;
  if (!c.to_host.empty()) want |= EPOLLOUT;
  if (want == c.interest) return;
  epoll_event ev{};
  ev.events = want;
  ev.data.fd = c.fd.get();
  if (::epoll_ctl(epfd_.get(), EPOLL_CTL_MOD, c.fd.get(), &ev) != 0)
    (void)::epoll_ctl(epfd_.get(), EPOLL_CTL_ADD, c.fd.get(), &ev);
  c.interest = want;
}

void VsockMuxer::on_conn_event(Conn& c, uint32_t events) {
  if (events & (EPOLLHUP | EPOLLERR)) {
    // Gone both ways: stop polling (a hung-up fd is always "ready") and read what is left.
    (void)::epoll_ctl(epfd_.get(), EPOLL_CTL_DEL, c.fd.get(), nullptr);
    c.hung_up = true;
    if (!c.established || !c.to_host.empty()) {
      reset(c);
      return;
    }
    c.host_readable = true;
    return;
  }
  if (events & EPOLLIN) c.host_readable = true;
  if (events & EPOLLOUT) {
    const Key key{c.host_port, c.guest_port};  // flush_to_host may free `c`
    flush_to_host(c);
    if (conns_.count(key) == 0) return;
  }
  update_interest(c);
}

void VsockMuxer::flush_to_host(Conn& c) {
  while (!c.to_host.empty()) {
    const ssize_t n = ::send(c.fd.get(), c.to_host.data(), c.to_host.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n <= 0) {
      reset(c);
      return;
    }
    c.to_host.erase(c.to_host.begin(), c.to_host.begin() + n);
    c.fwd_cnt += static_cast<uint32_t>(n);
    stats_.tx_bytes.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
  }
  // Tell the guest about freed space before it could run dry (a quarter of the window).
  if (c.fwd_cnt - c.fwd_cnt_sent >= kBufAlloc / 4) queue_control(c, VIRTIO_VSOCK_OP_CREDIT_UPDATE);
  if (c.to_host.empty() && c.guest_shut_send) ::shutdown(c.fd.get(), SHUT_WR);
  maybe_finish(c);
}

void VsockMuxer::maybe_finish(Conn& c) {
  // Both directions closed: the connection is over; RST tells the guest to free it now.
  const bool to_host_done = c.guest_shut_send && c.to_host.empty();
  const bool to_guest_done = c.host_eof || c.guest_shut_rcv;
  if (c.established && to_host_done && to_guest_done) reset(c);
}

void VsockMuxer::handle_guest(const virtio_vsock_hdr& hdr, std::span<const uint8_t> payload) {
  const uint64_t src_cid = le64toh(hdr.src_cid);
  const uint64_t dst_cid = le64toh(hdr.dst_cid);
  const uint32_t guest_port = le32toh(hdr.src_port);
  const uint32_t host_port = le32toh(hdr.dst_port);
  const uint16_t op = le16toh(hdr.op);
  if (src_cid != guest_cid_ || dst_cid != kHostCid || payload.size() != le32toh(hdr.len)) {
    // Not from our guest, or not to us: nobody to answer.
    stats_.bad_packets.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  if (le16toh(hdr.type) != VIRTIO_VSOCK_TYPE_STREAM) {
    stats_.bad_packets.fetch_add(1, std::memory_order_relaxed);
    if (op != VIRTIO_VSOCK_OP_RST) queue_rst(host_port, guest_port);
    return;
  }
  const Key key{host_port, guest_port};
  auto it = conns_.find(key);
  if (op == VIRTIO_VSOCK_OP_REQUEST) {
    if (it != conns_.end() || conns_.size() + handshakes_.size() >= kMaxConnections) {
      queue_rst(host_port, guest_port);
      return;
    }
    const std::string target = fmt::format("{}_{}", path_, host_port);
    auto addr = unix_address(target, "vsock socket");
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    // SAFETY: sockaddr_un is the address type AF_UNIX's connect takes.
    if (!addr.ok() || !fd ||
        ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof *addr) != 0) {
      RINGVM_LOG_RATELIMITED(info, "vsock: guest port {} -> host port {}: nothing listens on {}", guest_port,
                             host_port, target);
      queue_rst(host_port, guest_port);
      return;
    }
    auto c = std::make_unique<Conn>();
    c->fd = std::move(fd);
    c->host_port = host_port;
    c->guest_port = guest_port;
    c->established = true;
    c->peer_buf_alloc = le32toh(hdr.buf_alloc);
    c->peer_fwd_cnt = le32toh(hdr.fwd_cnt);
    const int raw = c->fd.get();
    Conn& conn = *c;
    if (!watch(raw, 0).ok()) {
      queue_rst(host_port, guest_port);
      return;
    }
    conns_[key] = std::move(c);
    by_fd_[raw] = key;
    stats_.connections.fetch_add(1, std::memory_order_relaxed);
    queue_control(conn, VIRTIO_VSOCK_OP_RESPONSE);
    update_interest(conn);
    return;
  }
  if (it == conns_.end()) {
    if (op != VIRTIO_VSOCK_OP_RST) queue_rst(host_port, guest_port);
    return;
  }
  Conn& c = *it->second;
  c.peer_buf_alloc = le32toh(hdr.buf_alloc);
  c.peer_fwd_cnt = le32toh(hdr.fwd_cnt);
  switch (op) {
    case VIRTIO_VSOCK_OP_RESPONSE: {
      if (c.established) {
        reset(c);
        return;
      }
      c.established = true;
      const std::string ok = fmt::format("OK {}\n", c.host_port);
      // The socket is fresh and empty: a line this short always fits.
      if (::send(c.fd.get(), ok.data(), ok.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(ok.size())) {
        reset(c);
        return;
      }
      stats_.connections.fetch_add(1, std::memory_order_relaxed);
      break;
    }
    case VIRTIO_VSOCK_OP_RW:
      if (!c.established || c.guest_shut_send) {
        reset(c);
        return;
      }
      if (c.to_host.size() + payload.size() > kBufAlloc) {
        // More than the credit we gave: a broken or hostile driver. Buffering it would let a
        // guest make us hold unbounded memory.
        stats_.credit_violations.fetch_add(1, std::memory_order_relaxed);
        reset(c);
        return;
      }
      c.to_host.insert(c.to_host.end(), payload.begin(), payload.end());
      flush_to_host(c);
      if (conns_.count(key) == 0) return;
      break;
    case VIRTIO_VSOCK_OP_CREDIT_UPDATE: break;  // the credit fields were taken above
    case VIRTIO_VSOCK_OP_CREDIT_REQUEST: queue_control(c, VIRTIO_VSOCK_OP_CREDIT_UPDATE); break;
    case VIRTIO_VSOCK_OP_SHUTDOWN: {
      const uint32_t flags = le32toh(hdr.flags);
      if (flags & VIRTIO_VSOCK_SHUTDOWN_RCV) c.guest_shut_rcv = true;
      if (flags & VIRTIO_VSOCK_SHUTDOWN_SEND) c.guest_shut_send = true;
      flush_to_host(c);
      if (conns_.count(key) == 0) return;
      break;
    }
    case VIRTIO_VSOCK_OP_RST: close_conn(key); return;
    default:
      stats_.bad_packets.fetch_add(1, std::memory_order_relaxed);
      reset(c);
      return;
  }
  update_interest(c);
}

bool VsockMuxer::has_packet_for_guest() const {
  if (!control_.empty()) return true;
  for (const auto& [key, c] : conns_)
    if (c->established && c->host_readable && !c->host_eof && !c->guest_shut_rcv && peer_credit(*c) > 0)
      return true;
  return false;
}

std::optional<std::pair<virtio_vsock_hdr, std::vector<uint8_t>>> VsockMuxer::next_for_guest(
    uint32_t max_payload) {
  if (!control_.empty()) {
    auto h = control_.front();
    control_.pop_front();
    return std::pair{h, std::vector<uint8_t>{}};
  }
  for (auto it = conns_.begin(); it != conns_.end();) {
    Conn& c = *it->second;
    ++it;  // `c` may be erased below
    const uint32_t credit = peer_credit(c);
    if (!c.established || !c.host_readable || c.host_eof || c.guest_shut_rcv || credit == 0) continue;
    std::vector<uint8_t> data(std::min({max_payload, credit, kMaxPayload}));
    if (data.empty()) return std::nullopt;
    const ssize_t n = ::recv(c.fd.get(), data.data(), data.size(), 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      c.host_readable = false;
      update_interest(c);
      continue;
    }
    if (n < 0) {
      reset(c);
      return next_for_guest(max_payload);
    }
    if (n == 0) {
      // The host shut its sending side; the guest may still send (a half-closed connection).
      c.host_eof = true;
      c.host_readable = false;
      queue_control(c, VIRTIO_VSOCK_OP_SHUTDOWN, VIRTIO_VSOCK_SHUTDOWN_SEND);
      const Key key{c.host_port, c.guest_port};  // maybe_finish may free `c`
      maybe_finish(c);
      if (conns_.count(key)) update_interest(c);
      return next_for_guest(max_payload);
    }
    data.resize(static_cast<size_t>(n));
    virtio_vsock_hdr h = header_for(c.host_port, c.guest_port, VIRTIO_VSOCK_OP_RW);
    h.len = htole32(static_cast<uint32_t>(n));
    h.fwd_cnt = htole32(c.fwd_cnt);
    c.fwd_cnt_sent = c.fwd_cnt;
    c.tx_cnt += static_cast<uint32_t>(n);
    stats_.rx_bytes.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
    update_interest(c);
    return std::pair{h, std::move(data)};
  }
  return std::nullopt;
}

}  // namespace ringvm
