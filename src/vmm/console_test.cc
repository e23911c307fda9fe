#include "vmm/console.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>

namespace ringvm {
namespace {

using namespace std::chrono_literals;

std::vector<uint8_t> bytes(std::string_view s) { return {s.begin(), s.end()}; }
std::string str(const std::vector<uint8_t>& v) { return {v.begin(), v.end()}; }

bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout = 3s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

struct Pipe {
  Pipe() {
    int fds[2];
    EXPECT_EQ(pipe2(fds, O_CLOEXEC), 0);
    r.reset(fds[0]);
    w.reset(fds[1]);
  }
  UniqueFd r, w;
};

// Reads whatever arrives on `fd` within `timeout`.
std::string drain(int fd, std::chrono::milliseconds timeout) {
  std::string out;
  pollfd p{fd, POLLIN, 0};
  while (::poll(&p, 1, static_cast<int>(timeout.count())) > 0) {
    char buf[4096];
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
    timeout = 50ms;
  }
  return out;
}

// Collects what the console hands the guest.
struct Sink {
  size_t operator()(std::span<const uint8_t> in) {
    std::lock_guard lock(mu);
    const size_t take = std::min(in.size(), limit);
    got.append(in.begin(), in.begin() + static_cast<ptrdiff_t>(take));
    return take;
  }
  std::string text() {
    std::lock_guard lock(mu);
    return got;
  }
  std::mutex mu;
  std::string got;
  size_t limit = SIZE_MAX;
};

TEST(ConsoleSpec, Parses) {
  EXPECT_EQ(parse_console_spec("stdio")->kind, ConsoleSpec::Kind::kStdio);
  EXPECT_EQ(parse_console_spec("none")->kind, ConsoleSpec::Kind::kNone);
  auto f = parse_console_spec("file:/tmp/x.log");
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->kind, ConsoleSpec::Kind::kFile);
  EXPECT_EQ(f->path, "/tmp/x.log");
  for (const char* bad : {"", "file:", "tty", "stdio "}) {
    auto r = parse_console_spec(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.error().message().find("--console"), std::string::npos);
  }
}

TEST(EscapeFilter, PassesPlainBytes) {
  EscapeFilter f;
  auto out = f.feed(bytes("ls -l\r"));
  EXPECT_EQ(str(out.to_guest), "ls -l\r");
  EXPECT_FALSE(out.quit);
}

TEST(EscapeFilter, CtrlAXQuitsAndDropsTheRest) {
  EscapeFilter f;
  auto out = f.feed(bytes("ab\x01xcd"));
  EXPECT_EQ(str(out.to_guest), "ab");
  EXPECT_TRUE(out.quit);
}

TEST(EscapeFilter, DoubleCtrlASendsOne) {
  EscapeFilter f;
  auto out = f.feed(bytes("\x01\x01z"));
  EXPECT_EQ(str(out.to_guest), "\x01z");
  EXPECT_FALSE(out.quit);
}

TEST(EscapeFilter, CtrlAThenOtherSendsBoth) {
  EscapeFilter f;
  EXPECT_EQ(str(f.feed(bytes("\x01"
                             "c"))
                    .to_guest),
            "\x01"
            "c");
  EXPECT_EQ(str(f.feed(bytes("\x01X")).to_guest), "\x01X");  // capital X is not the quit key
}

TEST(EscapeFilter, EscapeSplitAcrossReads) {
  EscapeFilter f;
  EXPECT_TRUE(f.feed(bytes("a\x01")).to_guest == bytes("a"));
  auto out = f.feed(bytes("x"));
  EXPECT_TRUE(out.quit);
  EXPECT_TRUE(out.to_guest.empty());
  EscapeFilter g;
  EXPECT_TRUE(g.feed(bytes("\x01")).to_guest.empty());
  EXPECT_EQ(str(g.feed(bytes("\x01")).to_guest), "\x01");
  EXPECT_EQ(str(g.feed(bytes("q")).to_guest), "q");  // the escape state was consumed
}

class ConsoleFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ringvm-console-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  std::string dir_;
};

