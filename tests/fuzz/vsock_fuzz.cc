// Fuzzes the virtio-vsock packet parser and connection state machine (VsockMuxer) with
// sequences of guest packets, interleaved with host activity on real Unix sockets: a host
// client that connected with "CONNECT 5", and a host service listening on PATH_1 for guest
// connections to host port 1. Each record of the input:
//   [op u8][ports u8][flags u8][len u8][buf_alloc u16 le][fwd_cnt u16 le][len bytes of payload]
// ports: low nibble the guest port (0..15), high nibble the host port: 0 = the CONNECT
// connection's port, else 1..15. op >= 8 also makes the host side act (write, read, shut down).
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "base/log.h"
#include "devices/virtio/vsock/vsock_muxer.h"

namespace {

constexpr uint64_t kCid = 3;

int unix_socket(const std::string& path, bool listen) {
  // Non-blocking: the harness must never wait on a socket (accept with nobody connecting).
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | (listen ? SOCK_NONBLOCK : 0), 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
  // SAFETY: sockaddr_un is AF_UNIX's address type.
  const auto* sa = reinterpret_cast<const sockaddr*>(&a);
  if (listen ? (::bind(fd, sa, sizeof a) != 0 || ::listen(fd, 64) != 0) : ::connect(fd, sa, sizeof a) != 0)
    __builtin_trap();
  return fd;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string dir = [] {
    char tmpl[] = "/tmp/ringvm-vsock-fuzz-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) __builtin_trap();
    return std::string(tmpl);
  }();
  const std::string path = dir + "/v.sock";
  auto m = ringvm::VsockMuxer::create(kCid, path);
  if (!m.ok()) __builtin_trap();
  auto& mux = **m;
  ::unlink((path + "_1").c_str());
  const int service = unix_socket(path + "_1", true);
  const int client = unix_socket(path, false);
  (void)::send(client, "CONNECT 5\n", 10, MSG_NOSIGNAL);
  mux.process_host_events();
  mux.process_host_events();
  uint32_t host_port = 0;
  std::vector<int> accepted;
  auto drain = [&] {
    mux.process_host_events();
    for (int i = 0; i < 64; ++i) {
      auto p = mux.next_for_guest(static_cast<uint32_t>(64 + 512 * (i % 4)));
      if (!p) break;
      if (le16toh(p->first.op) == VIRTIO_VSOCK_OP_REQUEST) host_port = le32toh(p->first.src_port);
    }
  };
  drain();
  char buf[4096];
  for (size_t at = 0; at + 8 <= size;) {
    const uint8_t* r = data + at;
    const size_t len = std::min<size_t>(r[3], size - at - 8);
    virtio_vsock_hdr h{};
    h.src_cid = htole64(r[0] & 0x80 ? 7 : kCid);  // sometimes misaddressed
    h.dst_cid = htole64(2);
    h.src_port = htole32(r[1] & 0xf);
    h.dst_port = htole32((r[1] >> 4) == 0 ? host_port : (r[1] >> 4));
    h.type = htole16(r[0] & 0x40 ? 2 : 1);
    h.op = htole16(r[0] & 7);
    h.flags = htole32(r[2] & 3);
    h.len = htole32(static_cast<uint32_t>(len));
    h.buf_alloc = htole32(static_cast<uint32_t>(r[4] | r[5] << 8) << 4);
    h.fwd_cnt = htole32(static_cast<uint32_t>(r[6] | r[7] << 8));
    mux.handle_guest(h, {r + 8, len});
    if (r[0] & 8) {
      switch (r[2] >> 4) {
        case 0: (void)::send(client, r + 8, len, MSG_NOSIGNAL | MSG_DONTWAIT); break;
        case 1: (void)::recv(client, buf, sizeof buf, MSG_DONTWAIT); break;
        case 2: ::shutdown(client, SHUT_WR); break;
        case 3: {
          const int a = ::accept4(service, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (a >= 0) accepted.push_back(a);
          break;
        }
        case 4:
          for (int a : accepted) (void)::send(a, r + 8, len, MSG_NOSIGNAL | MSG_DONTWAIT);
          break;
        case 5:
          for (int a : accepted) ::close(a);
          accepted.clear();
          break;
        default: break;
      }
    }
    drain();
    at += 8 + len;
  }
  for (int a : accepted) ::close(a);
  ::close(client);
  ::close(service);
  return 0;
}
