#include "vmm/console.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <optional>
#include <utility>

#include "base/log.h"

namespace ringvm {
namespace {

using std::chrono::steady_clock;

// The terminal a RawTerminal changed and its settings before. These are process-wide statics,
// not members, because signal handlers and std::atexit must reach them without any object:
// g_saved_attrs is written before g_raw_fd publishes it, and only the holder of g_raw_claimed
// writes either.
std::atomic<int> g_raw_fd{-1};
struct termios g_saved_attrs;
std::atomic<bool> g_raw_claimed{false};
std::once_flag g_atexit_once;

// Signals that would otherwise kill ringvm and leave the user's shell in raw mode.
constexpr int kRestoreSignals[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGABRT};

extern "C" void restore_terminal_and_reraise(int sig) {
  restore_terminal_async_signal_safe();
  // SA_RESETHAND already put back the default action; the re-raised signal takes it on return.
  raise(sig);
}

extern "C" void restore_terminal_at_exit() { restore_terminal_async_signal_safe(); }

void install_restore_handlers() {
  for (int sig : kRestoreSignals) {
    struct sigaction old = {};
    if (sigaction(sig, nullptr, &old) != 0) continue;
    // A handler the application installed is its own business: it calls the restore itself.
    if (!(old.sa_flags & SA_SIGINFO) && old.sa_handler == SIG_DFL) {
      struct sigaction sa = {};
      sa.sa_handler = restore_terminal_and_reraise;
      sa.sa_flags = static_cast<int>(SA_RESETHAND);  // the macro is unsigned: clang -Wsign-conversion
      sigemptyset(&sa.sa_mask);
      sigaction(sig, &sa, nullptr);
    }
  }
}

void remove_restore_handlers() {
  for (int sig : kRestoreSignals) {
    struct sigaction cur = {};
    if (sigaction(sig, nullptr, &cur) != 0) continue;
    if (!(cur.sa_flags & SA_SIGINFO) && cur.sa_handler == restore_terminal_and_reraise) {
      signal(sig, SIG_DFL);
    }
  }
}

// POLLOUT on a pipe promises room for PIPE_BUF bytes: writing no more never blocks the thread.
constexpr size_t kWriteChunk = PIPE_BUF;
constexpr int kMaxBackoffMs = 16;
constexpr auto kShutdownGrace = std::chrono::seconds(1);

}  // namespace

void restore_terminal_async_signal_safe() noexcept {
  const int saved_errno = errno;
  const int fd = g_raw_fd.exchange(-1);
  if (fd >= 0) tcsetattr(fd, TCSANOW, &g_saved_attrs);
  errno = saved_errno;
}

Result<std::unique_ptr<RawTerminal>> RawTerminal::enter(int fd) {
  if (!isatty(fd)) return make_error(ErrorCode::kInvalidArgument, "console: fd {} is not a terminal", fd);
  bool expected = false;
  if (!g_raw_claimed.compare_exchange_strong(expected, true)) {
    return make_error(ErrorCode::kInternal, "console: a terminal is already in raw mode");
  }
  struct termios attrs = {};
  if (tcgetattr(fd, &attrs) != 0) {
    g_raw_claimed = false;
    return sys_error("console: read terminal settings");
  }
  g_saved_attrs = attrs;
  // Published before the change, so a signal arriving in between still restores.
  g_raw_fd.store(fd);
  std::call_once(g_atexit_once, [] { std::atexit(restore_terminal_at_exit); });
  install_restore_handlers();
  struct termios raw = attrs;
  // No line editing, echo, signals, flow control or output translation: the guest's tty does it.
  cfmakeraw(&raw);
  raw.c_cc[VMIN] = 1;
  raw.c_cc[VTIME] = 0;
  if (tcsetattr(fd, TCSANOW, &raw) != 0) {
    const Error err = sys_error("console: put the terminal in raw mode");
    restore_terminal_async_signal_safe();
    remove_restore_handlers();
    g_raw_claimed = false;
    return err;
  }
  return std::unique_ptr<RawTerminal>(new RawTerminal());
}

RawTerminal::~RawTerminal() {
  restore_terminal_async_signal_safe();
  remove_restore_handlers();
  g_raw_claimed = false;
}

Result<ConsoleSpec> parse_console_spec(std::string_view text) {
  if (text == "stdio") return ConsoleSpec{ConsoleSpec::Kind::kStdio, {}};
  if (text == "none") return ConsoleSpec{ConsoleSpec::Kind::kNone, {}};
  constexpr std::string_view kFilePrefix = "file:";
  if (text.starts_with(kFilePrefix) && text.size() > kFilePrefix.size()) {
    return ConsoleSpec{ConsoleSpec::Kind::kFile, std::string(text.substr(kFilePrefix.size()))};
  }
  return make_error(ErrorCode::kInvalidArgument, "--console '{}': expected stdio, none or file:PATH", text);
}

EscapeFilter::Output EscapeFilter::feed(std::span<const uint8_t> input) {
  Output out;
  out.to_guest.reserve(input.size() + 1);
  for (uint8_t b : input) {
    if (!escaped_) {
      if (b == kEscape) {
        escaped_ = true;
      } else {
        out.to_guest.push_back(b);
      }
      continue;
    }
    escaped_ = false;
    if (b == kQuit) {
      out.quit = true;
      return out;
    }
    // Ctrl-a Ctrl-a is one literal Ctrl-a; Ctrl-a anything-else passes both through.
    out.to_guest.push_back(kEscape);
    if (b != kEscape) out.to_guest.push_back(b);
  }
  return out;
}

Result<std::unique_ptr<Console>> Console::create(const ConsoleSpec& spec, ConsoleOptions options) {
  UniqueFd owned;
  if (spec.kind == ConsoleSpec::Kind::kFile) {
    // O_NONBLOCK for the open only: a named pipe nobody reads is an error (ENXIO) rather than a
    // build that never finishes; writes then block as for any file.
    owned.reset(::open(spec.path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, 0644));
    if (owned) (void)::fcntl(owned.get(), F_SETFL, ::fcntl(owned.get(), F_GETFL) & ~O_NONBLOCK);
    if (!owned) {
      return sys_error(
          fmt::format("--console file:{}: cannot create the file (check that its directory exists "
                      "and is writable)",
                      spec.path));
    }
  }
  UniqueFd wake(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake) return sys_error("console: eventfd");
  std::unique_ptr<Console> console(new Console(spec.kind, options, std::move(owned), std::move(wake)));
  if (spec.kind != ConsoleSpec::Kind::kNone)
    console->thread_ = std::thread([c = console.get()] { c->run(); });
  return console;
}

Console::Console(ConsoleSpec::Kind kind, ConsoleOptions options, UniqueFd owned_output, UniqueFd wake)
    : kind_(kind),
      options_(options),
      owned_output_(std::move(owned_output)),
      output_fd_(owned_output_ ? owned_output_.get() : options.output_fd),
      wake_(std::move(wake)) {}

Console::~Console() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake();
  if (thread_.joinable()) thread_.join();
  raw_.reset();
}

