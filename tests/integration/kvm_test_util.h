// What the host-KVM integration tests share: a scratch directory, waiting for a condition, and
// the skip where /dev/kvm is unusable.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>

#include "kvm/system.h"

namespace ringvm::kvm_test {

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/ringvm-kvm-test-XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Polls `done` every 2 ms until it holds (true) or `limit` passed (false).
inline bool wait_for(const std::function<bool()>& done, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

}  // namespace ringvm::kvm_test

#define SKIP_WITHOUT_KVM()                                                              \
  do {                                                                                  \
    auto sys = ::ringvm::KvmSystem::open();                                             \
    if (!sys) GTEST_SKIP() << "host KVM unusable, skipping: " << sys.error().message(); \
  } while (0)
