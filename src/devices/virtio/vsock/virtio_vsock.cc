#include "devices/virtio/vsock/virtio_vsock.h"

#include <endian.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>

#include <algorithm>
#include <cstring>

#include "base/log.h"
#include "base/state_codec.h"
#include "devices/virtio/chain_io.h"
#include "devices/virtio/net/chain_state.h"
#include "devices/virtio/net/net_options.h"
#include "devices/virtio/ring_abi.h"
#include "memory/guest_memory.h"

namespace ringvm {

namespace {
constexpr uint32_t kHdrSize = sizeof(virtio_vsock_hdr);
static_assert(kHdrSize == 44);
// The largest CID a guest may have: the 32-bit VMADDR_CID_ANY is reserved.
constexpr uint64_t kMaxCid = 0xfffffffe;
// save()/restore()'s layout; a change to it is a new version.
constexpr uint32_t kStateVersion = 1;
}  // namespace

Result<std::unique_ptr<VirtioVsock>> VirtioVsock::create(uint64_t guest_cid, std::string uds_path,
                                                         std::string id) {
  if (guest_cid < 3 || guest_cid > kMaxCid)
    return make_error(ErrorCode::kInvalidArgument,
                      "vsock {}: cid={} is reserved or too large; guest CIDs are 3..{}", id, guest_cid,
                      kMaxCid);
  auto muxer = VsockMuxer::create(guest_cid, std::move(uds_path));
  if (!muxer.ok()) return wrap(std::move(muxer).error(), "vsock {}", id);
  return std::unique_ptr<VirtioVsock>(new VirtioVsock(guest_cid, std::move(*muxer), std::move(id)));
}

uint32_t VirtioVsock::device_type() const { return VIRTIO_ID_VSOCK; }

uint64_t VirtioVsock::device_features() const {
  // Stream sockets only: no VIRTIO_VSOCK_F_SEQPACKET.
  return (1ULL << VIRTIO_F_VERSION_1) | (1ULL << VIRTIO_RING_F_EVENT_IDX) |
         (1ULL << VIRTIO_RING_F_INDIRECT_DESC);
}

void VirtioVsock::read_config(uint64_t offset, std::span<uint8_t> data) const {
  std::fill(data.begin(), data.end(), 0);
  virtio_vsock_config cfg{};
  cfg.guest_cid = htole64(guest_cid_);
  if (offset >= sizeof cfg) return;
  const size_t n = std::min<uint64_t>(data.size(), sizeof cfg - offset);
  // SAFETY: cfg is a trivially-copyable UAPI struct; [offset, offset + n) lies inside it.
  std::memcpy(data.data(), reinterpret_cast<const uint8_t*>(&cfg) + offset, n);
}

Result<void> VirtioVsock::activate(const GuestMemory& mem, uint64_t acked_features,
                                  std::vector<ActivatedQueue> queues) {
  std::optional<DescriptorChain> spare = std::move(restored_spare_);
  restored_spare_.reset();
  if (spare) {
    if (queues.size() <= kRxQueue || queues[kRxQueue].queue == nullptr || !queues[kRxQueue].queue->ready())
      return make_error(ErrorCode::kInvalidArgument,
                        "vsock {}: the restored state holds a receive buffer, but the receive queue is not enabled",
                        id_);
    RETURN_IF_ERROR(check_chain(*spare, mem, queues[kRxQueue].queue->size(), fmt::format("vsock {} receive queue", id_)));
    rx_spare_ = std::move(spare);  // before the worker starts: from then on only it touches rx_spare_
  }
  auto r = SingleWorkerDevice::activate(mem, acked_features, std::move(queues));
  if (!r.ok()) rx_spare_.reset();
  return r;
}

void VirtioVsock::reset() {
  stop();
  rx_spare_.reset();
  restored_spare_.reset();
  reset_event_pending_ = false;  // the driver starts over anyway
  muxer_->drop_all();
}

// GCC 12's -Wstringop-overflow false positive on StateWriter's inlined vector growth (see
// VirtioBlock::save).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstringop-overflow"
#endif
Result<std::vector<uint8_t>> VirtioVsock::save() const {
  StateWriter w;
  w.u32(kStateVersion);
  w.u64(device_features());
  w.u64(guest_cid_);
  w.boolean(rx_spare_.has_value());
  if (rx_spare_) save_chain(w, *rx_spare_);
  return w.take();
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

Result<void> VirtioVsock::restore(std::span<const uint8_t> state) {
  StateReader r(state, fmt::format("vsock {}", id_));
  const uint32_t version = TRY(r.u32("version"));
  if (version != kStateVersion)
    return r.corrupt(fmt::format("state version {} is not {}, the one this ringvm writes", version, kStateVersion));
  const uint64_t features = TRY(r.u64("features"));
  const uint64_t cid = TRY(r.u64("guest_cid"));
  RETURN_IF_ERROR(r.check_range("guest_cid", cid, 3, kMaxCid));
  std::optional<DescriptorChain> spare;
  if (TRY(r.boolean("rx_spare"))) {
    spare = TRY(load_chain(r, "rx_spare", kQueueSize));
    if (spare->writable.empty()) return r.corrupt("the held receive chain has no writable buffer");
  }
  RETURN_IF_ERROR(r.finish());
  if (features != device_features())
    return make_error(ErrorCode::kInvalidArgument,
                      "vsock {}: the snapshot was taken offering features {:#x}; this device offers {:#x}", id_,
                      features, device_features());
  if (mem() != nullptr)
    return make_error(ErrorCode::kInternal, "vsock {}: restore on an activated device (reset it first)", id_);
  if (cid != guest_cid_)
    spdlog::info("vsock {}: restored with CID {} (the snapshot's was {}); the transport reset makes the guest "
                 "read it",
                 id_, guest_cid_, cid);
  restored_spare_ = std::move(spare);
  reset_event_pending_ = true;
  return Ok();
}

void VirtioVsock::send_transport_reset() {
  VirtQueue* q = queue(kEventQueue);
  if (q == nullptr) return;  // no event queue enabled: nobody to tell
  virtio_vsock_event ev{};
  ev.id = htole32(VIRTIO_VSOCK_EVENT_TRANSPORT_RESET);
  // SAFETY: a 4-byte trivially-copyable UAPI struct viewed as its bytes.
  const std::span<const uint8_t> ev_bytes(reinterpret_cast<const uint8_t*>(&ev), sizeof ev);
  while (auto chain = q->pop()) {
    if (chain->writable_bytes() < sizeof ev) {
      q->add_used(chain->head, 0);  // cannot hold an event: given back, the next one may
      continue;
    }
    copy_to_buffers(*mem(), chain->writable, 0, ev_bytes);
    q->add_used(chain->head, static_cast<uint32_t>(sizeof ev));
    reset_event_pending_ = false;
    break;
  }
  notify_if_needed(kEventQueue);  // until the driver posts a buffer, its kick brings us back
}

void VirtioVsock::on_event(size_t source) {
  if (reset_event_pending_) send_transport_reset();
  if (source == kTxQueue)
    process_tx();
  else if (source == kEventQueue)
    return;  // buffers for events we never raise
  else if (source > kEventQueue)
    muxer_->process_host_events();
  fill_rx();
}

void VirtioVsock::process_tx() {
  VirtQueue* q = queue(kTxQueue);
  if (q == nullptr) return;
  std::vector<uint8_t> payload;
  bool used = false;
  while (auto chain = q->pop()) {
    used = true;
    virtio_vsock_hdr hdr{};
    // SAFETY: a trivially-copyable packed UAPI struct filled from a copy of guest bytes.
    std::span<uint8_t> hdr_bytes(reinterpret_cast<uint8_t*>(&hdr), kHdrSize);
    const uint64_t total = chain->readable_bytes();
    if (copy_from_buffers(*mem(), chain->readable, 0, hdr_bytes) != kHdrSize ||
        le32toh(hdr.len) > VsockMuxer::kMaxPayload || le32toh(hdr.len) > total - kHdrSize) {
      RINGVM_LOG_RATELIMITED(warn, "vsock {}: dropped a malformed guest packet ({} bytes)", id_, total);
      q->add_used(chain->head, 0);
      continue;
    }
    payload.resize(le32toh(hdr.len));
    copy_from_buffers(*mem(), chain->readable, kHdrSize, payload);
    muxer_->handle_guest(hdr, payload);
    q->add_used(chain->head, 0);
  }
  if (used) notify_if_needed(kTxQueue);
}

void VirtioVsock::fill_rx() {
  VirtQueue* q = queue(kRxQueue);
  if (q == nullptr) return;
  bool used = false;
  while (muxer_->has_packet_for_guest()) {
    std::optional<DescriptorChain> chain = std::move(rx_spare_);
    rx_spare_.reset();
    if (!chain) chain = q->pop();
    if (!chain) break;  // the guest's rx kick brings us back
    const uint64_t room = chain->writable_bytes();
    if (room < kHdrSize) {
      q->add_used(chain->head, 0);
      used = true;
      continue;
    }
    auto pkt = muxer_->next_for_guest(
        static_cast<uint32_t>(std::min<uint64_t>(room - kHdrSize, VsockMuxer::kMaxPayload)));
    if (!pkt) {
      rx_spare_ = std::move(chain);
      break;
    }
    // SAFETY: the header is a trivially-copyable packed UAPI struct; we copy its bytes out.
    std::span<const uint8_t> hdr_bytes(reinterpret_cast<const uint8_t*>(&pkt->first), kHdrSize);
    copy_to_buffers(*mem(), chain->writable, 0, hdr_bytes);
    copy_to_buffers(*mem(), chain->writable, kHdrSize, pkt->second);
    q->add_used(chain->head, static_cast<uint32_t>(kHdrSize + pkt->second.size()));
    used = true;
  }
  if (used) notify_if_needed(kRxQueue);
}

Result<VsockSpec> parse_vsock_spec(std::string_view text) {
  constexpr std::string_view kWhat = "--vsock";
  VsockSpec spec;
  const auto opts = TRY(split_device_options(text, kWhat, {"cid", "socket", "id"}));
  bool have_cid = false;
  for (const auto& [key, value] : opts) {
    if (key == "cid") {
      spec.cid = TRY(parse_option_uint(kWhat, key, value, 3, kMaxCid));
      have_cid = true;
    } else if (key == "socket") {
      if (value.empty()) return make_error(ErrorCode::kInvalidArgument, "--vsock: socket= needs a path");
      spec.socket = value;
    } else if (key == "id") {
      spec.id = value;
    }
  }
  if (!have_cid)
    return make_error(ErrorCode::kInvalidArgument, "--vsock: cid=N is required (a guest CID, 3 or more)");
  if (spec.socket.empty())
    return make_error(
        ErrorCode::kInvalidArgument,
        "--vsock: socket=PATH is required (host programs connect there; guest connections to port P "
        "go to PATH_P)");
  return spec;
}

Result<std::shared_ptr<VirtioVsock>> make_virtio_vsock(const VsockSpec& spec) {
  auto dev = VirtioVsock::create(spec.cid, spec.socket, spec.id);
  if (!dev.ok()) return std::move(dev).error();
  return std::shared_ptr<VirtioVsock>(std::move(*dev));
}

}  // namespace ringvm