Result<void> Console::start_input(InputSink on_input, std::function<void()> on_quit) {
  if (kind_ != ConsoleSpec::Kind::kStdio) return Ok();
  std::lock_guard lock(mu_);
  if (on_input_) return make_error(ErrorCode::kInternal, "console: input already started");
  on_input_ = std::move(on_input);
  on_quit_ = std::move(on_quit);
  const int fd = options_.input_fd;
  if (fcntl(fd, F_GETFL) < 0) {
    spdlog::debug("console: no input: fd {} is closed", fd);
    return Ok();
  }
  if (isatty(fd)) {
    // Reading or reconfiguring a terminal from a background job would stop ringvm (SIGTTIN/SIGTTOU).
    const pid_t foreground = tcgetpgrp(fd);
    if (foreground >= 0 && foreground != getpgrp()) {
      spdlog::info("console: the terminal belongs to another process group; input disabled");
      return Ok();
    }
    auto raw = RawTerminal::enter(fd);
    if (raw.ok()) {
      raw_ = std::move(raw).value();
    } else {
      spdlog::warn("{}; input stays line-buffered", raw.error().message());
    }
    escape_enabled_ = true;
  }
  escape_enabled_ = escape_enabled_ || options_.force_escape;
  input_active_ = true;
  wake();
  return Ok();
}

