// Stateful: the state contract every device and vCPU implements (Firecracker's Persist, Cloud
// Hypervisor's Pausable + Snapshottable, in one small interface).
//
//   pause()   stop touching guest memory and queues; requests already in flight finish first.
//             Harmless when already paused. Returns once the object is quiescent.
//   resume()  go on from where pause() left off. Harmless when running.
//   save()    the object's state as bytes (only while paused); restore() takes them back.
//
// Pause and resume are what the control plane needs now. save()/restore() are the snapshot's and
// live migration's half: an object that cannot yet save says so by name (kUnsupported), so a
// snapshot of a VM holding it is refused, never silently incomplete.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace ringvm {

class Stateful {
 public:
  virtual ~Stateful() = default;
  // The name errors and snapshots use ("blk0", "com1", "vcpu1").
  virtual std::string_view state_name() const = 0;
  virtual Result<void> pause() = 0;
  virtual Result<void> resume() = 0;
  virtual Result<std::vector<uint8_t>> save() const {
    return make_error(ErrorCode::kUnsupported, "{}: saving its state is not implemented yet", state_name());
  }
  virtual Result<void> restore(std::span<const uint8_t>) {
    return make_error(ErrorCode::kUnsupported, "{}: restoring its state is not implemented yet",
                      state_name());
  }
};

}  // namespace ringvm
