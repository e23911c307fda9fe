#include "devices/virtio/net/net_header.h"

#include <endian.h>

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

}  // namespace ringvm
