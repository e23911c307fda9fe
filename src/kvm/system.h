// KvmSystem: /dev/kvm, its API version and capabilities.
#pragma once

#include <linux/kvm.h>

#include <string>
#include <vector>

#include "base/result.h"
#include "base/unique_fd.h"

namespace ringvm {

class KvmVm;

class KvmSystem {
 public:
  // Opens `path` (default /dev/kvm) and checks KVM_GET_API_VERSION == 12. Errors name the path
  // and the fix (missing module, kvm group).
  static Result<KvmSystem> open(const std::string& path = "/dev/kvm");

  int fd() const { return fd_.get(); }
  int api_version() const { return api_version_; }
  // KVM_CHECK_EXTENSION: 0 when absent, otherwise the capability's value.
  int check_extension(long cap) const;
  Result<void> require_extension(long cap, const char* name) const;
  int vcpu_mmap_size() const;
  // KVM_CAP_NR_VCPUS (recommended) and KVM_CAP_MAX_VCPUS (hard limit).
  int recommended_vcpus() const;
  int max_vcpus() const;
  // KVM_GET_SUPPORTED_CPUID, as a vector of entries.
  Result<std::vector<kvm_cpuid_entry2>> supported_cpuid() const;
  // KVM_GET_MSR_INDEX_LIST.
  Result<std::vector<uint32_t>> msr_index_list() const;

  Result<KvmVm> create_vm() const;

 private:
  UniqueFd fd_;
  int api_version_ = 0;
};

}  // namespace ringvm
