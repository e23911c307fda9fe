#include "kvm/vcpu.h"
#include "kvm/kvm_abi.h"

#include <sys/ioctl.h>

#include <algorithm>
#include <cstring>
#include <memory>

namespace ringvm {

namespace {
template <typename T>
Result<T> get(int fd, unsigned long req, const char* what) {
  T v{};
  if (::ioctl(fd, req, &v) != 0) return sys_error(what);
  return v;
}
template <typename T>
Result<void> set(int fd, unsigned long req, const T& v, const char* what) {
  if (::ioctl(fd, req, &v) != 0) return sys_error(what);
  return Ok();
}
}  // namespace

const char* kvm_exit_reason_name(uint32_t reason) {
  switch (reason) {
    case KVM_EXIT_UNKNOWN: return "unknown";
    case KVM_EXIT_EXCEPTION: return "exception";
    case KVM_EXIT_IO: return "io";
    case KVM_EXIT_HYPERCALL: return "hypercall";
    case KVM_EXIT_DEBUG: return "debug";
    case KVM_EXIT_HLT: return "hlt";
    case KVM_EXIT_MMIO: return "mmio";
    case KVM_EXIT_IRQ_WINDOW_OPEN: return "irq_window_open";
    case KVM_EXIT_SHUTDOWN: return "shutdown";
    case KVM_EXIT_FAIL_ENTRY: return "fail_entry";
    case KVM_EXIT_INTR: return "intr";
    case KVM_EXIT_SET_TPR: return "set_tpr";
    case KVM_EXIT_TPR_ACCESS: return "tpr_access";
    case KVM_EXIT_NMI: return "nmi";
    case KVM_EXIT_INTERNAL_ERROR: return "internal_error";
    case KVM_EXIT_SYSTEM_EVENT: return "system_event";
    case KVM_EXIT_IOAPIC_EOI: return "ioapic_eoi";
    case KVM_EXIT_HYPERV: return "hyperv";
    case KVM_EXIT_X86_RDMSR: return "x86_rdmsr";
    case KVM_EXIT_X86_WRMSR: return "x86_wrmsr";
    default: return "other";
  }
}

Result<kvm_regs> KvmVcpu::get_regs() const { return get<kvm_regs>(fd(), KVM_GET_REGS, "KVM_GET_REGS"); }
Result<void> KvmVcpu::set_regs(const kvm_regs& r) const { return set(fd(), KVM_SET_REGS, r, "KVM_SET_REGS"); }
Result<kvm_sregs> KvmVcpu::get_sregs() const { return get<kvm_sregs>(fd(), KVM_GET_SREGS, "KVM_GET_SREGS"); }
Result<void> KvmVcpu::set_sregs(const kvm_sregs& s) const { return set(fd(), KVM_SET_SREGS, s, "KVM_SET_SREGS"); }
Result<kvm_fpu> KvmVcpu::get_fpu() const { return get<kvm_fpu>(fd(), KVM_GET_FPU, "KVM_GET_FPU"); }
Result<void> KvmVcpu::set_fpu(const kvm_fpu& f) const { return set(fd(), KVM_SET_FPU, f, "KVM_SET_FPU"); }
Result<kvm_lapic_state> KvmVcpu::get_lapic() const {
  return get<kvm_lapic_state>(fd(), KVM_GET_LAPIC, "KVM_GET_LAPIC");
}
Result<void> KvmVcpu::set_lapic(const kvm_lapic_state& l) const { return set(fd(), KVM_SET_LAPIC, l, "KVM_SET_LAPIC"); }
Result<kvm_mp_state> KvmVcpu::get_mp_state() const {
  return get<kvm_mp_state>(fd(), KVM_GET_MP_STATE, "KVM_GET_MP_STATE");
}
Result<void> KvmVcpu::enter_real_mode(uint64_t rip, uint64_t rax) const {
  kvm_sregs s = TRY(get_sregs());
  s.cs.base = 0;
  s.cs.selector = 0;
  TRY(set_sregs(s));
  kvm_regs r{};
  r.rip = rip;
  r.rax = rax;
  r.rflags = 0x2;  // bit 1 is reserved and must be set
  return set_regs(r);
}

Result<void> KvmVcpu::set_mp_state(const kvm_mp_state& s) const {
  return set(fd(), KVM_SET_MP_STATE, s, "KVM_SET_MP_STATE");
}

Result<kvm_vcpu_events> KvmVcpu::get_vcpu_events() const {
  return get<kvm_vcpu_events>(fd(), KVM_GET_VCPU_EVENTS, "KVM_GET_VCPU_EVENTS");
}
Result<void> KvmVcpu::set_vcpu_events(const kvm_vcpu_events& e) const {
  return set(fd(), KVM_SET_VCPU_EVENTS, e, "KVM_SET_VCPU_EVENTS");
}
Result<kvm_debugregs> KvmVcpu::get_debugregs() const {
  return get<kvm_debugregs>(fd(), KVM_GET_DEBUGREGS, "KVM_GET_DEBUGREGS");
}
Result<void> KvmVcpu::set_debugregs(const kvm_debugregs& d) const {
  return set(fd(), KVM_SET_DEBUGREGS, d, "KVM_SET_DEBUGREGS");
}
Result<kvm_xcrs> KvmVcpu::get_xcrs() const { return get<kvm_xcrs>(fd(), KVM_GET_XCRS, "KVM_GET_XCRS"); }
Result<void> KvmVcpu::set_xcrs(const kvm_xcrs& x) const { return set(fd(), KVM_SET_XCRS, x, "KVM_SET_XCRS"); }
Result<kvm_sregs2> KvmVcpu::get_sregs2() const {
  return get<kvm_sregs2>(fd(), KVM_GET_SREGS2, "KVM_GET_SREGS2");
}
Result<void> KvmVcpu::set_sregs2(const kvm_sregs2& s) const {
  return set(fd(), KVM_SET_SREGS2, s, "KVM_SET_SREGS2");
}

Result<uint32_t> KvmVcpu::get_tsc_khz() const {
  const int khz = ::ioctl(fd(), KVM_GET_TSC_KHZ, 0);
  if (khz < 0) return sys_error("KVM_GET_TSC_KHZ");
  return static_cast<uint32_t>(khz);
}

Result<void> KvmVcpu::set_tsc_khz(uint32_t khz) const {
  if (::ioctl(fd(), KVM_SET_TSC_KHZ, static_cast<unsigned long>(khz)) != 0)
    return sys_error(fmt::format("KVM_SET_TSC_KHZ {} kHz on vCPU {}", khz, id_));
  return Ok();
}

Result<void> KvmVcpu::kvmclock_ctrl() const {
  // SAFETY: KVM_KVMCLOCK_CTRL takes no argument.
  if (::ioctl(fd(), KVM_KVMCLOCK_CTRL, 0) != 0 && errno != EINVAL)
    return sys_error(fmt::format("KVM_KVMCLOCK_CTRL on vCPU {}", id_));
  return Ok();
}

Result<std::vector<kvm_cpuid_entry2>> KvmVcpu::get_cpuid() const {
  // KVM answers E2BIG (and the count it has) when the buffer is too small; KVM_MAX_CPUID_ENTRIES
  // is 256 today, so the second try fits unless the kernel grew.
  for (uint32_t n = 64; n <= 4096; n *= 2) {
    std::vector<kvm_cpuid_entry2> entries(n);
    auto buf = kvm_abi::with_header(kvm_abi::Cpuid2Header{n, 0}, entries);
    if (::ioctl(fd(), kvm_abi::kGetCpuid2, buf.data()) == 0) {
      kvm_abi::Cpuid2Header out{};
      std::memcpy(&out, buf.data(), sizeof out);
      entries.resize(std::min(out.nent, n));
      std::memcpy(entries.data(), buf.data() + sizeof out, entries.size() * sizeof(kvm_cpuid_entry2));
      return entries;
    }
    if (errno != E2BIG) return sys_error(fmt::format("KVM_GET_CPUID2 on vCPU {}", id_));
  }
  return make_error(ErrorCode::kUnsupported, "KVM_GET_CPUID2 on vCPU {}: more than 4096 entries", id_);
}

Result<void> KvmVcpu::set_cpuid(const std::vector<kvm_cpuid_entry2>& entries) const {
  auto buf = kvm_abi::with_header(kvm_abi::Cpuid2Header{static_cast<uint32_t>(entries.size()), 0}, entries);
  if (::ioctl(fd(), kvm_abi::kSetCpuid2, buf.data()) != 0) return sys_error("KVM_SET_CPUID2");
  return Ok();
}

Result<void> KvmVcpu::set_msrs(const std::vector<kvm_msr_entry>& msrs) const {
  auto buf = kvm_abi::with_header(kvm_abi::MsrsHeader{static_cast<uint32_t>(msrs.size()), 0}, msrs);
  const int n = ::ioctl(fd(), kvm_abi::kSetMsrs, buf.data());
  if (n < 0) return sys_error("KVM_SET_MSRS");
  if (static_cast<size_t>(n) < msrs.size())
    return make_error(ErrorCode::kUnsupported, "KVM_SET_MSRS: the host refused MSR {:#x}",
                      msrs[static_cast<size_t>(n)].index);
  return Ok();
}

Result<std::vector<kvm_msr_entry>> KvmVcpu::get_msrs(const std::vector<uint32_t>& indices) const {
  std::vector<kvm_msr_entry> entries;
  for (uint32_t i : indices) entries.push_back(kvm_msr_entry{i, 0, 0});
  auto buf = kvm_abi::with_header(kvm_abi::MsrsHeader{static_cast<uint32_t>(entries.size()), 0}, entries);
  const int n = ::ioctl(fd(), kvm_abi::kGetMsrs, buf.data());
  if (n < 0) return sys_error("KVM_GET_MSRS");
  std::memcpy(entries.data(), buf.data() + sizeof(kvm_abi::MsrsHeader), entries.size() * sizeof(kvm_msr_entry));
  entries.resize(std::min(entries.size(), static_cast<size_t>(n)));
  return entries;
}

Result<VcpuExit> KvmVcpu::run(ExitHandler& exits, ExitCounters* counters) {
  kvm_run* r = run_area();
  const size_t run_size = run_.size();
  for (;;) {
    if (::ioctl(fd(), KVM_RUN, 0) != 0) {
      if (errno == EINTR || errno == EAGAIN) {
        r->immediate_exit = 0;
        return VcpuExit{VcpuExitKind::kKicked, KVM_EXIT_INTR, 0, 0};
      }
      return sys_error(fmt::format("KVM_RUN on vCPU {}", id_));
    }
    const uint32_t reason = r->exit_reason;
    if (counters != nullptr && reason < ExitCounters::kReasons)
      counters->by_reason[reason].fetch_add(1, std::memory_order_relaxed);
    switch (reason) {
      case KVM_EXIT_IO: {
        const uint64_t size = r->io.size;
        const uint64_t count = r->io.count;
        const uint64_t off = r->io.data_offset;
        // The kernel fills these, but a bad offset would let us touch memory past the mapping.
        if (size == 0 || size > 8 || off > run_size || count * size > run_size - off)
          return make_error(ErrorCode::kInternal, "vCPU {}: KVM_EXIT_IO with bad layout", id_);
        uint8_t* data = run_.data() + off;
        for (uint64_t i = 0; i < count; ++i) {
          std::span<uint8_t> d(data + i * size, size);
          bool claimed = r->io.direction == KVM_EXIT_IO_OUT ? exits.pio_write(r->io.port, d)
                                                            : exits.pio_read(r->io.port, d);
          if (!claimed && counters != nullptr) counters->pio_unclaimed.fetch_add(1, std::memory_order_relaxed);
        }
        break;
      }
      case KVM_EXIT_MMIO: {
        const uint32_t len = std::min<uint32_t>(r->mmio.len, 8);
        std::span<uint8_t> d(r->mmio.data, len);
        bool claimed =
            r->mmio.is_write ? exits.mmio_write(r->mmio.phys_addr, d) : exits.mmio_read(r->mmio.phys_addr, d);
        if (!claimed && counters != nullptr) counters->mmio_unclaimed.fetch_add(1, std::memory_order_relaxed);
        break;
      }
      case KVM_EXIT_HLT: return VcpuExit{VcpuExitKind::kHalt, reason, 0, 0};
      case KVM_EXIT_SHUTDOWN: return VcpuExit{VcpuExitKind::kShutdown, reason, 0, 0};
      case KVM_EXIT_SYSTEM_EVENT:
        return VcpuExit{VcpuExitKind::kSystemEvent, reason, r->system_event.type, 0};
      case KVM_EXIT_INTR: r->immediate_exit = 0; return VcpuExit{VcpuExitKind::kKicked, reason, 0, 0};
      case KVM_EXIT_FAIL_ENTRY:
        return VcpuExit{VcpuExitKind::kFailEntry, reason, 0, r->fail_entry.hardware_entry_failure_reason};
      case KVM_EXIT_INTERNAL_ERROR:
        return VcpuExit{VcpuExitKind::kInternalError, reason, 0, r->internal.suberror};
      case KVM_EXIT_IRQ_WINDOW_OPEN:
      case KVM_EXIT_IOAPIC_EOI:
        break;
      default: return VcpuExit{VcpuExitKind::kOther, reason, 0, 0};
    }
  }
}

std::string KvmVcpu::dump_state() const {
  std::string out = fmt::format("vCPU {} state:\n", id_);
  auto regs = get_regs();
  if (regs) {
    const auto& g = *regs;
    out += fmt::format(
        "  rip={:016x} rsp={:016x} rflags={:016x}\n"
        "  rax={:016x} rbx={:016x} rcx={:016x} rdx={:016x}\n"
        "  rsi={:016x} rdi={:016x} rbp={:016x}\n"
        "  r8 ={:016x} r9 ={:016x} r10={:016x} r11={:016x}\n"
        "  r12={:016x} r13={:016x} r14={:016x} r15={:016x}\n",
        g.rip, g.rsp, g.rflags, g.rax, g.rbx, g.rcx, g.rdx, g.rsi, g.rdi, g.rbp, g.r8, g.r9, g.r10, g.r11,
        g.r12, g.r13, g.r14, g.r15);
  } else {
    out += "  registers unavailable: " + regs.error().message() + "\n";
  }
  auto sregs = get_sregs();
  if (sregs) {
    const auto& s = *sregs;
    out += fmt::format("  cr0={:016x} cr2={:016x} cr3={:016x} cr4={:016x} efer={:016x}\n", s.cr0, s.cr2, s.cr3,
                       s.cr4, s.efer);
    out += fmt::format("  cs={:04x} base={:x} limit={:x} l={} db={}  ss={:04x} ds={:04x}\n", s.cs.selector,
                       s.cs.base, s.cs.limit, s.cs.l, s.cs.db, s.ss.selector, s.ds.selector);
    out += fmt::format("  gdt={:x}/{:x} idt={:x}/{:x}\n", s.gdt.base, s.gdt.limit, s.idt.base, s.idt.limit);
    // On AMD hosts KVM reinitialises the VMCB after a shutdown (triple fault) intercept, so what
    // it reports is the reset vector, not the state that faulted. Say so rather than mislead.
    if (regs && regs->rip == 0xfff0 && s.cs.selector == 0xf000 && s.cs.base == 0xffff0000 && s.cr0 == 0x10) {
      out += "  (this is the reset state: KVM reinitialised the vCPU after the fault, as it does on AMD hosts;\n"
             "   the registers at the fault are lost; the guest's own console usually shows its last words)\n";
    }
  }
  return out;
}

}  // namespace ringvm
