// VmConfig: everything `ringvm run` (and later the API) says about a VM, and the parsers for the
// command-line forms. The same struct will be the JSON schema of the REST API.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/result.h"
#include "devices/virtio/net/net_options.h"  // NetSpec, parse_net_spec
#include "devices/virtio/vsock/virtio_vsock.h"  // VsockSpec, parse_vsock_spec
#include "vmm/console.h"  // ConsoleSpec, parse_console_spec

namespace ringvm {

enum class OnReboot { kExit, kRestart };
// How a bzImage is entered: its 64-bit boot protocol entry (the guest decompresses itself), or PVH
// (ringvm decompresses the payload on the host and enters the ELF's PVH note: much faster where
// guest CPU is expensive, e.g. nested virtualization; needs CONFIG_PVH). ELF kernels always use PVH.
enum class KernelEntry { kLinux64, kPvh };
// Which guest device the console's input goes to: the 16550 UART (ttyS0) or virtio-console (hvc0).
// Output from both reaches the console.
enum class ConsoleDevice { kUart, kVirtio };

enum class DiskFormat { kRaw, kQcow2 };
// writeback: the host page cache, flush = fdatasync; none: O_DIRECT (no host cache; flush still
// fdatasync); unsafe: the host page cache and flush is a no-op.
enum class CacheMode { kWriteback, kNone, kUnsafe };
// The default --disk poll_us (VirtioBlockOptions::poll_us).
// Off: in the lab (2 host cores under TCG) a polling worker takes the CPU the guest's vCPUs need
// and fio lost 10-30 % with poll_us=64 or 1000 (docs/virtio.md, "Polling").
inline constexpr uint32_t kDefaultDiskPollUs = 0;
// At most this many µs of polling (or batching) can be asked for.
inline constexpr uint32_t kMaxDiskPollUs = 10000;
// virtio-blk request queues per disk at most (VirtioBlock::kMaxQueues).
inline constexpr unsigned kMaxDiskQueues = 16;
// The default --disk queue_size (QEMU's virtio-blk default too).
inline constexpr uint16_t kDefaultDiskQueueSize = 256;
// --disk chain: passes over a ring that may share one interrupt (VirtioBlockOptions::chain_passes).
inline constexpr uint16_t kDefaultDiskChainPasses = 4;
inline constexpr unsigned kMaxDiskChainPasses = 64;
// --disk chain_kib: a pass that moved this much raises its interrupt (VirtioBlockOptions::chain_max_bytes).
inline constexpr uint32_t kDefaultDiskChainKib = 128;
inline constexpr unsigned kMaxDiskChainKib = 65536;
// --disk merge_kib (VirtioBlockOptions::merge_bytes).
inline constexpr uint32_t kDefaultDiskMergeKib = 4096;
inline constexpr unsigned kMaxDiskMergeKib = 16384;

// How a disk's requests reach the host: io_uring where the disk and host allow it (the default),
// or synchronous calls on the queue's worker (Firecracker's io_engine "Sync").
enum class DiskEngine { kAuto, kSync };

struct DiskSpec {
  std::string id;  // drive_id in the API; "blk<N>" by position when not given
  std::string path;
  bool root = false;      // is_root_device: first disk, and root= on the kernel command line
  std::string partuuid;   // with root: root=PARTUUID=... instead of root=/dev/vda
  DiskEngine engine = DiskEngine::kAuto;
  DiskFormat format = DiskFormat::kRaw;
  bool read_only = false;
  std::string serial;
  uint16_t queues = 0;  // 0: one per vCPU (as many as the device allows)
  // Descriptors per queue (VirtioBlockOptions::queue_size); a request may have queue_size - 2
  // data segments (seg_max), so 256 splits a 1 MiB request of 4 KiB pages in two.
  uint16_t queue_size = kDefaultDiskQueueSize;
  // Longest a queue's worker polls its ring for more requests before it sleeps, in µs (adaptive
  // below that; 0: never poll). See docs/virtio.md, "Polling".
  uint32_t poll_us = kDefaultDiskPollUs;
  // Longest a busy queue gathers requests before serving them, in µs (0: never); see
  // VirtioBlockOptions::batch_us and docs/virtio.md, "Batching". Unset (the default, `auto`):
  // chosen from the measured cost of a VM exit (vmm/exit_probe.h), 0 on hardware-speed exits.
  std::optional<uint32_t> batch_us;
  // Passes over the ring whose completions may share one interrupt when the driver keeps adding
  // requests while a pass's I/O runs (VirtioBlockOptions::chain_passes); 1: one interrupt a pass.
  uint16_t chain_passes = kDefaultDiskChainPasses;
  // Only passes that moved less than this many KiB chain (VirtioBlockOptions::chain_max_bytes).
  uint32_t chain_kib = kDefaultDiskChainKib;
  // Largest host I/O that adjacent requests are merged into, in KiB (0: no merging).
  uint32_t merge_kib = kDefaultDiskMergeKib;
  CacheMode cache = CacheMode::kWriteback;
};

// The heuristics' constants (virtio-blk's polling, batching, chaining and merging; virtio-net's
// batching, flow pinning, early interrupts, worker count and priority). They are not options a
// user decides: each has a measured default in code (docs/virtio.md, docs/networking.md), and
// this one spelling sets them to measure another value: RINGVM_TUNING="disk.chain_kib=2048,
// net.nice=0" or "tuning": {"disk": {...}, "net": {...}} in the config file (docs/tuning.md).
// Applied to every disk or NIC of the VM.
struct Tuning {
  std::vector<std::pair<std::string, std::string>> disk, net;  // validated KEY=VALUE pairs
  bool empty() const { return disk.empty() && net.empty(); }
};
inline constexpr std::string_view kDiskTuningKeys[] = {"poll_us", "batch_us", "chain", "chain_kib", "merge_kib"};
bool is_disk_tuning_key(std::string_view key);
Result<void> apply_disk_tuning(DiskSpec* d, std::string_view key, std::string_view value);
// "disk.KEY=VALUE,net.KEY=VALUE,..."; every pair is checked now.
Result<Tuning> parse_tuning(std::string_view text);
Result<void> apply_tuning(const Tuning& t, DiskSpec* d);
Result<void> apply_tuning(const Tuning& t, NetSpec* n);

// Guest RAM's host pages: transparent huge pages advised (2 MiB stage-2 mappings; the default),
// or plain 4 KiB pages.
enum class HugePages { kTransparent, kNone };

// Where ringvm's own log goes (PUT /logger): a file or named pipe, and the level.
struct LoggerConfig {
  std::string path;          // empty: stderr
  std::string level = "Info";  // Error, Warning, Info, Debug, Trace, Off (case-insensitive)
  bool show_level = false;
  bool show_log_origin = false;
};

struct SnapshotState;  // vmm/snapshot_file.h

// A VM built from a snapshot instead of booted (PUT /snapshot/load, `ringvm run --restore`);
// vmm/snapshot.h prepare_restore fills it in, after checking the files.
struct RestoreSpec {
  std::string snapshot_path;
  std::string mem_path;
  bool resume = false;          // resume_vm: run at once (else the VM comes up Paused)
  bool clock_realtime = false;  // the guest's clock jumps to now (else it continues from the snapshot)
  std::shared_ptr<const SnapshotState> state;
};

// PUT /snapshot/create, `ringvm ctl snapshot create`.
struct SnapshotCreateRequest {
  bool diff = false;          // snapshot_type Diff: only pages written since the last snapshot
  std::string snapshot_path;  // the state file
  std::string mem_path;       // the memory file
};

// PUT /snapshot/load, `ringvm run --restore`, and each of `ringvm clone`'s VMs.
struct SnapshotLoadRequest {
  std::string snapshot_path;
  std::string mem_path;
  bool track_dirty_pages = false;
  bool resume = false;
  bool clock_realtime = false;
  // iface_id -> host tap (Firecracker's network_overrides).
  std::vector<std::pair<std::string, std::string>> network_overrides;
  // ringvm's own overrides, for clones: a new MAC per iface_id, disk paths by drive_id (an
  // overlay whose backing file is the snapshot's disk), a new vsock CID and socket.
  std::vector<std::pair<std::string, std::string>> mac_overrides;
  std::vector<std::pair<std::string, std::string>> disk_overrides;
  std::optional<uint32_t> vsock_cid;
  std::optional<std::string> vsock_uds;
  std::optional<std::string> id;
};

struct VmConfig {
  std::string id = "ringvm";  // the instance id GET / reports
  std::string kernel;  // bzImage or PVH ELF
  std::string initrd;  // optional
  std::span<const uint8_t> initrd_data;  // used instead of `initrd` when set (the built-in demo)
  std::string cmdline;
  KernelEntry entry = KernelEntry::kLinux64;
  uint32_t cpus = 1;
  uint64_t memory_bytes = 512ULL << 20;
  HugePages huge_pages = HugePages::kTransparent;
  // Dirty-page logging on guest RAM (for diff snapshots); off by default: it costs a fault per
  // first write to a page.
  bool track_dirty_pages = false;
  ConsoleSpec console;
  ConsoleDevice console_device = ConsoleDevice::kUart;
  OnReboot on_reboot = OnReboot::kExit;
  std::vector<DiskSpec> disks;
  std::vector<NetSpec> nets;
  std::optional<VsockSpec> vsock;
  bool rng = false;
  bool stats = false;
  // virtio-pci doorbells in an I/O BAR (port writes KVM matches without instruction emulation);
  // false: in the memory BAR (MMIO). See devices/virtio/virtio_pci.h.
  bool virtio_pio_notify = true;
  // The longest a halted vCPU polls (in the host kernel) for a wake-up before its thread sleeps,
  // in µs; unset: the host's kvm.halt_poll_ns. Polling trades host CPU for wake-up latency.
  std::optional<uint32_t> halt_poll_us;
  std::optional<LoggerConfig> logger;
  std::string metrics_path;  // JSON lines of counters (PUT /metrics); empty: none
  Tuning tuning;
  std::optional<RestoreSpec> restore;  // set: build from this snapshot, do not boot
};

// The kernel command line the guest gets: `cmdline` plus root= for the root disk, if any.
std::string effective_cmdline(const VmConfig& cfg);
// Checks what only a whole configuration can say (one root disk, unique ids, a kernel) and puts
// the root disk first, as /dev/vda. The builder runs it; the API's InstanceStart reports it.
Result<void> finalize_config(VmConfig& cfg);

// --halt-poll-us at most (KVM takes nanoseconds in 32 bits).
inline constexpr uint32_t kMaxHaltPollUs = 1000000;

// "512M", "2G", "1024" (MiB when no suffix, as QEMU's -m), "1.5G" is rejected (whole units only).
Result<uint64_t> parse_memory_size(std::string_view text);
// Byte sizes with optional k/K, M, G, T suffixes (powers of 1024); no suffix = bytes.
Result<uint64_t> parse_byte_size(std::string_view text);
Result<DiskSpec> parse_disk(std::string_view text);

}  // namespace ringvm