void Console::write(std::span<const uint8_t> bytes) {
  if (kind_ == ConsoleSpec::Kind::kNone || bytes.empty()) return;
  bool signal = false;
  {
    std::lock_guard lock(mu_);
    const size_t room = kMaxBuffered - std::min(kMaxBuffered, buffer_.size());
    if (bytes.size() > room) {
      dropped_ += bytes.size() - room;
      RINGVM_LOG_RATELIMITED(warn, "console: output is not draining; {} guest bytes dropped so far",
                             dropped_);
      bytes = bytes.first(room);
      if (bytes.empty()) return;
    }
    const bool was_empty = buffer_.empty();
    if (was_empty) first_unflushed_ = steady_clock::now();
    buffer_.insert(buffer_.end(), bytes.begin(), bytes.end());
    appended_ += bytes.size();
    const bool newline = std::find(bytes.begin(), bytes.end(), '\n') != bytes.end();
    // One wake-up starts the flush timer and one more cuts it short at a newline; bytes in
    // between cost no syscall.
    signal = was_empty || (newline && !newline_pending_);
    newline_pending_ = newline_pending_ || newline;
  }
  if (signal) wake();
}

void Console::flush(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  const uint64_t target = appended_;
  flush_requested_ = true;
  lock.unlock();
  wake();
  lock.lock();
  flushed_cv_.wait_for(lock, timeout, [&] { return retired_ >= target; });
}

uint64_t Console::dropped_bytes() const {
  std::lock_guard lock(mu_);
  return dropped_;
}

bool Console::input_active() const {
  std::lock_guard lock(mu_);
  return input_active_;
}

void Console::wake() {
  const uint64_t one = 1;
  // A full counter (EAGAIN) already means "wake up".
  [[maybe_unused]] const ssize_t n = ::write(wake_.get(), &one, sizeof(one));
}

void Console::run() {
  // A closed output pipe raises SIGPIPE in the writing thread: keep it pending and see EPIPE.
  sigset_t pipe_set;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, nullptr);

  std::optional<steady_clock::time_point> give_up_at;
  for (;;) {
    bool stopping = false;
    bool watch_input = false;
    {
      std::lock_guard lock(mu_);
      stopping = stopping_;
      watch_input = input_active_ && backlog_.empty();
    }
    if (stopping && !give_up_at) give_up_at = steady_clock::now() + kShutdownGrace;
    if (writing_.empty()) take_output(stopping);
    if (stopping && (writing_.empty() || steady_clock::now() >= *give_up_at)) break;

    pollfd fds[3] = {};
    nfds_t n = 0;
    fds[n++] = {wake_.get(), POLLIN, 0};
    int in_idx = -1;
    int out_idx = -1;
    if (watch_input) {
      in_idx = static_cast<int>(n);
      fds[n++] = {options_.input_fd, POLLIN, 0};
    }
    if (!writing_.empty()) {
      out_idx = static_cast<int>(n);
      fds[n++] = {output_fd_, POLLOUT, 0};
    }
    int timeout = -1;
    if (!backlog_.empty()) timeout = backoff_ms_;
    {
      std::lock_guard lock(mu_);
      if (!buffer_.empty() && writing_.empty()) {
        const auto left = first_unflushed_ + kFlushDelay - steady_clock::now();
        const auto ms = std::chrono::ceil<std::chrono::milliseconds>(left).count();
        const int due = static_cast<int>(std::clamp<int64_t>(ms, 0, kFlushDelay.count()));
        timeout = timeout < 0 ? due : std::min(timeout, due);
      }
    }
    if (stopping) timeout = timeout < 0 ? 10 : std::min(timeout, 10);

    if (::poll(fds, n, timeout) < 0) {
      if (errno == EINTR) continue;
      spdlog::error("console: poll failed: {}; console stopped", strerror(errno));
      break;
    }
    if (fds[0].revents & POLLIN) {
      uint64_t count = 0;
      [[maybe_unused]] const ssize_t r = ::read(wake_.get(), &count, sizeof(count));
    }
    if (in_idx >= 0 && fds[in_idx].revents != 0) read_input();
    if (!backlog_.empty()) deliver_input();
    if (out_idx >= 0 && fds[out_idx].revents != 0) write_output();
  }
  // Whatever could not be written is given up on, so flush() callers stop waiting.
  std::lock_guard lock(mu_);
  retired_ = appended_;
  flushed_cv_.notify_all();
}

