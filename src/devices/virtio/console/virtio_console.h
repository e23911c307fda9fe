// VirtioConsole: a single-port virtio console (virtio 1.x section 5.3), the guest's hvc0.
//
// Queue 0 (receiveq) carries host input to the guest; queue 1 (transmitq) the guest's output to
// an OutputSink (the console backend: stdio, a socket, a log file). Input arrives from any
// thread through enqueue_input(), the same shape as the UART's: it is buffered (bounded) and the
// worker moves it into the guest's receive buffers as they become available.
#pragma once

#include <atomic>
#include <deque>
#include <functional>
#include <mutex>
#include <span>
#include <string>

#include "base/unique_fd.h"
#include "devices/virtio/worker.h"

namespace ringvm {

class VirtioConsole final : public SingleWorkerDevice {
 public:
  using OutputSink = std::function<void(std::span<const uint8_t>)>;
  static constexpr size_t kInputBufferBytes = 64 * 1024;
  static constexpr uint16_t kQueueSize = 256;
  static constexpr size_t kRxQueue = 0;
  static constexpr size_t kTxQueue = 1;

  // `sink` is called on the device's worker thread with each chunk the guest wrote.
  static Result<std::unique_ptr<VirtioConsole>> create(OutputSink sink, std::string id = "console0");
  ~VirtioConsole() override { stop(); }

  std::string_view name() const override { return id_; }
  uint32_t device_type() const override;
  uint64_t device_features() const override;
  std::vector<uint16_t> queue_max_sizes() const override { return {kQueueSize, kQueueSize}; }
  void read_config(uint64_t offset, std::span<uint8_t> data) const override;
  void write_config(uint64_t, std::span<const uint8_t>) override {}

  // Snapshot state: the offered features, the config (cols/rows and max_nr_ports: all 0, as
  // neither F_SIZE nor MULTIPORT is offered) and the host input not yet given to the guest.
  // Nothing else lives between passes (each chain popped is used at once). restore(), on a
  // device never activated, refuses another config or feature set, and puts the saved input
  // ahead of any that arrived since the device was built (at most kInputBufferBytes in all; the
  // newest is dropped beyond that); the activation that follows delivers it as buffers come.
  Result<std::vector<uint8_t>> save() const override;
  Result<void> restore(std::span<const uint8_t> state) override;

  // Host input for the guest; thread-safe. Returns how many bytes were accepted (fewer than
  // given when the buffer is full: the caller keeps the rest and retries, as with the UART).
  size_t enqueue_input(std::span<const uint8_t> bytes);

  uint64_t bytes_in() const { return bytes_in_.load(std::memory_order_relaxed); }
  uint64_t bytes_out() const { return bytes_out_.load(std::memory_order_relaxed); }

  // Worker entry point; public so tests can drive it synchronously.
  void on_event(size_t source) override;

 protected:
  std::vector<int> extra_fds() const override { return {input_fd_.get()}; }

 private:
  VirtioConsole(OutputSink sink, std::string id, UniqueFd input_fd)
      : sink_(std::move(sink)), id_(std::move(id)), input_fd_(std::move(input_fd)) {}
  void fill_rx();
  void drain_tx();

  OutputSink sink_;
  std::string id_;
  UniqueFd input_fd_;  // signalled when input is queued
  mutable std::mutex input_mu_;
  std::deque<uint8_t> input_;
  std::atomic<uint64_t> bytes_in_{0};
  std::atomic<uint64_t> bytes_out_{0};
};

}  // namespace ringvm
