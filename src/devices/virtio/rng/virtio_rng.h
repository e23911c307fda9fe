// VirtioRng: virtio-rng (virtio 1.x section 5.4), one request queue whose writable buffers are
// filled from the host's getrandom().
//
// Each request gets at most kMaxBytesPerRequest bytes (the used length says how many), so a
// guest asking for gigabytes costs one bounded getrandom() per request; the guest's hwrng core
// simply asks again. The work happens on the device's own worker thread.
#pragma once

#include <atomic>
#include <string>

#include "devices/virtio/worker.h"

namespace ringvm {

class VirtioRng final : public SingleWorkerDevice {
 public:
  static constexpr uint32_t kMaxBytesPerRequest = 64 * 1024;
  static constexpr uint16_t kQueueSize = 256;

  explicit VirtioRng(std::string id = "rng0") : id_(std::move(id)) {}
  ~VirtioRng() override { stop(); }

  std::string_view name() const override { return id_; }
  uint32_t device_type() const override;
  uint64_t device_features() const override;
  std::vector<uint16_t> queue_max_sizes() const override { return {kQueueSize}; }
  void read_config(uint64_t, std::span<uint8_t> data) const override;
  void write_config(uint64_t, std::span<const uint8_t>) override {}
  // Snapshot state: a version and the offered features, nothing more (every request is served
  // and used in one pass; there is no config). restore() refuses other features.
  Result<std::vector<uint8_t>> save() const override;
  Result<void> restore(std::span<const uint8_t> state) override;

  uint64_t bytes_served() const { return bytes_.load(std::memory_order_relaxed); }
  uint64_t requests_served() const { return requests_.load(std::memory_order_relaxed); }

  // Serves every available request; public so tests can drive it synchronously.
  void on_event(size_t source) override;

 private:
  std::string id_;
  std::atomic<uint64_t> bytes_{0};
  std::atomic<uint64_t> requests_{0};
};

}  // namespace ringvm
