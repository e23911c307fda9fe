#include <pthread.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <unistd.h>

#include <fstream>
#include <sstream>

#include "api/api_handler.h"
#include "base/log.h"
#include "api/api_server.h"
#include "cli/app.h"
#include "cli/commands.h"
#include "cli/demo.h"
#include "vmm/config_json.h"
#include "vmm/controller.h"
#include "vmm/host_check.h"
#include "vmm/snapshot.h"
#include "vmm/vm.h"

namespace ringvm {

namespace {

struct RunOptions {
  std::string kernel, initrd, cmdline, memory = "512M", console = "stdio", on_reboot = "exit",
      console_device = "uart", entry = "linux", virtio_notify = "pio";
  uint32_t cpus = 1;
  std::optional<uint32_t> halt_poll_us;
  std::vector<std::string> disks;
  std::vector<std::string> nets;
  std::string vsock;
  bool rng = false;
  bool stats = false;
  std::string api_sock, config_file, id;
  bool force = false;
  bool track_dirty_pages = false;
  // --restore: build the VM from a snapshot (docs/snapshot.md).
  std::string restore, restore_mem;
  bool paused = false, clock_realtime = false;
  std::vector<std::string> net_overrides, mac_overrides, disk_overrides;  // ID=VALUE
  std::string vsock_override;                                            // cid=N,socket=PATH
};

Result<std::vector<std::pair<std::string, std::string>>> id_pairs(const std::vector<std::string>& in,
                                                                  std::string_view option) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const std::string& s : in) {
    const auto eq = s.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == s.size())
      return make_error(ErrorCode::kInvalidArgument, "{} {}: give ID=VALUE", option, s);
    out.emplace_back(s.substr(0, eq), s.substr(eq + 1));
  }
  return out;
}

// --restore: the snapshot's configuration, over the command line's console and logging.
Result<VmConfig> make_restore_config(const RunOptions& o, VmConfig base) {
  if (!o.kernel.empty() || !o.initrd.empty() || !o.disks.empty() || !o.nets.empty() || !o.vsock.empty() ||
      !o.config_file.empty() || o.rng)
    return make_error(ErrorCode::kInvalidArgument,
                      "--restore: the snapshot brings its own kernel, disks, NICs and devices; leave out --kernel, "
                      "--initrd, --disk, --net, --vsock, --rng and --config-file (--net-override changes a tap)");
  if (o.restore_mem.empty())
    return make_error(ErrorCode::kInvalidArgument, "--restore {}: give its memory file with --restore-mem FILE",
                      o.restore);
  if (o.paused && o.api_sock.empty())
    return make_error(ErrorCode::kInvalidArgument,
                      "--paused: nothing could resume the VM; give --api-sock too (then `ringvm ctl resume`)");
  SnapshotLoadRequest req;
  req.snapshot_path = o.restore;
  req.mem_path = o.restore_mem;
  req.resume = !o.paused;
  req.clock_realtime = o.clock_realtime;
  req.track_dirty_pages = o.track_dirty_pages;
  req.network_overrides = TRY(id_pairs(o.net_overrides, "--net-override"));
  req.mac_overrides = TRY(id_pairs(o.mac_overrides, "--mac-override"));
  req.disk_overrides = TRY(id_pairs(o.disk_overrides, "--disk-override"));
  if (!o.vsock_override.empty()) {
    const VsockSpec v = TRY(parse_vsock_spec(o.vsock_override));
    req.vsock_cid = v.cid;
    req.vsock_uds = v.socket;
  }
  if (!o.id.empty()) req.id = o.id;
  return prepare_restore(req, std::move(base));
}

constexpr const char* kRunFooter = R"(With no --kernel, boots the demo: the host's installed kernel (/boot/vmlinuz-*)
with a busybox initramfs built into ringvm, dropping to a shell on the console.

Console: on a terminal, stdin is put in raw mode (restored on exit); Ctrl-a x quits,
Ctrl-a Ctrl-a sends a literal Ctrl-a. Without a terminal (pipes, CI), output still flows.

