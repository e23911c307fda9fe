// `ringvm clone`: N VMs from one snapshot, each in its own ringvm process (docs/snapshot.md).
//
// Each clone is `ringvm run --restore` with overrides: its disks behind new qcow2 overlays whose
// backing file is the snapshot's disk (which no clone writes), a fresh MAC per NIC, a fresh vsock
// CID and socket, its own API socket and console file; guest memory is the snapshot's memory
// file mapped copy-on-write by every clone, so the pages no clone wrote are in the host's page
// cache once. Each restore gives the guest a new VMGenID generation, so each clone reseeds its
// random number generator. The clones run detached; `ringvm clone` waits until each answers on
// its API socket, prints where it is, and exits.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "api/api_client.h"
#include "block/qcow2/qcow2_image.h"
#include "cli/app.h"
#include "cli/commands.h"
#include "devices/virtio/net/virtio_net.h"
#include "vmm/config_json.h"
#include "vmm/snapshot_file.h"

namespace ringvm {

namespace {

struct CloneOptions {
  std::string snapshot, mem, dir;
  uint32_t count = 1;
  std::vector<std::string> taps;  // IFACE=PREFIX: clone k's NIC IFACE on tap PREFIX<k>
  uint32_t vsock_cid_base = 0;    // 0: the snapshot's CID + 1
  bool paused = false;
  bool json = false;
  int timeout_s = 30;
};

constexpr const char* kCloneFooter = R"(Each clone K (0..N-1) lives in DIR/cloneK/: api.sock (its REST API), console.log, log (ringvm's
own stderr), one qcow2 overlay per disk (backing file: the snapshot's disk, left untouched), and
vsock.sock when the snapshot has vsock. Memory is the snapshot's memory file, shared copy-on-write.
A clone gets a fresh MAC per NIC and vsock CID (base+K); every restore gives the guest a new
VMGenID, so the guest kernel reseeds its RNG. A Linux guest keeps the MAC its driver probed: to
see the new one, rebind its virtio-net driver (docs/snapshot.md, "Clones").

NICs need one tap per clone: --tap IFACE=PREFIX puts clone K's NIC IFACE on tap PREFIX<K>
(create the taps first, e.g. `ip tuntap add rvc0 mode tap`).

Exit status: 0 every clone runs; 1 a clone failed to start (the ones started are stopped);
2 bad command line.

Examples:
  ringvm clone --snapshot vm.snap --mem vm.mem --count 4 --dir /var/lib/clones
  ringvm clone --snapshot vm.snap --mem vm.mem --count 2 --dir clones --tap net0=rvc --json
  ringvm ctl --api-sock clones/clone0/api.sock info)";

struct Clone {
  pid_t pid = -1;
  std::string dir, api_sock;
  std::vector<std::string> macs;
};

void stop_all(const std::vector<Clone>& clones) {
  for (const Clone& c : clones)
    if (c.pid > 0) ::kill(c.pid, SIGTERM);
}

int run_clone(const CloneOptions& o) {
  auto fail = [](const std::string& msg) {
    std::fprintf(stderr, "ringvm clone: error: %s\n", msg.c_str());
    return kExitVmmError;
  };
  auto state = read_snapshot_file(o.snapshot);
  if (!state) return fail(state.error().message());
  auto cfg = parse_config_file(state->config_json, VmConfig{});
  if (!cfg) return fail(fmt::format("snapshot file {}: its configuration: {}", o.snapshot, cfg.error().message()));
  // The disks every clone's overlay reads through must be the ones the snapshot saw.
  for (const DiskIdentity& saved : state->disks) {
    auto now = disk_identity(saved.id, saved.path, saved.qcow2);
    if (!now) return fail(now.error().message());
    if (auto ok = check_disk_identity(saved, *now); !ok) return fail(ok.error().message());
  }
  std::vector<std::pair<std::string, std::string>> taps;
  for (const std::string& t : o.taps) {
    const auto eq = t.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == t.size())
      return fail(fmt::format("--tap {}: give IFACE_ID=PREFIX", t));
    taps.emplace_back(t.substr(0, eq), t.substr(eq + 1));
  }
  for (const NetSpec& n : cfg->nets) {
    const bool given = std::any_of(taps.begin(), taps.end(), [&](const auto& t) { return t.first == n.id; });
    if (!given && o.count > 1)
      return fail(fmt::format("the snapshot's VM has NIC {} (tap {}): give each clone its own tap with --tap "
                              "{}=PREFIX (clone K gets PREFIXK)", n.id, n.tap, n.id));
  }
  std::error_code ec;
  std::filesystem::create_directories(o.dir, ec);
  if (ec) return fail(fmt::format("--dir {}: {}", o.dir, ec.message()));
  const std::string self = std::filesystem::read_symlink("/proc/self/exe", ec).string();
  if (ec) return fail(fmt::format("cannot find ringvm's own executable: {}", ec.message()));
  const std::string snapshot_abs = std::filesystem::absolute(o.snapshot).string();
  const std::string mem_abs = std::filesystem::absolute(o.mem).string();

