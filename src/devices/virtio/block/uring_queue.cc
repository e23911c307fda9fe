#include "devices/virtio/block/uring_queue.h"

#include <sys/eventfd.h>

#include <cstring>

#include "base/log.h"
#include "devices/virtio/worker.h"

namespace ringvm {

Result<std::unique_ptr<UringQueue>> UringQueue::create(unsigned entries) {
  std::unique_ptr<UringQueue> q(new UringQueue());
  const int r = ::io_uring_queue_init(entries, &q->ring_, 0);
  if (r < 0) return Error{ErrorCode::kUnsupported, -r, fmt::format("io_uring_queue_init({})", entries)};
  q->ring_ok_ = true;
  q->event_fd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!q->event_fd_) return sys_error("eventfd for io_uring completions");
  const int e = ::io_uring_register_eventfd(&q->ring_, q->event_fd_.get());
  if (e < 0) return Error{ErrorCode::kUnsupported, -e, "io_uring_register_eventfd"};
  return q;
}

UringQueue::~UringQueue() {
  if (!ring_ok_) return;
  submit();
  while (in_flight_ > 0) {
    io_uring_cqe* cqe = nullptr;
    const int r = ::io_uring_wait_cqe(&ring_, &cqe);
    if (r == -EINTR) continue;
    if (r < 0) break;  // the ring itself failed; exiting it below cancels what is left
    // SAFETY: user_data is the Op we leaked into the SQE in queue_op(); reclaimed exactly once.
    std::unique_ptr<Op> op(reinterpret_cast<Op*>(::io_uring_cqe_get_data(cqe)));
    ::io_uring_cqe_seen(&ring_, cqe);
    --in_flight_;
  }
  ::io_uring_queue_exit(&ring_);
}

io_uring_sqe* UringQueue::next_sqe() {
  io_uring_sqe* sqe = ::io_uring_get_sqe(&ring_);
  if (sqe == nullptr) {
    // The submission ring is full: hand it to the kernel and take a fresh entry.
    ::io_uring_submit(&ring_);
    sqe = ::io_uring_get_sqe(&ring_);
  }
  return sqe;
}

void UringQueue::queue_op(io_uring_sqe* sqe, std::unique_ptr<Op> op) {
  ::io_uring_sqe_set_data(sqe, op.release());
  ++in_flight_;
}

void UringQueue::readv(int fd, uint64_t offset, std::vector<iovec> iov, Done done) {
  auto op = std::make_unique<Op>(Op{std::move(iov), std::move(done)});
  io_uring_sqe* sqe = next_sqe();
  if (sqe == nullptr) return op->done(-EBUSY);
  ::io_uring_prep_readv(sqe, fd, op->iov.data(), static_cast<unsigned>(op->iov.size()), offset);
  queue_op(sqe, std::move(op));
}

void UringQueue::writev(int fd, uint64_t offset, std::vector<iovec> iov, Done done) {
  auto op = std::make_unique<Op>(Op{std::move(iov), std::move(done)});
  io_uring_sqe* sqe = next_sqe();
  if (sqe == nullptr) return op->done(-EBUSY);
  ::io_uring_prep_writev(sqe, fd, op->iov.data(), static_cast<unsigned>(op->iov.size()), offset);
  queue_op(sqe, std::move(op));
}

void UringQueue::fdatasync(int fd, Done done) {
  auto op = std::make_unique<Op>(Op{{}, std::move(done)});
  io_uring_sqe* sqe = next_sqe();
  if (sqe == nullptr) return op->done(-EBUSY);
  ::io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
  queue_op(sqe, std::move(op));
}

void UringQueue::submit() {
  if (::io_uring_sq_ready(&ring_) > 0) ::io_uring_submit(&ring_);
}

bool UringQueue::reap_if_ready() {
  if (!completions_ready()) return false;
  drain_eventfd(event_fd_.get());
  reap();
  return true;
}

void UringQueue::reap() {
  io_uring_cqe* cqe = nullptr;
  while (::io_uring_peek_cqe(&ring_, &cqe) == 0) {
    // SAFETY: user_data is the Op we leaked into the SQE in queue_op(); reclaimed exactly once.
    std::unique_ptr<Op> op(reinterpret_cast<Op*>(::io_uring_cqe_get_data(cqe)));
    const int32_t res = cqe->res;
    ::io_uring_cqe_seen(&ring_, cqe);
    --in_flight_;
    op->done(res);
  }
}

void UringQueue::drain() {
  submit();
  while (in_flight_ > 0) {
    io_uring_cqe* cqe = nullptr;
    const int r = ::io_uring_wait_cqe(&ring_, &cqe);
    if (r == -EINTR) continue;
    if (r < 0) {
      spdlog::error("io_uring: waiting for {} requests in flight failed: {}", in_flight_, std::strerror(-r));
      return;
    }
    reap();
  }
}

}  // namespace ringvm
