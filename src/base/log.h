// Logging: spdlog to stderr. Guest-triggerable events go through RateLimited so a hostile guest
// cannot flood the host's log.
#pragma once

#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

namespace ringvm {

// Set from --log-level / RINGVM_LOG ("trace".."off"); default "warn".
void init_logging(const char* level);
// Sends ringvm's log to `path` (a file, appended, or a named pipe; empty: stderr) at `level`
// (Firecracker's Error, Warning, Info, Debug, Trace, Off, any case). Thread-safe.
[[nodiscard]] bool set_log_output(const std::string& path, const std::string& level, bool show_level,
                                  bool show_origin, std::string* error);

// Allows at most `burst` messages per second from one call site; counts what it suppressed.
class RateLimited {
 public:
  explicit RateLimited(uint32_t burst = 10) : burst_(burst) {}
  bool allow();
  uint64_t suppressed() const { return suppressed_.load(std::memory_order_relaxed); }

 private:
  uint32_t burst_;
  std::atomic<int64_t> window_start_{0};
  std::atomic<uint32_t> count_{0};
  std::atomic<uint64_t> suppressed_{0};
};

}  // namespace ringvm

#define RINGVM_LOG_RATELIMITED(level, ...)               \
  do {                                                  \
    static ::ringvm::RateLimited _rl;                   \
    if (_rl.allow()) spdlog::level(__VA_ARGS__);        \
  } while (0)
