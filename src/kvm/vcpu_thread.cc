#include "kvm/vcpu_thread.h"

#include <fmt/format.h>
#include <pthread.h>

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
  });
}

void VcpuThread::kick() {
  if (vcpu_ == nullptr || !thread_.joinable()) return;
  vcpu_->request_exit();
  pthread_kill(thread_.native_handle(), kKickSignal);
}

void VcpuThread::join() {
  if (thread_.joinable()) thread_.join();
}

}  // namespace ringvm
