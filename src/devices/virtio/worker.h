// VirtioWorker: a device thread that waits on eventfds (queue kicks from ioeventfd, plus any the
// device adds, e.g. "host input arrived") with epoll and calls the device's handler for each.
//
// Why a thread per device (or per queue) rather than the shared EventLoop: a kick reaches us
// through ioeventfd without the vCPU leaving the kernel, and a slow disk or a large getrandom()
// then stalls only this device, never the event loop that serves every other device and the API.
//
// Destruction (or stop()) wakes the thread and joins it, so after it returns the handler is
// never running and never called again: devices destroy their worker first in reset().
#pragma once

#include <condition_variable>
#include <functional>
#include <mutex>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"
#include "devices/virtio/virtio_device.h"

namespace ringvm {

// WorkerPause: lets a controller park a device thread between two of its handler calls (the
// thread's half of Stateful::pause). The thread watches fd() in its epoll set and calls park()
// when it fires; pause() returns once the thread is parked (or has ended), resume() lets it go
// on. shutdown() releases a parked thread for good, so a paused device can still be torn down.
class WorkerPause {
 public:
  static Result<WorkerPause> create(std::string_view what);
  WorkerPause() = default;
  WorkerPause(WorkerPause&& o) noexcept : fd_(std::move(o.fd_)) {}
  WorkerPause& operator=(WorkerPause&& o) noexcept {
    fd_ = std::move(o.fd_);
    return *this;
  }

  int fd() const { return fd_.get(); }
  // Controller side. pause() blocks until the thread is parked; both are idempotent.
  void pause();
  void resume();
  // The thread ended (or is about to): pause() no longer waits for it, park() no longer blocks.
  void shutdown();
  // Thread side, when fd() fired: runs `quiesce` (finish what is in flight), then blocks until
  // resume() or shutdown(). Returns false after shutdown(): the thread must end, not go on.
  bool park(const std::function<void()>& quiesce);
  bool paused() const;

 private:
  UniqueFd fd_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool want_ = false;
  bool parked_ = false;
  bool done_ = false;
};

class VirtioWorker {
 public:
  // Called with the index into `fds` of the fd that became readable and the counter drained from
  // it (for a kick fd: the driver's doorbell writes since the last call, each a VM exit).
  using Handler = std::function<void(size_t source, uint64_t count)>;

  // Starts the thread. It first calls handler(i, 0) once for every fd, so buffers the driver made
  // available before activation are served without a kick. fds of -1 are skipped.
  // `quiesce`, if set, runs on the thread when it is asked to pause, before it parks: it must
  // finish every request in flight (e.g. wait for the disk) so nothing touches guest memory
  // while paused.
  static Result<std::unique_ptr<VirtioWorker>> start(std::string name, std::vector<int> fds, Handler handler,
                                                     std::function<void()> quiesce = {});
  ~VirtioWorker();
  VirtioWorker(const VirtioWorker&) = delete;
  VirtioWorker& operator=(const VirtioWorker&) = delete;

  void stop();
  // Parks the thread between handler calls (after `quiesce`); resume() lets it go on. Kicks and
  // events that arrive meanwhile stay pending in their fds and are served after resume().
  void pause() { pause_.pause(); }
  void resume() { pause_.resume(); }

 private:
  VirtioWorker() = default;
  void run();

