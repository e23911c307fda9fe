// VsockMuxer: the host side of virtio-vsock stream connections, on Unix sockets, in the scheme
// Firecracker made familiar:
//   - host-initiated: a host program connects to the listening socket PATH and writes
//     "CONNECT <guest port>\n"; the muxer sends the guest a REQUEST and, once the guest answers
//     RESPONSE, writes "OK <host port>\n" back; from then on the socket carries the stream.
//   - guest-initiated: a guest connection to host port P is connected to the Unix socket PATH_P.
//
// It is a state machine with no guest memory in it: guest packets go in through handle_guest(),
// packets for the guest come out of next_for_guest(), host sockets are served through one epoll
// fd (fd()) the device's worker waits on. So it can be tested, and fuzzed, without a guest.
//
// Flow control follows virtio 1.x section 5.10.6.3: every packet we send carries our buf_alloc
// and fwd_cnt (bytes of guest data written to the host socket); we never send the guest more
// than its advertised credit (buf_alloc - (tx_cnt - fwd_cnt)), and host data is read from the
// socket only into a packet that is about to go to the guest, so nothing is buffered on that
// side. Guest data the host socket cannot take yet is buffered up to our buf_alloc; a guest that
// exceeds the credit we gave it is reset.
#pragma once

#include <linux/virtio_vsock.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"

namespace ringvm {

// Counters for --stats; readable from any thread.
struct VsockStats {
  std::atomic<uint64_t> connections{0};  // established, either direction
  std::atomic<uint64_t> resets{0};       // RST sent to the guest
  std::atomic<uint64_t> bad_packets{0};  // malformed or misaddressed guest packets
  std::atomic<uint64_t> rx_bytes{0};     // payload delivered to the guest
  std::atomic<uint64_t> tx_bytes{0};     // guest payload written to host sockets
  std::atomic<uint64_t> credit_violations{0};
};

class VsockMuxer {
 public:
  static constexpr uint64_t kHostCid = 2;             // VMADDR_CID_HOST
  static constexpr uint32_t kBufAlloc = 256 * 1024;   // our receive buffer per connection
  static constexpr uint32_t kMaxPayload = 64 * 1024;  // per packet, either direction
  static constexpr size_t kMaxConnections = 1024;
  static constexpr size_t kMaxHandshakeBytes = 32;  // "CONNECT 4294967295\n" fits

  // Listens on `uds_path` (a stale socket there is replaced; any other file is an error).
  static Result<std::unique_ptr<VsockMuxer>> create(uint64_t guest_cid, std::string uds_path);
  ~VsockMuxer();

  // Readable when a host socket needs attention: call process_host_events().
  int fd() const { return epfd_.get(); }
  void process_host_events();

  // One packet from the guest's transmit queue; `payload` is hdr.len bytes (already checked).
  void handle_guest(const virtio_vsock_hdr& hdr, std::span<const uint8_t> payload);
  // Whether next_for_guest() has something (a control packet, or host data the guest has
  // credit for).
  bool has_packet_for_guest() const;
  // The next packet for the guest's receive queue, its payload at most `max_payload` bytes.
  std::optional<std::pair<virtio_vsock_hdr, std::vector<uint8_t>>> next_for_guest(uint32_t max_payload);

  // Forgets every connection and pending handshake (device reset: the guest forgot them too).
  void drop_all();

  size_t connection_count() const { return conns_.size(); }
  const VsockStats& stats() const { return stats_; }
  const std::string& path() const { return path_; }

 private:
  struct Conn;
  using Key = std::pair<uint32_t, uint32_t>;  // (host port, guest port)
  // Epoll data: the listener, a host socket still sending its CONNECT line, or a connection.
  struct Handshake {
    UniqueFd fd;
    std::string line;
  };

  VsockMuxer(uint64_t guest_cid, std::string path, UniqueFd listener, UniqueFd epfd);
  void accept_host();
  void read_handshake(int fd);
  void on_conn_event(Conn& c, uint32_t events);
  void flush_to_host(Conn& c);
  void update_interest(Conn& c);
  // Queues a control packet for the guest (RESPONSE, RST, SHUTDOWN, CREDIT_*).
  void queue_control(Conn& c, uint16_t op, uint32_t flags = 0);
  void queue_rst(uint32_t host_port, uint32_t guest_port);
  void reset(Conn& c);  // RST to the guest and forget the connection
  void close_conn(const Key& key);
  void maybe_finish(Conn& c);
  virtio_vsock_hdr header_for(uint32_t host_port, uint32_t guest_port, uint16_t op) const;
  uint32_t peer_credit(const Conn& c) const;
  Result<void> watch(int fd, uint32_t events);
  uint32_t allocate_host_port();

  uint64_t guest_cid_;
  std::string path_;
  UniqueFd listener_;
  UniqueFd epfd_;
  std::map<Key, std::unique_ptr<Conn>> conns_;
  std::map<int, Key> by_fd_;              // host socket -> connection
  std::map<int, Handshake> handshakes_;   // host sockets that have not said CONNECT yet
  std::deque<virtio_vsock_hdr> control_;  // packets for the guest, without payload
  uint32_t next_host_port_ = 1u << 30;
  VsockStats stats_;
};

}  // namespace ringvm
