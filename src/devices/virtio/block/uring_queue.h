// UringQueue: one io_uring for one virtio-blk queue, so a queue keeps many requests in flight on
// a raw disk's fd instead of one synchronous preadv at a time. Completions are signalled on an
// eventfd the queue's worker polls next to its kick fd.
//
// Single-threaded: only the owning worker submits and reaps. The destructor waits for every
// request still in flight (the kernel may be writing into guest memory) without running their
// callbacks, so it must run after the worker stopped and before the guest memory goes away.
#pragma once

#include <liburing.h>
#include <sys/uio.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"

namespace ringvm {

class UringQueue {
 public:
  // Called with the operation's result: bytes transferred, or -errno.
  using Done = std::function<void(int32_t res)>;

  // Fails (kUnsupported) where io_uring is unavailable (old kernel, seccomp, sysctl); the caller
  // then falls back to synchronous I/O.
  static Result<std::unique_ptr<UringQueue>> create(unsigned entries);
  ~UringQueue();
  UringQueue(const UringQueue&) = delete;
  UringQueue& operator=(const UringQueue&) = delete;

  int event_fd() const { return event_fd_.get(); }
  size_t in_flight() const { return in_flight_; }

  // Queue an operation; submit() hands everything queued to the kernel. `iov` is kept alive
  // until completion.
  void readv(int fd, uint64_t offset, std::vector<iovec> iov, Done done);
  void writev(int fd, uint64_t offset, std::vector<iovec> iov, Done done);
  void fdatasync(int fd, Done done);
  void submit();
  // Runs the callbacks of every completed operation; never blocks. For the worker that was woken
  // by event_fd() and drained it already: no system call.
  void reap();
  // reap() when the completion ring has entries (a look at it, no system call when it is empty),
  // draining event_fd() first so the completions taken here do not wake the worker again.
  // Returns whether anything was reaped.
  bool reap_if_ready();
  // Submits what is queued and waits until nothing is in flight, running every callback (pause:
  // nothing the kernel still holds may write guest memory afterwards).
  void drain();
  // Whether reap() has anything to do (a look at the completion ring, no system call).
  bool completions_ready() { return ::io_uring_cq_ready(&ring_) > 0; }

 private:
  struct Op {
    std::vector<iovec> iov;
    Done done;
  };
  UringQueue() = default;
  io_uring_sqe* next_sqe();
  void queue_op(io_uring_sqe* sqe, std::unique_ptr<Op> op);

  io_uring ring_{};
  bool ring_ok_ = false;
  UniqueFd event_fd_;
  size_t in_flight_ = 0;
};

}  // namespace ringvm
