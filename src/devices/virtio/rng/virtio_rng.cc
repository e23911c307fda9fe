#include "devices/virtio/rng/virtio_rng.h"

#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <sys/random.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "base/log.h"
#include "base/state_codec.h"
#include "devices/virtio/chain_io.h"
#include "devices/virtio/ring_abi.h"

namespace ringvm {

namespace {
// save()/restore()'s layout; a change to it is a new version.
constexpr uint32_t kStateVersion = 1;
}  // namespace

Result<std::vector<uint8_t>> VirtioRng::save() const {
  StateWriter w;
  w.u32(kStateVersion);
  w.u64(device_features());
  return w.take();
}

Result<void> VirtioRng::restore(std::span<const uint8_t> state) {
  StateReader r(state, fmt::format("virtio-rng {}", id_));
  const uint32_t version = TRY(r.u32("version"));
  if (version != kStateVersion)
    return r.corrupt(fmt::format("state version {} is not {}, the one this ringvm writes", version, kStateVersion));
  const uint64_t features = TRY(r.u64("features"));
  RETURN_IF_ERROR(r.finish());
  if (features != device_features())
    return make_error(ErrorCode::kInvalidArgument,
                      "virtio-rng {}: the snapshot was taken offering features {:#x}; this device offers {:#x}", id_,
                      features, device_features());
  if (mem() != nullptr)
    return make_error(ErrorCode::kInternal, "virtio-rng {}: restore on an activated device (reset it first)", id_);
  return Ok();
}

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
