#include "api/api_server.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "api/api_client.h"
#include "base/unique_fd.h"
#include "vmm/config_json.h"
#include "vmm/testing/fake_machine.h"

namespace ringvm {
namespace {

using testing::FakeMachine;
using testing::FakeMachineLog;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// A connected Unix socket to `path` (invalid on failure).
UniqueFd raw_connect(const std::string& path) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  // SAFETY: sockaddr_un is a sockaddr.
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) return UniqueFd();
  return fd;
}

bool send_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// Reads one HTTP response (its head and Content-Length body), or until EOF or `timeout`.
std::string read_response(int fd, std::chrono::milliseconds timeout = 5s) {
  const auto deadline = Clock::now() + timeout;
  std::string got;
  while (Clock::now() < deadline) {
    const size_t head_end = got.find("\r\n\r\n");
    if (head_end != std::string::npos) {
      size_t length = 0;
      const size_t cl = got.find("Content-Length: ");
      if (cl != std::string::npos && cl < head_end) length = std::stoul(got.substr(cl + 16));
      if (got.size() >= head_end + 4 + length) return got;
    }
    pollfd p{fd, POLLIN, 0};
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (::poll(&p, 1, static_cast<int>(std::max<int64_t>(left.count(), 1))) <= 0) continue;
    char buf[4096];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
  }
  return got;
}

int status_of(const std::string& response) {
  if (!response.starts_with("HTTP/1.1 ") || response.size() < 12) return 0;
  return std::stoi(response.substr(9, 3));
}

std::string body_of(const std::string& response) {
  const size_t head_end = response.find("\r\n\r\n");
  return head_end == std::string::npos ? std::string() : response.substr(head_end + 4);
}

void expect_fault_body(std::string_view body) {
  auto j = Json::parse(body, nullptr, false);
  ASSERT_TRUE(j.is_object()) << body;
  ASSERT_TRUE(j.contains("fault_message") && j["fault_message"].is_string()) << body;
  EXPECT_FALSE(j["fault_message"].get<std::string>().empty());
}

// A VmController over FakeMachines (run() on its own thread) behind an ApiHandler, and an
// ApiServer on a socket in a fresh directory.
class ApiServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "ringvm_srv_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/api.sock";
    kernel_ = dir_ + "/vmlinux";
    std::ofstream(kernel_) << "x";
    runner_ = std::thread([this] { vm_.run(false); });
  }
  void TearDown() override {
    server_.reset();
    vm_.request_stop(StopReason::kQuit);
    runner_.join();
    std::filesystem::remove_all(dir_);
  }
  void start_server() {
    auto s = ApiServer::start(path_, handler_);
    ASSERT_TRUE(s.ok()) << s.error().message();
    server_ = std::move(*s);
  }
  ApiResult get(const std::string& target, std::chrono::milliseconds timeout = 5s) {
    auto r = api_request(path_, "GET", target, {}, timeout);
    EXPECT_TRUE(r.ok()) << r.error().message();
    return r.ok() ? *r : ApiResult{};
  }
  // The status of one request on a new connection (0 when it failed).
  int call(std::string_view method, std::string_view target, std::string_view body = {},
           std::chrono::milliseconds timeout = 5s) {
    auto r = api_request(path_, method, target, body, timeout);
    EXPECT_TRUE(r.ok()) << method << " " << target << ": " << r.error().message();
    return r.ok() ? r->status : 0;
  }
  std::string state() { return state_of(get("/").body); }
  static std::string state_of(const std::string& body) {
    auto j = Json::parse(body, nullptr, false);
    return j.is_object() ? j.value("state", "?") : "?";
  }

  std::string dir_, path_, kernel_;
  std::shared_ptr<FakeMachineLog> log_ = std::make_shared<FakeMachineLog>();
  VmController vm_{VmConfig{}, FakeMachine::factory(log_)};
  ApiHandler handler_{vm_};
  std::thread runner_;
  std::unique_ptr<ApiServer> server_;
};