Exit status: 0 guest powered off; 1 ringvm error; 2 bad command line; 3 guest rebooted
(--on-reboot exit); 4 guest crashed (registers on stderr); 5 stopped by SIGTERM/SIGINT or Ctrl-a x.

Control plane: --api-sock PATH serves Firecracker's REST API on a Unix socket (mode 0600).
Without --kernel (or a config file with a boot-source) ringvm then waits for the VM's
configuration and InstanceStart over the API; with one it boots at once and serves the
post-boot API (pause, resume, SendCtrlAltDel, metrics). --config-file FILE takes Firecracker's
config-file JSON. `ringvm ctl --api-sock PATH info|pause|resume|...` talks to it (docs/api.md).

Tuning: the heuristics' constants (virtio-blk polling, batching, chaining, merging; virtio-net
batching, flow pinning, workers, priority) are not options: their defaults are measured. To
measure another value: RINGVM_TUNING="disk.chain_kib=2048,net.nice=0" (docs/tuning.md).

Examples:
  ringvm run
  ringvm run --api-sock /tmp/vm.sock          # then configure and start it with curl or ringvm ctl
  ringvm run --config-file vm.json --api-sock /tmp/vm.sock
  ringvm run --restore vm.snap --restore-mem vm.mem     # a snapshot, resumed at once
  ringvm run --restore vm.snap --restore-mem vm.mem --paused --api-sock /tmp/vm.sock
  ringvm run --kernel /boot/vmlinuz-6.1.0-56-amd64 --initrd initrd.img \
             --cmdline "console=ttyS0 root=/dev/vda rw" --cpus 2 --memory 1G \
             --disk path=root.img --console file:console.log)";

int exit_status_for(StopReason r) {
  switch (r) {
    case StopReason::kPowerOff: return kExitOk;
    case StopReason::kReboot: return kExitGuestReboot;
    case StopReason::kCrash: return kExitGuestCrash;
    case StopReason::kSignal:
    case StopReason::kQuit: return kExitSignalled;
    case StopReason::kError:
    case StopReason::kNone: return kExitVmmError;
  }
  return kExitVmmError;
}

