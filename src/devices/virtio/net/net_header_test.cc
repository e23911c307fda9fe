// flow_of / flow_hash and validate_tx_header (net_header.h) on frames built by net_test_util.h.
#include "devices/virtio/net/net_header.h"

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <vector>

#include "devices/virtio/net/net_test_util.h"

namespace ringvm {
namespace {

using testing::after_header;
using testing::bit;
using testing::ip_frame;
using testing::kBase;

TEST(NetHeaderTest, FlowHashIsTheSameBothWaysAndTellsFlowsApart) {
  const std::array<uint8_t, 4> a{10, 0, 2, 2}, b{10, 0, 2, 1};
  const auto ab = ip_frame(a, 40000, b, 5201), ba = ip_frame(b, 5201, a, 40000);
  ASSERT_TRUE(flow_hash(after_header(ab)).has_value());
  EXPECT_EQ(flow_hash(after_header(ab)), flow_hash(after_header(ba)));
  // Flows differing in one port spread over two queues about evenly.
  int odd = 0;
  for (uint16_t port = 40000; port < 40064; ++port) odd += *flow_hash(after_header(ip_frame(a, port, b, 5201))) % 2;
  EXPECT_GT(odd, 16);
  EXPECT_LT(odd, 48);
  // UDP takes its ports too; a fragment (MF or an offset) only its addresses.
  EXPECT_NE(flow_hash(after_header(ip_frame(a, 1, b, 2, 17))), flow_hash(after_header(ip_frame(a, 3, b, 2, 17))));
  EXPECT_EQ(flow_hash(after_header(ip_frame(a, 1, b, 2, 17, 0x2000))),
            flow_hash(after_header(ip_frame(a, 3, b, 4, 17, 0x0010))));
  // Not IP, a bad IPv4 header, or cut short: no flow.
  auto arp = ab;
  arp[kNetHdrSize + 12] = 0x08;
  arp[kNetHdrSize + 13] = 0x06;
  EXPECT_FALSE(flow_hash(after_header(arp)).has_value());
  auto bad = ab;
  bad[kNetHdrSize + 14] = 0x44;  // IHL 4: 16 bytes
  EXPECT_FALSE(flow_hash(after_header(bad)).has_value());
  EXPECT_FALSE(flow_hash(after_header(ab).first(14 + 19)).has_value());
  EXPECT_FALSE(flow_hash({}).has_value());
  // Cut before the ports: the addresses alone still name the flow.
  EXPECT_TRUE(flow_hash(after_header(ab).first(14 + 20)).has_value());
  // Behind a VLAN tag: the same flow.
  auto tagged = ab;
  const uint8_t tag[4] = {0x81, 0x00, 0x00, 0x05};
  tagged.insert(tagged.begin() + kNetHdrSize + 12, tag, tag + 4);
  EXPECT_EQ(flow_hash(after_header(tagged)), flow_hash(after_header(ab)));
}

TEST(NetHeaderTest, FlowTellsPureAcksFromData) {
  const std::array<uint8_t, 4> a{10, 0, 2, 2}, b{10, 0, 2, 1};
  const auto data_of = [](const std::vector<uint8_t>& f) { return flow_of(after_header(f)).value().data; };
  EXPECT_FALSE(data_of(ip_frame(a, 40000, b, 5201, 6, 0, 0))) << "a TCP segment without payload";
  EXPECT_TRUE(data_of(ip_frame(a, 40000, b, 5201, 6, 0, 1)));
  EXPECT_TRUE(data_of(ip_frame(a, 40000, b, 5201, 6, 0, 1400)));
  EXPECT_TRUE(data_of(ip_frame(a, 40000, b, 5201))) << "IP length 0: a GSO frame, data";
  EXPECT_TRUE(data_of(ip_frame(a, 40000, b, 5201, 17, 0, 0))) << "UDP is always data";
  EXPECT_TRUE(data_of(ip_frame(a, 40000, b, 5201, 6, 0x2000, 0))) << "a fragment is data";
  // TCP options count as header, not payload: a 32-byte header (timestamps) in a 52-byte packet.
  auto ts = ip_frame(a, 40000, b, 5201, 6, 0, 12);
  ts[kNetHdrSize + 14 + 20 + 12] = 8 << 4;
  EXPECT_FALSE(data_of(ts));
  // A data offset below 5 words is nonsense: data, as without pinning.
  auto bad = ip_frame(a, 40000, b, 5201, 6, 0, 0);
  bad[kNetHdrSize + 14 + 20 + 12] = 4 << 4;
  EXPECT_TRUE(data_of(bad));
  // Cut before the data offset: data.
  EXPECT_TRUE(flow_of(after_header(ip_frame(a, 40000, b, 5201, 6, 0, 0)).first(14 + 20 + 12))->data);
  // The hash does not depend on the payload.
  EXPECT_EQ(flow_of(after_header(ip_frame(a, 40000, b, 5201, 6, 0, 0)))->hash,
            flow_of(after_header(ip_frame(b, 5201, a, 40000, 6, 0, 900)))->hash);
}

TEST(NetHeaderTest, FlowHashReadsIpv6) {
  std::vector<uint8_t> f{0x52, 0x54, 0, 0, 0, 1, 0x52, 0x54, 0, 0, 0, 2, 0x86, 0xdd};
  std::vector<uint8_t> ip6(40, 0);
  ip6[0] = 0x60;
  ip6[6] = 6;
  ip6[8 + 15] = 1;   // ::1
  ip6[24 + 15] = 2;  // ::2
  f.insert(f.end(), ip6.begin(), ip6.end());
  const uint8_t ports[4] = {0x9c, 0x40, 0x14, 0x51};
  f.insert(f.end(), ports, ports + 4);
  auto g = f;  // the reply: addresses and ports swapped
  std::swap_ranges(g.begin() + 14 + 8, g.begin() + 14 + 24, g.begin() + 14 + 24);
  std::swap_ranges(g.begin() + 54, g.begin() + 56, g.begin() + 56);
  ASSERT_TRUE(flow_hash(f).has_value());
  EXPECT_EQ(flow_hash(f), flow_hash(g));
  // A whole TCP header and a payload length: a pure ACK, then one data byte.
  f.resize(14 + 40 + 20, 0);
  f[14 + 40 + 12] = 5 << 4;
  f[14 + 5] = 20;
  EXPECT_FALSE(flow_of(f)->data);
  f[14 + 5] = 21;
  f.push_back(0);
  EXPECT_TRUE(flow_of(f)->data);
  EXPECT_EQ(flow_hash(f), flow_hash(g));
}

TEST(NetHeaderTest, ValidatesEveryField) {
  virtio_net_hdr_v1 h{};
  EXPECT_EQ(validate_tx_header(h, 60, kBase), TxHeaderError::kOk);
  EXPECT_EQ(validate_tx_header(h, 13, kBase), TxHeaderError::kRunt);
  EXPECT_EQ(validate_tx_header(h, kMaxFrameBytes + 1, kBase), TxHeaderError::kOversize);
  h.flags = 0x80;
  EXPECT_EQ(validate_tx_header(h, 60, kBase), TxHeaderError::kUnknownFlags);
  h.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  h.csum_start = htole16(34);
  h.csum_offset = htole16(16);
  EXPECT_EQ(validate_tx_header(h, 60, kBase), TxHeaderError::kOk);
  EXPECT_EQ(validate_tx_header(h, 60, bit(VIRTIO_F_VERSION_1)), TxHeaderError::kCsumNotNegotiated);
  EXPECT_EQ(validate_tx_header(h, 51, kBase), TxHeaderError::kBadCsumRange);
  h.csum_start = htole16(0xffff);
  h.csum_offset = htole16(0xffff);
  EXPECT_EQ(validate_tx_header(h, kMaxFrameBytes, kBase), TxHeaderError::kBadCsumRange);  // no u16 overflow
  h.csum_start = htole16(34);
  h.csum_offset = htole16(16);
  h.gso_type = VIRTIO_NET_HDR_GSO_TCPV4;
  h.gso_size = htole16(1448);
  h.hdr_len = htole16(66);
  EXPECT_EQ(validate_tx_header(h, 3000, kBase), TxHeaderError::kOk);
  EXPECT_EQ(validate_tx_header(h, 3000, kBase & ~bit(VIRTIO_NET_F_HOST_TSO4)), TxHeaderError::kBadGsoType);
  h.gso_type = VIRTIO_NET_HDR_GSO_UDP;
  EXPECT_EQ(validate_tx_header(h, 3000, kBase), TxHeaderError::kBadGsoType);  // UFO not negotiated
  EXPECT_EQ(validate_tx_header(h, 3000, kBase | bit(VIRTIO_NET_F_HOST_UFO)), TxHeaderError::kOk);
  h.gso_type = VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_ECN;
  EXPECT_EQ(validate_tx_header(h, 3000, kBase), TxHeaderError::kBadGsoType);
  h.gso_type = 2;
  EXPECT_EQ(validate_tx_header(h, 3000, kBase), TxHeaderError::kBadGsoType);
  h.gso_type = VIRTIO_NET_HDR_GSO_TCPV6;
  h.gso_size = 0;
  EXPECT_EQ(validate_tx_header(h, 3000, kBase), TxHeaderError::kBadGsoSize);
  h.gso_size = htole16(1448);
  h.flags = 0;
  EXPECT_EQ(validate_tx_header(h, 3000, kBase), TxHeaderError::kBadGsoSize);  // GSO needs NEEDS_CSUM
  h.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  h.hdr_len = htole16(3001);
  EXPECT_EQ(validate_tx_header(h, 3000, kBase), TxHeaderError::kBadHdrLen);
  h.hdr_len = 0;
  EXPECT_EQ(validate_tx_header(h, 3000, kBase), TxHeaderError::kBadHdrLen);
}

}  // namespace
}  // namespace ringvm
