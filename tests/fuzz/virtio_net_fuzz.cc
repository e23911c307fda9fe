// Fuzzes the virtio-net data path: transmit validation (headers, GSO fields, sizes, chain
// shapes), the receive path's buffer merging, and the control queue, against a socketpair
// backend. The ring itself is well formed (the VirtQueue fuzzer covers rings); what goes into
// the chains comes from the input:
//   byte 0: negotiated features (bit 0 MRG_RXBUF, 1 CSUM, 2 HOST_TSO4, 3 HOST_TSO6, 4 HOST_UFO,
//           5 GUEST_CSUM, 6 MQ)
//   then records: [kind u8][len u16 le][piece u16 le][len bytes]
//     kind % 4 == 0: a transmit chain of `len` bytes cut into `piece`-byte buffers
//     kind % 4 == 1: a frame the host sends to the guest (delivered into receive buffers of
//                    `piece` bytes, posted first)
//     kind % 4 == 2: a control command (readable `len` bytes, one writable ack byte)
//     kind % 4 == 3: serve the queues now
#include <cstddef>
#include <cstdint>

#include "base/log.h"
#include "devices/virtio/net/net_header.h"
#include "devices/virtio/net/net_test_driver.h"
#include "devices/virtio/net/virtio_net.h"

namespace {

using ringvm::testing::NetTestDriver;
constexpr uint64_t bit(unsigned b) { return 1ULL << b; }

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  // The flow parser pin_flows runs on every transmitted frame, straight on the raw bytes.
  (void)ringvm::flow_hash({data + 1, size - 1});
  auto backend = std::make_unique<ringvm::testing::SocketBackend>(2, /*ufo=*/true);
  auto* be = backend.get();
  ringvm::VirtioNetOptions o;
  o.run_workers = false;
  o.mac = {0x52, 0x54, 0, 1, 2, 3};
  auto dev = ringvm::VirtioNet::create(std::move(backend), o);
  if (!dev.ok()) __builtin_trap();
  auto& net = **dev;
  uint64_t f = bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_NET_F_CTRL_VQ);
  const unsigned sel[] = {VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_CSUM,     VIRTIO_NET_F_HOST_TSO4,
                          VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_HOST_UFO, VIRTIO_NET_F_GUEST_CSUM,
                          VIRTIO_NET_F_MQ};
  for (unsigned i = 0; i < 7; ++i)
    if (data[0] & (1u << i)) f |= bit(sel[i]);
  const size_t ctrl = (f & bit(VIRTIO_NET_F_MQ)) ? 4 : 2;
  NetTestDriver drv(5, 64, 8 << 20);
  std::vector<std::unique_ptr<ringvm::VirtQueue>> qs;
  std::vector<ringvm::ActivatedQueue> aq;
  for (size_t i = 0; i < 5; ++i) {
    qs.push_back(std::make_unique<ringvm::VirtQueue>(64));
    drv.configure(i, *qs.back());
    aq.push_back(ringvm::ActivatedQueue{qs.back().get(), -1, [] {}});
  }
  if (!net.activate(drv.mem(), f, std::move(aq)).ok()) __builtin_trap();
  size_t at = 1;
  int chains = 0;
  std::vector<uint8_t> sink(70000);
  while (at + 5 <= size && chains < 48) {
    const uint8_t kind = data[at];
    const uint16_t len = static_cast<uint16_t>(data[at + 1] | data[at + 2] << 8);
    uint32_t piece = std::max<uint32_t>(1, static_cast<uint32_t>(data[at + 3] | data[at + 4] << 8));
    at += 5;
    const size_t n = std::min<size_t>(len, size - at);
    std::span<const uint8_t> body(data + at, n);
    at += n;
    ++chains;
    switch (kind % 4) {
      case 0:
        // At most 16 buffers, so a chain never wraps the 64-entry table onto itself.
        if (n > 0) drv.add_out(1, body, std::max<uint32_t>(piece, static_cast<uint32_t>(n / 16 + 1)));
        break;
      case 1: {
        piece = std::clamp<uint32_t>(piece, 64, 4096);
        for (uint32_t got = 0, k = 0; got < n + 12 && k < 8; got += piece, ++k) drv.add_in(0, piece);
        (void)::send(be->host(0), body.data(), body.size(), MSG_DONTWAIT);
        break;
      }
      case 2:
        if (n > 0) {
          const uint64_t in = drv.alloc(static_cast<uint32_t>(n));
          drv.write(in, body);
          drv.add_chain(ctrl, {{in, static_cast<uint32_t>(n)}}, {{drv.alloc(1), 1}});
        }
        break;
      default:
        net.poll_pair(0);
        net.poll_ctrl();
        // Both queues: with two pairs set, pinned flows leave through either.
        for (size_t q = 0; q < 2; ++q)
          while (::recv(be->host(q), sink.data(), sink.size(), MSG_DONTWAIT) > 0) {
          }
        break;
    }
  }
  net.poll_pair(0);
  net.poll_pair(1);
  net.poll_ctrl();
  net.reset();
  return 0;
}