  std::string name_;
  std::vector<int> fds_;
  Handler handler_;
  std::function<void()> quiesce_;
  WorkerPause pause_;
  UniqueFd epfd_;
  UniqueFd stopfd_;
  std::thread thread_;
};

// Activates every ready queue against `mem` and `features` (geometry checks); the first error
// names the device and queue. Entries for queues the driver left disabled come back empty
// (queue == nullptr, kick_fd == -1) so indices keep their meaning (console rx = 0, tx = 1).
Result<std::vector<ActivatedQueue>> activate_queues(std::string_view device, const GuestMemory& mem,
                                                    uint64_t features, std::vector<ActivatedQueue> queues);

// An eventfd a device uses to wake its own worker (e.g. new host input). Non-blocking.
Result<UniqueFd> make_eventfd(std::string_view what);
void signal_eventfd(int fd);
// Reads (and so resets) an eventfd's counter; 0 when it was not signalled. For a kick fd the
// count is the driver's doorbell writes since the last drain.
uint64_t drain_eventfd(int fd);

uint64_t monotonic_ns();

// Raises (delta < 0) or lowers the calling thread's CPU weight by `delta` nice steps from the
// process's own nice value (setpriority on the thread's id; Linux nice is per thread). Raising it
// needs CAP_SYS_NICE or RLIMIT_NICE (`ulimit -e`); without them the thread keeps the process's
// nice and the error says what would allow it. Returns the delta in effect.
Result<int> set_thread_nice_delta(int delta);

// Kick coalescing for a queue the guest keeps busy (virtio-blk and virtio-net `batch_us`): a pass
// over the ring that found two or more requests does not ask for a kick (VirtQueue::Arm::kNo) and
// arm()s this timer instead, which brings the worker back after about four recent gaps between
// requests (a running mean, 1/8 weight; an idle spell counts as at most a quarter of the maximum),
// at most `max_us`. So a busy queue is served about four requests per pass with no kicks, and the
// window follows the guest's own pace. Owned by one worker thread.
class QueueBatcher {
 public:
  // A disabled batcher (no timer) when max_us is 0.
  static Result<QueueBatcher> create(std::string_view what, uint32_t max_us);
  QueueBatcher() = default;

  bool enabled() const { return static_cast<bool>(timer_); }
  uint64_t max_ns() const { return max_ns_; }
  // The timerfd the worker watches (-1 when disabled).
  int fd() const { return timer_.get(); }
  // Call for each request popped: updates the mean gap.
  void note_request();
  // Sets the timer (about four recent gaps, or the whole max_us window with `whole`); false if
  // it could not be set (then the caller must ask for kicks).
  bool arm(bool whole = false);
  // arm(whole) unless a timer this batcher set has not fired yet (fired() says when it has): one
  // system call saved per pass for a caller that only needs the worker back some time soon.
  bool ensure_armed(bool whole) { return armed_ || arm(whole); }
  // The worker drained the timerfd.
  void fired() { armed_ = false; }
  // The timer is set and has not fired (a worker's first round calls every source once).
  bool pending() const;
  // A pass found the queue busy: for 4 x max_us a kick is deferred (defer_kick()).
  void mark_busy();
  // For a kick: if the queue was busy lately, sets the timer and returns true (serve on the timer,
  // not now; the driver does not kick again meanwhile). False on a quiet queue: serve at once.
  bool defer_kick();

 private:
  UniqueFd timer_;
  uint64_t max_ns_ = 0;
  uint64_t gap_ns_ = 0;
  uint64_t last_ns_ = 0;
  uint64_t busy_until_ns_ = 0;
  bool armed_ = false;
};

}  // namespace ringvm

namespace ringvm {

// The activate/reset half of a device served by one worker thread (rng, console): the worker
// watches every queue's kick fd plus the device's own `extra_fds`, and calls on_event().
class SingleWorkerDevice : public VirtioDevice {
 public:
  Result<void> activate(const GuestMemory& mem, uint64_t acked_features,
                        std::vector<ActivatedQueue> queues) override;
  void reset() override;
  // Stateful: parks the worker; harmless when the device is not activated.
  Result<void> pause() override;
  Result<void> resume() override;

 protected:
  SingleWorkerDevice() = default;
  // Stops the worker; a final class must call it from its destructor, while its own members
  // (used by on_event) still exist.
  void stop();
  // `source` < queue count: that queue was kicked (or the worker just started); otherwise
  // extra_fds()[source - queue count] fired. Runs on the worker thread only.
  virtual void on_event(size_t source) = 0;
  virtual std::vector<int> extra_fds() const { return {}; }
  // Raises queue `index`'s interrupt if the driver wants one for what was just used.
  void notify_if_needed(size_t index);
  VirtQueue* queue(size_t index) const { return index < queues_.size() ? queues_[index].queue : nullptr; }
  const GuestMemory* mem() const { return mem_; }

 private:
  std::mutex mu_;
  const GuestMemory* mem_ = nullptr;
  std::vector<ActivatedQueue> queues_;
  std::unique_ptr<VirtioWorker> worker_;
};

}  // namespace ringvm
