#include "vmm/snapshot_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cstring>

#include "base/state_codec.h"
#include "base/unique_fd.h"

namespace ringvm {

namespace {

uint32_t crc32_of(std::span<const uint8_t> data) {
  uLong crc = ::crc32(0L, Z_NULL, 0);
  size_t off = 0;
  while (off < data.size()) {
    const size_t n = std::min<size_t>(data.size() - off, 1u << 30);
    crc = ::crc32(crc, data.data() + off, static_cast<uInt>(n));
    off += n;
  }
  return static_cast<uint32_t>(crc);
}

void put_le32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint32_t get_le32(const uint8_t* p) {
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
}
uint64_t get_le64(const uint8_t* p) { return uint64_t{get_le32(p)} | uint64_t{get_le32(p + 4)} << 32; }

}  // namespace

std::vector<uint8_t> encode_snapshot(const SnapshotState& s) {
  StateWriter w;
  w.u8(static_cast<uint8_t>(s.kind));
  w.str(s.ringvm_version);
  w.i64(s.created_unix_ns);
  w.str(s.config_json);
  w.u8(s.console_device);
  w.boolean(s.virtio_pio_notify);
  w.u64(s.memory_bytes);
  w.u32(static_cast<uint32_t>(s.disks.size()));
  for (const DiskIdentity& d : s.disks) {
    w.str(d.id);
    w.str(d.path);
    w.boolean(d.qcow2);
    w.u64(d.file_bytes);
    w.i64(d.mtime_ns);
    w.u32(d.header_crc);
  }
  w.bytes(s.vm);
  w.u32(static_cast<uint32_t>(s.vcpus.size()));
  for (const auto& v : s.vcpus) w.bytes(v);
  w.u32(static_cast<uint32_t>(s.devices.size()));
  for (const NamedState& d : s.devices) {
    w.str(d.name);
    w.bytes(d.data);
  }
  std::vector<uint8_t> payload = w.take();

  std::vector<uint8_t> out(kSnapshotHeaderBytes + payload.size(), 0);
  std::memcpy(out.data(), kSnapshotMagic, 8);
  put_le32(&out[8], kSnapshotFormatVersion);
  put_le32(&out[12], kSnapshotHeaderBytes);
  put_le32(&out[16], static_cast<uint32_t>(payload.size()));
  put_le32(&out[20], static_cast<uint32_t>(uint64_t{payload.size()} >> 32));
  put_le32(&out[24], crc32_of(payload));
  put_le32(&out[28], 0);
  if (!payload.empty()) std::memcpy(out.data() + kSnapshotHeaderBytes, payload.data(), payload.size());
  return out;
}

Result<SnapshotState> decode_snapshot(std::span<const uint8_t> file, std::string_view what) {
  if (file.size() < kSnapshotHeaderBytes || std::memcmp(file.data(), kSnapshotMagic, 8) != 0)
    return make_error(ErrorCode::kCorrupt,
                      "{}: not a ringvm snapshot (no RINGVMSN header); give the snapshot_path that PUT "
                      "/snapshot/create or `ringvm ctl snapshot create` wrote", what);
  const uint32_t version = get_le32(&file[8]);
  if (version > kSnapshotFormatVersion)
    return make_error(ErrorCode::kUnsupported,
                      "{}: snapshot format version {} was written by a newer ringvm; this one reads version {} "
                      "only: restore it with the ringvm that made it", what, version, kSnapshotFormatVersion);
  if (version < 1)
    return make_error(ErrorCode::kCorrupt, "{}: snapshot format version 0 does not exist", what);
  if (get_le32(&file[12]) != kSnapshotHeaderBytes)
    return make_error(ErrorCode::kCorrupt, "{}: header size {} (version {} headers are {} bytes)", what,
                      get_le32(&file[12]), version, kSnapshotHeaderBytes);
  const uint64_t payload_bytes = get_le64(&file[16]);
  if (payload_bytes != file.size() - kSnapshotHeaderBytes)
    return make_error(ErrorCode::kCorrupt,
                      "{}: the header promises {} bytes of state but the file holds {}: the file is truncated "
                      "or was appended to", what, payload_bytes, file.size() - kSnapshotHeaderBytes);
  if (get_le32(&file[28]) != 0)
    return make_error(ErrorCode::kUnsupported, "{}: header flags {:#x} are unknown to this ringvm", what,
                      get_le32(&file[28]));
  const auto payload = file.subspan(kSnapshotHeaderBytes);
  if (crc32_of(payload) != get_le32(&file[24]))
    return make_error(ErrorCode::kCorrupt, "{}: checksum mismatch: the file was damaged or changed after it was "
                      "written", what);

  StateReader r(payload, std::string(what));
  SnapshotState s;
  const uint8_t kind = TRY(r.u8("snapshot type"));
  RETURN_IF_ERROR(r.check_range("snapshot type", kind, 0, 1));
  s.kind = static_cast<SnapshotKind>(kind);
  s.ringvm_version = TRY(r.str("ringvm version", kMaxSnapshotNameBytes));
  s.created_unix_ns = TRY(r.i64("creation time"));
  s.config_json = TRY(r.str("configuration", kMaxSnapshotConfigBytes));
  s.console_device = TRY(r.u8("console device"));
  RETURN_IF_ERROR(r.check_range("console device", s.console_device, 0, 1));
  s.virtio_pio_notify = TRY(r.boolean("virtio notify kind"));
  s.memory_bytes = TRY(r.u64("memory size"));
  if (s.memory_bytes == 0 || s.memory_bytes % 4096 != 0)
    return r.corrupt(fmt::format("memory size {} is not a positive multiple of 4 KiB", s.memory_bytes));
  const uint32_t ndisks = TRY(r.u32("disk count"));
  RETURN_IF_ERROR(r.check_range("disk count", ndisks, 0, kMaxSnapshotDisks));
  for (uint32_t i = 0; i < ndisks; ++i) {
    DiskIdentity d;
    d.id = TRY(r.str("disk id", kMaxSnapshotNameBytes));
    d.path = TRY(r.str("disk path", 4096));
    d.qcow2 = TRY(r.boolean("disk format"));
    d.file_bytes = TRY(r.u64("disk size"));
    d.mtime_ns = TRY(r.i64("disk modification time"));
    d.header_crc = TRY(r.u32("disk header checksum"));
    s.disks.push_back(std::move(d));
  }
  auto vm = TRY(r.bytes("VM state", kMaxSnapshotStateBytes));
  s.vm.assign(vm.begin(), vm.end());
  const uint32_t nvcpus = TRY(r.u32("vCPU count"));
  RETURN_IF_ERROR(r.check_range("vCPU count", nvcpus, 1, kMaxSnapshotVcpus));
  for (uint32_t i = 0; i < nvcpus; ++i) {
    auto v = TRY(r.bytes("vCPU state", kMaxSnapshotStateBytes));
    s.vcpus.emplace_back(v.begin(), v.end());
  }
  const uint32_t ndev = TRY(r.u32("device count"));
  RETURN_IF_ERROR(r.check_range("device count", ndev, 0, kMaxSnapshotDevices));
  for (uint32_t i = 0; i < ndev; ++i) {
    NamedState d;
    d.name = TRY(r.str("device name", kMaxSnapshotNameBytes));
    for (const NamedState& prev : s.devices)
      if (prev.name == d.name) return r.corrupt(fmt::format("device `{}` appears twice", d.name));
    auto data = TRY(r.bytes("device state", kMaxSnapshotStateBytes));
    d.data.assign(data.begin(), data.end());
    s.devices.push_back(std::move(d));
  }
  RETURN_IF_ERROR(r.finish());
  return s;
}

Result<void> write_snapshot_file(const std::string& path, const SnapshotState& s) {
  const std::vector<uint8_t> bytes = encode_snapshot(s);
  const std::string tmp = path + ".tmp";
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd) return sys_error(fmt::format("snapshot_path {}: cannot create {}", path, tmp));
  size_t off = 0;
  while (off < bytes.size()) {
    const ssize_t n = ::write(fd.get(), bytes.data() + off, bytes.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::unlink(tmp.c_str());
      return sys_error(fmt::format("snapshot_path {}: write", path), err);
    }
    off += static_cast<size_t>(n);
  }
  if (::fsync(fd.get()) != 0 || ::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return sys_error(fmt::format("snapshot_path {}: sync and rename", path), err);
  }
  return Ok();
}

