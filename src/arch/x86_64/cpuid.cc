#include "arch/x86_64/cpuid.h"

#include <algorithm>
#include <bit>
#include <cstring>

namespace ringvm::x86 {

namespace {

// Leaves and bits ringvm rewrites.
constexpr uint32_t kLeafVendor = 0x0;
constexpr uint32_t kLeafFeatures = 0x1;
constexpr uint32_t kLeafCacheParams = 0x4;  // Intel deterministic cache parameters
constexpr uint32_t kLeafPmu = 0xa;          // architectural performance monitoring
constexpr uint32_t kLeafExtTopology = 0xb;  // x2APIC topology
constexpr uint32_t kLeafExtTopologyV2 = 0x1f;
constexpr uint32_t kLeafKvmSignature = 0x4000'0000;
constexpr uint32_t kLeafKvmFeatures = 0x4000'0001;
constexpr uint32_t kLeafAddressSizes = 0x8000'0008;  // AMD: ECX has the core count
constexpr uint32_t kLeafAmdCacheTopology = 0x8000'001d;
constexpr uint32_t kLeafAmdExtApicId = 0x8000'001e;

constexpr uint32_t kEcxHypervisor = 1u << 31;   // leaf 1: running under a hypervisor
constexpr uint32_t kEcxTscDeadline = 1u << 24;  // leaf 1: LAPIC TSC-deadline mode
constexpr uint32_t kEdxHtt = 1u << 28;          // leaf 1: EBX[23:16] is valid

constexpr uint32_t kTopologyLevelSmt = 1;  // leaf 0xB/0x1F ECX[15:8] level types
constexpr uint32_t kTopologyLevelCore = 2;

bool is_amd(const kvm_cpuid_entry2& leaf0) {
  // "AuthenticAMD" (and Hygon's "HygonGenuine", which follows AMD's topology leaves).
  char vendor[12];
  std::memcpy(vendor, &leaf0.ebx, 4);
  std::memcpy(vendor + 4, &leaf0.edx, 4);
  std::memcpy(vendor + 8, &leaf0.ecx, 4);
  return std::memcmp(vendor, "AuthenticAMD", 12) == 0 || std::memcmp(vendor, "HygonGenuine", 12) == 0;
}

// Bits needed to hold `n` distinct IDs (0 for n == 1).
uint32_t id_bits(uint32_t n) { return n <= 1 ? 0 : static_cast<uint32_t>(std::bit_width(n - 1)); }

kvm_cpuid_entry2 entry(uint32_t fn, uint32_t index, uint32_t flags, uint32_t a, uint32_t b, uint32_t c,
                       uint32_t d) {
  kvm_cpuid_entry2 e{};
  e.function = fn;
  e.index = index;
  e.flags = flags;
  e.eax = a;
  e.ebx = b;
  e.ecx = c;
  e.edx = d;
  return e;
}

// Leaf 0xB/0x1F subleaves: SMT (one thread per core), core (num_cpus cores), then invalid.
void add_topology(std::vector<kvm_cpuid_entry2>& out, uint32_t fn, uint32_t apic_id, uint32_t num_cpus) {
  constexpr uint32_t kFlags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
  out.push_back(entry(fn, 0, kFlags, 0, 1, (kTopologyLevelSmt << 8) | 0, apic_id));
  out.push_back(entry(fn, 1, kFlags, id_bits(num_cpus), num_cpus, (kTopologyLevelCore << 8) | 1, apic_id));
  out.push_back(entry(fn, 2, kFlags, 0, 0, 2, apic_id));
}

}  // namespace

Result<std::vector<kvm_cpuid_entry2>> build_cpuid(const std::vector<kvm_cpuid_entry2>& supported,
                                                  uint32_t cpu_index, uint32_t num_cpus, CpuidOptions opts) {
  if (num_cpus == 0 || num_cpus > kMaxVcpus)
    return make_error(ErrorCode::kInvalidArgument, "{} vCPUs requested; ringvm supports 1 to {}", num_cpus,
                      kMaxVcpus);
  if (cpu_index >= num_cpus)
    return make_error(ErrorCode::kInvalidArgument, "vCPU index {} is not below the vCPU count {}", cpu_index,
                      num_cpus);
  auto find = [&](uint32_t fn) {
    return std::find_if(supported.begin(), supported.end(), [&](const auto& e) { return e.function == fn; });
  };
  const auto leaf0 = find(kLeafVendor);
  if (leaf0 == supported.end() || find(kLeafFeatures) == supported.end())
    return make_error(ErrorCode::kUnsupported, "KVM_GET_SUPPORTED_CPUID lacks leaves 0 and 1");
  const uint32_t max_basic = leaf0->eax;
  const bool amd = is_amd(*leaf0);
  const uint32_t apic_id = cpu_index;
  const uint32_t pkg_ids = 1u << id_bits(num_cpus);  // addressable IDs in the package

  std::vector<kvm_cpuid_entry2> out;
  bool have_signature = false;
  for (kvm_cpuid_entry2 e : supported) {
    switch (e.function) {
      case kLeafFeatures:
        e.ebx = (e.ebx & 0x0000'ffff) | (apic_id << 24) | ((num_cpus > 1 ? pkg_ids : 1) << 16);
        e.ecx |= kEcxHypervisor;
        e.ecx = opts.tsc_deadline ? (e.ecx | kEcxTscDeadline) : (e.ecx & ~kEcxTscDeadline);
        e.edx = num_cpus > 1 ? (e.edx | kEdxHtt) : (e.edx & ~kEdxHtt);
        break;
      case kLeafCacheParams:
        // EAX[31:26]: cores in the package - 1; EAX[25:14]: threads sharing this cache - 1 (the
        // L3 is shared by every core, the rest are per core).
        e.eax &= 0x3fff;
        e.eax |= (pkg_ids - 1) << 26;
        if (((e.eax >> 5) & 7) >= 3) e.eax |= (pkg_ids - 1) << 14;
        break;
      case kLeafPmu:
        // ringvm does not promise a PMU: the kernel then runs without perf counters.
        e.eax = e.ebx = e.ecx = e.edx = 0;
        break;
      case kLeafExtTopology:
      case kLeafExtTopologyV2: continue;  // rebuilt below
      case kLeafKvmSignature:
        have_signature = true;
        e.eax = kLeafKvmFeatures;
        std::memcpy(&e.ebx, "KVMK", 4);
        std::memcpy(&e.ecx, "VMKV", 4);
        std::memcpy(&e.edx, "M\0\0\0", 4);
        break;
      case kLeafAddressSizes:
        if (amd) e.ecx = (e.ecx & ~0xf0ffu) | (id_bits(num_cpus) << 12) | (num_cpus - 1);
        break;
      case kLeafAmdCacheTopology:
        // EAX[25:14]: logical processors sharing the cache - 1; level 3 is shared.
        e.eax &= ~(0xfffu << 14);
        if (((e.eax >> 5) & 7) >= 3) e.eax |= (num_cpus - 1) << 14;
        break;
      case kLeafAmdExtApicId:
        e.eax = apic_id;
        e.ebx = apic_id & 0xff;  // core ID; EBX[15:8] = threads per core - 1 = 0
        e.ecx = 0;               // node 0, one node per processor
        break;
      default: break;
    }
    out.push_back(e);
  }
  if (max_basic >= kLeafExtTopology) add_topology(out, kLeafExtTopology, apic_id, num_cpus);
  if (max_basic >= kLeafExtTopologyV2) add_topology(out, kLeafExtTopologyV2, apic_id, num_cpus);
  if (!have_signature)
    out.push_back(entry(kLeafKvmSignature, 0, 0, kLeafKvmFeatures, 0x4b4d564b, 0x564b4d56, 0x4d));
  return out;
}

}  // namespace ringvm::x86
