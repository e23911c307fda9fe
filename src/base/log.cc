#include "base/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

namespace ringvm {

void init_logging(const char* level) {
  auto logger = spdlog::stderr_color_mt("ringvm");
  logger->set_pattern("ringvm: %^%l%$: %v");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(level != nullptr ? level : "warn"));
}

bool RateLimited::allow() {
  using namespace std::chrono;
  const int64_t now = duration_cast<seconds>(steady_clock::now().time_since_epoch()).count();
  int64_t start = window_start_.load(std::memory_order_relaxed);
  if (now != start && window_start_.compare_exchange_strong(start, now)) {
    count_.store(0, std::memory_order_relaxed);
  }
  if (count_.fetch_add(1, std::memory_order_relaxed) < burst_) return true;
  suppressed_.fetch_add(1, std::memory_order_relaxed);
  return false;
}

}  // namespace ringvm
