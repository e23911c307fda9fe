#include "devices/virtio/net/net_header.h"

#include <endian.h>

#include <algorithm>

namespace ringvm {

namespace {
constexpr bool has(uint64_t acked, unsigned bit) { return (acked & (1ULL << bit)) != 0; }
}  // namespace

std::string_view tx_header_error_name(TxHeaderError e) {
  switch (e) {
    case TxHeaderError::kOk: return "ok";
    case TxHeaderError::kShortHeader: return "short_header";
    case TxHeaderError::kRunt: return "runt";
    case TxHeaderError::kOversize: return "oversize";
    case TxHeaderError::kUnknownFlags: return "unknown_flags";
    case TxHeaderError::kCsumNotNegotiated: return "csum_not_negotiated";
    case TxHeaderError::kBadCsumRange: return "bad_csum_range";
    case TxHeaderError::kBadGsoType: return "bad_gso_type";
    case TxHeaderError::kBadGsoSize: return "bad_gso_size";
    case TxHeaderError::kBadHdrLen: return "bad_hdr_len";
  }
  return "unknown";
}

TxHeaderError validate_tx_header(const virtio_net_hdr_v1& hdr, uint64_t frame_len, uint64_t acked) {
  if (frame_len < kMinFrameBytes) return TxHeaderError::kRunt;
  if (frame_len > kMaxFrameBytes) return TxHeaderError::kOversize;
  if ((hdr.flags & ~VIRTIO_NET_HDR_F_NEEDS_CSUM) != 0) return TxHeaderError::kUnknownFlags;
  const bool needs_csum = (hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) != 0;
  if (needs_csum) {
    if (!has(acked, VIRTIO_NET_F_CSUM)) return TxHeaderError::kCsumNotNegotiated;
    const uint64_t end = uint64_t{le16toh(hdr.csum_start)} + le16toh(hdr.csum_offset) + 2;
    if (end > frame_len) return TxHeaderError::kBadCsumRange;
  }
  if (hdr.gso_type == VIRTIO_NET_HDR_GSO_NONE) return TxHeaderError::kOk;
  // No HOST_ECN is offered, so the ECN bit is as foreign as an unknown type.
  switch (hdr.gso_type) {
    case VIRTIO_NET_HDR_GSO_TCPV4:
      if (!has(acked, VIRTIO_NET_F_HOST_TSO4)) return TxHeaderError::kBadGsoType;
      break;
    case VIRTIO_NET_HDR_GSO_TCPV6:
      if (!has(acked, VIRTIO_NET_F_HOST_TSO6)) return TxHeaderError::kBadGsoType;
      break;
    case VIRTIO_NET_HDR_GSO_UDP:
      if (!has(acked, VIRTIO_NET_F_HOST_UFO)) return TxHeaderError::kBadGsoType;
      break;
    default: return TxHeaderError::kBadGsoType;
  }
  if (!needs_csum || le16toh(hdr.gso_size) == 0) return TxHeaderError::kBadGsoSize;
  const uint16_t hdr_len = le16toh(hdr.hdr_len);
  if (hdr_len == 0 || hdr_len > frame_len) return TxHeaderError::kBadHdrLen;
  return TxHeaderError::kOk;
}

namespace {

uint16_t be16_at(std::span<const uint8_t> b, size_t at) { return static_cast<uint16_t>(b[at] << 8 | b[at + 1]); }

// FNV-1a over an address.
uint32_t fnv(std::span<const uint8_t> b) {
  uint32_t h = 2166136261u;
  for (const uint8_t c : b) h = (h ^ c) * 16777619u;
  return h;
}

// MurmurHash3's finalizer: every input bit reaches the low bits a queue count takes.
uint32_t fmix(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  return h ^ (h >> 16);
}

}  // namespace

std::optional<Flow> flow_of(std::span<const uint8_t> f) {
  constexpr uint16_t kIpv4 = 0x0800, kIpv6 = 0x86dd, kVlan = 0x8100, kQinQ = 0x88a8;
  constexpr uint8_t kTcp = 6, kUdp = 17;
  if (f.size() < 14) return std::nullopt;
  uint16_t type = be16_at(f, 12);
  size_t l3 = 14;
  if (type == kVlan || type == kQinQ) {
    if (f.size() < 18) return std::nullopt;
    type = be16_at(f, 16);
    l3 = 18;
  }
  uint32_t addrs = 0;
  uint8_t proto = 0;
  size_t l4 = 0;
  bool ports_ok = false;
  size_t ip_payload = 0;  // what the IP header says follows it; 0: not said (GSO beyond 64 KiB)
  if (type == kIpv4) {
    if (f.size() < l3 + 20) return std::nullopt;
    const size_t ihl = size_t{f[l3] & 0x0fu} * 4;
    if ((f[l3] >> 4) != 4 || ihl < 20) return std::nullopt;
    proto = f[l3 + 9];
    // Commutative: A to B and B to A land together.
    addrs = fnv(f.subspan(l3 + 12, 4)) + fnv(f.subspan(l3 + 16, 4));
    l4 = l3 + ihl;
    ports_ok = (be16_at(f, l3 + 6) & 0x3fff) == 0;  // not a fragment
    const size_t total = be16_at(f, l3 + 2);
    ip_payload = total > ihl ? total - ihl : 0;
  } else if (type == kIpv6) {
    if (f.size() < l3 + 40) return std::nullopt;
    proto = f[l3 + 6];  // extension headers: addresses only
    addrs = fnv(f.subspan(l3 + 8, 16)) + fnv(f.subspan(l3 + 24, 16));
    l4 = l3 + 40;
    ports_ok = true;
    ip_payload = be16_at(f, l3 + 4);
  } else {
    return std::nullopt;
  }
  Flow flow;
  uint32_t ports = 0;
  if (ports_ok && (proto == kTcp || proto == kUdp) && f.size() >= l4 + 4) {
    const uint16_t a = be16_at(f, l4), b = be16_at(f, l4 + 2);
    ports = uint32_t{std::min(a, b)} << 16 | std::max(a, b);
  }
  if (ports_ok && proto == kTcp && f.size() >= l4 + 13 && ip_payload != 0) {
    const size_t tcp_header = (size_t{f[l4 + 12]} >> 4) * 4;
    flow.data = tcp_header < 20 || ip_payload > tcp_header;
  }
  flow.hash = fmix(addrs ^ fmix(ports ^ proto));
  return flow;
}

}  // namespace ringvm
