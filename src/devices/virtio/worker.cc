#include "devices/virtio/worker.h"

#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/timerfd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <ctime>

#include "base/log.h"
#include "devices/virtio/queue.h"

namespace ringvm {

namespace {
// epoll data for the stop and pause eventfds; queue fds use their index.
constexpr uint64_t kStopToken = ~uint64_t{0};
constexpr uint64_t kPauseToken = ~uint64_t{0} - 1;
}  // namespace

Result<UniqueFd> make_eventfd(std::string_view what) {
  UniqueFd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!fd) return sys_error(fmt::format("eventfd for {}", what));
  return fd;
}

void signal_eventfd(int fd) {
  const uint64_t one = 1;
  // An eventfd write only fails if the counter would overflow, i.e. it is already signalled.
  [[maybe_unused]] auto n = ::write(fd, &one, sizeof one);
}

uint64_t drain_eventfd(int fd) {
  uint64_t count = 0;
  return ::read(fd, &count, sizeof count) == static_cast<ssize_t>(sizeof count) ? count : 0;
}

Result<int> set_thread_nice_delta(int delta) {
  errno = 0;
  const int base = ::getpriority(PRIO_PROCESS, static_cast<id_t>(::getpid()));  // ringvm's main thread
  if (base == -1 && errno != 0) return sys_error("getpriority");
  const int want = std::clamp(base + delta, -20, 19);
  if (::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), want) != 0) {
    const int err = errno;
    const bool denied = err == EACCES || err == EPERM;
    return make_error(
        denied ? ErrorCode::kPermissionDenied : ErrorCode::kIo, "setting nice {} (ringvm's {} {:+}): {}; {}",
        want, base, delta, std::strerror(err),
        denied ? "raising a thread's priority needs CAP_SYS_NICE or an RLIMIT_NICE (ulimit -e) allowing it"
               : "the kernel refused it");
  }
  return want - base;
}

uint64_t monotonic_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000u + static_cast<uint64_t>(ts.tv_nsec);
}