Result<SnapshotState> read_snapshot_file(const std::string& path) {
  const std::string what = fmt::format("snapshot file {}", path);
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (!fd) return sys_error(what);
  struct stat st{};
  if (::fstat(fd.get(), &st) != 0) return sys_error(what);
  if (!S_ISREG(st.st_mode)) return make_error(ErrorCode::kInvalidArgument, "{}: not a regular file", what);
  if (static_cast<uint64_t>(st.st_size) > kMaxSnapshotFileBytes)
    return make_error(ErrorCode::kCorrupt, "{}: {} bytes is larger than any snapshot state ({} at most)", what,
                      st.st_size, kMaxSnapshotFileBytes);
  std::vector<uint8_t> bytes(static_cast<size_t>(st.st_size));
  size_t off = 0;
  while (off < bytes.size()) {
    const ssize_t n = ::pread(fd.get(), bytes.data() + off, bytes.size() - off, static_cast<off_t>(off));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return n == 0 ? make_error(ErrorCode::kIo, "{}: file shrank while being read", what) : sys_error(what);
    off += static_cast<size_t>(n);
  }
  return decode_snapshot(bytes, what);
}

Result<DiskIdentity> disk_identity(const std::string& id, const std::string& path, bool qcow2) {
  DiskIdentity d;
  d.id = id;
  d.path = path;
  d.qcow2 = qcow2;
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (!fd) return sys_error(fmt::format("disk {} ({})", id, path));
  struct stat st{};
  if (::fstat(fd.get(), &st) != 0) return sys_error(fmt::format("disk {} ({})", id, path));
  d.file_bytes = static_cast<uint64_t>(st.st_size);
  d.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
  if (qcow2) {
    uint8_t header[72];
    if (::pread(fd.get(), header, sizeof header, 0) != static_cast<ssize_t>(sizeof header))
      return make_error(ErrorCode::kCorrupt, "disk {} ({}): shorter than a qcow2 header", id, path);
    d.header_crc = crc32_of(header);
  }
  return d;
}

Result<void> check_disk_identity(const DiskIdentity& saved, const DiskIdentity& now) {
  auto changed = [&](std::string_view what) {
    return make_error(ErrorCode::kInvalidArgument,
                      "disk {} ({}): {} changed since the snapshot was taken, so the guest's view of it would not "
                      "match its memory; restore onto the disk as it was at the snapshot (or start clones on "
                      "overlays of it: `ringvm clone`)", saved.id, saved.path, what);
  };
  if (saved.qcow2 != now.qcow2) return changed("its format");
  if (saved.file_bytes != now.file_bytes) return changed(fmt::format("its size ({} -> {} bytes)", saved.file_bytes, now.file_bytes));
  if (saved.header_crc != now.header_crc) return changed("its qcow2 header");
  if (saved.mtime_ns != now.mtime_ns) return changed("its modification time");
  return Ok();
}

}  // namespace ringvm