TEST_F(ConsoleFileTest, WritesTruncatesAndUses0644) {
  const std::string path = dir_ + "/console.log";
  std::ofstream(path) << "stale contents from an earlier run";
  ::chmod(path.c_str(), 0600);
  std::filesystem::remove(path);  // O_CREAT's mode only applies to a new file
  std::ofstream(path) << "stale";
  const mode_t mask = umask(022);
  umask(mask);
  {
    auto console = Console::create(ConsoleSpec{ConsoleSpec::Kind::kFile, path});
    ASSERT_TRUE(console.ok()) << console.error().message();
    EXPECT_EQ(read_file(path), "");  // truncated at open
    (*console)->write(bytes("Linux version 6.1\n"));
    (*console)->write(bytes("~ # "));
    (*console)->flush();
    EXPECT_EQ(read_file(path), "Linux version 6.1\n~ # ");
    (*console)->write(bytes("tail"));
  }
  EXPECT_EQ(read_file(path), "Linux version 6.1\n~ # tail");  // the destructor flushed
  const std::string fresh = dir_ + "/fresh.log";
  ASSERT_TRUE(Console::create(ConsoleSpec{ConsoleSpec::Kind::kFile, fresh}).ok());
  struct stat st = {};
  ASSERT_EQ(::stat(fresh.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644 & ~mask);
}

TEST_F(ConsoleFileTest, OpenErrorNamesThePath) {
  const std::string path = dir_ + "/no/such/dir/console.log";
  auto console = Console::create(ConsoleSpec{ConsoleSpec::Kind::kFile, path});
  ASSERT_FALSE(console.ok());
  EXPECT_NE(console.error().message().find(path), std::string::npos) << console.error().message();
}

TEST(Console, NoneDiscards) {
  auto console = Console::create(ConsoleSpec{ConsoleSpec::Kind::kNone, {}});
  ASSERT_TRUE(console.ok());
  (*console)->write(bytes("ignored\n"));
  (*console)->flush();
  Sink sink;
  EXPECT_TRUE((*console)->start_input(std::ref(sink), nullptr).ok());
  EXPECT_FALSE((*console)->input_active());
}

TEST(Console, PromptWithoutNewlineAppearsPromptly) {
  Pipe out;
  Pipe in;
  auto console = Console::create({}, {.input_fd = in.r.get(), .output_fd = out.w.get()});
  ASSERT_TRUE(console.ok());
  const auto start = std::chrono::steady_clock::now();
  (*console)->write(bytes("login: "));
  EXPECT_EQ(drain(out.r.get(), 2s), "login: ");
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
}

TEST(Console, ByteAtATimeLineArrivesWhole) {
  Pipe out;
  auto console = Console::create({}, {.input_fd = -1, .output_fd = out.w.get()});
  ASSERT_TRUE(console.ok());
  const std::string line = "[    0.000000] Linux version 6.1.0-56-amd64\r\n";
  for (char c : line)
    (*console)->write(std::span(reinterpret_cast<const uint8_t*>(&c), 1));  // SAFETY: char to byte
  EXPECT_EQ(drain(out.r.get(), 2s), line);
}

TEST(Console, InputEofStopsWatchingWithoutSpinning) {
  Pipe in;
  Pipe out;
  auto console = Console::create({}, {.input_fd = in.r.get(), .output_fd = out.w.get()});
  ASSERT_TRUE(console.ok());
  Sink sink;
  ASSERT_TRUE((*console)->start_input(std::ref(sink), nullptr).ok());
  ASSERT_EQ(::write(in.w.get(), "abc", 3), 3);
  in.w.reset();
  ASSERT_TRUE(wait_until([&] { return !(*console)->input_active(); }));
  EXPECT_EQ(sink.text(), "abc");
  // At EOF the fd stays readable forever; a console that kept polling it would burn a core.
  rusage before = {}, after = {};
  getrusage(RUSAGE_SELF, &before);
  std::this_thread::sleep_for(300ms);
  getrusage(RUSAGE_SELF, &after);
  const auto cpu_us = [](const rusage& r) {
    return (r.ru_utime.tv_sec + r.ru_stime.tv_sec) * 1000000 + r.ru_utime.tv_usec + r.ru_stime.tv_usec;
  };
  EXPECT_LT(cpu_us(after) - cpu_us(before), 100000);
}

TEST(Console, DevNullAndClosedInputAreFine) {
  UniqueFd null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(null.valid());
  Pipe out;
  auto console = Console::create({}, {.input_fd = null.get(), .output_fd = out.w.get()});
  ASSERT_TRUE(console.ok());
  Sink sink;
  ASSERT_TRUE((*console)->start_input(std::ref(sink), nullptr).ok());
  EXPECT_TRUE(wait_until([&] { return !(*console)->input_active(); }));
  constexpr int kClosedFd = 1000;
  ASSERT_LT(fcntl(kClosedFd, F_GETFD), 0);
  auto closed = Console::create({}, {.input_fd = kClosedFd, .output_fd = out.w.get()});
  ASSERT_TRUE(closed.ok());
  ASSERT_TRUE((*closed)->start_input(std::ref(sink), nullptr).ok());
  EXPECT_FALSE((*closed)->input_active());
  (*closed)->write(bytes("still works\n"));
  EXPECT_EQ(drain(out.r.get(), 2s), "still works\n");
}

TEST(Console, BackPressureDeliversEverythingInOrder) {
  Pipe in;
  Pipe out;
  auto console = Console::create({}, {.input_fd = in.r.get(), .output_fd = out.w.get()});
  ASSERT_TRUE(console.ok());
  Sink sink;
  sink.limit = 3;  // a UART FIFO that is nearly full every time
  ASSERT_TRUE((*console)->start_input(std::ref(sink), nullptr).ok());
  const std::string text = "echo hello, world; uname -a\r";
  ASSERT_EQ(::write(in.w.get(), text.data(), text.size()), static_cast<ssize_t>(text.size()));
  EXPECT_TRUE(wait_until([&] { return sink.text() == text; })) << sink.text();
}

TEST(Console, ForcedEscapeQuitsThroughTheWholePath) {
  Pipe in;
  Pipe out;
  auto console =
      Console::create({}, {.input_fd = in.r.get(), .output_fd = out.w.get(), .force_escape = true});
  ASSERT_TRUE(console.ok());
  Sink sink;
  std::atomic<int> quits{0};
  ASSERT_TRUE((*console)->start_input(std::ref(sink), [&] { ++quits; }).ok());
  ASSERT_EQ(::write(in.w.get(), "ok\x01\x01\x01x!!", 7), 7);
  ASSERT_TRUE(wait_until([&] { return quits.load() == 1; }));
  EXPECT_EQ(sink.text(), "ok\x01");
  EXPECT_FALSE((*console)->input_active());
}

TEST(Console, ClosedOutputIsDiscardedNotFatal) {
  Pipe out;
  out.r.reset();
  auto console = Console::create({}, {.input_fd = -1, .output_fd = out.w.get()});
  ASSERT_TRUE(console.ok());
  (*console)->write(bytes("nobody reads this\n"));
  (*console)->flush();
  (*console)->write(bytes("or this\n"));
  (*console)->flush();
}

TEST(Console, StuckOutputDropsInsteadOfBlocking) {
  Pipe out;  // nobody reads: the pipe fills, then the console's buffer
  auto console = Console::create({}, {.input_fd = -1, .output_fd = out.w.get()});
  ASSERT_TRUE(console.ok());
  const std::vector<uint8_t> chunk(64 * 1024, 'x');
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 40; ++i) (*console)->write(chunk);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
  EXPECT_GT((*console)->dropped_bytes(), 0u);
  (*console)->flush(50ms);
}

