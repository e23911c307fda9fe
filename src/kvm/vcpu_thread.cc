#include "kvm/vcpu_thread.h"

#include <fmt/format.h>
#include <pthread.h>

#include <algorithm>
#include <csignal>
#include <mutex>
#include <string>

namespace ringvm {

namespace {
constexpr int kKickSignal = SIGUSR1;
void on_kick(int) {}
}  // namespace

void VcpuThread::install_kick_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_handler = on_kick;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;  // no SA_RESTART: KVM_RUN must return EINTR
    ::sigaction(kKickSignal, &sa, nullptr);
  });
}

void VcpuThread::start(KvmVcpu* vcpu, std::function<void()> body) {
  install_kick_handler();
  vcpu_ = vcpu;
  thread_ = std::thread([this, body = std::move(body)] {
    // The kick signal must be deliverable on this thread even if the spawner blocked it.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, kKickSignal);
    pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
    // "vcpu<N>" in ps, top and kernel oopses (15 characters at most).
    if (vcpu_ != nullptr) {
      const std::string name = fmt::format("vcpu{}", vcpu_->id());
      pthread_setname_np(pthread_self(), name.c_str());
    }
    started_.store(true, std::memory_order_release);
    body();
    finished_.store(true, std::memory_order_release);
  });
}

void VcpuThread::kick() {
  if (!thread_.joinable()) return;
  kicks_.fetch_add(1, std::memory_order_relaxed);
  if (vcpu_ != nullptr) vcpu_->request_exit();
  pthread_kill(thread_.native_handle(), kKickSignal);
}

bool VcpuThread::stop_by(std::chrono::steady_clock::time_point deadline, std::chrono::milliseconds rekick) {
  if (!thread_.joinable()) return true;
  auto next_kick = std::chrono::steady_clock::now();
  while (!finished_.load(std::memory_order_acquire)) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return false;
    if (now >= next_kick) {
      kick();
      next_kick = now + rekick;
    }
    std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(
        std::chrono::milliseconds(5), deadline - now));
  }
  thread_.join();
  return true;
}

void VcpuThread::join() {
  if (thread_.joinable()) thread_.join();
}

}  // namespace ringvm
