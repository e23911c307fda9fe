#include "devices/virtio/console/virtio_console.h"

#include <linux/virtio_config.h>
#include <linux/virtio_console.h>
#include <linux/virtio_ids.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <vector>

#include "base/state_codec.h"
#include "devices/virtio/chain_io.h"
#include "devices/virtio/ring_abi.h"

namespace ringvm {

namespace {
// save()/restore()'s layout; a change to it is a new version.
constexpr uint32_t kStateVersion = 1;
}  // namespace

Result<std::unique_ptr<VirtioConsole>> VirtioConsole::create(OutputSink sink, std::string id) {
  auto fd = TRY(make_eventfd(fmt::format("{} input", id)));
  return std::unique_ptr<VirtioConsole>(new VirtioConsole(std::move(sink), std::move(id), std::move(fd)));
}

uint32_t VirtioConsole::device_type() const { return VIRTIO_ID_CONSOLE; }

uint64_t VirtioConsole::device_features() const {
  // No F_SIZE (the guest keeps its default size), no MULTIPORT: one port is hvc0.
  return (1ULL << VIRTIO_F_VERSION_1) | (1ULL << VIRTIO_RING_F_EVENT_IDX) | (1ULL << VIRTIO_RING_F_INDIRECT_DESC);
}

void VirtioConsole::read_config(uint64_t offset, std::span<uint8_t> data) const {
  std::fill(data.begin(), data.end(), 0);
  virtio_console_config cfg{};  // cols/rows unused without F_SIZE; max_nr_ports without MULTIPORT
  if (offset >= sizeof cfg) return;
  const size_t n = std::min<uint64_t>(data.size(), sizeof cfg - offset);
  // SAFETY: cfg is a trivially-copyable UAPI struct; [offset, offset + n) lies inside it.
  std::memcpy(data.data(), reinterpret_cast<const uint8_t*>(&cfg) + offset, n);
}

// GCC 12's -Wstringop-overflow false positive on StateWriter's inlined vector growth (see
// VirtioBlock::save).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstringop-overflow"
#endif
Result<std::vector<uint8_t>> VirtioConsole::save() const {
  virtio_console_config cfg{};
  // SAFETY: cfg is a trivially-copyable UAPI struct, filled through its own bytes.
  read_config(0, {reinterpret_cast<uint8_t*>(&cfg), sizeof cfg});
  StateWriter w;
  w.u32(kStateVersion);
  w.u64(device_features());
  w.u16(le16toh(cfg.cols));
  w.u16(le16toh(cfg.rows));
  w.u32(le32toh(cfg.max_nr_ports));
  std::vector<uint8_t> pending;
  {
    std::lock_guard lock(input_mu_);
    pending.assign(input_.begin(), input_.end());
  }
  w.bytes(pending);
  return w.take();
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

Result<void> VirtioConsole::restore(std::span<const uint8_t> state) {
  StateReader r(state, fmt::format("virtio-console {}", id_));
  const uint32_t version = TRY(r.u32("version"));
  if (version != kStateVersion)
    return r.corrupt(fmt::format("state version {} is not {}, the one this ringvm writes", version, kStateVersion));
  const uint64_t features = TRY(r.u64("features"));
  const uint16_t cols = TRY(r.u16("cols"));
  const uint16_t rows = TRY(r.u16("rows"));
  const uint32_t ports = TRY(r.u32("max_nr_ports"));
  const auto pending = TRY(r.bytes("pending_input", kInputBufferBytes));
  RETURN_IF_ERROR(r.finish());
  if (features != device_features())
    return make_error(ErrorCode::kInvalidArgument,
                      "virtio-console {}: the snapshot was taken offering features {:#x}; this device offers {:#x}",
                      id_, features, device_features());
  virtio_console_config cfg{};
  // SAFETY: cfg is a trivially-copyable UAPI struct, filled through its own bytes.
  read_config(0, {reinterpret_cast<uint8_t*>(&cfg), sizeof cfg});
  if (cols != le16toh(cfg.cols) || rows != le16toh(cfg.rows) || ports != le32toh(cfg.max_nr_ports))
    return make_error(ErrorCode::kInvalidArgument,
                      "virtio-console {}: the snapshot's config is {}x{} with {} ports; this device's is {}x{} with {}",
                      id_, cols, rows, ports, le16toh(cfg.cols), le16toh(cfg.rows), le32toh(cfg.max_nr_ports));
  if (mem() != nullptr)
    return make_error(ErrorCode::kInternal, "virtio-console {}: restore on an activated device (reset it first)",
                      id_);
  {
    std::lock_guard lock(input_mu_);
    input_.insert(input_.begin(), pending.begin(), pending.end());
    if (input_.size() > kInputBufferBytes) input_.resize(kInputBufferBytes);
  }
  if (!pending.empty()) signal_eventfd(input_fd_.get());
  return Ok();
}

size_t VirtioConsole::enqueue_input(std::span<const uint8_t> bytes) {
  size_t n;
  {
    std::lock_guard lock(input_mu_);
    n = std::min(bytes.size(), kInputBufferBytes - input_.size());
    input_.insert(input_.end(), bytes.begin(), bytes.begin() + static_cast<ptrdiff_t>(n));
  }
  if (n > 0) signal_eventfd(input_fd_.get());
  return n;
}

void VirtioConsole::on_event(size_t source) {
  if (source == kTxQueue) drain_tx();
  else fill_rx();  // the receive queue was kicked (new buffers) or input arrived
}

void VirtioConsole::fill_rx() {
  VirtQueue* q = queue(kRxQueue);
  if (q == nullptr) return;
  std::vector<uint8_t> chunk;
  for (;;) {
    {
      std::lock_guard lock(input_mu_);
      if (input_.empty()) break;
    }
    auto chain = q->pop();
    if (!chain) break;  // no receive buffer: the input waits until the guest adds one
    {
      std::lock_guard lock(input_mu_);
      const size_t n = static_cast<size_t>(std::min<uint64_t>(chain->writable_bytes(), input_.size()));
      chunk.assign(input_.begin(), input_.begin() + static_cast<ptrdiff_t>(n));
      input_.erase(input_.begin(), input_.begin() + static_cast<ptrdiff_t>(n));
    }
    const size_t put = copy_to_buffers(*mem(), chain->writable, 0, chunk);
    q->add_used(chain->head, static_cast<uint32_t>(put));
    bytes_in_.fetch_add(put, std::memory_order_relaxed);
  }
  notify_if_needed(kRxQueue);
}

void VirtioConsole::drain_tx() {
  VirtQueue* q = queue(kTxQueue);
  if (q == nullptr) return;
  // Chunked, so a guest posting a 4 GiB chain costs us 4 KiB of buffer, not 4 GiB.
  std::array<uint8_t, 4096> chunk;
  while (auto chain = q->pop()) {
    const uint64_t total = chain->readable_bytes();
    for (uint64_t at = 0; at < total;) {
      const size_t got = copy_from_buffers(*mem(), chain->readable, at, chunk);
      if (got == 0) break;
      if (sink_) sink_(std::span<const uint8_t>(chunk.data(), got));
      at += got;
      bytes_out_.fetch_add(got, std::memory_order_relaxed);
    }
    q->add_used(chain->head, 0);
  }
  notify_if_needed(kTxQueue);
}

}  // namespace ringvm
