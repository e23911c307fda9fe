// EventLoop: one epoll thread that serves device fds (ioeventfds, tap, sockets, timers) and the
// API socket. Handlers run on the loop thread; they must not block.
#pragma once

#include <sys/epoll.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <unordered_map>

#include "base/result.h"
#include "base/unique_fd.h"

namespace ringvm {

class EventLoop {
 public:
  using Handler = std::function<void(uint32_t events)>;

  static Result<EventLoop> create();
  EventLoop(EventLoop&&) noexcept;
  EventLoop& operator=(EventLoop&&) noexcept;
  ~EventLoop();

  // Watches `fd` (not owned) for `events` (EPOLLIN, EPOLLOUT, ...) and calls `handler`.
  Result<void> add(int fd, uint32_t events, Handler handler);
  Result<void> modify(int fd, uint32_t events);
  Result<void> remove(int fd);

  // Runs handlers until stop(). Returns an error only if epoll itself fails.
  Result<void> run();
  // Runs at most one round of ready handlers, waiting up to `timeout_ms`. Returns the count.
  Result<int> run_once(int timeout_ms);
  // Thread-safe: makes run() return after the current round.
  void stop();

 private:
  EventLoop() = default;
  UniqueFd epfd_;
  UniqueFd wakefd_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::unordered_map<int, std::shared_ptr<Handler>> handlers_;
};

}  // namespace ringvm
