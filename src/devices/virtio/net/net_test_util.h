// For the virtio-net unit tests: the feature sets they negotiate and IPv4 TCP/UDP frames behind a
// virtio-net header.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include <linux/virtio_config.h>
#include <linux/virtio_net.h>

#include "devices/virtio/net/net_header.h"

namespace ringvm::testing {

constexpr uint64_t bit(unsigned b) { return 1ULL << b; }
// What a driver without mergeable receive buffers acks; kMrg adds them.
constexpr uint64_t kBase = bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_NET_F_CSUM) | bit(VIRTIO_NET_F_GUEST_CSUM) |
                           bit(VIRTIO_NET_F_HOST_TSO4) | bit(VIRTIO_NET_F_HOST_TSO6) |
                           bit(VIRTIO_NET_F_GUEST_TSO4) | bit(VIRTIO_NET_F_MAC) | bit(VIRTIO_NET_F_STATUS) |
                           bit(VIRTIO_NET_F_CTRL_VQ);
constexpr uint64_t kMrg = kBase | bit(VIRTIO_NET_F_MRG_RXBUF);

// An IPv4 TCP (or UDP) frame from src:sport to dst:dport behind a virtio-net header. payload < 0: the IP length is left 0 (as in a GSO
// frame beyond 64 KiB) and the TCP data offset too; otherwise a 20-byte TCP header and `payload`
// bytes, with the IP length saying so.
inline std::vector<uint8_t> ip_frame(std::array<uint8_t, 4> src, uint16_t sport, std::array<uint8_t, 4> dst,
                                     uint16_t dport, uint8_t proto = 6, uint16_t frag = 0, int payload = -1) {
  constexpr size_t kEth = 14, kIp = 20, kL4 = 20;
  std::vector<uint8_t> f(kNetHdrSize + kEth + kIp + kL4 + static_cast<size_t>(std::max(payload, 0)), 0xab);
  std::fill_n(f.begin(), kNetHdrSize + kEth + kIp + kL4, uint8_t{0});
  uint8_t* eth = f.data() + kNetHdrSize;
  const std::array<uint8_t, kEth> eth_hdr{0x52, 0x54, 0, 0, 0, 1, 0x52, 0x54, 0, 0, 0, 2, 0x08, 0x00};
  std::memcpy(eth, eth_hdr.data(), kEth);
  uint8_t* ip = eth + kEth;
  ip[0] = 0x45;
  ip[6] = static_cast<uint8_t>(frag >> 8);
  ip[7] = static_cast<uint8_t>(frag);
  ip[8] = 64;
  ip[9] = proto;
  if (payload >= 0) {
    ip[2] = static_cast<uint8_t>((40 + payload) >> 8);
    ip[3] = static_cast<uint8_t>(40 + payload);
  }
  std::memcpy(ip + 12, src.data(), 4);
  std::memcpy(ip + 16, dst.data(), 4);
  uint8_t* l4 = ip + kIp;
  l4[0] = static_cast<uint8_t>(sport >> 8);
  l4[1] = static_cast<uint8_t>(sport);
  l4[2] = static_cast<uint8_t>(dport >> 8);
  l4[3] = static_cast<uint8_t>(dport);
  if (payload >= 0) l4[12] = 5 << 4;
  return f;
}

// The frame without its virtio-net header (what flow_of and validate_tx_header see).
inline std::span<const uint8_t> after_header(const std::vector<uint8_t>& f) {
  return std::span<const uint8_t>(f).subspan(kNetHdrSize);
}

}  // namespace ringvm::testing