  std::vector<Clone> clones;
  for (uint32_t k = 0; k < o.count; ++k) {
    Clone c;
    c.dir = std::filesystem::absolute(fmt::format("{}/clone{}", o.dir, k)).string();
    std::filesystem::create_directories(c.dir, ec);
    if (ec) {
      stop_all(clones);
      return fail(fmt::format("{}: {}", c.dir, ec.message()));
    }
    c.api_sock = c.dir + "/api.sock";
    std::vector<std::string> args = {self, "run", "--restore", snapshot_abs, "--restore-mem", mem_abs,
                                     "--api-sock", c.api_sock, "--console", "file:" + c.dir + "/console.log",
                                     "--id", fmt::format("{}-clone{}", cfg->id, k)};
    if (o.paused) args.push_back("--paused");
    for (const DiskIdentity& d : state->disks) {
      const std::string overlay = fmt::format("{}/{}.qcow2", c.dir, d.id);
      std::filesystem::remove(overlay, ec);
      Qcow2CreateOptions q;
      // The overlay's size is the disk's as the guest saw it (virtio-blk capacity).
      struct stat st{};
      if (!d.qcow2 && ::stat(d.path.c_str(), &st) == 0) q.size = static_cast<uint64_t>(st.st_size);
      if (d.qcow2) {
        Qcow2OpenOptions oo;
        oo.read_only = true;
        oo.open_backing = false;
        auto img = Qcow2Image::open(d.path, oo);
        if (!img) {
          stop_all(clones);
          return fail(fmt::format("disk {} ({}): {}", d.id, d.path, img.error().message()));
        }
        q.size = (*img)->size();
      }
      q.backing_file = std::filesystem::absolute(d.path).string();
      q.backing_format = d.qcow2 ? "qcow2" : "raw";
      if (auto ok = Qcow2Image::create(overlay, q); !ok) {
        stop_all(clones);
        return fail(fmt::format("overlay {} on {}: {}", overlay, d.path, ok.error().message()));
      }
      args.push_back("--disk-override");
      args.push_back(d.id + "=" + overlay);
    }
    for (const NetSpec& n : cfg->nets) {
      const std::string mac = format_mac(random_mac());
      c.macs.push_back(mac);
      args.push_back("--mac-override");
      args.push_back(n.id + "=" + mac);
      for (const auto& [iface, prefix] : taps)
        if (iface == n.id) {
          args.push_back("--net-override");
          args.push_back(fmt::format("{}={}{}", iface, prefix, k));
        }
    }
    if (cfg->vsock) {
      const uint64_t base = o.vsock_cid_base != 0 ? o.vsock_cid_base : cfg->vsock->cid + 1;
      args.push_back("--vsock-override");
      args.push_back(fmt::format("cid={},socket={}/vsock.sock", base + k, c.dir));
    }
    const std::string log = c.dir + "/log";
    const pid_t pid = ::fork();
    if (pid < 0) {
      stop_all(clones);
      return fail(sys_error("fork").message());
    }
    if (pid == 0) {
      ::setsid();
      const int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
      const int err = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
      if (null >= 0) {
        ::dup2(null, 0);
        ::dup2(null, 1);
      }
      if (err >= 0) ::dup2(err, 2);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(self.c_str(), argv.data());
      _exit(127);
    }
    c.pid = pid;
    clones.push_back(std::move(c));
  }
  // Each clone answers on its API once its VM is built (or its process ends with an error).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(o.timeout_s);
  nlohmann::json out = nlohmann::json::array();
  for (size_t k = 0; k < clones.size(); ++k) {
    Clone& c = clones[k];
    std::string state_name;
    for (;;) {
      int st = 0;
      if (::waitpid(c.pid, &st, WNOHANG) == c.pid) {
        c.pid = -1;
        stop_all(clones);
        return fail(fmt::format("clone {} exited while starting; its log is {}/log", k, c.dir));
      }
      if (::access(c.api_sock.c_str(), F_OK) == 0) {
        auto r = api_request(c.api_sock, "GET", "/", "", std::chrono::seconds(2));
        if (r && r->status == 200) {
          const auto j = nlohmann::json::parse(r->body, nullptr, false);
          state_name = j.is_object() ? j.value("state", "") : "";
          if (state_name == "Running" || state_name == "Paused") break;
        }
      }
      if (std::chrono::steady_clock::now() > deadline) {
        stop_all(clones);
        return fail(fmt::format("clone {} did not come up within {} s; its log is {}/log", k, o.timeout_s, c.dir));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    out.push_back({{"clone", k}, {"pid", c.pid}, {"api_sock", c.api_sock}, {"dir", c.dir}, {"state", state_name},
                   {"macs", c.macs}});
    if (!o.json)
      std::printf("clone %zu: pid %d, %s, api %s%s%s\n", k, static_cast<int>(c.pid), state_name.c_str(),
                  c.api_sock.c_str(), c.macs.empty() ? "" : ", mac ",
                  fmt::format("{}", fmt::join(c.macs, " ")).c_str());
  }
  if (o.json) std::printf("%s\n", out.dump(2).c_str());
  return kExitOk;
}

}  // namespace

void add_clone_command(CLI::App& app, int* status) {
  auto opts = std::make_shared<CloneOptions>();
  auto* cmd = app.add_subcommand("clone", "Start N VMs from one snapshot: shared memory, disk overlays, fresh identities");
  cmd->footer(kCloneFooter);
  cmd->add_option("--snapshot", opts->snapshot, "The snapshot's state file")->required()->check(CLI::ExistingFile);
  cmd->add_option("--mem", opts->mem, "The snapshot's memory file")->required()->check(CLI::ExistingFile);
  cmd->add_option("--count,-n", opts->count, "How many clones")->capture_default_str()->check(CLI::Range(1, 256));
  cmd->add_option("--dir", opts->dir, "Where each clone's directory (cloneK) is made")->required();
  cmd->add_option("--tap", opts->taps, "IFACE_ID=PREFIX: clone K's NIC IFACE_ID on tap PREFIXK (repeatable)");
  cmd->add_option("--vsock-cid-base", opts->vsock_cid_base,
                  "Clone K's vsock CID is BASE+K (default: the snapshot's CID + 1)")
      ->check(CLI::Range(3u, 0xFFFF'0000u));
  cmd->add_flag("--paused", opts->paused, "Leave the clones paused (resume each over its API)");
  cmd->add_flag("--json", opts->json, "Print the clones as JSON, for scripts");
  cmd->add_option("--timeout", opts->timeout_s, "Seconds to wait for each clone to come up")->capture_default_str();
  cmd->callback([opts, status] { *status = run_clone(*opts); });
}

}  // namespace ringvm
