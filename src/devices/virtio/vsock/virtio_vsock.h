// VirtioVsock: virtio-vsock (virtio 1.x section 5.10), stream sockets between the guest and host
// programs over Unix sockets (see vsock_muxer.h for the host-side scheme).
//
// Queues: rx (0) carries packets to the guest, tx (1) the guest's packets, event (2) is only for
// transport resets, which ringvm raises once after a restore (see restore()). One worker thread serves the
// queues and the muxer's host sockets; it never waits on a host socket without a reason (no
// credit or no guest buffer means the socket is not polled), so nothing spins.
#pragma once

#include <linux/virtio_vsock.h>

#include <memory>
#include <optional>
#include <string>

#include "devices/virtio/queue.h"
#include "devices/virtio/vsock/vsock_muxer.h"
#include "devices/virtio/worker.h"

namespace ringvm {

class VirtioVsock final : public SingleWorkerDevice {
 public:
  static constexpr uint16_t kQueueSize = 256;
  static constexpr size_t kRxQueue = 0;
  static constexpr size_t kTxQueue = 1;
  static constexpr size_t kEventQueue = 2;

  // `guest_cid` >= 3 (0-2 are reserved); listens on `uds_path` at once.
  static Result<std::unique_ptr<VirtioVsock>> create(uint64_t guest_cid, std::string uds_path,
                                                     std::string id = "vsock0");
  ~VirtioVsock() override { stop(); }

  std::string_view name() const override { return id_; }
  uint32_t device_type() const override;
  uint64_t device_features() const override;
  std::vector<uint16_t> queue_max_sizes() const override { return {kQueueSize, kQueueSize, kQueueSize}; }
  void read_config(uint64_t offset, std::span<uint8_t> data) const override;
  void write_config(uint64_t, std::span<const uint8_t>) override {}
  Result<void> activate(const GuestMemory& mem, uint64_t acked_features,
                        std::vector<ActivatedQueue> queues) override;
  void reset() override;

  // Snapshot state: the offered features, the CID the guest had, and the receive chain the device
  // holds (rx_spare_, chain_state.h). Connections are not carried, as in Firecracker: their host
  // sockets belong to the process that saved them. So restore(), on a device never activated,
  // keeps this device's own CID (a clone gets a fresh one; the saved one is only logged when it
  // differs), and the activation that follows tells the guest with a
  // VIRTIO_VSOCK_EVENT_TRANSPORT_RESET on the event queue, raised on the worker's first pass (or
  // when the driver posts an event buffer): the guest driver then resets every socket and reads
  // the CID again. Refuses a state offering other features.
  Result<std::vector<uint8_t>> save() const override;
  Result<void> restore(std::span<const uint8_t> state) override;

  uint64_t guest_cid() const { return guest_cid_; }
  const VsockStats& stats() const { return muxer_->stats(); }
  VsockMuxer& muxer() { return *muxer_; }

  // Worker entry point; public so tests can drive it synchronously.
  void on_event(size_t source) override;

 protected:
  std::vector<int> extra_fds() const override { return {muxer_->fd()}; }

 private:
  VirtioVsock(uint64_t cid, std::unique_ptr<VsockMuxer> muxer, std::string id)
      : guest_cid_(cid), muxer_(std::move(muxer)), id_(std::move(id)) {}
  void process_tx();
  void fill_rx();
  // The transport reset a restore owes the guest: one event buffer, used with the event's id.
  void send_transport_reset();

  uint64_t guest_cid_;
  std::unique_ptr<VsockMuxer> muxer_;
  std::string id_;
  std::optional<DescriptorChain> rx_spare_;  // popped, but the packet it was for went away
  // Set by restore() (before the worker exists); then the worker's alone until reset() joins it.
  bool reset_event_pending_ = false;
  std::optional<DescriptorChain> restored_spare_;  // for the next activate()
};

// `--vsock cid=N,socket=PATH`.
struct VsockSpec {
  std::string id = "vsock0";
  uint64_t cid = 0;
  std::string socket;
};
Result<VsockSpec> parse_vsock_spec(std::string_view spec);
Result<std::shared_ptr<VirtioVsock>> make_virtio_vsock(const VsockSpec& spec);

}  // namespace ringvm
