// Console: the host side of the guest's serial console (`--console stdio|file:PATH|none`).
//
// Guest output is buffered and written by one I/O thread, flushed at a newline or kFlushDelay
// after the first unflushed byte (so a prompt without a newline still shows promptly). write()
// never blocks the vCPU: past kMaxBuffered the console drops bytes and counts them.
//
// For stdio, host input is read on the same thread and handed to an InputSink (the UART's
// enqueue_input), which may take only part of it: the rest waits and stdin is not read meanwhile.
// When stdin is a terminal it is put in raw mode, restored on every exit path (destructor,
// std::atexit, and termination signals whose disposition was the default), and the escape
// Ctrl-a x quits, Ctrl-a Ctrl-a sends one Ctrl-a. A closed, /dev/null or at-EOF stdin is simply
// no longer watched; a background process group's terminal is left alone.
#pragma once

#include <termios.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"

namespace ringvm {

struct ConsoleSpec {
  enum class Kind { kStdio, kFile, kNone };
  Kind kind = Kind::kStdio;
  std::string path;  // kFile only
};

// Parses the --console value: "stdio", "none" or "file:PATH".
Result<ConsoleSpec> parse_console_spec(std::string_view text);

// The Ctrl-a escape as a pure state machine, so it can be tested without a terminal.
class EscapeFilter final {
 public:
  static constexpr uint8_t kEscape = 0x01;  // Ctrl-a
  static constexpr uint8_t kQuit = 'x';     // Ctrl-a x

  struct Output {
    std::vector<uint8_t> to_guest;
    bool quit = false;  // Ctrl-a x seen; input after it was dropped
  };
  // A Ctrl-a at the end of `input` is held until the next call decides what it meant.
  Output feed(std::span<const uint8_t> input);

 private:
  bool escaped_ = false;
};

// Puts a terminal in raw mode for its lifetime. At most one exists at a time; its saved settings
// also sit where restore_terminal_async_signal_safe() can reach them.
class RawTerminal final {
 public:
  // Fails when `fd` is not a terminal, or another RawTerminal is active.
  static Result<std::unique_ptr<RawTerminal>> enter(int fd);
  RawTerminal(const RawTerminal&) = delete;
  RawTerminal& operator=(const RawTerminal&) = delete;
  ~RawTerminal();

 private:
  RawTerminal() = default;
};

// Restores the terminal a live RawTerminal changed, if any. Async-signal-safe: call it from a
// signal handler that replaces the default disposition of SIGTERM/SIGINT/SIGHUP.
void restore_terminal_async_signal_safe() noexcept;

// Where a stdio console reads and writes; tests substitute pipes and pseudo-terminals.
struct ConsoleOptions {
  int input_fd = STDIN_FILENO;    // stdio only; not owned
  int output_fd = STDOUT_FILENO;  // stdio only; not owned
  bool force_escape = false;      // apply the Ctrl-a escape even when input is not a terminal
};

class Console final {
 public:
  // Offers host input to the guest; returns how many bytes were taken.
  using InputSink = std::function<size_t(std::span<const uint8_t>)>;

  static constexpr std::chrono::milliseconds kFlushDelay{10};
  static constexpr size_t kMaxBuffered = 1 << 20;

  // Opens the output (file:PATH is created or truncated, mode 0644) and starts the I/O thread.
  static Result<std::unique_ptr<Console>> create(const ConsoleSpec& spec, ConsoleOptions options = {});
  Console(const Console&) = delete;
  Console& operator=(const Console&) = delete;
  // Flushes what is buffered (giving up after a second if the output is stuck) and restores the
  // terminal.
  ~Console();

  // Starts delivering host input (stdio only; a no-op otherwise). `on_quit` runs on the console
  // thread when the user types Ctrl-a x: it must request the shutdown, not destroy the Console.
  Result<void> start_input(InputSink on_input, std::function<void()> on_quit);

  // Guest output. Thread-safe; never waits on the host's output.
  void write(std::span<const uint8_t> bytes);
  // Waits (up to `timeout`) until everything written so far has reached the output.
  void flush(std::chrono::milliseconds timeout = std::chrono::seconds(1));

  uint64_t dropped_bytes() const;
  bool input_active() const;  // still watching the host's input

 private:
  Console(ConsoleSpec::Kind kind, ConsoleOptions options, UniqueFd owned_output, UniqueFd wake);
  void wake();
  void run();
  void read_input();
  void deliver_input();
  bool take_output(bool force);  // moves buffered output to writing_ if it is due
  void write_output();

  const ConsoleSpec::Kind kind_;
  const ConsoleOptions options_;
  const UniqueFd owned_output_;  // file:PATH
  const int output_fd_;
  const UniqueFd wake_;  // eventfd: new output, new input sink, shutdown

  // Shared between writers (vCPU threads), flush() and the I/O thread.
  mutable std::mutex mu_;
  std::condition_variable flushed_cv_;
  std::vector<uint8_t> buffer_;
  std::chrono::steady_clock::time_point first_unflushed_{};
  bool newline_pending_ = false;
  bool flush_requested_ = false;
  bool stopping_ = false;
  bool input_active_ = false;
  uint64_t appended_ = 0;  // bytes accepted by write()
  uint64_t retired_ = 0;   // bytes written out or given up on
  uint64_t dropped_ = 0;
  InputSink on_input_;
  std::function<void()> on_quit_;

  // I/O thread only.
  std::vector<uint8_t> writing_;
  size_t written_ = 0;
  bool output_failed_ = false;
  std::vector<uint8_t> backlog_;  // input the guest has not taken yet
  int backoff_ms_ = 0;
  EscapeFilter escape_;
  bool escape_enabled_ = false;
  std::unique_ptr<RawTerminal> raw_;

  std::thread thread_;
};

}  // namespace ringvm