TEST_F(ApiServerTest, SocketIsMode0600AndStopRemovesIt) {
  start_server();
  EXPECT_EQ(server_->path(), path_);
  struct stat st {};
  ASSERT_EQ(::lstat(path_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(get("/").status, 200);
  server_->stop();
  EXPECT_NE(::lstat(path_.c_str(), &st), 0);
  auto after = api_request(path_, "GET", "/", {}, 1s);
  ASSERT_FALSE(after.ok());
  EXPECT_EQ(after.error().code, ErrorCode::kNotFound);
  server_->stop();  // twice is harmless
}

TEST_F(ApiServerTest, AStaleSocketIsReplaced) {
  {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path_.c_str(), sizeof addr.sun_path - 1);
    // SAFETY: sockaddr_un is a sockaddr.
    ASSERT_EQ(::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr), 0);
  }  // closed, never listened: the file stays, nobody behind it
  struct stat st {};
  ASSERT_EQ(::lstat(path_.c_str(), &st), 0);
  ASSERT_TRUE(S_ISSOCK(st.st_mode));
  start_server();
  EXPECT_EQ(get("/").status, 200);
  ASSERT_EQ(::lstat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(ApiServerTest, ALiveSocketIsRefusedNamingThePath) {
  start_server();
  auto second = ApiServer::start(path_, handler_);
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.error().message().find(path_), std::string::npos) << second.error().message();
  // The first server still owns and serves its socket.
  struct stat st {};
  ASSERT_EQ(::lstat(path_.c_str(), &st), 0);
  EXPECT_EQ(get("/").status, 200);
}

TEST_F(ApiServerTest, AnythingButASocketAtThePathIsRefusedAndKept) {
  std::ofstream(path_) << "precious";
  auto r = ApiServer::start(path_, handler_);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find(path_), std::string::npos) << r.error().message();
  std::stringstream kept;
  kept << std::ifstream(path_).rdbuf();
  EXPECT_EQ(kept.str(), "precious");

  const std::string sub = dir_ + "/a-directory";
  ASSERT_EQ(::mkdir(sub.c_str(), 0700), 0);
  auto d = ApiServer::start(sub, handler_);
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.error().message().find(sub), std::string::npos) << d.error().message();
  EXPECT_TRUE(std::filesystem::is_directory(sub));

  // A path too long for a Unix socket is refused with the limit.
  auto long_path = ApiServer::start(dir_ + "/" + std::string(120, 's'), handler_);
  ASSERT_FALSE(long_path.ok());
}

TEST_F(ApiServerTest, StalledClientsDoNotBlockOthersAndAreDroppedAfterTheReadTimeout) {
  start_server();
  // More stalled clients than the server has threads: half a head, half a body.
  std::vector<UniqueFd> stalled;
  for (unsigned i = 0; i < 2 * ApiServer::kThreads; ++i) {
    UniqueFd fd = raw_connect(path_);
    ASSERT_TRUE(fd);
    const char* half = i % 2 == 0
                           ? "GET / HTTP/1.1\r\nHost: x\r\nUser-Ag"
                           : "PUT /machine-config HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"vcpu";
    ASSERT_TRUE(send_all(fd.get(), half));
    stalled.push_back(std::move(fd));
  }
  const auto stalled_at = Clock::now();
  for (int i = 0; i < 8; ++i) {
    const auto t0 = Clock::now();
    auto r = api_request(path_, "GET", "/", {}, 1s);
    ASSERT_TRUE(r.ok()) << r.error().message();
    EXPECT_EQ(r->status, 200);
    EXPECT_LT(Clock::now() - t0, 1s);
  }
  // The VM is not blocked either: a pre-boot change and the start go through.
  ASSERT_EQ(call("PUT", "/boot-source", Json{{"kernel_image_path", kernel_}}.dump(), 1s), 204);
  ASSERT_EQ(call("PUT", "/actions", R"({"action_type": "InstanceStart"})", 1s), 204);
  EXPECT_EQ(state(), "Running");
  // The stalled ones are still connected (nothing to read, no EOF)...
  for (const UniqueFd& fd : stalled) {
    char c;
    EXPECT_EQ(::recv(fd.get(), &c, 1, MSG_DONTWAIT), -1);
    EXPECT_EQ(errno, EAGAIN);
  }
  // ...until kReadTimeout after their last byte, when the server closes them.
  for (const UniqueFd& fd : stalled) {
    const std::string rest = read_response(fd.get(), ApiServer::kReadTimeout + 3s);
    EXPECT_EQ(rest, "");  // closed without an answer
  }
  const auto waited = Clock::now() - stalled_at;
  EXPECT_GE(waited, ApiServer::kReadTimeout - 1s);
  EXPECT_LT(waited, ApiServer::kReadTimeout + 3s);
}

