// VmController: one VM's life as the control plane sees it (Firecracker's state rules).
//
//   Not started --InstanceStart--> Running <--PATCH /vm Paused / Resumed--> Paused
//
// Before the start the configuration is edited (configure()); after it, only what may change
// live. The VM itself is built and run on the thread that calls run() (ringvm's main thread):
// start() from an API thread hands it the configuration and waits until the VM is built, so a
// bad kernel or a missing tap is the InstanceStart request's error, as in Firecracker.
#pragma once

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "base/result.h"
#include "vmm/config.h"
#include "vmm/stop_reason.h"

namespace ringvm {

enum class VmState { kNotStarted, kRunning, kPaused, kStopped };
// Firecracker's spelling: "Not started", "Running", "Paused" (and ringvm's "Stopped").
const char* vm_state_name(VmState s);

// What the controller needs of a built VM. Vm implements it; tests use a fake.
class Machine {
 public:
  virtual ~Machine() = default;
  // Runs the VM on the calling thread until it stops; returns why.
  virtual StopReason run() = 0;
  // Thread-safe; the first reason wins.
  virtual void request_stop(StopReason reason, std::string detail = {}) = 0;
  virtual std::string stop_detail() const = 0;
  // Every vCPU parked and every device quiescent / everything going again. Idempotent. A failed
  // pause leaves the machine running, a failed resume leaves it paused.
  virtual Result<void> pause() = 0;
  virtual Result<void> resume() = 0;
  // Ctrl+Alt+Del on the guest's keyboard (its own handler decides: Linux reboots).
  virtual Result<void> send_ctrl_alt_del() = 0;
  // The counters `--stats` prints, as one JSON object (Firecracker's metrics line).
  virtual nlohmann::json metrics() const = 0;
  // Writes a snapshot of the paused machine (vmm/snapshot.h). Refused while running.
  virtual Result<void> snapshot(const SnapshotCreateRequest& req) = 0;
};

using MachineFactory = std::function<Result<std::unique_ptr<Machine>>(const VmConfig&)>;

class VmController {
 public:
  VmController(VmConfig initial, MachineFactory factory);

  VmState state() const;
  VmConfig config() const;
  std::string id() const;

  // A pre-boot change: `edit` runs on a copy of the configuration, which replaces it only when
  // `edit` succeeds. After the start it is refused, naming `what`.
  Result<void> configure(std::string_view what, const std::function<Result<void>(VmConfig&)>& edit);
  // A check against the live configuration (PATCH after boot); refused before the start.
  Result<void> inspect_running(std::string_view what,
                               const std::function<Result<void>(const VmConfig&)>& check) const;

  // InstanceStart (any thread but run()'s): waits until run() has built the VM, or failed to.
  Result<void> start();
  Result<void> pause();
  Result<void> resume();
  Result<void> send_ctrl_alt_del();
  // PUT /snapshot/create: only while Paused.
  Result<void> snapshot_create(const SnapshotCreateRequest& req);
  // PUT /snapshot/load: only before any configuration and InstanceStart (Firecracker's rule).
  // Reads and checks the snapshot (vmm/snapshot.h prepare_restore), then builds the VM from it as
  // InstanceStart builds a booted one, and waits for that. The VM is then Running (resume_vm) or
  // Paused. A refused load leaves the controller as it was: fix the request and load again.
  Result<void> snapshot_load(const SnapshotLoadRequest& req);
  // Writes one JSON line of metrics to the configured metrics file.
  Result<void> flush_metrics();
  // The metrics object (also what FlushMetrics writes).
  Result<nlohmann::json> metrics() const;

  // The main thread: waits for start() (or builds at once with `boot_now`), runs the VM, and
  // rebuilds it after a guest reboot when the configuration says so. Returns why it ended.
  // `machine_done` (optional) is called with the Machine after it stopped, before it is
  // destroyed (for --stats and the stuck-vCPU check).
  StopReason run(bool boot_now, const std::function<void(Machine&, StopReason)>& machine_done = {});
  // Ends run() from any thread (a signal, a quit): before the start too.
  void request_stop(StopReason reason, std::string detail = {});
  std::string stop_detail() const;

 private:
  Result<void> build_locked(std::unique_lock<std::mutex>& lock);
  // start()'s wait, after the caller checked the state: hands cfg_ to run() and waits.
  Result<void> request_build_locked(std::unique_lock<std::mutex>& lock);
  // Until start() asks or a stop arrives (a blocked stop signal counts: there is no VM to read it).
  void wait_for_start(std::unique_lock<std::mutex>& lock);

  const MachineFactory factory_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  VmConfig cfg_;
  VmState state_ = VmState::kNotStarted;
  // start(): the request the main thread picks up, and its answer.
  bool start_requested_ = false;
  bool building_ = false;  // run() is building the VM from a copy of cfg_
  bool configured_ = false;  // configure() changed something: snapshot/load is refused from then on
  std::optional<Result<void>> start_result_;
  uint64_t start_generation_ = 0;
  StopReason early_stop_ = StopReason::kNone;  // a stop before there is a Machine
  std::string early_detail_;
  // Serializes pause/resume/ctrl-alt-del against each other and against the Machine's teardown.
  mutable std::mutex op_mu_;
  std::unique_ptr<Machine> machine_;
};

}  // namespace ringvm