// A pseudo-terminal stands in for the user's terminal.
struct Pty {
  Pty() {
    master.reset(posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC));
    EXPECT_TRUE(master.valid());
    EXPECT_EQ(grantpt(master.get()), 0);
    EXPECT_EQ(unlockpt(master.get()), 0);
    slave.reset(::open(ptsname(master.get()), O_RDWR | O_NOCTTY | O_CLOEXEC));
    EXPECT_TRUE(slave.valid());
  }
  tcflag_t lflag() const {
    termios t = {};
    tcgetattr(slave.get(), &t);
    return t.c_lflag;
  }
  UniqueFd master, slave;
};

TEST(ConsoleTerminal, RawWhileRunningRestoredAfter) {
  Pty pty;
  ASSERT_TRUE(pty.lflag() & ICANON);
  ASSERT_TRUE(pty.lflag() & ECHO);
  {
    auto console = Console::create({}, {.input_fd = pty.slave.get(), .output_fd = pty.slave.get()});
    ASSERT_TRUE(console.ok());
    Sink sink;
    std::atomic<int> quits{0};
    ASSERT_TRUE((*console)->start_input(std::ref(sink), [&] { ++quits; }).ok());
    EXPECT_FALSE(pty.lflag() & (ICANON | ECHO | ISIG));
    // Raw: keystrokes arrive one by one, without a newline, Ctrl-C included.
    ASSERT_EQ(::write(pty.master.get(), "ab\x03", 3), 3);
    EXPECT_TRUE(wait_until([&] { return sink.text() == "ab\x03"; })) << sink.text();
    // Output is not translated: the guest's own \r\n goes through as is.
    (*console)->write(bytes("x\n"));
    EXPECT_EQ(drain(pty.master.get(), 2s), "x\n");
    ASSERT_EQ(::write(pty.master.get(), "\x01x", 2), 2);
    EXPECT_TRUE(wait_until([&] { return quits.load() == 1; }));
  }
  EXPECT_TRUE(pty.lflag() & ICANON);
  EXPECT_TRUE(pty.lflag() & ECHO);
}

