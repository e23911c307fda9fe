#include "vmm/snapshot.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "base/unique_fd.h"
#include "memory/guest_memory.h"
#include "vmm/config_json.h"
#include "vmm/snapshot_file.h"

namespace ringvm {

namespace {

bool all_zero(const uint8_t* p, size_t n) {
  // The first byte, then the rest against itself: memcmp runs at memory speed.
  return p[0] == 0 && std::memcmp(p, p + 1, n - 1) == 0;
}

Result<void> pwrite_all(int fd, const uint8_t* p, size_t n, uint64_t off, const std::string& what) {
  while (n > 0) {
    const ssize_t w = ::pwrite(fd, p, n, static_cast<off_t>(off));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return sys_error(fmt::format("{}: write", what));
    p += w;
    n -= static_cast<size_t>(w);
    off += static_cast<uint64_t>(w);
  }
  return Ok();
}

}  // namespace

Result<void> write_memory_file(const GuestMemory& mem, const std::string& path,
                               const std::vector<std::vector<uint64_t>>* dirty) {
  const std::string what = fmt::format("mem_file_path {}", path);
  const std::string tmp = path + ".tmp";
  // A new inode: the file may be the one this VM's memory is mapped from (a restored VM).
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd) return sys_error(fmt::format("{}: cannot create {}", what, tmp));
  auto fail = [&](Error e) -> Result<void> {
    ::unlink(tmp.c_str());
    return e;
  };
  if (::ftruncate(fd.get(), static_cast<off_t>(mem.total_size())) != 0)
    return fail(sys_error(fmt::format("{}: cannot size it to {} bytes", what, mem.total_size())));
  constexpr uint64_t kPage = GuestMemory::kPageSize;
  uint64_t file_off = 0;
  for (size_t ri = 0; ri < mem.regions().size(); ++ri) {
    const GuestRegion& r = mem.regions()[ri];
    const uint8_t* base = r.host.data();
    const uint64_t pages = r.size() / kPage;
    const std::vector<uint64_t>* bits = dirty ? &(*dirty)[ri] : nullptr;
    auto wanted = [&](uint64_t p) {
      if (bits) return ((*bits)[p / 64] >> (p % 64)) & 1;
      return static_cast<uint64_t>(!all_zero(base + p * kPage, kPage));
    };
    // Runs of wanted pages, one write each.
    uint64_t p = 0;
    while (p < pages) {
      if (!wanted(p)) {
        ++p;
        continue;
      }
      uint64_t end = p + 1;
      while (end < pages && wanted(end) && end - p < 2048) ++end;  // at most 8 MiB a write
      if (auto w = pwrite_all(fd.get(), base + p * kPage, (end - p) * kPage, file_off + p * kPage, what); !w)
        return fail(std::move(w).error());
      p = end;
    }
    file_off += r.size();
  }
  if (::fdatasync(fd.get()) != 0) return fail(sys_error(fmt::format("{}: sync", what)));
  if (::rename(tmp.c_str(), path.c_str()) != 0) return fail(sys_error(fmt::format("{}: rename", what)));
  return Ok();
}

