#include "kvm/vcpu_state.h"

#include <algorithm>
#include <unordered_set>

namespace ringvm {

namespace {

int msr_restore_rank(uint32_t index) {
  if (index == static_cast<uint32_t>(KvmMsr::kTsc)) return 0;
  if (index == static_cast<uint32_t>(KvmMsr::kTscDeadline)) return 2;
  return 1;
}

template <typename T>
void optional_pod(StateWriter& w, const std::optional<T>& v) {
  w.boolean(v.has_value());
  if (v) w.pod(*v);
}

template <typename T>
Result<std::optional<T>> read_optional_pod(StateReader& r, std::string_view present_field,
                                           std::string_view field) {
  const bool present = TRY(r.boolean(present_field));
  if (!present) return std::optional<T>{};
  return std::optional<T>{TRY(r.pod<T>(field))};
}

}  // namespace

void sort_msrs_for_restore(std::vector<kvm_msr_entry>& msrs) {
  std::stable_sort(msrs.begin(), msrs.end(), [](const kvm_msr_entry& a, const kvm_msr_entry& b) {
    const int ra = msr_restore_rank(a.index), rb = msr_restore_rank(b.index);
    return ra != rb ? ra < rb : a.index < b.index;
  });
  std::unordered_set<uint32_t> seen;
  std::erase_if(msrs, [&](const kvm_msr_entry& e) { return !seen.insert(e.index).second; });
}

void encode(const VcpuState& s, StateWriter& w) {
  w.u16(VcpuState::kFormatVersion);
  w.u32(s.vcpu_id);
  w.pod(s.regs);
  w.pod(s.sregs);
  optional_pod(w, s.sregs2);
  w.bytes(s.xsave);
  optional_pod(w, s.fpu);
  optional_pod(w, s.xcrs);
  w.u32(static_cast<uint32_t>(s.msrs.size()));
  for (const auto& m : s.msrs) {
    w.u32(m.index);
    w.u64(m.data);
  }
  w.pod(s.lapic);
  w.pod(s.mp_state);
  optional_pod(w, s.events);
  optional_pod(w, s.debugregs);
  w.u32(static_cast<uint32_t>(s.cpuid.size()));
  for (const auto& e : s.cpuid) w.pod(e);
  w.u32(s.tsc_khz);
}

Result<VcpuState> decode_vcpu_state(StateReader& r) {
  VcpuState s;
  const uint16_t version = TRY(r.u16("vcpu format version"));
  if (version != VcpuState::kFormatVersion)
    return r.corrupt(fmt::format("vCPU state format version {}; this ringvm reads version {}", version,
                                 VcpuState::kFormatVersion));
  s.vcpu_id = TRY(r.u32("vcpu_id"));
  s.regs = TRY(r.pod<kvm_regs>("regs"));
  s.sregs = TRY(r.pod<kvm_sregs>("sregs"));
  s.sregs2 = TRY(read_optional_pod<kvm_sregs2>(r, "has_sregs2", "sregs2"));

  const auto xsave = TRY(r.bytes("xsave", VcpuState::kMaxXsaveBytes));
  if (!xsave.empty() && (xsave.size() < VcpuState::kMinXsaveBytes || xsave.size() % 4 != 0))
    return r.corrupt(fmt::format("`xsave` is {} bytes; an XSAVE area is a multiple of 4 bytes, {}..{}",
                                 xsave.size(), VcpuState::kMinXsaveBytes, VcpuState::kMaxXsaveBytes));
  s.xsave.assign(xsave.begin(), xsave.end());
  s.fpu = TRY(read_optional_pod<kvm_fpu>(r, "has_fpu", "fpu"));
  if (s.xsave.empty() == !s.fpu.has_value())
    return r.corrupt(s.fpu ? "`xsave` and `fpu` are both present; a state holds one of them"
                           : "neither `xsave` nor `fpu` is present; a state holds one of them");
  s.xcrs = TRY(read_optional_pod<kvm_xcrs>(r, "has_xcrs", "xcrs"));
  if (s.xcrs) RETURN_IF_ERROR(r.check_range("xcrs.nr_xcrs", s.xcrs->nr_xcrs, 0, KVM_MAX_XCRS));

  const uint32_t nmsrs = TRY(r.u32("nmsrs"));
  RETURN_IF_ERROR(r.check_range("nmsrs", nmsrs, 0, VcpuState::kMaxMsrs));
  s.msrs.reserve(nmsrs);
  for (uint32_t i = 0; i < nmsrs; ++i) {
    kvm_msr_entry e{};
    e.index = TRY(r.u32("msr index"));
    e.data = TRY(r.u64("msr data"));
    s.msrs.push_back(e);
  }
  s.lapic = TRY(r.pod<kvm_lapic_state>("lapic"));
  s.mp_state = TRY(r.pod<kvm_mp_state>("mp_state"));
  s.events = TRY(read_optional_pod<kvm_vcpu_events>(r, "has_events", "events"));
  s.debugregs = TRY(read_optional_pod<kvm_debugregs>(r, "has_debugregs", "debugregs"));

  const uint32_t ncpuid = TRY(r.u32("cpuid nent"));
  RETURN_IF_ERROR(r.check_range("cpuid nent", ncpuid, 0, VcpuState::kMaxCpuidEntries));
  s.cpuid.reserve(ncpuid);
  for (uint32_t i = 0; i < ncpuid; ++i) s.cpuid.push_back(TRY(r.pod<kvm_cpuid_entry2>("cpuid entry")));
  s.tsc_khz = TRY(r.u32("tsc_khz"));
  return s;
}

}  // namespace ringvm
