#include "base/log.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

#include <fcntl.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <memory>

#include <spdlog/sinks/stdout_color_sinks.h>

namespace ringvm {

void init_logging(const char* level) {
  auto logger = spdlog::stderr_color_mt("ringvm");
  logger->set_pattern("ringvm: %^%l%$: %v");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(level != nullptr ? level : "warn"));
}

bool set_log_output(const std::string& path, const std::string& level, bool show_level, bool show_origin,
                    std::string* error) {
  std::string lower;
  for (char c : level) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lower == "warning") lower = "warn";
  if (lower == "error") lower = "err";
  const auto lvl = spdlog::level::from_str(lower);
  if (!path.empty()) {
    // A named pipe nobody reads would block spdlog's open (and the API thread) forever: look first.
    const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_NONBLOCK | O_CLOEXEC, 0600);
    if (fd < 0) {
      if (error != nullptr) *error = std::strerror(errno);
      return false;
    }
    ::close(fd);
  }
  std::shared_ptr<spdlog::logger> logger;
  try {
    if (path.empty()) logger = std::make_shared<spdlog::logger>("ringvm", std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
    else logger = std::make_shared<spdlog::logger>("ringvm", std::make_shared<spdlog::sinks::basic_file_sink_mt>(path));
  } catch (const spdlog::spdlog_ex& e) {
    if (error != nullptr) *error = e.what();
    return false;
  }
  std::string pattern = "%Y-%m-%dT%H:%M:%S.%e ringvm";
  if (show_level) pattern += " %^%l%$";
  if (show_origin) pattern += " %s:%#";
  pattern += ": %v";
  logger->set_pattern(pattern);
  logger->set_level(lvl);
  logger->flush_on(spdlog::level::warn);
  spdlog::set_default_logger(std::move(logger));
  return true;
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
