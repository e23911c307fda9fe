#include "devices/virtio/rng/virtio_rng.h"

#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <sys/random.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "base/log.h"
#include "devices/virtio/chain_io.h"
#include "devices/virtio/ring_abi.h"

namespace ringvm {

uint32_t VirtioRng::device_type() const { return VIRTIO_ID_RNG; }

uint64_t VirtioRng::device_features() const {
  return (1ULL << VIRTIO_F_VERSION_1) | (1ULL << VIRTIO_RING_F_EVENT_IDX) | (1ULL << VIRTIO_RING_F_INDIRECT_DESC);
}

void VirtioRng::read_config(uint64_t, std::span<uint8_t> data) const {
  std::fill(data.begin(), data.end(), 0);  // virtio-rng has no config space
}

void VirtioRng::on_event(size_t source) {
  VirtQueue* q = queue(source);
  if (q == nullptr) return;
  std::vector<uint8_t> buf;
  while (auto chain = q->pop()) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(chain->writable_bytes(), kMaxBytesPerRequest));
    buf.resize(want);
    size_t got = 0;
    while (got < want) {
      const ssize_t n = ::getrandom(buf.data() + got, want - got, 0);
      if (n < 0) {
        if (errno == EINTR) continue;
        RINGVM_LOG_RATELIMITED(warn, "{}: getrandom failed: {}", id_, std::strerror(errno));
        break;
      }
      got += static_cast<size_t>(n);
    }
    const size_t put = copy_to_buffers(*mem(), chain->writable, 0, std::span<const uint8_t>(buf.data(), got));
    q->add_used(chain->head, static_cast<uint32_t>(put));
    bytes_.fetch_add(put, std::memory_order_relaxed);
    requests_.fetch_add(1, std::memory_order_relaxed);
  }
  notify_if_needed(source);
}

}  // namespace ringvm
