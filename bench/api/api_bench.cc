// api_bench: the control plane's latencies (not a test; bench/api/api_bench.sh runs it in the lab).
//
//   api_bench latency KERNEL     a VM (KERNEL: a tiny PVH guest, tests/guests/ticker_pvh.elf)
//                                behind a real API socket in this process: GET / round trips
//                                (1,000), pause and resume request-to-answer (100 cycles: the
//                                answer comes once every vCPU is parked / running), and 1,000
//                                GETs from 8 clients while the guest runs.
//   api_bench get                GET / round trips (1,000) and 8 clients x 125, with no VM
//                                started: the API path alone, on any host.
//   api_bench socket RUNS CMD... start CMD (its argument "{sock}" replaced by a fresh socket path)
//                                RUNS times; time from fork to the first successful connect() on
//                                the socket, then SIGTERM. For ringvm --api-sock and QEMU -qmp alike.
//
// Prints one line per measurement: "name p50_us p99_us max_us n errors".
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "api/api_client.h"
#include "api/api_handler.h"
#include "api/api_server.h"
#include "vmm/controller.h"
#include "vmm/vm.h"

namespace ringvm {
namespace {

using Clock = std::chrono::steady_clock;

double us_since(Clock::time_point t) {
  return std::chrono::duration<double, std::micro>(Clock::now() - t).count();
}

void report(const char* name, std::vector<double> v, int errors) {
  if (v.empty()) {
    std::printf("%-28s no samples, %d errors\n", name, errors);
    return;
  }
  std::sort(v.begin(), v.end());
  auto pct = [&](double p) {
    return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
  };
  std::printf("%-28s p50 %9.1f us  p99 %9.1f us  max %9.1f us  n %zu  errors %d\n", name, pct(0.50),
              pct(0.99), v.back(), v.size(), errors);
}

// 8 clients, each on its own kept-alive connection, 125 GET / each, at once: reports the
// latencies and the wall time; returns the errors.
int many_clients(const std::string& sock, const char* name) {
  std::atomic<int> bad{0};
  std::vector<std::vector<double>> per(8);
  std::vector<std::thread> clients;
  const auto t0 = Clock::now();
  for (int c = 0; c < 8; ++c)
    clients.emplace_back([&, c] {
      auto cl = ApiClient::connect(sock);
      if (!cl) {
        bad += 125;
        return;
      }
      for (int i = 0; i < 125; ++i) {
        const auto t = Clock::now();
        auto r = cl->request("GET", "/");
        if (!r || r->status != 200)
          ++bad;
        else
          per[static_cast<size_t>(c)].push_back(us_since(t));
      }
    });
  for (auto& t : clients) t.join();
  const double total_ms = us_since(t0) / 1000.0;
  std::vector<double> all;
  for (auto& v : per) all.insert(all.end(), v.begin(), v.end());
  report(name, all, bad.load());
  std::printf("%-28s %.1f ms for %zu requests\n", "8 clients wall", total_ms, all.size());
  return bad.load();
}

// GET / with the VM not started: the server, the handler and the controller, nothing else.
int get_only() {
  const std::string dir =
      std::filesystem::temp_directory_path() / ("ringvm-api-bench-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string sock = dir + "/api.sock";
  VmController controller(VmConfig{}, [](const VmConfig&) -> Result<std::unique_ptr<Machine>> {
    return make_error(ErrorCode::kUnsupported, "api_bench get starts no VM");
  });
  ApiHandler handler(controller);
  auto server = ApiServer::start(sock, handler);
  if (!server) return 1;
  auto client = ApiClient::connect(sock);
  if (!client) return 1;
  std::vector<double> get;
  int errors = 0;
  for (int i = 0; i < 1100; ++i) {
    const auto t = Clock::now();
    auto r = client->request("GET", "/");
    if (!r || r->status != 200)
      ++errors;
    else if (i >= 100)
      get.push_back(us_since(t));  // the first 100 warm up
  }
  report("GET / round trip (no VM)", get, errors);
  const int bad = many_clients(sock, "8 clients x 125 GET / (no VM)");
  (*server)->stop();
  std::filesystem::remove_all(dir);
  return errors + bad == 0 ? 0 : 1;
}

int latency(const std::string& kernel) {
  const std::string dir =
      std::filesystem::temp_directory_path() / ("ringvm-api-bench-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string sock = dir + "/api.sock";
  VmController controller(VmConfig{}, [](const VmConfig& c) -> Result<std::unique_ptr<Machine>> {
    auto vm = Vm::create(c);
    if (!vm) return std::move(vm).error();
    return std::unique_ptr<Machine>(std::move(*vm));
  });
  ApiHandler handler(controller);
  auto server = ApiServer::start(sock, handler);
  if (!server) {
    std::fprintf(stderr, "api_bench: %s\n", server.error().message().c_str());
    return 1;
  }
  std::thread runner([&] { controller.run(false); });
  auto client = ApiClient::connect(sock);
  if (!client) return 1;
  auto must = [&](const char* m, const char* p, const std::string& b) {
    auto r = client->request(m, p, b);
    if (!r || r->status >= 300) {
      std::fprintf(stderr, "api_bench: %s %s: %s\n", m, p, r ? r->body.c_str() : r.error().message().c_str());
      std::exit(1);
    }
  };
  must("PUT", "/machine-config", R"({"vcpu_count": 2, "mem_size_mib": 64})");
  must("PUT", "/boot-source", nlohmann::json{{"kernel_image_path", kernel}, {"boot_args", "ticker"}}.dump());
  must("PUT", "/serial", nlohmann::json{{"serial_out_path", dir + "/console"}}.dump());
  must("PUT", "/actions", R"({"action_type": "InstanceStart"})");
  std::this_thread::sleep_for(std::chrono::milliseconds(200));

  std::vector<double> get;
  int errors = 0;
  for (int i = 0; i < 1000; ++i) {
    const auto t = Clock::now();
    auto r = client->request("GET", "/");
    if (!r || r->status != 200)
      ++errors;
    else
      get.push_back(us_since(t));
  }
  report("GET / round trip", get, errors);

  std::vector<double> pause, resume;
  errors = 0;
  for (int i = 0; i < 100; ++i) {
    auto t = Clock::now();
    auto r = client->request("PATCH", "/vm", R"({"state": "Paused"})");
    if (!r || r->status != 204)
      ++errors;
    else
      pause.push_back(us_since(t));
    t = Clock::now();
    r = client->request("PATCH", "/vm", R"({"state": "Resumed"})");
    if (!r || r->status != 204)
      ++errors;
    else
      resume.push_back(us_since(t));
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  report("pause (all vCPUs parked)", pause, errors);
  report("resume (all running)", resume, errors);

  const int bad = many_clients(sock, "8 clients x 125 GET /");

  controller.request_stop(StopReason::kSignal);
  runner.join();
  server->reset();
  std::filesystem::remove_all(dir);
  return bad == 0 ? 0 : 1;
}

bool can_connect(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  // SAFETY: sockaddr_un is a sockaddr.
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

int socket_startup(int runs, std::vector<std::string> cmd) {
  std::vector<double> times;
  int errors = 0;
  for (int i = 0; i < runs; ++i) {
    const std::string sock =
        std::filesystem::temp_directory_path() / ("ringvm-api-bench-" + std::to_string(::getpid()) + ".sock");
    std::filesystem::remove(sock);
    std::vector<std::string> args;
    for (const auto& a : cmd) {
      std::string s = a;
      if (auto p = s.find("{sock}"); p != std::string::npos) s.replace(p, 6, sock);
      args.push_back(s);
    }
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const auto t = Clock::now();
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::freopen("/dev/null", "r", stdin);
      ::freopen("/dev/null", "w", stdout);
      ::execvp(argv[0], argv.data());
      ::_exit(127);
    }
    bool up = false;
    while (us_since(t) < 60e6) {
      if (can_connect(sock)) {
        up = true;
        break;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    const double us = us_since(t);
    if (up)
      times.push_back(us);
    else
      ++errors;
    ::kill(pid, SIGTERM);
    int ws = 0;
    ::waitpid(pid, &ws, 0);
    std::filesystem::remove(sock);
  }
  report(("socket accepting: " + std::filesystem::path(cmd[0]).filename().string()).c_str(), times, errors);
  return errors == 0 ? 0 : 1;
}

}  // namespace
}  // namespace ringvm

int main(int argc, char** argv) {
  sigset_t sigs = ringvm::stop_signal_set();
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  if (argc >= 3 && std::strcmp(argv[1], "latency") == 0) return ringvm::latency(argv[2]);
  if (argc >= 2 && std::strcmp(argv[1], "get") == 0) return ringvm::get_only();
  if (argc >= 4 && std::strcmp(argv[1], "socket") == 0) {
    pthread_sigmask(SIG_UNBLOCK, &sigs, nullptr);
    return ringvm::socket_startup(std::atoi(argv[2]), std::vector<std::string>(argv + 3, argv + argc));
  }
  std::fprintf(
      stderr,
      "usage: api_bench latency KERNEL | api_bench get | api_bench socket RUNS CMD... ({sock} in CMD)\n");
  return 2;
}
