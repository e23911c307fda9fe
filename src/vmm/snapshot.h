// Snapshots of a whole VM: what goes into the state file and the memory file, and how a VM is
// rebuilt from them. The format is vmm/snapshot_file.h; the how-to is docs/snapshot.md.
//
// Create (Vm::snapshot, the VM paused): disks flushed; the KVM VM state (irqchips, PIT, clock),
// every vCPU's state and every device's save() collected; guest memory written to the memory
// file (Full: every non-zero page; Diff: the pages KVM's dirty log and ringvm's own writes
// marked since the last snapshot, at their offsets in an otherwise sparse file of the same
// size); then the state file, written last and atomically, so it only exists when its memory
// file is complete.
//
// Restore (prepare_restore, then Vm::create with cfg.restore set): the state file is read and
// checked whole before anything is built; the configuration it carries, with the caller's
// overrides, builds the same devices; memory is the memory file mapped copy-on-write; then the
// VM state, the vCPUs and the devices are restored, in that order.
#pragma once

#include <string>
#include <vector>

#include "base/result.h"
#include "vmm/config.h"

namespace ringvm {

class GuestMemory;

// Reads and checks the snapshot named by `req` and returns the configuration to build: the
// snapshot's own, on top of `base` (the restoring process's console and logging), with `req`'s
// overrides, and cfg.restore set. Refuses a memory file of the wrong size and a disk that
// changed since the snapshot.
Result<VmConfig> prepare_restore(const SnapshotLoadRequest& req, const VmConfig& base);

// Writes guest memory to `path` (via PATH.tmp and a rename). `dirty`: per region, one bit per
// 4 KiB page (64 per word) to write; null writes every page that is not all zeros (holes read
// back as zeros). The file is always the full size of guest memory.
Result<void> write_memory_file(const GuestMemory& mem, const std::string& path,
                               const std::vector<std::vector<uint64_t>>* dirty);

// Applies a Diff snapshot's memory file onto the memory file of the snapshot it followed: every
// data extent of `diff` (SEEK_DATA/SEEK_HOLE) is copied to the same offset of `base`.
Result<uint64_t> merge_memory_diff(const std::string& diff, const std::string& base);

}  // namespace ringvm
