// Validation of the virtio_net_hdr_v1 a guest puts in front of every transmitted frame
// (virtio 1.x section 5.1.6.2), before the frame reaches the host kernel.
//
// The tap re-checks the header itself, but a frame the kernel would refuse (or a GSO request for
// an offload the guest never negotiated) is cheaper to drop and count here, with a reason.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "devices/virtio/net/net_abi.h"

namespace ringvm {

// sizeof(virtio_net_hdr_v1): with VIRTIO_F_VERSION_1 the header always has num_buffers.
inline constexpr uint32_t kNetHdrSize = sizeof(virtio_net_hdr_v1);
// The largest frame a guest may send or receive: a 64 KiB GSO packet, its Ethernet header and a
// VLAN tag (the header excluded).
inline constexpr uint32_t kMaxFrameBytes = 65535 + 14 + 4;
// The smallest: an Ethernet header.
inline constexpr uint32_t kMinFrameBytes = 14;

enum class TxHeaderError : uint8_t {
  kOk,
  kShortHeader,        // fewer bytes than the 12-byte header
  kRunt,               // no room for an Ethernet header after it
  kOversize,           // more than kMaxFrameBytes after the header
  kUnknownFlags,       // flag bits other than NEEDS_CSUM
  kCsumNotNegotiated,  // NEEDS_CSUM without VIRTIO_NET_F_CSUM
  kBadCsumRange,       // csum_start + csum_offset + 2 past the frame
  kBadGsoType,         // unknown gso_type, ECN, or an offload the guest did not negotiate
  kBadGsoSize,         // GSO with gso_size 0, or without NEEDS_CSUM (spec 5.1.6.2.1)
  kBadHdrLen,          // GSO hdr_len 0 or past the frame
};
std::string_view tx_header_error_name(TxHeaderError e);

// `frame_len` counts the bytes after the header; `acked` is the negotiated feature set. The
// header fields are little-endian (VIRTIO_F_VERSION_1).
TxHeaderError validate_tx_header(const virtio_net_hdr_v1& hdr, uint64_t frame_len, uint64_t acked);

// How many bytes of a frame (after the virtio-net header) flow_of() may look at: Ethernet, one
// VLAN tag, an IPv4 header with options or an IPv6 header, and a TCP header without options.
inline constexpr size_t kFlowHeaderBytes = 18 + 60 + 20;

// What flow_of() learns from a frame's headers.
struct Flow {
  // The same in both directions (addresses and ports swapped): IPv4 or IPv6 addresses, plus the
  // ports for TCP and UDP (not for fragments).
  uint32_t hash = 0;
  // False only for a TCP segment whose IP length leaves no payload past its TCP header: a pure
  // ACK (or SYN, FIN, RST). Everything else, a GSO frame included, counts as data.
  bool data = true;
};
// The flow of an Ethernet frame behind at most one VLAN tag; nullopt for anything but IPv4 and
// IPv6 (ARP, truncated headers). `frame` may be cut short at kFlowHeaderBytes. Every byte is
// untrusted guest data: only lengths it has are read.
std::optional<Flow> flow_of(std::span<const uint8_t> frame);
inline std::optional<uint32_t> flow_hash(std::span<const uint8_t> frame) {
  const auto f = flow_of(frame);
  return f ? std::optional<uint32_t>(f->hash) : std::nullopt;
}

}  // namespace ringvm
