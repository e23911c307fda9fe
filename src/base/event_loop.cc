#include "base/event_loop.h"

#include <sys/eventfd.h>

#include <array>
#include <memory>

namespace ringvm {

Result<EventLoop> EventLoop::create() {
  EventLoop loop;
  loop.epfd_.reset(::epoll_create1(EPOLL_CLOEXEC));
  if (!loop.epfd_) return sys_error("epoll_create1");
  loop.wakefd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!loop.wakefd_) return sys_error("eventfd for the event loop");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = loop.wakefd_.get();
  if (::epoll_ctl(loop.epfd_.get(), EPOLL_CTL_ADD, loop.wakefd_.get(), &ev) != 0)
    return sys_error("epoll_ctl add wake eventfd");
  return loop;
}

EventLoop::EventLoop(EventLoop&& o) noexcept
    : epfd_(std::move(o.epfd_)), wakefd_(std::move(o.wakefd_)), stop_(o.stop_.load()),
      handlers_(std::move(o.handlers_)) {}

EventLoop& EventLoop::operator=(EventLoop&& o) noexcept {
  epfd_ = std::move(o.epfd_);
  wakefd_ = std::move(o.wakefd_);
  stop_ = o.stop_.load();
  handlers_ = std::move(o.handlers_);
  return *this;
}

EventLoop::~EventLoop() = default;

Result<void> EventLoop::add(int fd, uint32_t events, Handler handler) {
  std::lock_guard lock(mu_);
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  if (::epoll_ctl(epfd_.get(), EPOLL_CTL_ADD, fd, &ev) != 0)
    return sys_error(fmt::format("epoll_ctl add fd {}", fd));
  handlers_[fd] = std::make_shared<Handler>(std::move(handler));
  return Ok();
}

Result<void> EventLoop::modify(int fd, uint32_t events) {
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  if (::epoll_ctl(epfd_.get(), EPOLL_CTL_MOD, fd, &ev) != 0)
    return sys_error(fmt::format("epoll_ctl modify fd {}", fd));
  return Ok();
}

Result<void> EventLoop::remove(int fd) {
  std::lock_guard lock(mu_);
  handlers_.erase(fd);
  if (::epoll_ctl(epfd_.get(), EPOLL_CTL_DEL, fd, nullptr) != 0)
    return sys_error(fmt::format("epoll_ctl remove fd {}", fd));
  return Ok();
}

Result<int> EventLoop::run_once(int timeout_ms) {
  std::array<epoll_event, 32> events{};
  int n = ::epoll_wait(epfd_.get(), events.data(), static_cast<int>(events.size()), timeout_ms);
  if (n < 0) {
    if (errno == EINTR) return 0;
    return sys_error("epoll_wait");
  }
  for (int i = 0; i < n; ++i) {
    const int fd = events[static_cast<size_t>(i)].data.fd;
    if (fd == wakefd_.get()) {
      uint64_t v;
      [[maybe_unused]] auto r = ::read(fd, &v, sizeof v);
      continue;
    }
    std::shared_ptr<Handler> h;
    {
      std::lock_guard lock(mu_);
      auto it = handlers_.find(fd);
      if (it == handlers_.end()) continue;  // removed by an earlier handler this round
      h = it->second;
    }
    (*h)(events[static_cast<size_t>(i)].events);
  }
  return n;
}

Result<void> EventLoop::run() {
  while (!stop_.load(std::memory_order_acquire)) {
    auto r = run_once(-1);
    if (!r) return std::move(r).error();
  }
  return Ok();
}

void EventLoop::stop() {
  stop_.store(true, std::memory_order_release);
  uint64_t one = 1;
  [[maybe_unused]] auto r = ::write(wakefd_.get(), &one, sizeof one);
}

}  // namespace ringvm
