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

// What KVM_GET_SUPPORTED_CPUID cannot say because it depends on how the VM was built.
struct CpuidOptions {
  // Leaf 1 ECX[24]: the LAPIC's TSC-deadline timer mode. Set it when the VM has an in-kernel
  // irqchip and KVM_CAP_TSC_DEADLINE_TIMER (api.rst: KVM leaves this bit to userspace).
  bool tsc_deadline = false;
};

Result<std::vector<kvm_cpuid_entry2>> build_cpuid(const std::vector<kvm_cpuid_entry2>& supported,
                                                  uint32_t cpu_index, uint32_t num_cpus,
                                                  CpuidOptions opts = {});

}  // namespace ringvm::x86