Result<QueueBatcher> QueueBatcher::create(std::string_view what, uint32_t max_us) {
  QueueBatcher b;
  if (max_us == 0) return b;
  b.timer_.reset(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
  if (!b.timer_) return sys_error(fmt::format("timerfd for {}", what));
  b.max_ns_ = uint64_t{max_us} * 1000;
  return b;
}

void QueueBatcher::note_request() {
  const uint64_t now = monotonic_ns();
  const uint64_t gap = std::min(now - last_ns_, max_ns_ / 4);
  gap_ns_ = gap_ns_ - gap_ns_ / 8 + gap / 8;
  last_ns_ = now;
}

bool QueueBatcher::arm(bool whole) {
  if (!timer_) return false;
  const uint64_t ns = whole ? max_ns_ : std::clamp<uint64_t>(4 * gap_ns_, 1000, max_ns_);
  itimerspec t{};
  t.it_value.tv_sec = static_cast<time_t>(ns / 1000000000);
  t.it_value.tv_nsec = static_cast<long>(ns % 1000000000);
  armed_ = ::timerfd_settime(timer_.get(), 0, &t, nullptr) == 0;
  return armed_;
}

void QueueBatcher::mark_busy() { busy_until_ns_ = monotonic_ns() + 4 * max_ns_; }

bool QueueBatcher::defer_kick() { return timer_ && monotonic_ns() < busy_until_ns_ && arm(); }

bool QueueBatcher::pending() const {
  itimerspec t{};
  return timer_ && ::timerfd_gettime(timer_.get(), &t) == 0 &&
         (t.it_value.tv_sec != 0 || t.it_value.tv_nsec != 0);
}

Result<WorkerPause> WorkerPause::create(std::string_view what) {
  WorkerPause p;
  p.fd_ = TRY(make_eventfd(what));
  return p;
}

void WorkerPause::pause() {
  std::unique_lock lock(mu_);
  if (done_ || !fd_) return;
  want_ = true;
  signal_eventfd(fd_.get());
  cv_.wait(lock, [this] { return parked_ || done_; });
}

void WorkerPause::resume() {
  std::lock_guard lock(mu_);
  want_ = false;
  cv_.notify_all();
}

void WorkerPause::shutdown() {
  std::lock_guard lock(mu_);
  done_ = true;
  cv_.notify_all();
}

bool WorkerPause::paused() const {
  std::lock_guard lock(mu_);
  return parked_;
}

bool WorkerPause::park(const std::function<void()>& quiesce) {
  (void)drain_eventfd(fd_.get());
  {
    std::lock_guard lock(mu_);
    if (done_) return false;
    if (!want_) return true;
  }
  if (quiesce) quiesce();
  std::unique_lock lock(mu_);
  parked_ = true;
  cv_.notify_all();
  cv_.wait(lock, [this] { return !want_ || done_; });
  parked_ = false;
  return !done_;
}

Result<std::unique_ptr<VirtioWorker>> VirtioWorker::start(std::string name, std::vector<int> fds,
                                                          Handler handler, std::function<void()> quiesce) {
  std::unique_ptr<VirtioWorker> w(new VirtioWorker());
  w->name_ = std::move(name);
  w->fds_ = std::move(fds);
  w->handler_ = std::move(handler);
  w->quiesce_ = std::move(quiesce);
  w->pause_ = TRY(WorkerPause::create(w->name_));
  w->epfd_.reset(::epoll_create1(EPOLL_CLOEXEC));
  if (!w->epfd_) return sys_error(fmt::format("epoll_create1 for {}", w->name_));
  w->stopfd_ = TRY(make_eventfd(w->name_));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kStopToken;
  if (::epoll_ctl(w->epfd_.get(), EPOLL_CTL_ADD, w->stopfd_.get(), &ev) != 0)
    return sys_error(fmt::format("epoll_ctl for {}", w->name_));
  ev.data.u64 = kPauseToken;
  if (::epoll_ctl(w->epfd_.get(), EPOLL_CTL_ADD, w->pause_.fd(), &ev) != 0)
    return sys_error(fmt::format("epoll_ctl for {}", w->name_));
  for (size_t i = 0; i < w->fds_.size(); ++i) {
    if (w->fds_[i] < 0) continue;
    ev.data.u64 = i;
    if (::epoll_ctl(w->epfd_.get(), EPOLL_CTL_ADD, w->fds_[i], &ev) != 0)
      return sys_error(fmt::format("epoll_ctl add kick fd {} for {}", w->fds_[i], w->name_));
  }
  w->thread_ = std::thread([p = w.get()] { p->run(); });
  return w;
}

VirtioWorker::~VirtioWorker() { stop(); }

void VirtioWorker::stop() {
  if (!thread_.joinable()) return;
  pause_.shutdown();
  signal_eventfd(stopfd_.get());
  thread_.join();
}

void VirtioWorker::run() {
  // Thread names are at most 15 characters.
  ::pthread_setname_np(::pthread_self(), name_.substr(0, 15).c_str());
  for (size_t i = 0; i < fds_.size(); ++i)
    if (fds_[i] >= 0) handler_(i, 0);
  std::array<epoll_event, 16> events{};
  for (;;) {
    const int n = ::epoll_wait(epfd_.get(), events.data(), static_cast<int>(events.size()), -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      spdlog::error("{}: epoll_wait failed ({}); the device stops serving its queues", name_,
                    std::strerror(errno));
      pause_.shutdown();
      return;
    }
    for (int k = 0; k < n; ++k) {
      const uint64_t token = events[static_cast<size_t>(k)].data.u64;
      if (token == kStopToken) return;
      if (token == kPauseToken) {
        if (!pause_.park(quiesce_)) return;  // torn down while paused: serve nothing more
        continue;
      }
      // Drain the counter first: a kick that arrives while the handler runs re-arms the fd.
      const uint64_t count = drain_eventfd(fds_[token]);
      handler_(static_cast<size_t>(token), count);
    }
  }
}

Result<std::vector<ActivatedQueue>> activate_queues(std::string_view device, const GuestMemory& mem,
                                                    uint64_t features, std::vector<ActivatedQueue> queues) {
  for (size_t i = 0; i < queues.size(); ++i) {
    auto& q = queues[i];
    if (q.queue == nullptr || !q.queue->ready()) {
      q = ActivatedQueue{};
      continue;
    }
    auto r = q.queue->activate(mem, features);
    if (!r.ok()) return wrap(std::move(r).error(), "{} queue {}", device, i);
  }
  return queues;
}

}  // namespace ringvm

namespace ringvm {

Result<void> SingleWorkerDevice::activate(const GuestMemory& mem, uint64_t acked_features,
                                          std::vector<ActivatedQueue> queues) {
  std::lock_guard lock(mu_);
  if (worker_) return make_error(ErrorCode::kInternal, "{}: activated twice", name());
  if (queues.size() > queue_max_sizes().size())
    return make_error(ErrorCode::kInvalidArgument, "{}: {} queues given, {} offered", name(), queues.size(),
                      queue_max_sizes().size());
  queues_ = TRY(activate_queues(name(), mem, acked_features, std::move(queues)));
  mem_ = &mem;
  std::vector<int> fds;
  for (const auto& q : queues_) fds.push_back(q.kick_fd);
  // Device fds are always served, even for a queue the driver left disabled.
  for (int fd : extra_fds()) fds.push_back(fd);
  auto w =
      VirtioWorker::start(std::string(name()), std::move(fds), [this](size_t s, uint64_t) { on_event(s); });
  if (!w.ok()) {
    queues_.clear();
    mem_ = nullptr;
    return std::move(w).error();
  }
  worker_ = std::move(*w);
  return Ok();
}

void SingleWorkerDevice::stop() {
  std::lock_guard lock(mu_);
  worker_.reset();  // joins: on_event is not running and never runs again
  queues_.clear();
  mem_ = nullptr;
}

void SingleWorkerDevice::reset() { stop(); }

Result<void> SingleWorkerDevice::pause() {
  std::lock_guard lock(mu_);
  if (worker_) worker_->pause();
  return Ok();
}

Result<void> SingleWorkerDevice::resume() {
  std::lock_guard lock(mu_);
  if (worker_) worker_->resume();
  return Ok();
}

void SingleWorkerDevice::notify_if_needed(size_t index) {
  auto& aq = queues_[index];
  if (aq.queue != nullptr && aq.queue->needs_notification() && aq.notify) aq.notify();
}

}  // namespace ringvm
