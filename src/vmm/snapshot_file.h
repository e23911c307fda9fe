// The snapshot state file: everything about a paused VM except its memory (which goes to its own
// file, mapped copy-on-write on restore; see docs/snapshot.md).
//
// Layout (all integers little-endian):
//   header, 32 bytes:  magic "RINGVMSN" | u32 format version | u32 header size (32)
//                      | u64 payload size | u32 CRC-32 of the payload | u32 flags (0)
//   payload:           the fields of SnapshotState in the order encode_snapshot writes them
//                      (base/state_codec.h: u32 lengths before variable data)
//
// The file is hostile input: read_snapshot_file checks the magic (a foreign file), the version
// (a newer ringvm's file is refused by name), the sizes against the file's length, and the
// checksum before decoding anything; decoding checks every count and length against the limits
// below. The opaque states (VM, vCPUs, devices) are decoded later by their owners, each as
// hostile as this.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace ringvm {

inline constexpr char kSnapshotMagic[8] = {'R', 'I', 'N', 'G', 'V', 'M', 'S', 'N'};
inline constexpr uint32_t kSnapshotFormatVersion = 1;
inline constexpr uint32_t kSnapshotHeaderBytes = 32;
// Limits a hostile file is held to.
inline constexpr uint64_t kMaxSnapshotFileBytes = 256ULL << 20;
inline constexpr size_t kMaxSnapshotConfigBytes = 1 << 20;
inline constexpr size_t kMaxSnapshotDisks = 64;
inline constexpr size_t kMaxSnapshotVcpus = 256;
inline constexpr size_t kMaxSnapshotDevices = 256;
inline constexpr size_t kMaxSnapshotStateBytes = 32u << 20;  // one device's or vCPU's state
inline constexpr size_t kMaxSnapshotNameBytes = 256;

enum class SnapshotKind : uint8_t { kFull = 0, kDiff = 1 };

// What a snapshot remembers of a disk so that a restore onto a changed one is refused.
struct DiskIdentity {
  std::string id;
  std::string path;
  bool qcow2 = false;
  uint64_t file_bytes = 0;
  int64_t mtime_ns = 0;
  uint32_t header_crc = 0;  // CRC-32 of the qcow2 header's first 72 bytes (0 for raw)
  bool operator==(const DiskIdentity&) const = default;
};

struct NamedState {
  std::string name;
  std::vector<uint8_t> data;
};

struct SnapshotState {
  SnapshotKind kind = SnapshotKind::kFull;
  std::string ringvm_version;  // informational
  int64_t created_unix_ns = 0;
  // The VM's configuration as the config file spells it (vmm/config_json.h config_to_json), plus
  // what that format does not carry and the device layout depends on.
  std::string config_json;
  uint8_t console_device = 0;  // ConsoleDevice
  bool virtio_pio_notify = true;
  uint64_t memory_bytes = 0;   // the memory file's size
  std::vector<DiskIdentity> disks;
  std::vector<uint8_t> vm;                 // kvm/: irqchip, PIT, clock
  std::vector<std::vector<uint8_t>> vcpus; // kvm/: one per vCPU, in id order
  std::vector<NamedState> devices;         // every device's save(), by state_name()
};

std::vector<uint8_t> encode_snapshot(const SnapshotState& s);
// `what` names the input in errors ("snapshot file vm.snap").
Result<SnapshotState> decode_snapshot(std::span<const uint8_t> file, std::string_view what);

// Written to PATH.tmp, synced, then renamed over PATH: a crash leaves the old file or the new one.
Result<void> write_snapshot_file(const std::string& path, const SnapshotState& s);
Result<SnapshotState> read_snapshot_file(const std::string& path);

// The identity of a disk image as it is on the host now.
Result<DiskIdentity> disk_identity(const std::string& id, const std::string& path, bool qcow2);
// Ok when `now` is the disk the snapshot saw; otherwise an error naming what changed and the fix.
Result<void> check_disk_identity(const DiskIdentity& saved, const DiskIdentity& now);

}  // namespace ringvm