TEST_F(ApiServerTest, SixtyFourConcurrentConnectionsAreAllServed) {
  start_server();
  std::vector<ApiClient> clients;
  for (int i = 0; i < 64; ++i) {
    auto c = ApiClient::connect(path_, 5s);
    ASSERT_TRUE(c.ok()) << c.error().message();
    clients.push_back(std::move(*c));
  }
  std::atomic<int> ok{0};
  std::vector<std::string> failures(clients.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < clients.size(); ++i) {
    threads.emplace_back([&, i] {
      auto r = clients[i].request("GET", "/");
      if (r.ok() && r->status == 200 && state_of(r->body) == "Not started")
        ++ok;
      else
        failures[i] = r.ok() ? fmt::format("{} {}", r->status, r->body) : r.error().message();
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok, 64);
  for (const auto& f : failures) EXPECT_EQ(f, "");
}

TEST_F(ApiServerTest, AThousandRequestsFromEightKeepAliveClientsHaveNoError) {
  start_server();
  constexpr int kClients = 8, kEach = 125;
  std::atomic<int> ok{0};
  std::vector<std::string> first_failure(kClients);
  std::vector<std::thread> threads;
  for (int t = 0; t < kClients; ++t) {
    threads.emplace_back([&, t] {
      auto c = ApiClient::connect(path_, 5s);
      if (!c.ok()) {
        first_failure[static_cast<size_t>(t)] = c.error().message();
        return;
      }
      for (int i = 0; i < kEach; ++i) {
        Result<ApiResult> r = Error{};
        int want = 200;
        switch (i % 4) {
          case 0: r = c->request("GET", "/"); break;
          case 1: r = c->request("GET", "/vm/config"); break;
          case 2: r = c->request("GET", "/machine-config"); break;
          default:
            r = c->request("PATCH", "/machine-config", fmt::format(R"({{"vcpu_count": {}}})", 1 + t));
            want = 204;
        }
        if (r.ok() && r->status == want) {
          ++ok;
        } else if (first_failure[static_cast<size_t>(t)].empty()) {
          first_failure[static_cast<size_t>(t)] =
              r.ok() ? fmt::format("request {}: {} {}", i, r->status, r->body) : r.error().message();
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok, kClients * kEach);
  for (const auto& f : first_failure) EXPECT_EQ(f, "");
}

TEST_F(ApiServerTest, ABodyOverTheLimitIs413) {
  start_server();
  std::string body = R"({"vcpu_count": 2, "mem_size_mib": 256})";
  body.resize(ApiHandler::kMaxBodyBytes, ' ');
  auto fits = api_request(path_, "PUT", "/machine-config", body);
  ASSERT_TRUE(fits.ok()) << fits.error().message();
  EXPECT_EQ(fits->status, 204) << fits->body;
  body += ' ';
  auto over = api_request(path_, "PUT", "/machine-config", body);
  ASSERT_TRUE(over.ok()) << over.error().message();
  EXPECT_EQ(over->status, 413);
  expect_fault_body(over->body);

  // A Content-Length over the limit is answered at once, without waiting for the body.
  UniqueFd fd = raw_connect(path_);
  ASSERT_TRUE(fd);
  ASSERT_TRUE(
      send_all(fd.get(), "PUT /machine-config HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n{"));
  const auto t0 = Clock::now();
  const std::string res = read_response(fd.get(), 2s);
  EXPECT_EQ(status_of(res), 413) << res;
  EXPECT_LT(Clock::now() - t0, 1s);
  expect_fault_body(body_of(res));
  EXPECT_EQ(Json::parse(get("/machine-config").body)["vcpu_count"], 2);  // the refused body changed nothing
}

TEST_F(ApiServerTest, AMalformedRequestIs400) {
  start_server();
  for (const char* bad : {"GARBAGE\r\n\r\n", "GET\r\n\r\n", "GET / HTTP/1.1\r\nNo-Colon-Here\r\n\r\n",
                          "GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"}) {
    SCOPED_TRACE(bad);
    UniqueFd fd = raw_connect(path_);
    ASSERT_TRUE(fd);
    ASSERT_TRUE(send_all(fd.get(), bad));
    const std::string res = read_response(fd.get(), 2s);
    EXPECT_EQ(status_of(res), 400) << res;
    expect_fault_body(body_of(res));
  }
  // A request head over the server's limit.
  UniqueFd fd = raw_connect(path_);
  ASSERT_TRUE(fd);
  ASSERT_TRUE(send_all(fd.get(), "GET / HTTP/1.1\r\nX-Big: " + std::string(9000, 'b') + "\r\n\r\n"));
  const std::string res = read_response(fd.get(), 2s);
  EXPECT_GE(status_of(res), 400) << res;
  EXPECT_LT(status_of(res), 500) << res;
  // The server is still fine.
  EXPECT_EQ(get("/").status, 200);
}

TEST_F(ApiServerTest, TheApiDrivesTheVmThroughTheSocket) {
  start_server();
  EXPECT_EQ(state(), "Not started");
  auto refused = api_request(path_, "PUT", "/boot-source", R"({"kernel_image_path": "/no/such/kernel"})");
  ASSERT_TRUE(refused.ok());
  EXPECT_EQ(refused->status, 400);
  expect_fault_body(refused->body);
  auto query = get("/?x=1");
  EXPECT_EQ(query.status, 400);
  EXPECT_EQ(get("/nope").status, 404);
  EXPECT_EQ(call("DELETE", "/"), 405);

  ASSERT_EQ(call("PUT", "/boot-source", Json{{"kernel_image_path", kernel_}}.dump()), 204);
  ASSERT_EQ(call("PUT", "/actions", R"({"action_type": "InstanceStart"})"), 204);
  EXPECT_EQ(state(), "Running");
  ASSERT_EQ(call("PATCH", "/vm", R"({"state": "Paused"})"), 204);
  EXPECT_EQ(state(), "Paused");
  ASSERT_EQ(call("PATCH", "/vm", R"({"state": "Resumed"})"), 204);
  EXPECT_EQ(state(), "Running");
  EXPECT_EQ(log_->built, 1);
  EXPECT_EQ(log_->pauses, 1);
  EXPECT_EQ(log_->resumes, 1);
  auto late = api_request(path_, "PUT", "/machine-config", R"({"vcpu_count": 2, "mem_size_mib": 256})");
  ASSERT_TRUE(late.ok());
  EXPECT_EQ(late->status, 400);
}

// A request target that is not UTF-8 is answered (404 with a JSON fault), and the server lives on.
TEST_F(ApiServerTest, ATargetThatIsNotUtf8IsAnsweredAndTheServerLivesOn) {
  start_server();
  UniqueFd fd = raw_connect(path_);
  ASSERT_TRUE(fd);
  ASSERT_TRUE(send_all(fd.get(), "GET /\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n"));
  const std::string res = read_response(fd.get(), 2s);
  EXPECT_GE(status_of(res), 400) << res;
  EXPECT_LT(status_of(res), 500) << res;
  expect_fault_body(body_of(res));
  EXPECT_EQ(get("/").status, 200);
}

}  // namespace
}  // namespace ringvm
