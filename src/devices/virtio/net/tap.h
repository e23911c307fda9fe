// The host side of virtio-net: a frame-oriented backend with one non-blocking fd per queue pair.
//
// Every read() on a queue fd returns exactly one frame and every writev() sends exactly one, both
// prefixed with a 12-byte virtio_net_hdr_v1 (TUNSETVNETHDRSZ), so the guest's header goes to the
// kernel unchanged and offloads (checksum, TSO, UFO) cost no copy and no software segmentation.
// Tap is the real backend; tests use a datagram socketpair through the same interface.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"

namespace ringvm {

class NetBackend {
 public:
  virtual ~NetBackend() = default;
  virtual std::string_view name() const = 0;
  virtual size_t queue_count() const = 0;
  // Non-blocking, pollable; valid for the backend's life.
  virtual int queue_fd(size_t index) const = 0;
  // What the kernel may hand us on receive (TUN_F_* bits), from the guest's GUEST_* features:
  // without them the kernel checksums and segments before the frame reaches us.
  virtual Result<void> set_offload(unsigned tun_flags) = 0;
  // Only queues [0, count) receive traffic: the driver enabled `count` queue pairs, and a frame
  // steered to a queue nobody reads would be lost.
  virtual Result<void> set_active_queues(size_t count) = 0;
  // Whether UDP fragmentation offload (VIRTIO_NET_F_HOST_UFO / GUEST_UFO) can be offered.
  virtual bool ufo_supported() const = 0;
};

class Tap final : public NetBackend {
 public:
  // Attaches to tap `name`, creating it when it does not exist and the host lets us (a created
  // tap is not persistent: it disappears with ringvm). queues > 1 needs a multi_queue tap.
  static Result<std::unique_ptr<Tap>> open(std::string_view name, size_t queues);
  // Adopts an inherited tap fd (one queue), so an unprivileged ringvm can be handed one. It must
  // be a tap opened with IFF_VNET_HDR; ownership passes to the Tap.
  static Result<std::unique_ptr<Tap>> adopt(int fd);

  std::string_view name() const override { return name_; }
  size_t queue_count() const override { return fds_.size(); }
  int queue_fd(size_t index) const override { return fds_[index].get(); }
  Result<void> set_offload(unsigned tun_flags) override;
  Result<void> set_active_queues(size_t count) override;
  bool ufo_supported() const override { return ufo_; }

 private:
  Tap(std::string name, std::vector<UniqueFd> fds, bool multi_queue);
  void probe_ufo();

  std::string name_;
  std::vector<UniqueFd> fds_;
  std::vector<bool> attached_;
  bool multi_queue_;
  bool ufo_ = false;
};

// The fix to print when a tap cannot be opened for lack of privilege.
std::string tap_permission_hint(std::string_view name, size_t queues);

}  // namespace ringvm