Result<VmConfig> make_config(const RunOptions& o) {
  VmConfig cfg;
  if (o.cpus == 0) return make_error(ErrorCode::kInvalidArgument, "--cpus 0: a VM needs at least one vCPU");
  cfg.cpus = o.cpus;
  cfg.memory_bytes = TRY(parse_memory_size(o.memory));
  cfg.console = TRY(parse_console_spec(o.console));
  if (o.entry == "linux") cfg.entry = KernelEntry::kLinux64;
  else if (o.entry == "pvh") cfg.entry = KernelEntry::kPvh;
  else return make_error(ErrorCode::kInvalidArgument, "--entry {}: use linux or pvh", o.entry);
  if (o.console_device == "uart") cfg.console_device = ConsoleDevice::kUart;
  else if (o.console_device == "virtio") cfg.console_device = ConsoleDevice::kVirtio;
  else return make_error(ErrorCode::kInvalidArgument, "--console-device {}: use uart or virtio", o.console_device);
  const char* default_console = cfg.console_device == ConsoleDevice::kVirtio ? "console=hvc0" : "console=ttyS0";
  if (o.virtio_notify == "pio") cfg.virtio_pio_notify = true;
  else if (o.virtio_notify == "mmio") cfg.virtio_pio_notify = false;
  else return make_error(ErrorCode::kInvalidArgument, "--virtio-notify {}: use pio or mmio", o.virtio_notify);
  if (o.on_reboot == "exit") cfg.on_reboot = OnReboot::kExit;
  else if (o.on_reboot == "restart") cfg.on_reboot = OnReboot::kRestart;
  else return make_error(ErrorCode::kInvalidArgument, "--on-reboot {}: use exit or restart", o.on_reboot);
  for (const auto& d : o.disks) cfg.disks.push_back(TRY(parse_disk(d)));
  for (size_t i = 0; i < o.nets.size(); ++i) {
    NetSpec n = TRY(parse_net_spec(o.nets[i]));
    if (n.id == NetSpec{}.id) n.id = fmt::format("net{}", i);  // no id=NAME given: by position
    cfg.nets.push_back(std::move(n));
  }
  if (!o.vsock.empty()) cfg.vsock = TRY(parse_vsock_spec(o.vsock));
  if (o.halt_poll_us && *o.halt_poll_us > kMaxHaltPollUs)
    return make_error(ErrorCode::kInvalidArgument, "--halt-poll-us {}: at most {} (1 s)", *o.halt_poll_us,
                      kMaxHaltPollUs);
  cfg.halt_poll_us = o.halt_poll_us;
  cfg.rng = o.rng;
  cfg.stats = o.stats;
  // The heuristics' constants, for measuring another value (docs/tuning.md).
  if (const char* t = std::getenv("RINGVM_TUNING"); t != nullptr && *t != '\0') cfg.tuning = TRY(parse_tuning(t));
  if (!o.id.empty()) cfg.id = o.id;
  cfg.track_dirty_pages = o.track_dirty_pages;
  if (!o.restore.empty()) return make_restore_config(o, std::move(cfg));
  if (o.paused || o.clock_realtime || !o.restore_mem.empty() || !o.net_overrides.empty() ||
      !o.mac_overrides.empty() || !o.disk_overrides.empty() || !o.vsock_override.empty())
    return make_error(ErrorCode::kInvalidArgument,
                      "--restore-mem, --paused, --clock-realtime and the --*-override options need --restore");
  if (o.kernel.empty() && (!o.api_sock.empty() || !o.config_file.empty())) {
    // The kernel comes over the API or from the config file.
    if (!o.initrd.empty())
      return make_error(ErrorCode::kInvalidArgument, "--initrd needs --kernel (or the boot-source's initrd_path)");
    cfg.cmdline = o.cmdline;
  } else if (o.kernel.empty()) {
    if (!o.initrd.empty())
      return make_error(ErrorCode::kInvalidArgument, "--initrd needs --kernel (the demo brings its own initramfs)");
    cfg.kernel = TRY(find_host_kernel());
    cfg.initrd_data = demo_initramfs();
    cfg.cmdline = o.cmdline.empty() ? std::string(default_console) + " quiet" : o.cmdline;
  } else {
    cfg.kernel = o.kernel;
    cfg.initrd = o.initrd;
    cfg.cmdline = o.cmdline.empty() ? std::string(default_console) : o.cmdline;
  }
  // The config file's objects are applied last, over what the command line set.
  if (!o.config_file.empty()) {
    std::ifstream f(o.config_file);
    if (!f) return make_error(ErrorCode::kNotFound, "--config-file {}: cannot open it", o.config_file);
    std::stringstream text;
    text << f.rdbuf();
    if (text.str().size() > (1u << 20))
      return make_error(ErrorCode::kInvalidArgument, "--config-file {}: larger than 1 MiB", o.config_file);
    auto parsed = parse_config_file(text.str(), std::move(cfg));
    if (!parsed) return wrap(std::move(parsed).error(), "--config-file {}", o.config_file);
    cfg = std::move(*parsed);
  }
  return cfg;
}

// On a host whose KVM cannot run unmodified kernels (PVM), or with no usable /dev/kvm, say so
// at once instead of sitting silent; --force goes on anyway (tiny guests run on PVM).
// Whether this host's KVM runs unmodified kernels: a /dev/kvm that is not PVM's.
bool host_runs_kernels() {
  return ::access("/dev/kvm", F_OK) == 0 && read_kvm_modules("/sys").backend != KvmBackend::kPvm;
}