TEST(ConsoleTerminal, RestoreFunctionIsIdempotent) {
  Pty pty;
  auto raw = RawTerminal::enter(pty.slave.get());
  ASSERT_TRUE(raw.ok()) << raw.error().message();
  EXPECT_FALSE(RawTerminal::enter(pty.slave.get()).ok());  // one at a time
  EXPECT_FALSE(pty.lflag() & ICANON);
  restore_terminal_async_signal_safe();
  EXPECT_TRUE(pty.lflag() & ICANON);
  restore_terminal_async_signal_safe();
  raw->reset();
  EXPECT_TRUE(pty.lflag() & ICANON);
  Pipe p;
  EXPECT_FALSE(RawTerminal::enter(p.r.get()).ok());
}

// The exit paths no destructor runs on: a fatal signal, and exit() with the object leaked.
void expect_restored_after_child(const std::function<void()>& die, int want_signal) {
  Pty pty;
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    signal(want_signal == 0 ? SIGTERM : want_signal, SIG_DFL);
    auto raw = RawTerminal::enter(pty.slave.get());
    if (!raw.ok()) _exit(90);
    termios t = {};
    tcgetattr(pty.slave.get(), &t);
    if (t.c_lflag & ICANON) _exit(91);
    (void)raw->release();
    die();
    _exit(92);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  if (want_signal != 0) {
    ASSERT_TRUE(WIFSIGNALED(status)) << "exit status " << WEXITSTATUS(status);
    EXPECT_EQ(WTERMSIG(status), want_signal);
  } else {
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 7);
  }
  EXPECT_TRUE(pty.lflag() & ICANON);
  EXPECT_TRUE(pty.lflag() & ECHO);
}

TEST(ConsoleTerminal, RestoredOnSigterm) {
  expect_restored_after_child([] { raise(SIGTERM); }, SIGTERM);
}

TEST(ConsoleTerminal, RestoredOnExit) {
  expect_restored_after_child([] { exit(7); }, 0);
}

}  // namespace
}  // namespace ringvm
