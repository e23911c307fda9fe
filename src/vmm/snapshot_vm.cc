// Vm's half of snapshots (vmm/snapshot.h): writing one from a paused VM, and restoring the
// states of a VM the builder made from one.
#include <chrono>
#include <ctime>

#include "base/log.h"
#include "base/state_codec.h"
#include "devices/legacy/cmos_rtc.h"
#include "devices/legacy/vmgenid.h"
#include "kvm/vcpu_state.h"
#include "kvm/vm_state.h"
#include "vmm/config_json.h"
#include "vmm/snapshot.h"
#include "vmm/snapshot_file.h"
#include "vmm/vm.h"

namespace ringvm {

Result<void> Vm::snapshot(const SnapshotCreateRequest& req) {
  std::lock_guard op(pause_op_mu_);
  if (!paused_)
    return make_error(ErrorCode::kInvalidArgument,
                      "snapshot/create: the VM is running; pause it first (PATCH /vm {{\"state\": \"Paused\"}})");
  if (req.diff && !cfg_.track_dirty_pages)
    return make_error(ErrorCode::kInvalidArgument,
                      "snapshot/create: a Diff snapshot needs dirty page tracking, which this VM was started "
                      "without; set track_dirty_pages in PUT /machine-config (or snapshot/load) or take a Full one");
  // Item 7: every write the guest saw completed is on the disk before the snapshot says so.
  RETURN_IF_ERROR(devices_.flush_disks());

  SnapshotState s;
  s.kind = req.diff ? SnapshotKind::kDiff : SnapshotKind::kFull;
  s.ringvm_version = "ringvm 0.1.0";
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  s.created_unix_ns = static_cast<int64_t>(now.tv_sec) * 1'000'000'000 + now.tv_nsec;
  s.config_json = config_to_json(cfg_).dump();
  s.console_device = static_cast<uint8_t>(cfg_.console_device);
  s.virtio_pio_notify = cfg_.virtio_pio_notify;
  s.memory_bytes = mem_.total_size();
  for (const DiskSpec& d : cfg_.disks)
    s.disks.push_back(TRY(disk_identity(d.id, d.path, d.format == DiskFormat::kQcow2)));
  {
    StateWriter w;
    encode(TRY(vm_->save_state()), w);
    s.vm = w.take();
  }
  for (const auto& v : vcpus_) {
    auto st = v->save_state();
    if (!st) return wrap(std::move(st).error(), "snapshot: vCPU {}", v->id());
    StateWriter w;
    encode(*st, w);
    s.vcpus.push_back(w.take());
  }
  s.devices = TRY(devices_.save_states());

  // Guest memory. With tracking on, the dirty logs are read (and so cleared) by every snapshot,
  // so a Diff holds exactly the pages written since the previous snapshot.
  std::vector<std::vector<uint64_t>> dirty;
  if (cfg_.track_dirty_pages) {
    for (size_t i = 0; i < mem_.regions().size(); ++i) {
      auto bits = TRY(vm_->get_dirty_log(static_cast<uint32_t>(i), mem_.regions()[i].size()));
      const auto ours = mem_.take_vmm_dirty(i);
      for (size_t k = 0; k < bits.size() && k < ours.size(); ++k) bits[k] |= ours[k];
      dirty.push_back(std::move(bits));
    }
  }
  RETURN_IF_ERROR(write_memory_file(mem_, req.mem_path, req.diff ? &dirty : nullptr));
  RETURN_IF_ERROR(write_snapshot_file(req.snapshot_path, s));
  spdlog::info("snapshot ({}) written: state {}, memory {}", req.diff ? "Diff" : "Full", req.snapshot_path,
               req.mem_path);
  return Ok();
}

Result<void> Vm::restore_from_snapshot() {
  const RestoreSpec& spec = *cfg_.restore;
  const SnapshotState& s = *spec.state;
  const std::string what = fmt::format("snapshot file {}", spec.snapshot_path);
  const auto t0 = std::chrono::steady_clock::now();
  auto ms = [&t0] {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  };
  if (s.vcpus.size() != vcpus_.size())
    return make_error(ErrorCode::kCorrupt, "{}: {} vCPU states for {} vCPUs", what, s.vcpus.size(), vcpus_.size());
  for (size_t i = 0; i < vcpus_.size(); ++i) {
    StateReader r(s.vcpus[i], fmt::format("{}: vCPU {}", what, i));
    const auto st = TRY(decode_vcpu_state(r));
    RETURN_IF_ERROR(r.finish());
    if (auto ok = vcpus_[i]->restore_state(st); !ok) return wrap(std::move(ok).error(), "{}: vCPU {}", what, i);
  }
  // The VM's own state (PIC, IOAPIC, PIT, kvmclock) after every vCPU's (kvm/vcpu.h says why).
  {
    StateReader r(s.vm, what + ": VM state");
    const KvmVmState vs = TRY(decode_vm_state(r));
    RETURN_IF_ERROR(r.finish());
    RETURN_IF_ERROR(vm_->restore_state(vs, spec.clock_realtime));
  }
  spdlog::debug("restore: vCPUs and VM state in {:.3f} ms", ms());
  if (auto ok = devices_.restore_states(s.devices); !ok) return wrap(std::move(ok).error(), "{}", what);
  spdlog::debug("restore: devices in {:.3f} ms", ms());
  if (spec.clock_realtime && rtc_) rtc_->set_time_to_host_now();
  // Every restore is a new generation: a guest resumed twice from one snapshot (clones) reseeds
  // its random number generator in each copy.
  if (VmGenId* gen = devices_.vmgenid()) RETURN_IF_ERROR(gen->new_generation());
  restored_ = true;
  if (!spec.resume) {
    // resume_vm false: devices parked now, vCPUs park before their first entry; PATCH /vm
    // Resumed (Vm::resume) starts both.
    RETURN_IF_ERROR(devices_.pause());
    std::lock_guard lock(pause_mu_);
    pause_requested_ = true;
    pause_flag_.store(true);
    paused_ = true;
  }
  return Ok();
}

}  // namespace ringvm