// On a host whose KVM cannot run unmodified kernels (PVM), or with no /dev/kvm, say so at once
// instead of sitting silent; --force goes on anyway (tiny guests run on PVM).
bool host_can_boot_kernels(bool force) {
  const char* level = force ? "warning" : "error";
  const char* tail =
      "  `ringvm check` says what this host can run and why. To see a real boot, use the lab\n"
      "  (hardware-assisted KVM in a nested L1 guest): scripts/lab.sh, docs/lab.md.\n";
  if (::access("/dev/kvm", F_OK) != 0) {
    std::fprintf(stderr,
                 "ringvm: %s: /dev/kvm does not exist: this host offers no KVM (load kvm_intel or kvm_amd\n"
                 "  on a host with VT-x or AMD-V, or nested virtualization in its hypervisor).\n%s"
                 "  --force goes on anyway (to serve the API, say, or to see KVM's own error).\n",
                 level, tail);
    return force;
  }
  std::fprintf(stderr,
               "ringvm: %s: this host's /dev/kvm is PVM (kvm_pvm), a paravirtual KVM that runs guests in ring 3:\n"
               "  an unmodified kernel does not boot on it (it spins in the kernel's instruction emulator).\n%s"
               "  --force runs anyway (small guests that need no emulation work here).\n",
               level, tail);
  return force;
}

void report_stop(StopReason reason, const std::string& detail) {
  switch (reason) {
    case StopReason::kReboot: std::fprintf(stderr, "ringvm: guest rebooted\n"); break;
    case StopReason::kCrash: std::fprintf(stderr, "ringvm: guest crashed: %s\n", detail.c_str()); break;
    case StopReason::kError: std::fprintf(stderr, "ringvm: error: %s\n", detail.c_str()); break;
    case StopReason::kSignal:
    case StopReason::kQuit:
      std::fprintf(stderr, "ringvm: %s%s%s\n", stop_reason_name(reason), detail.empty() ? "" : ": ", detail.c_str());
      break;
    default: break;
  }
}

int run_vm(const RunOptions& o) {
  // SIGTERM/SIGINT/SIGHUP are read from a signalfd by the VM's event loop. Block them before any
  // thread exists (device workers, vCPUs, the console, the API inherit the mask), so one arriving
  // while the VM is still being built stays pending and stops the VM cleanly instead of killing
  // ringvm.
  const sigset_t stop_signals = stop_signal_set();
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  auto cfg = make_config(o);
  if (!cfg) {
    std::fprintf(stderr, "ringvm: error: %s\n", cfg.error().message().c_str());
    return kExitVmmError;
  }
  if (!host_runs_kernels()) {
    // Bad input is named before the host's shortcoming (on a good host the builder names it, and
    // the kernel is read once).
    if (!cfg->kernel.empty() && !cfg->restore) {
      if (auto ok = Vm::preflight(*cfg); !ok) {
        std::fprintf(stderr, "ringvm: error: %s\n", ok.error().message().c_str());
        return kExitVmmError;
      }
    }
    if (!host_can_boot_kernels(o.force)) return kExitVmmError;
  }
  if (cfg->logger) {
    std::string err;
    if (!set_log_output(cfg->logger->path, cfg->logger->level, cfg->logger->show_level, cfg->logger->show_log_origin,
                        &err)) {
      std::fprintf(stderr, "ringvm: error: logger: log_path %s: %s\n", cfg->logger->path.c_str(), err.c_str());
      return kExitVmmError;
    }
  }
  // Boot at once unless the configuration is to come over the API.
  const bool boot_now = o.api_sock.empty() || !cfg->kernel.empty() || cfg->restore.has_value();
  VmController controller(*cfg, [](const VmConfig& c) -> Result<std::unique_ptr<Machine>> {
    auto vm = Vm::create(c);
    if (!vm) return std::move(vm).error();
    return std::unique_ptr<Machine>(std::move(*vm));
  });
  ApiHandler handler(controller);
  std::unique_ptr<ApiServer> server;
  if (!o.api_sock.empty()) {
    auto started = ApiServer::start(o.api_sock, handler);
    if (!started) {
      std::fprintf(stderr, "ringvm: error: %s\n", started.error().message().c_str());
      return kExitVmmError;
    }
    server = std::move(*started);
    spdlog::info("API on {}", o.api_sock);
  }
  const bool stats = cfg->stats;
  const StopReason reason = controller.run(boot_now, [&](Machine& m, StopReason r) {
    auto* vm = dynamic_cast<Vm*>(&m);
    if (vm == nullptr) return;
    if (stats) std::fputs(vm->stats_report().c_str(), stderr);
    if (r == StopReason::kReboot && controller.config().on_reboot == OnReboot::kRestart)
      std::fprintf(stderr, "ringvm: guest rebooted; restarting\n");
    if (const auto& stuck = vm->stuck_vcpus(); !stuck.empty()) {
      // Their threads still use the VM, so it cannot be torn down: say so and end the process
      // (the kernel reclaims the rest; disk writes the guest saw complete are already in the files).
      std::fprintf(stderr,
                   "ringvm: error: the VM stopped (%s) but vCPU thread(s) %s did not leave KVM_RUN within %llds "
                   "(kicked every 100 ms): stuck in the host kernel's KVM; exiting without them. If the "
                   "host is itself a VM (nested), its hypervisor lost the wakeup; otherwise see dmesg\n",
                   stop_reason_name(r), fmt::format("{}", fmt::join(stuck, ", ")).c_str(),
                   static_cast<long long>(Vm::kVcpuStopTimeout.count()));
      restore_terminal_async_signal_safe();
      std::fflush(nullptr);
      if (server) ::unlink(o.api_sock.c_str());
      std::_Exit(kExitVmmError);
    }
  });
  if (server) server->stop();
  // The last metrics line, as Firecracker writes one when it ends.
  if (!controller.config().metrics_path.empty())
    if (auto r = controller.flush_metrics(); !r) spdlog::warn("{}", r.error().message());
  report_stop(reason, controller.stop_detail());
  return exit_status_for(reason);
}

}  // namespace

