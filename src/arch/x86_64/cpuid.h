// The CPUID a vCPU shows: KVM_GET_SUPPORTED_CPUID adjusted for ringvm's topology (N cores of one
// thread in one socket, APIC ID = vCPU index), the hypervisor bit and KVM's signature leaves,
// without the PMU leaf ringvm does not promise. A pure function: testable without /dev/kvm.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <vector>

#include "base/result.h"

namespace ringvm::x86 {

// The most vCPUs with 8-bit xAPIC IDs (0xFF is the broadcast ID).
inline constexpr uint32_t kMaxVcpus = 254;

Result<std::vector<kvm_cpuid_entry2>> build_cpuid(const std::vector<kvm_cpuid_entry2>& supported,
                                                  uint32_t cpu_index, uint32_t num_cpus);

}  // namespace ringvm::x86