void Console::read_input() {
  uint8_t buf[4096];
  const ssize_t n = ::read(options_.input_fd, buf, sizeof(buf));
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
  if (n <= 0) {
    // EOF (or a dead terminal): stop watching instead of spinning on a readable-at-EOF fd.
    if (n < 0) spdlog::info("console: reading input failed: {}; input closed", strerror(errno));
    std::lock_guard lock(mu_);
    input_active_ = false;
    return;
  }
  const std::span<const uint8_t> in(buf, static_cast<size_t>(n));
  if (!escape_enabled_) {
    backlog_.insert(backlog_.end(), in.begin(), in.end());
    return;
  }
  EscapeFilter::Output out = escape_.feed(in);
  backlog_.insert(backlog_.end(), out.to_guest.begin(), out.to_guest.end());
  if (out.quit) {
    {
      std::lock_guard lock(mu_);
      input_active_ = false;
    }
    if (on_quit_) on_quit_();
  }
}

void Console::deliver_input() {
  const size_t taken = std::min(on_input_ ? on_input_(backlog_) : backlog_.size(), backlog_.size());
  backlog_.erase(backlog_.begin(), backlog_.begin() + static_cast<ptrdiff_t>(taken));
  if (backlog_.empty() || taken > 0) {
    backoff_ms_ = 1;
  } else {
    // The guest is not reading (interrupts off, or no driver yet): back off, without spinning.
    backoff_ms_ = std::min(backoff_ms_ * 2, kMaxBackoffMs);
  }
}

bool Console::take_output(bool force) {
  std::lock_guard lock(mu_);
  if (buffer_.empty()) return false;
  const bool due =
      force || flush_requested_ || newline_pending_ || steady_clock::now() >= first_unflushed_ + kFlushDelay;
  if (!due) return false;
  writing_.swap(buffer_);
  buffer_.clear();
  written_ = 0;
  newline_pending_ = false;
  flush_requested_ = false;
  if (output_failed_) {
    retired_ += writing_.size();
    writing_.clear();
    flushed_cv_.notify_all();
  }
  return true;
}

void Console::write_output() {
  const size_t chunk = std::min(writing_.size() - written_, kWriteChunk);
  const ssize_t n = ::write(output_fd_, writing_.data() + written_, chunk);
  size_t retired = 0;
  if (n > 0) {
    written_ += static_cast<size_t>(n);
    retired = static_cast<size_t>(n);
  } else if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
    return;
  } else {
    spdlog::error("console: writing guest output failed: {}; further output is discarded",
                  n < 0 ? strerror(errno) : "no progress");
    output_failed_ = true;
    retired = writing_.size() - written_;
    written_ = writing_.size();
  }
  if (written_ == writing_.size()) {
    writing_.clear();
    written_ = 0;
  }
  std::lock_guard lock(mu_);
  retired_ += retired;
  flushed_cv_.notify_all();
}

}  // namespace ringvm
