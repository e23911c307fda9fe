// KvmStats: KVM's binary statistics (KVM_GET_STATS_FD, Linux 5.14+) for a VM or a vCPU — the
// in-kernel exit counters (exits, io_exits, mmio_exits, halt_exits, ...) that our own userspace
// counters cannot see.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "base/result.h"
#include "base/unique_fd.h"

namespace ringvm {

class KvmStats {
 public:
  // `object_fd` is a VM or vCPU fd. kUnsupported where the host lacks KVM_CAP_BINARY_STATS_FD.
  static Result<KvmStats> open(int object_fd);
  // Every cumulative/instant counter by name (histograms are summed).
  Result<std::map<std::string, uint64_t>> read() const;

 private:
  UniqueFd fd_;
};

}  // namespace ringvm