Result<uint64_t> merge_memory_diff(const std::string& diff, const std::string& base) {
  UniqueFd in(::open(diff.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in) return sys_error(fmt::format("diff memory file {}", diff));
  UniqueFd out(::open(base.c_str(), O_WRONLY | O_CLOEXEC));
  if (!out) return sys_error(fmt::format("base memory file {}", base));
  struct stat si{}, so{};
  if (::fstat(in.get(), &si) != 0 || ::fstat(out.get(), &so) != 0) return sys_error("stat memory files");
  if (si.st_size != so.st_size)
    return make_error(ErrorCode::kInvalidArgument,
                      "diff memory file {} has {} bytes and base {} has {}: a diff applies only onto the memory "
                      "file of the snapshot of the same VM", diff, si.st_size, base, so.st_size);
  std::vector<uint8_t> buf(8 << 20);
  uint64_t copied = 0;
  off_t pos = 0;
  for (;;) {
    const off_t data = ::lseek(in.get(), pos, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // no data after pos
      return sys_error(fmt::format("diff memory file {}: SEEK_DATA", diff));
    }
    off_t hole = ::lseek(in.get(), data, SEEK_HOLE);
    if (hole < 0) hole = si.st_size;
    for (off_t o = data; o < hole;) {
      const size_t n = static_cast<size_t>(std::min<off_t>(hole - o, static_cast<off_t>(buf.size())));
      const ssize_t r = ::pread(in.get(), buf.data(), n, o);
      if (r <= 0) return sys_error(fmt::format("diff memory file {}: read", diff));
      RETURN_IF_ERROR(pwrite_all(out.get(), buf.data(), static_cast<size_t>(r), static_cast<uint64_t>(o),
                                 fmt::format("base memory file {}", base)));
      o += r;
      copied += static_cast<uint64_t>(r);
    }
    pos = hole;
  }
  if (::fdatasync(out.get()) != 0) return sys_error(fmt::format("base memory file {}: sync", base));
  return copied;
}

Result<VmConfig> prepare_restore(const SnapshotLoadRequest& req, const VmConfig& base) {
  auto state = std::make_shared<SnapshotState>(TRY(read_snapshot_file(req.snapshot_path)));
  // The snapshot's own devices on top of the restoring process's console and logging.
  VmConfig start = base;
  start.disks.clear();
  start.nets.clear();
  start.vsock.reset();
  start.rng = false;
  start.tuning = {};
  auto parsed = parse_config_file(state->config_json, start);
  if (!parsed) return wrap(std::move(parsed).error(), "snapshot file {}: its configuration", req.snapshot_path);
  VmConfig cfg = std::move(*parsed);
  // Where output goes belongs to the restoring process (its --console, PUT /logger, /metrics),
  // not to the one that took the snapshot: clones must not share one console file.
  cfg.console = base.console;
  cfg.logger = base.logger;
  cfg.metrics_path = base.metrics_path;
  cfg.console_device = static_cast<ConsoleDevice>(state->console_device);
  cfg.virtio_pio_notify = state->virtio_pio_notify;
  if (cfg.memory_bytes != state->memory_bytes)
    return make_error(ErrorCode::kCorrupt, "snapshot file {}: its configuration has {} bytes of memory but its "
                      "memory is {} bytes", req.snapshot_path, cfg.memory_bytes, state->memory_bytes);
  if (req.id) cfg.id = *req.id;

  auto find_net = [&](const std::string& id, std::string_view what) -> Result<NetSpec*> {
    for (NetSpec& n : cfg.nets)
      if (n.id == id) return &n;
    return make_error(ErrorCode::kInvalidArgument, "{}: iface_id \"{}\" is not a network interface of the "
                      "snapshot's VM", what, id);
  };
  for (const auto& [id, tap] : req.network_overrides) {
    NetSpec* n = TRY(find_net(id, "network_overrides"));
    n->tap = tap;
    n->fd = -1;
  }
  for (const auto& [id, mac] : req.mac_overrides) {
    NetSpec* n = TRY(find_net(id, "MAC override"));
    n->mac = TRY(parse_mac(mac));
  }
  for (const auto& [drive_id, path] : req.disk_overrides) {
    const std::string& id = drive_id;  // a structured binding cannot be captured (clang)
    auto it = std::find_if(cfg.disks.begin(), cfg.disks.end(), [&](const DiskSpec& d) { return d.id == id; });
    if (it == cfg.disks.end())
      return make_error(ErrorCode::kInvalidArgument, "disk override: drive_id \"{}\" is not a disk of the "
                        "snapshot's VM", id);
    it->path = path;
    it->format = DiskFormat::kQcow2;  // an overlay (ringvm clone makes qcow2 overlays)
  }
  if (req.vsock_cid || req.vsock_uds) {
    if (!cfg.vsock)
      return make_error(ErrorCode::kInvalidArgument, "vsock override: the snapshot's VM has no vsock device");
    if (req.vsock_cid) cfg.vsock->cid = *req.vsock_cid;
    if (req.vsock_uds) cfg.vsock->socket = *req.vsock_uds;
  }
  // The disks must be the ones the guest's memory remembers.
  for (const DiskIdentity& saved : state->disks) {
    const bool overridden = std::any_of(req.disk_overrides.begin(), req.disk_overrides.end(),
                                        [&](const auto& o) { return o.first == saved.id; });
    if (overridden) continue;
    auto now = disk_identity(saved.id, saved.path, saved.qcow2);
    if (!now) return wrap(std::move(now).error(), "snapshot file {}", req.snapshot_path);
    RETURN_IF_ERROR(check_disk_identity(saved, *now));
  }
  struct stat st{};
  if (::stat(req.mem_path.c_str(), &st) != 0) return sys_error(fmt::format("memory file {}", req.mem_path));
  if (static_cast<uint64_t>(st.st_size) != state->memory_bytes)
    return make_error(ErrorCode::kInvalidArgument,
                      "memory file {}: {} bytes, but snapshot {} is of a VM with {} bytes of memory: give the "
                      "memory file written with this snapshot", req.mem_path, st.st_size, req.snapshot_path,
                      state->memory_bytes);
  if (state->vcpus.size() != cfg.cpus)
    return make_error(ErrorCode::kCorrupt, "snapshot file {}: {} vCPU states for a VM of {} vCPUs",
                      req.snapshot_path, state->vcpus.size(), cfg.cpus);
  cfg.track_dirty_pages = req.track_dirty_pages;
  cfg.restore = RestoreSpec{req.snapshot_path, req.mem_path, req.resume, req.clock_realtime, std::move(state)};
  return cfg;
}

}  // namespace ringvm
