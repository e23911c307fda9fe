// VirtioNet::PairWorker: the thread serving one or more of a VirtioNet's queue pairs (and, with
// pair 0, the control queue). It waits on the kick eventfds and on each pair's backend fd, whose
// interest set follows the pair's state: EPOLLIN only when a received frame has somewhere to go,
// EPOLLOUT only while a transmit frame is parked. How many threads share the pairs is
// VirtioNetOptions::workers: one thread for every pair is what QEMU's main loop does, and wakes
// fewer threads on a host short of CPUs. While the guest sends in bulk the thread raises its own
// priority (VirtioNetOptions::worker_nice). Internal to virtio_net.cc and net_worker.cc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"
#include "devices/virtio/net/virtio_net.h"
#include "devices/virtio/worker.h"

namespace ringvm {

class VirtioNet::PairWorker {
 public:
  // Starts the thread serving `pairs` (indices into dev's pairs).
  static Result<std::unique_ptr<PairWorker>> start(VirtioNet& dev, std::vector<size_t> pairs);
  // Wakes the thread and joins it.
  ~PairWorker();
  // Parks the thread between two passes (WorkerPause); frames and kicks wait in their fds.
  void pause() { pause_.pause(); }
  void resume() { pause_.resume(); }
  bool paused() const { return pause_.paused(); }

 private:
  enum Kind : uint64_t { kStop, kRxKick, kTxKick, kCtrlKick, kBackend, kTxTimer, kPause };
  // epoll data: the pair's place in served_ above the kind, so an event finds its pair at once.
  static uint64_t token(size_t slot, Kind kind) { return uint64_t{slot} << 8 | kind; }
  // Per served pair: its backend fd's registration, and whether it has work left over.
  struct Served {
    size_t index;
    uint32_t interest = 0;
    bool registered = false;
    bool more = true;                   // serve whatever the driver queued before activation
    uint64_t error_gen = ~uint64_t{0};  // pairs_gen_ when the backend fd last failed
  };
  PairWorker(VirtioNet& dev, std::vector<size_t> pairs);

  Result<void> add(int fd, uint64_t tok, uint32_t events);
  // The backend fd is watched only while the driver has this pair enabled: a detached tap queue
  // reports EPOLLERR for as long as it stays detached.
  void update_backend_interest(size_t slot);
  void run();
  // Raised (worker_nice) while frames of kBulkFrameBytes or more went out in the last
  // kBulkWindowNs; a syscall only when that changes.
  void follow_bulk_transmit();
  void set_boost(bool on);

  VirtioNet& dev_;
  std::vector<Served> served_;
  int nice_ = 0;  // the boost; 0 once the host refused it
  bool boosted_ = false;
  uint64_t bulk_seen_ = 0, bulk_until_ns_ = 0;
  UniqueFd epfd_;
  UniqueFd stopfd_;
  WorkerPause pause_;
  std::thread thread_;
};

}  // namespace ringvm