void add_run_command(CLI::App& app, int* status) {
  auto opts = std::make_shared<RunOptions>();
  auto* cmd = app.add_subcommand("run", "Boot a VM: a Linux kernel (bzImage or PVH ELF), initrd and command line");
  cmd->footer(kRunFooter);
  cmd->add_option("--kernel", opts->kernel, "Kernel to boot: bzImage (boot protocol 2.10+) or ELF vmlinux with a PVH note")
      ->check(CLI::ExistingFile);
  cmd->add_option("--initrd", opts->initrd, "Initial ramdisk loaded with the kernel")->check(CLI::ExistingFile);
  cmd->add_option("--cmdline", opts->cmdline, "Kernel command line (default: console=ttyS0, or console=hvc0)");
  cmd->add_option("--entry", opts->entry,
                  "How to enter a bzImage: linux (its 64-bit entry; the guest decompresses itself) or pvh "
                  "(ringvm decompresses it on the host and enters its PVH note; needs CONFIG_PVH; faster)")
      ->capture_default_str();
  cmd->add_option("--cpus", opts->cpus, "Number of vCPUs, 1 up to the host's KVM limit")->capture_default_str();
  cmd->add_option("--memory", opts->memory, "Guest RAM: 512M, 2G, ... (a bare number is MiB)")->capture_default_str();
  cmd->add_option("--console", opts->console, "Serial console: stdio, file:PATH or none")->capture_default_str();
  cmd->add_option("--console-device", opts->console_device,
                  "Guest device the console's input goes to: uart (ttyS0) or virtio (hvc0, virtio-console)")
      ->capture_default_str();
  cmd->add_option("--on-reboot", opts->on_reboot, "What a guest reboot does: exit (status 3) or restart")
      ->capture_default_str();
  cmd->add_option("--disk", opts->disks,
                  "virtio-blk disk: path=FILE[,format=raw|qcow2][,readonly=on][,serial=ID][,queues=N][,queue_size=N]"
                  "[,cache=writeback|none|unsafe][,id=NAME]; repeatable; the format is never guessed; queues default "
                  "to one per vCPU; queue_size (default 256, a power of two up to 1024) bounds a request's "
                  "segments; cache=none is O_DIRECT (docs/virtio.md)");
  cmd->add_option("--net", opts->nets,
                  "virtio-net NIC on a tap: tap=NAME[,mac=52:54:00:..][,queues=N][,queue_size=N][,id=NAME] or fd=N (an "
                  "inherited tap fd); repeatable; queues default to one pair per vCPU (docs/networking.md)");
  cmd->add_option("--virtio-notify", opts->virtio_notify,
                  "Where virtio-pci doorbells live: pio (an I/O BAR: KVM matches a port write without "
                  "emulating the instruction, the cheaper exit, most of all on AMD and when nested) or mmio "
                  "(the memory BAR, as QEMU does) (docs/virtio.md)")
      ->capture_default_str();
  cmd->add_option("--halt-poll-us", opts->halt_poll_us,
                  "Longest a halted vCPU polls for a wake-up before its host thread sleeps, in µs (0: never "
                  "poll; default: the host's kvm.halt_poll_ns, usually 200). Polling buys wake-up latency with "
                  "host CPU: turn it down where host CPUs are shared or scarce (--stats shows the time polled)");
  cmd->add_option("--vsock", opts->vsock,
                  "virtio-vsock: cid=N,socket=PATH; the host connects to PATH and writes \"CONNECT <port>\\n\"; "
                  "guest connections to host port P arrive at PATH_P (docs/networking.md)");
  cmd->add_flag("--rng", opts->rng, "Add a virtio-rng device (/dev/hwrng in the guest)");
  cmd->add_flag("--stats", opts->stats, "Print VM exit counts by reason when the VM stops");
  cmd->add_option("--api-sock", opts->api_sock,
                  "Serve Firecracker's REST API on this Unix socket (created mode 0600; a stale one is replaced). "
                  "Without --kernel, wait for the configuration and InstanceStart over it (docs/api.md)");
  cmd->add_option("--config-file", opts->config_file,
                  "Firecracker's config-file JSON (boot-source, machine-config, drives, network-interfaces, vsock, "
                  "entropy, logger, metrics, serial); applied over the command line's options, then boots")
      ->check(CLI::ExistingFile);
  cmd->add_option("--id", opts->id, "The instance id GET / reports (default: ringvm)");
  cmd->add_flag("--track-dirty-pages", opts->track_dirty_pages,
                "Log the pages the guest and devices write, so Diff snapshots can be taken (a fault per first "
                "write to a page after each snapshot)");
  cmd->add_option("--restore", opts->restore,
                  "Start from a snapshot's state file instead of booting (docs/snapshot.md); the snapshot brings "
                  "the kernel, disks, NICs and devices")
      ->check(CLI::ExistingFile);
  cmd->add_option("--restore-mem", opts->restore_mem,
                  "With --restore: the snapshot's memory file (mapped copy-on-write; never written)")
      ->check(CLI::ExistingFile);
  cmd->add_flag("--paused", opts->paused, "With --restore: come up paused (resume over --api-sock)");
  cmd->add_flag("--clock-realtime", opts->clock_realtime,
                "With --restore: set the guest's clock to now (default: it continues from the snapshot)");
  cmd->add_option("--net-override", opts->net_overrides,
                  "With --restore: IFACE_ID=TAP puts a NIC on another tap (Firecracker's network_overrides)");
  cmd->add_option("--mac-override", opts->mac_overrides,
                  "With --restore: IFACE_ID=MAC gives a NIC a new MAC (clones; the guest sees it when its driver "
                  "probes the device again)");
  cmd->add_option("--disk-override", opts->disk_overrides,
                  "With --restore: DRIVE_ID=QCOW2 runs a disk on an overlay whose backing file is the snapshot's "
                  "disk (clones)");
  cmd->add_option("--vsock-override", opts->vsock_override,
                  "With --restore: cid=N,socket=PATH, a new vsock CID and socket (clones)");
  cmd->add_flag("--force", opts->force,
                "Run even where this host's KVM cannot boot unmodified kernels (PVM); for tiny test guests");
  cmd->callback([opts, status] { *status = run_vm(*opts); });
}

}  // namespace ringvm
