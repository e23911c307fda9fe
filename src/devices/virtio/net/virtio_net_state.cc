// VirtioNet's snapshot half: save() and restore() (base/stateful.h), and apply_restored(), which
// activate() calls to put the saved held frame and chains back once guest memory is known.
#include "devices/virtio/net/virtio_net.h"

#include <endian.h>

#include "base/log.h"
#include "base/state_codec.h"
#include "devices/virtio/net/chain_state.h"
#include "devices/virtio/net/net_worker.h"
#include "memory/guest_memory.h"

namespace ringvm {

namespace {

constexpr uint64_t bit(unsigned b) { return 1ULL << b; }
constexpr uint32_t kStateVersion = 1;
constexpr uint16_t kStatusBits = VIRTIO_NET_S_LINK_UP | VIRTIO_NET_S_ANNOUNCE;

}  // namespace

Result<void> VirtioNet::apply_restored(Restored& restored, const GuestMemory& mem, size_t pairs) {
  // Everything is checked before any pair changes.
  for (size_t i = 0; i < restored.pairs.size(); ++i) {
    const RestoredPair& rp = restored.pairs[i];
    const bool rx_state = !rp.rx_frame.empty() || !rp.rx_chains.empty();
    if (!rx_state && !rp.tx_chain) continue;
    if (i >= pairs)
      return make_error(ErrorCode::kCorrupt, "virtio-net {}: the restored state holds frames for pair {}, of {} in use",
                        options_.id, i, pairs);
    const Pair& p = pairs_[i];
    if (rx_state && p.rx.queue == nullptr)
      return make_error(ErrorCode::kInvalidArgument,
                        "virtio-net {}: the restored state holds receive buffers for pair {}, whose queue is not enabled",
                        options_.id, i);
    if (rp.tx_chain && p.tx.queue == nullptr)
      return make_error(ErrorCode::kInvalidArgument,
                        "virtio-net {}: the restored state holds a transmit frame for pair {}, whose queue is not enabled",
                        options_.id, i);
    const std::string rxq = fmt::format("virtio-net {} receive queue {}", options_.id, i);
    for (const auto& c : rp.rx_chains) RETURN_IF_ERROR(check_chain(c, mem, p.rx.queue->size(), rxq));
    if (rp.tx_chain)
      RETURN_IF_ERROR(check_chain(*rp.tx_chain, mem, p.tx.queue->size(),
                                  fmt::format("virtio-net {} transmit queue {}", options_.id, i)));
  }
  for (size_t i = 0; i < restored.pairs.size() && i < pairs; ++i) {
    RestoredPair& rp = restored.pairs[i];
    Pair& p = pairs_[i];
    if (!rp.rx_frame.empty()) {
      std::copy(rp.rx_frame.begin(), rp.rx_frame.end(), p.rx_frame.begin());  // rx_frame holds the largest
      p.rx_len = rp.rx_frame.size();
      p.rx_pending = true;
    }
    p.rx_chains = std::move(rp.rx_chains);
    p.tx_chain = std::move(rp.tx_chain);
  }
  return Ok();
}

Result<std::vector<uint8_t>> VirtioNet::save() const {
  std::lock_guard lock(mu_);
  for (const auto& w : workers_)
    if (!w->paused())
      return make_error(ErrorCode::kInternal, "virtio-net {}: saved while its workers run (pause it first)",
                        options_.id);
  StateWriter w;
  w.u32(kStateVersion);
  w.u64(features_);
  w.u32(static_cast<uint32_t>(pairs_.size()));
  w.u16(options_.queue_size);
  w.raw(config_.mac);
  w.u16(le16toh(config_.status));
  const bool active = mem_ != nullptr;
  w.boolean(active);
  if (!active) return w.take();
  w.u64(acked_);
  w.u16(static_cast<uint16_t>(active_pairs()));
  for (const Pair& p : pairs_) {
    w.bytes(p.rx_pending ? std::span<const uint8_t>(p.rx_frame.data(), p.rx_len) : std::span<const uint8_t>{});
    w.u32(static_cast<uint32_t>(p.rx_chains.size()));
    for (const auto& c : p.rx_chains) save_chain(w, c);
    w.boolean(p.tx_chain.has_value());
    if (p.tx_chain) save_chain(w, *p.tx_chain);
  }
  return w.take();
}

Result<void> VirtioNet::restore(std::span<const uint8_t> state) {
  StateReader r(state, fmt::format("virtio-net {}", options_.id));
  const uint32_t version = TRY(r.u32("version"));
  if (version != kStateVersion)
    return r.corrupt(fmt::format("state version {} is not {}, the one this ringvm writes", version, kStateVersion));
  const uint64_t features = TRY(r.u64("features"));
  if (features != features_)
    return make_error(ErrorCode::kInvalidArgument,
                      "virtio-net {}: the state was saved offering features {:#x}; this device offers {:#x} "
                      "(a tap without UFO support, or another queue pair count?)",
                      options_.id, features, features_);
  const uint32_t pairs = TRY(r.u32("queue_pairs"));
  if (pairs != pairs_.size())
    return make_error(ErrorCode::kInvalidArgument,
                      "virtio-net {}: the state has {} queue pairs; this device has {} (its tap's queue count)",
                      options_.id, pairs, pairs_.size());
  const uint16_t queue_size = TRY(r.u16("queue_size"));
  if (queue_size != options_.queue_size)
    return make_error(ErrorCode::kInvalidArgument,
                      "virtio-net {}: the state has queue size {}; this device has {}", options_.id, queue_size,
                      options_.queue_size);
  MacAddress mac{};
  RETURN_IF_ERROR(r.raw("mac", mac));
  const uint16_t status = TRY(r.u16("status"));
  if ((status & ~kStatusBits) != 0)
    return r.corrupt(fmt::format("`status` is {:#x}; only link up and announce ({:#x}) are defined", status,
                                 kStatusBits));
  const bool active = TRY(r.boolean("active"));
  std::optional<Restored> restored;
  if (active) {
    Restored st;
    st.acked = TRY(r.u64("acked_features"));
    if ((st.acked & ~features_) != 0)
      return r.corrupt(fmt::format("acked features {:#x} include some never offered ({:#x})", st.acked, features_));
    const size_t usable = (st.acked & bit(VIRTIO_NET_F_MQ)) ? pairs_.size() : 1;
    const uint16_t enabled = TRY(r.u16("active_pairs"));
    RETURN_IF_ERROR(r.check_range("active_pairs", enabled, 1, usable));
    st.active_pairs = enabled;
    st.pairs.resize(pairs_.size());
    for (size_t i = 0; i < pairs_.size(); ++i) {
      RestoredPair& rp = st.pairs[i];
      const auto frame = TRY(r.bytes("rx_frame", kNetHdrSize + kMaxFrameBytes));
      if (!frame.empty() && frame.size() < kNetHdrSize + kMinFrameBytes)
        return r.corrupt(fmt::format("the frame held for pair {} is {} bytes, shorter than a header and an "
                                     "Ethernet header",
                                     i, frame.size()));
      rp.rx_frame.assign(frame.begin(), frame.end());
      const uint32_t chains = TRY(r.u32("rx_chains"));
      RETURN_IF_ERROR(r.check_range("rx_chains", chains, 0, queue_size));
      for (uint32_t k = 0; k < chains; ++k) {
        auto c = TRY(load_chain(r, "rx_chain", queue_size));
        // A receive chain is held only for its writable room (gather_rx_chains).
        if (c.writable.empty()) return r.corrupt(fmt::format("a receive chain of pair {} has no writable buffer", i));
        rp.rx_chains.push_back(std::move(c));
      }
      if (TRY(r.boolean("tx_parked"))) rp.tx_chain = TRY(load_chain(r, "tx_chain", queue_size));
      if (i >= usable && (!rp.rx_frame.empty() || !rp.rx_chains.empty() || rp.tx_chain))
        return r.corrupt(fmt::format("pair {} holds frames, but the driver did not negotiate multiqueue", i));
    }
    restored = std::move(st);
  }
  RETURN_IF_ERROR(r.finish());

  std::lock_guard lock(mu_);
  if (mem_ != nullptr)
    return make_error(ErrorCode::kInternal, "virtio-net {}: restore on an activated device (reset it first)",
                      options_.id);
  if (mac != options_.mac)
    spdlog::info("virtio-net {}: restored with MAC {} (the snapshot's was {}); the guest keeps the one it read at "
                 "probe until its driver probes again",
                 options_.id, format_mac(options_.mac), format_mac(mac));
  config_.status = htole16(status);
  restored_ = std::move(restored);
  return Ok();
}

}  // namespace ringvm
