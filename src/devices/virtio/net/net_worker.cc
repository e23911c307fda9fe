#include "devices/virtio/net/net_worker.h"

#include <pthread.h>
#include <sys/epoll.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <string>

#include "base/log.h"
#include "devices/virtio/worker.h"

namespace ringvm {

Result<std::unique_ptr<VirtioNet::PairWorker>> VirtioNet::PairWorker::start(VirtioNet& dev,
                                                                            std::vector<size_t> pairs) {
  std::unique_ptr<PairWorker> w(new PairWorker(dev, std::move(pairs)));
  w->epfd_.reset(::epoll_create1(EPOLL_CLOEXEC));
  if (!w->epfd_) return sys_error(fmt::format("{}: epoll_create1", dev.name()));
  w->stopfd_ = TRY(make_eventfd(dev.name()));
  RETURN_IF_ERROR(w->add(w->stopfd_.get(), token(0, kStop), EPOLLIN));
  w->pause_ = TRY(WorkerPause::create(dev.name()));
  RETURN_IF_ERROR(w->add(w->pause_.fd(), token(0, kPause), EPOLLIN));
  for (size_t slot = 0; slot < w->served_.size(); ++slot) {
    const Pair& p = dev.pairs_[w->served_[slot].index];
    RETURN_IF_ERROR(w->add(p.rx.kick_fd, token(slot, kRxKick), EPOLLIN));
    RETURN_IF_ERROR(w->add(p.tx.kick_fd, token(slot, kTxKick), EPOLLIN));
    if (w->served_[slot].index == 0)
      RETURN_IF_ERROR(w->add(dev.ctrl_.kick_fd, token(slot, kCtrlKick), EPOLLIN));
    RETURN_IF_ERROR(w->add(p.tx_batch.fd(), token(slot, kTxTimer), EPOLLIN));
  }
  w->thread_ = std::thread([p = w.get()] { p->run(); });
  return w;
}

VirtioNet::PairWorker::~PairWorker() {
  if (!thread_.joinable()) return;
  pause_.shutdown();
  signal_eventfd(stopfd_.get());
  thread_.join();
}

VirtioNet::PairWorker::PairWorker(VirtioNet& dev, std::vector<size_t> pairs) : dev_(dev) {
  for (size_t i : pairs) served_.push_back(Served{.index = i});
}

Result<void> VirtioNet::PairWorker::add(int fd, uint64_t tok, uint32_t events) {
  if (fd < 0) return Ok();
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = tok;
  if (::epoll_ctl(epfd_.get(), EPOLL_CTL_ADD, fd, &ev) != 0)
    return sys_error(fmt::format("{}: epoll_ctl add fd {}", dev_.name(), fd));
  return Ok();
}

void VirtioNet::PairWorker::update_backend_interest(size_t slot) {
  Served& s = served_[slot];
  const Pair& p = dev_.pairs_[s.index];
  const bool enabled = s.index < dev_.active_pairs() && s.error_gen != dev_.pairs_gen_.load();
  if (!enabled) {
    if (s.registered) (void)::epoll_ctl(epfd_.get(), EPOLL_CTL_DEL, p.fd, nullptr);
    s.registered = false;
    return;
  }
  uint32_t want = 0;
  if (p.rx.queue != nullptr && !p.rx_pending) want |= EPOLLIN;
  if (p.tx_chain) want |= EPOLLOUT;
  if (s.registered && want == s.interest) return;
  epoll_event ev{};
  ev.events = want;
  ev.data.u64 = token(slot, kBackend);
  if (::epoll_ctl(epfd_.get(), s.registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, p.fd, &ev) == 0) {
    s.interest = want;
    s.registered = true;
  }
}

void VirtioNet::PairWorker::run() {
  const std::string name = served_.size() == 1 ? fmt::format("net-q{}", served_.front().index) : "net-qs";
  ::pthread_setname_np(::pthread_self(), name.substr(0, 15).c_str());
  nice_ = dev_.options_.worker_nice;
  if (dev_.options_.worker_nice_always) set_boost(true);
  std::array<epoll_event, 16> events{};
  bool ctrl = std::any_of(served_.begin(), served_.end(), [](const Served& s) { return s.index == 0; });
  for (;;) {
    if (ctrl) dev_.poll_ctrl();
    bool any_more = false;
    for (size_t slot = 0; slot < served_.size(); ++slot) {
      Served& s = served_[slot];
      if (s.more) s.more = dev_.poll_pair_budgeted(s.index);
      update_backend_interest(slot);
      any_more |= s.more;
    }
    if (nice_ != 0 && !dev_.options_.worker_nice_always) follow_bulk_transmit();
    // With work left over (budget spent) only peek at the fds; otherwise sleep until one fires.
    const int n =
        ::epoll_wait(epfd_.get(), events.data(), static_cast<int>(events.size()), any_more ? 0 : -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      spdlog::error("{}: epoll_wait failed ({}); its queue pairs stop", dev_.name(), std::strerror(errno));
      pause_.shutdown();
      return;
    }
    ctrl = false;
    for (int k = 0; k < n; ++k) {
      const epoll_event& ev = events[static_cast<size_t>(k)];
      const auto kind = static_cast<Kind>(ev.data.u64 & 0xff);
      if (kind == kStop) return;
      if (kind == kPause) {
        // Nothing is in flight between passes: a frame the tap could not take stays held in
        // the device (tx_chain) and goes out after resume.
        if (!pause_.park({})) return;  // torn down while paused: serve nothing more
        for (Served& s : served_) s.more = true;
        continue;
      }
      if (kind == kCtrlKick) {
        // The command may enable or disable pairs: look at all of them again.
        drain_eventfd(dev_.ctrl_.kick_fd);
        ctrl = true;
        for (Served& s : served_) s.more = true;
        continue;
      }
      const auto slot = static_cast<size_t>(ev.data.u64 >> 8);
      if (slot >= served_.size()) continue;
      Served* s = &served_[slot];
      s->more = true;
      Pair& p = dev_.pairs_[s->index];
      switch (kind) {
        case kRxKick:
          dev_.stats_.rx_kicks.fetch_add(drain_eventfd(p.rx.kick_fd), std::memory_order_relaxed);
          break;
        case kTxKick:
          dev_.stats_.tx_kicks.fetch_add(drain_eventfd(p.tx.kick_fd), std::memory_order_relaxed);
          dev_.on_tx_kick(p);
          break;
        case kTxTimer:
          drain_eventfd(p.tx_batch.fd());
          p.tx_batch.fired();
          p.tx_deferred = false;
          break;
        case kBackend:
          if (ev.events & (EPOLLERR | EPOLLHUP)) {
            // A failed backend queue would fire forever: stop polling it until the driver
            // changes its queue pairs again.
            RINGVM_LOG_RATELIMITED(error, "{}: backend queue {} failed; it is no longer polled", dev_.name(),
                                   s->index);
            (void)::epoll_ctl(epfd_.get(), EPOLL_CTL_DEL, p.fd, nullptr);
            s->registered = false;
            s->error_gen = dev_.pairs_gen_.load();
          }
          break;
        default: break;
      }
    }
  }
}

void VirtioNet::PairWorker::follow_bulk_transmit() {
  uint64_t bulk = 0;
  for (const Served& s : served_) bulk += dev_.pairs_[s.index].tx_bulk_frames;
  if (bulk == bulk_seen_ && !boosted_) return;  // no bulk now, none to wind down: no clock read
  const uint64_t now = monotonic_ns();
  if (bulk != bulk_seen_) {
    bulk_seen_ = bulk;
    bulk_until_ns_ = now + VirtioNetOptions::kBulkWindowNs;
  }
  const bool want = now < bulk_until_ns_;
  if (want != boosted_) set_boost(want);
}

void VirtioNet::PairWorker::set_boost(bool on) {
  auto set = set_thread_nice_delta(on ? nice_ : 0);
  if (!set.ok()) {
    // Refused (no CAP_SYS_NICE): stay at ringvm's priority and stop asking.
    RINGVM_LOG_RATELIMITED(info, "virtio-net {}: workers keep ringvm's priority: {}", dev_.name(),
                           set.error().message());
    nice_ = 0;
    return;
  }
  boosted_ = on;
  if (on) {
    dev_.stats_.worker_nice.store(*set, std::memory_order_relaxed);
    dev_.stats_.worker_boosts.fetch_add(1, std::memory_order_relaxed);
  }
}

}  // namespace ringvm
