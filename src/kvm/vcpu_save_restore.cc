// KvmVcpu::save_state() and restore_state(): the ioctls behind VcpuState (vcpu_state.h).
#include <sys/ioctl.h>

#include <algorithm>
#include <cstring>
#include <unordered_set>

#include "kvm/kvm_abi.h"
#include "kvm/system.h"
#include "kvm/vcpu.h"

namespace ringvm {

namespace {

// KVM refuses KVM_GET_MSRS/KVM_SET_MSRS with 256 or more entries (MAX_IO_MSRS): batch below it.
constexpr size_t kMsrBatch = 128;

// KVM's paravirtual MSRs: KVM_GET_MSR_INDEX_LIST lists them among its emulated MSRs, but a
// snapshot without them loses the guest's kvmclock, async page faults, steal time and PV EOI,
// so they are asked for even if a host's list leaves one out (one KVM cannot read is skipped).
constexpr KvmMsr kParavirtMsrs[] = {
    KvmMsr::kKvmWallClock,  KvmMsr::kKvmSystemTime, KvmMsr::kKvmWallClockNew, KvmMsr::kKvmSystemTimeNew,
    KvmMsr::kKvmAsyncPfEn,  KvmMsr::kKvmStealTime,  KvmMsr::kKvmPvEoiEn,      KvmMsr::kKvmPollControl,
    KvmMsr::kKvmAsyncPfInt, KvmMsr::kKvmAsyncPfAck,
};

bool saved_msr(uint32_t index) {
  // The APIC base travels in the special registers, which restore sets before the LAPIC; writing
  // it again after the LAPIC could only disturb it.
  if (index == static_cast<uint32_t>(KvmMsr::kApicBase)) return false;
  // Hyper-V's synthetic MSRs: ringvm shows the guest no Hyper-V CPUID, so it cannot have used
  // them, and some have side effects when written (HV_X64_MSR_EOI signals an EOI).
  if (index >= static_cast<uint32_t>(KvmMsr::kHyperVFirst) &&
      index <= static_cast<uint32_t>(KvmMsr::kHyperVLast))
    return false;
  return true;
}

uint32_t host_xsave_bytes(const VcpuHost& host) {
  return std::max<uint32_t>(host.xsave2_size, VcpuState::kMinXsaveBytes);
}

Result<std::vector<uint8_t>> get_xsave(const KvmVcpu& vcpu, const VcpuHost& host) {
  const uint32_t size = host_xsave_bytes(host);
  if (size > VcpuState::kMaxXsaveBytes)
    return make_error(ErrorCode::kUnsupported,
                      "vCPU {}: the host's XSAVE area is {} bytes; a snapshot holds at most {}", vcpu.id(),
                      size, VcpuState::kMaxXsaveBytes);
  // KVM_GET_XSAVE2 writes exactly KVM_CAP_XSAVE2's size; KVM_GET_XSAVE writes 4 KiB.
  std::vector<uint8_t> buf(size);
  const unsigned long req = host.xsave2_size != 0 ? kvm_abi::kGetXsave2 : kvm_abi::kGetXsave;
  if (::ioctl(vcpu.fd(), req, buf.data()) != 0)
    return sys_error(host.xsave2_size != 0 ? "KVM_GET_XSAVE2" : "KVM_GET_XSAVE");
  return buf;
}

Result<void> set_xsave(const KvmVcpu& vcpu, const VcpuHost& host, const std::vector<uint8_t>& saved) {
  // KVM_SET_XSAVE reads the host's full XSAVE size whatever the snapshot holds: pad with zeros
  // (an absent component is in its initial state). State beyond what this host takes would be
  // dropped silently: refuse it instead.
  const size_t size = host_xsave_bytes(host);
  if (saved.size() > size && std::any_of(saved.begin() + static_cast<std::ptrdiff_t>(size), saved.end(),
                                         [](uint8_t b) { return b != 0; }))
    return make_error(ErrorCode::kUnsupported,
                      "vCPU {}: the snapshot's XSAVE area holds {} bytes of state; this host's KVM takes {} "
                      "(a CPU feature such as AMX tiles is missing or not enabled here)",
                      vcpu.id(), saved.size(), size);
  std::vector<uint8_t> buf(std::max(size, saved.size()), 0);
  std::copy(saved.begin(), saved.end(), buf.begin());
  if (::ioctl(vcpu.fd(), kvm_abi::kSetXsave, buf.data()) != 0) return sys_error("KVM_SET_XSAVE");
  return Ok();
}

// Every MSR the host lists (plus the paravirtual ones) that KVM_GET_MSRS returns for this vCPU.
// KVM_GET_MSRS stops at the first MSR it cannot read and returns how many it read: that one is
// skipped and the rest asked for again.
Result<std::vector<kvm_msr_entry>> get_all_msrs(const KvmVcpu& vcpu, const KvmSystem& sys) {
  std::vector<uint32_t> wanted;
  std::unordered_set<uint32_t> seen;
  auto want = [&](uint32_t index) {
    if (saved_msr(index) && seen.insert(index).second) wanted.push_back(index);
  };
  for (uint32_t index : TRY(sys.msr_index_list())) want(index);
  for (KvmMsr m : kParavirtMsrs) want(static_cast<uint32_t>(m));

  std::vector<kvm_msr_entry> out;
  size_t next = 0;
  while (next < wanted.size()) {
    const size_t n = std::min(kMsrBatch, wanted.size() - next);
    const std::vector<uint32_t> batch(wanted.begin() + static_cast<std::ptrdiff_t>(next),
                                      wanted.begin() + static_cast<std::ptrdiff_t>(next + n));
    const auto got = TRY(vcpu.get_msrs(batch));
    out.insert(out.end(), got.begin(), got.end());
    next += got.size();
    if (got.size() < batch.size()) ++next;  // wanted[next] is one this vCPU does not have
  }
  if (out.size() > VcpuState::kMaxMsrs)
    return make_error(ErrorCode::kUnsupported,
                      "vCPU {}: the host reports {} MSRs; a snapshot holds at most {}", vcpu.id(), out.size(),
                      VcpuState::kMaxMsrs);
  sort_msrs_for_restore(out);
  return out;
}

Result<void> set_all_msrs(const KvmVcpu& vcpu, std::vector<kvm_msr_entry> msrs) {
  sort_msrs_for_restore(msrs);
  for (size_t i = 0; i < msrs.size(); i += kMsrBatch) {
    const auto first = msrs.begin() + static_cast<std::ptrdiff_t>(i);
    const std::vector<kvm_msr_entry> batch(
        first, first + static_cast<std::ptrdiff_t>(std::min(kMsrBatch, msrs.size() - i)));
    RETURN_IF_ERROR(vcpu.set_msrs(batch));
  }
  return Ok();
}

Result<void> require(const KvmSystem& sys, long cap, const char* name, const char* what) {
  if (sys.check_extension(cap) <= 0)
    return make_error(ErrorCode::kUnsupported, "the snapshot holds {}, but this host's KVM lacks {}", what,
                      name);
  return Ok();
}

}  // namespace

Result<VcpuState> KvmVcpu::save_state() const {
  if (host_.system == nullptr)
    return make_error(ErrorCode::kInternal,
                      "vCPU {} was made without its KvmSystem; its state cannot be saved", id_);
  const KvmSystem& sys = *host_.system;
  VcpuState s;
  s.vcpu_id = id_;
  // MP state first: reading it makes KVM act on a pending INIT or SIPI, which changes the
  // registers read after it.
  s.mp_state = TRY(get_mp_state());
  s.cpuid = TRY(get_cpuid());
  s.regs = TRY(get_regs());
  s.sregs = TRY(get_sregs());
  if (sys.check_extension(KVM_CAP_SREGS2) > 0) s.sregs2 = TRY(get_sregs2());
  if (sys.check_extension(KVM_CAP_XSAVE) > 0) {
    s.xsave = TRY(get_xsave(*this, host_));
  } else {
    s.fpu = TRY(get_fpu());
  }
  if (sys.check_extension(KVM_CAP_XCRS) > 0) s.xcrs = TRY(get_xcrs());
  s.lapic = TRY(get_lapic());
  s.msrs = TRY(get_all_msrs(*this, sys));
  if (sys.check_extension(KVM_CAP_VCPU_EVENTS) > 0) s.events = TRY(get_vcpu_events());
  if (sys.check_extension(KVM_CAP_DEBUGREGS) > 0) s.debugregs = TRY(get_debugregs());
  // Hosts whose TSC frequency KVM does not know answer an error: restore then cannot compare.
  auto khz = get_tsc_khz();
  s.tsc_khz = khz ? *khz : 0;
  return s;
}

Result<void> KvmVcpu::restore_state(const VcpuState& s) const {
  if (host_.system == nullptr)
    return make_error(ErrorCode::kInternal, "vCPU {} was made without its KvmSystem; it cannot be restored",
                      id_);
  if (s.vcpu_id != id_)
    return make_error(ErrorCode::kInvalidArgument, "the state of vCPU {} cannot be restored into vCPU {}",
                      s.vcpu_id, id_);
  const KvmSystem& sys = *host_.system;
  auto fail = [&](Error e) { return wrap(std::move(e), "restoring vCPU {}", id_); };
  auto check = [&](Result<void> r) -> Result<void> {
    if (!r) return fail(std::move(r).error());
    return Ok();
  };

  RETURN_IF_ERROR(check(set_cpuid(s.cpuid)));

  if (s.tsc_khz != 0) {
    auto here = get_tsc_khz();
    if (!here || *here != s.tsc_khz) {
      const std::string here_text = here ? fmt::format("{} kHz", *here) : std::string("an unknown frequency");
      if (sys.check_extension(KVM_CAP_TSC_CONTROL) <= 0)
        return fail(
            make_error(ErrorCode::kUnsupported,
                       "the snapshot's guest TSC runs at {} kHz, this host's at {}, and this host's KVM "
                       "cannot scale it (no KVM_CAP_TSC_CONTROL): restore on a host with the same TSC "
                       "frequency",
                       s.tsc_khz, here_text));
      auto r = set_tsc_khz(s.tsc_khz);
      if (!r)
        return fail(wrap(std::move(r).error(), "the snapshot's guest TSC runs at {} kHz, this host's at {}",
                         s.tsc_khz, here_text));
    }
  }

  if (s.sregs2 && sys.check_extension(KVM_CAP_SREGS2) > 0) {
    RETURN_IF_ERROR(check(set_sregs2(*s.sregs2)));
  } else {
    RETURN_IF_ERROR(check(set_sregs(s.sregs)));
  }
  RETURN_IF_ERROR(check(set_regs(s.regs)));
  if (!s.xsave.empty()) {
    RETURN_IF_ERROR(check(require(sys, KVM_CAP_XSAVE, "KVM_CAP_XSAVE", "an XSAVE area")));
    RETURN_IF_ERROR(check(set_xsave(*this, host_, s.xsave)));
  } else if (s.fpu) {
    RETURN_IF_ERROR(check(set_fpu(*s.fpu)));
  }
  if (s.xcrs) {
    RETURN_IF_ERROR(check(require(sys, KVM_CAP_XCRS, "KVM_CAP_XCRS", "extended control registers")));
    RETURN_IF_ERROR(check(set_xcrs(*s.xcrs)));
  }
  RETURN_IF_ERROR(check(set_lapic(s.lapic)));
  RETURN_IF_ERROR(check(set_all_msrs(*this, s.msrs)));
  if (s.debugregs) {
    RETURN_IF_ERROR(check(require(sys, KVM_CAP_DEBUGREGS, "KVM_CAP_DEBUGREGS", "debug registers")));
    RETURN_IF_ERROR(check(set_debugregs(*s.debugregs)));
  }
  if (s.events) {
    RETURN_IF_ERROR(check(require(sys, KVM_CAP_VCPU_EVENTS, "KVM_CAP_VCPU_EVENTS", "vCPU events")));
    kvm_vcpu_events ev = *s.events;
    // KVM_GET_VCPU_EVENTS does not mark the pending NMI and SIPI vector valid; they are part of
    // the state, so restore them. The payload and triple-fault flags need a capability this VM
    // may not have enabled; with nothing under them they say nothing: drop them. (Not when an
    // exception is pending: without the payload flag KVM would discard it.)
    ev.flags |= KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR;
    if (ev.exception_has_payload == 0 && ev.exception.pending == 0)
      ev.flags &= ~static_cast<uint32_t>(KVM_VCPUEVENT_VALID_PAYLOAD);
    if (ev.triple_fault.pending == 0) ev.flags &= ~static_cast<uint32_t>(KVM_VCPUEVENT_VALID_TRIPLE_FAULT);
    RETURN_IF_ERROR(check(set_vcpu_events(ev)));
  }
  RETURN_IF_ERROR(check(set_mp_state(s.mp_state)));
  return Ok();
}

}  // namespace ringvm
