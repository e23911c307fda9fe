#include "vmm/host_check.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <grp.h>
#include <linux/kvm.h>
#include <pwd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <future>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>

#include "base/unique_fd.h"
#include "devices/bus.h"
#include "devices/device.h"
#include "kvm/system.h"
#include "kvm/vcpu.h"
#include "kvm/vcpu_thread.h"
#include "kvm/vm.h"
#include "memory/guest_memory.h"
#include "vmm/bus_exit_handler.h"
#include "vmm/exit_probe.h"

namespace ringvm {

namespace {

std::string_view trim(std::string_view s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string_view::npos) return {};
  const auto e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

int to_int(std::string_view s, int fallback) {
  int v = 0;
  bool any = false;
  for (char ch : s) {
    if (ch < '0' || ch > '9') return fallback;
    if (v > 100'000'000) return fallback;  // hostile text: no overflow
    v = v * 10 + (ch - '0');
    any = true;
  }
  return any ? v : fallback;
}

std::optional<std::string> read_text(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::optional<bool> read_param(const std::filesystem::path& module_dir, const char* param) {
  auto text = read_text(module_dir / "parameters" / param);
  if (!text) return std::nullopt;
  return parse_module_bool(*text);
}

// The capabilities check reports, required ones first. Values from <linux/kvm.h>.
struct CapName {
  const char* name;
  long cap;
  bool required;
};
constexpr CapName kCaps[] = {
    {"KVM_CAP_USER_MEMORY", KVM_CAP_USER_MEMORY, true},        // guest RAM from our mappings
    {"KVM_CAP_EXT_CPUID", KVM_CAP_EXT_CPUID, true},            // KVM_GET_SUPPORTED_CPUID
    {"KVM_CAP_IRQCHIP", KVM_CAP_IRQCHIP, true},                // in-kernel PIC/IOAPIC/LAPIC
    {"KVM_CAP_IRQFD", KVM_CAP_IRQFD, true},                    // interrupts without vCPU exits
    {"KVM_CAP_IOEVENTFD", KVM_CAP_IOEVENTFD, true},            // queue notify without vCPU exits
    {"KVM_CAP_IMMEDIATE_EXIT", KVM_CAP_IMMEDIATE_EXIT, true},  // race-free vCPU kick
    {"KVM_CAP_SET_TSS_ADDR", KVM_CAP_SET_TSS_ADDR, false},
    {"KVM_CAP_PIT2", KVM_CAP_PIT2, false},
    {"KVM_CAP_SIGNAL_MSI", KVM_CAP_SIGNAL_MSI, false},
    {"KVM_CAP_IRQ_ROUTING", KVM_CAP_IRQ_ROUTING, false},
    {"KVM_CAP_NR_MEMSLOTS", KVM_CAP_NR_MEMSLOTS, false},
    {"KVM_CAP_TSC_DEADLINE_TIMER", KVM_CAP_TSC_DEADLINE_TIMER, false},
};

std::string user_name(uid_t uid) {
  std::vector<char> buf(16384);
  passwd pw{};
  passwd* out = nullptr;
  if (getpwuid_r(uid, &pw, buf.data(), buf.size(), &out) == 0 && out != nullptr) return out->pw_name;
  return std::to_string(uid);
}

std::string group_name(gid_t gid) {
  std::vector<char> buf(16384);
  group gr{};
  group* out = nullptr;
  if (getgrgid_r(gid, &gr, buf.data(), buf.size(), &out) == 0 && out != nullptr) return out->gr_name;
  return std::to_string(gid);
}

bool process_in_group(gid_t gid) {
  if (getegid() == gid) return true;
  const int n = getgroups(0, nullptr);
  if (n <= 0) return false;
  std::vector<gid_t> groups(static_cast<size_t>(n));
  const int got = getgroups(n, groups.data());
  return got > 0 && std::find(groups.begin(), groups.begin() + got, gid) != groups.begin() + got;
}

// Port 0x80 (the POST-code port): records what the probe guest writes there.
class ProbePort final : public Device {
 public:
  std::string_view name() const override { return "check-probe-port"; }
  void read(uint64_t, std::span<uint8_t> data) override {
    std::fill(data.begin(), data.end(), uint8_t{0xff});
    std::lock_guard lock(mu_);
    events_.push_back("io in port 0x80");
  }
  void write(uint64_t, std::span<const uint8_t> data) override {
    std::lock_guard lock(mu_);
    writes_.insert(writes_.end(), data.begin(), data.end());
    events_.push_back(fmt::format("io out port 0x80 value {:#04x}", data.empty() ? 0 : data[0]));
  }
  std::vector<uint8_t> writes() const {
    std::lock_guard lock(mu_);
    return writes_;
  }
  std::vector<std::string> events() const {
    std::lock_guard lock(mu_);
    return events_;
  }

 private:
  mutable std::mutex mu_;
  std::vector<uint8_t> writes_;
  std::vector<std::string> events_;
};

const char* const kProbeGuestDescription = "real mode at 0x1000: out %al, $0x80 (AL = 0x5a); hlt";
constexpr uint8_t kProbeValue = 0x5a;

// Why there is no /dev/kvm, and what to do about it.
std::string no_kvm_reason(const CpuInfo& cpu) {
  if (cpu.vmx || cpu.svm) {
    const char* module = cpu.vmx ? "kvm_intel" : "kvm_amd";
    return fmt::format(
        "the CPU has {} but no KVM module is loaded: run `sudo modprobe {}` (if it says \"disabled by "
        "bios\", enable {} in the firmware setup)",
        cpu.vmx ? "VT-x (vmx)" : "AMD-V (svm)", module, cpu.vmx ? "Intel VT-x" : "AMD SVM");
  }
  if (cpu.hypervisor)
    return "this host is itself a virtual machine and its hypervisor exposes neither VT-x (vmx) nor "
           "AMD-V (svm): enable nested virtualization for this VM (e.g. `-cpu host` and nested=1 on its "
           "host), or boot a host kernel with the PVM backend (kvm_pvm)";
  return "the CPU reports neither VT-x (vmx) nor AMD-V (svm): enable virtualization in the firmware "
         "setup, or use a machine whose CPU has it";
}

}  // namespace

CpuInfo parse_cpuinfo(std::string_view text) {
  CpuInfo cpu;
  bool first_done = false;  // fields are taken from the first processor only
  std::set<std::string> physical_ids;
  int cores_per_package = 0;
  std::string_view flags;
  while (!text.empty()) {
    const auto nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    const auto colon = line.find(':');
    if (colon == std::string_view::npos) {
      if (trim(line).empty() && cpu.logical_cpus > 0) first_done = true;
      continue;
    }
    const auto key = trim(line.substr(0, colon));
    const auto value = trim(line.substr(colon + 1));
    if (key == "processor") {
      ++cpu.logical_cpus;
      if (cpu.logical_cpus > 1) first_done = true;
    } else if (key == "physical id") {
      physical_ids.emplace(value);
    } else if (first_done) {
      continue;
    } else if (key == "vendor_id") {
      cpu.vendor = value;
    } else if (key == "model name") {
      cpu.model_name = value;
    } else if (key == "cpu family") {
      cpu.family = to_int(value, -1);
    } else if (key == "model") {
      cpu.model = to_int(value, -1);
    } else if (key == "cpu cores") {
      cores_per_package = to_int(value, 0);
    } else if (key == "flags") {
      flags = value;
    }
  }
  std::istringstream words{std::string(flags)};
  for (std::string f; words >> f;) {
    if (f == "lm")
      cpu.long_mode = true;
    else if (f == "nx")
      cpu.nx = true;
    else if (f == "vmx")
      cpu.vmx = true;
    else if (f == "svm")
      cpu.svm = true;
    else if (f == "hypervisor")
      cpu.hypervisor = true;
  }
  cpu.cores = cores_per_package > 0
                  ? cores_per_package * std::max<int>(1, static_cast<int>(physical_ids.size()))
                  : cpu.logical_cpus;
  return cpu;
}

const char* backend_module_name(KvmBackend backend) {
  switch (backend) {
    case KvmBackend::kIntel: return "kvm_intel";
    case KvmBackend::kAmd: return "kvm_amd";
    case KvmBackend::kPvm: return "kvm_pvm";
    case KvmBackend::kUnknown: break;
  }
  return "unknown";
}

std::optional<bool> parse_module_bool(std::string_view text) {
  const auto v = trim(text);
  if (v == "Y" || v == "y" || v == "1") return true;
  if (v == "N" || v == "n" || v == "0") return false;
  return std::nullopt;
}

KvmModuleInfo read_kvm_modules(const std::filesystem::path& sysfs_root) {
  KvmModuleInfo info;
  const auto modules = sysfs_root / "module";
  std::error_code ec;
  for (auto backend : {KvmBackend::kPvm, KvmBackend::kIntel, KvmBackend::kAmd}) {
    const char* name = backend_module_name(backend);
    if (!std::filesystem::is_directory(modules / name, ec)) continue;
    info.loaded.emplace_back(name);
    // Only one vendor module can own /dev/kvm; if several show up, claim the least (PVM).
    if (info.backend == KvmBackend::kUnknown) info.backend = backend;
  }
  const auto dir = modules / backend_module_name(info.backend);
  if (info.backend == KvmBackend::kIntel) {
    info.nested = read_param(dir, "nested");
    info.ept = read_param(dir, "ept");
    info.unrestricted_guest = read_param(dir, "unrestricted_guest");
  } else if (info.backend == KvmBackend::kAmd) {
    info.nested = read_param(dir, "nested");
    info.npt = read_param(dir, "npt");
  }
  return info;
}

std::string mode_string(bool char_device, uint32_t mode) {
  std::string s = char_device ? "c" : "-";
  const char* rwx = "rwx";
  for (int shift = 6; shift >= 0; shift -= 3)
    for (int bit = 0; bit < 3; ++bit) s += (mode >> (shift + 2 - bit)) & 1 ? rwx[bit] : '-';
  return s;
}

const std::vector<std::string>& required_capabilities() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (const auto& c : kCaps)
      if (c.required) v.emplace_back(c.name);
    return v;
  }();
  return names;
}

int verdict_exit_status(Verdict v) {
  switch (v) {
    case Verdict::kHardware: return 0;
    case Verdict::kPvmOnly: return 10;
    case Verdict::kNoKvm: return 11;
    case Verdict::kUnusable: return 12;
  }
  return 12;
}

const char* verdict_id(Verdict v) {
  switch (v) {
    case Verdict::kHardware: return "hardware";
    case Verdict::kPvmOnly: return "pvm-only";
    case Verdict::kNoKvm: return "no-kvm";
    case Verdict::kUnusable: return "unusable";
  }
  return "unusable";
}

void decide(HostReport& r) {
  r.problems.clear();
  r.notes.clear();
  const auto& d = r.device;
  const auto& m = r.modules;
  const std::string node =
      fmt::format("{} ({} {}:{})", d.path, mode_string(d.char_device, d.mode), d.owner, d.group);
  auto unusable = [&r](std::string problem) {
    r.verdict = Verdict::kUnusable;
    r.verdict_text = "KVM present but unusable: " + problem;
    r.problems.push_back(std::move(problem));
  };

  if (!d.exists || !d.char_device || (!d.opened && (d.open_errno == ENXIO || d.open_errno == ENODEV))) {
    const std::string what = !d.exists        ? fmt::format("{} does not exist", d.path)
                             : !d.char_device ? fmt::format("{} is not a character device", d.path)
                                              : fmt::format("{} has no KVM driver behind it", d.path);
    r.verdict = Verdict::kNoKvm;
    r.problems.push_back(fmt::format("{}: {}", what, no_kvm_reason(r.cpu)));
    r.verdict_text = "no KVM: " + r.problems.back();
    return;
  }
  if (!d.opened) {
    if (d.open_errno == EACCES || d.open_errno == EPERM) {
      if (d.user_in_group)
        return unusable(fmt::format(
            "cannot open {}: this user was added to group {} after logging in: log out and in again "
            "(or run `newgrp {}`)",
            node, d.group, d.group));
      return unusable(fmt::format(
          "cannot open {}: add this user to group {} (`sudo usermod -aG {} $USER`, then log in again); "
          "do not make {} world-writable",
          node, d.group, d.group, d.path));
    }
    return unusable(fmt::format("cannot open {}: {}", node, std::strerror(d.open_errno)));
  }
  if (d.api_version < 0)
    return unusable(
        fmt::format("{} does not answer KVM_GET_API_VERSION: it is not a KVM device; pass "
                    "the KVM device with --dev",
                    d.path));
  if (d.api_version != KVM_API_VERSION)
    return unusable(
        fmt::format("{} speaks KVM API version {}, ringvm needs {}: run a Linux kernel with "
                    "the stable KVM API (2.6.22 or later)",
                    d.path, d.api_version, KVM_API_VERSION));
  for (const auto& cap : required_capabilities()) {
    auto it = d.capabilities.find(cap);
    if (it == d.capabilities.end() || it->second <= 0)
      return unusable(
          fmt::format("the KVM behind {} lacks {}, which ringvm needs: run a newer host kernel "
                      "(Linux 4.11 or later has every capability ringvm uses)",
                      d.path, cap));
  }
  if (!r.probe || !r.probe->ok)
    return unusable(fmt::format("{} opened, but running a one-instruction guest failed: {}", d.path,
                                r.probe ? r.probe->error : std::string("the probe did not run")));

  const auto& p = *r.probe;
  switch (m.backend) {
    case KvmBackend::kPvm:
      r.verdict = Verdict::kPvmOnly;
      r.verdict_text = "only PVM-enabled guest kernels (PVM backend)";
      r.notes.push_back(fmt::format(
          "kvm_pvm serves {}: it runs guests in hardware ring 3 with shadow paging. A guest kernel built "
          "for PVM boots; an unmodified kernel does not (its code runs only under KVM's instruction "
          "emulator, about 2 million instructions per second).",
          d.path));
      r.notes.push_back(fmt::format(
          "The probe guest (not a PVM guest) still ran and halted in {} us: tiny test guests work, "
          "operating systems do not.",
          p.microseconds));
      r.notes.push_back(
          "For unmodified guests use a host with VT-x/AMD-V: bare metal, or a VM with nested "
          "virtualization enabled (kvm_intel/kvm_amd nested=1 on its host).");
      return;
    case KvmBackend::kIntel:
    case KvmBackend::kAmd: break;
    case KvmBackend::kUnknown:
      if (!r.cpu.vmx && !r.cpu.svm)
        return unusable(fmt::format(
            "cannot tell what serves {}: no kvm_intel, kvm_amd or kvm_pvm under the sysfs module directory "
            "and the CPU reports neither vmx nor svm; mount sysfs or pass --sysfs-root",
            d.path));
      r.notes.push_back(
          "no kvm_intel or kvm_amd under the sysfs module directory (built into the kernel?); "
          "the CPU reports VT-x/AMD-V and the probe guest ran");
      break;
  }
  r.verdict = Verdict::kHardware;
  r.verdict_text = "unmodified guests with hardware acceleration";
  if (m.ept == false)
    r.notes.push_back(
        "kvm_intel ept=N: guest memory goes through shadow page tables, which is slow; reload "
        "kvm_intel with ept=1");
  if (m.unrestricted_guest == false)
    r.notes.push_back(
        "kvm_intel unrestricted_guest=N: real-mode boot code is emulated; reload kvm_intel with "
        "unrestricted_guest=1 (needs ept=1)");
  if (m.npt == false)
    r.notes.push_back(
        "kvm_amd npt=0: guest memory goes through shadow page tables, which is slow; reload "
        "kvm_amd with npt=1");
  if (r.cpu.hypervisor)
    r.notes.push_back(
        "this host is itself a VM (nested virtualization): every VM exit costs far more than on "
        "bare metal");
}

KvmDevice probe_device(const std::string& path) {
  KvmDevice d;
  d.path = path;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    d.open_errno = errno;
    return d;
  }
  d.exists = true;
  d.char_device = S_ISCHR(st.st_mode);
  d.mode = st.st_mode & 07777;
  d.owner = user_name(st.st_uid);
  d.group = group_name(st.st_gid);
  d.user_in_group = process_in_group(st.st_gid);
  if (!d.char_device) return d;
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd) {
    d.open_errno = errno;
    return d;
  }
  d.opened = true;
  d.api_version = ::ioctl(fd.get(), KVM_GET_API_VERSION, 0);
  if (d.api_version != KVM_API_VERSION) return d;
  for (const auto& c : kCaps)
    d.capabilities[c.name] = std::max(0, ::ioctl(fd.get(), KVM_CHECK_EXTENSION, c.cap));
  d.recommended_vcpus = std::max(0, ::ioctl(fd.get(), KVM_CHECK_EXTENSION, KVM_CAP_NR_VCPUS));
  d.max_vcpus = std::max(0, ::ioctl(fd.get(), KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS));
  return d;
}

ProbeResult run_probe_guest(const std::string& path) {
  using namespace std::chrono_literals;
  ProbeResult p;
  auto fail = [&p](std::string_view step, const Error& e) {
    p.error = fmt::format("{}: {}", step, e.message());
    return p;
  };
  auto sys = KvmSystem::open(path);
  if (!sys) return fail("open", sys.error());
  auto vm = sys->create_vm();
  if (!vm) return fail("create the VM", vm.error());
  // Intel without unrestricted guest needs a TSS for real mode; PVM and AMD ignore it.
  (void)vm->set_tss_addr(0xfffb'd000);
  GuestMemory mem;
  if (auto r = mem.add_region(0, 0x10000); !r) return fail("allocate guest memory", r.error());
  const uint8_t code[] = {0xe6, 0x80, 0xf4};  // out %al, $0x80; hlt
  if (auto r = mem.write(0x1000, code); !r) return fail("load the guest", r.error());
  if (auto r = vm->map_memory(mem); !r) return fail("map guest memory", r.error());
  auto vcpu = vm->create_vcpu(0);
  if (!vcpu) return fail("create a vCPU", vcpu.error());
  if (auto r = vcpu->enter_real_mode(0x1000, kProbeValue); !r) return fail("set up real mode", r.error());

  Bus pio("check-pio"), mmio("check-mmio");
  auto port = std::make_shared<ProbePort>();
  if (auto r = pio.insert(0x80, 1, port); !r) return fail("insert the probe port", r.error());
  BusExitHandler exits(pio, mmio);
  ExitCounters counters;
  std::promise<Result<VcpuExit>> done;
  auto fut = done.get_future();
  VcpuThread thread;
  const auto start = std::chrono::steady_clock::now();
  p.ran = true;
  thread.start(&*vcpu, [&] { done.set_value(vcpu->run(exits, &counters)); });
  bool stuck = false;
  if (fut.wait_for(5s) != std::future_status::ready) {
    stuck = true;
    while (fut.wait_for(100ms) != std::future_status::ready) thread.kick();
  }
  thread.join();
  p.microseconds = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start)
          .count());
  auto exit = fut.get();
  p.exits = port->events();
  if (!exit) return fail("KVM_RUN", exit.error());
  p.exits.emplace_back(kvm_exit_reason_name(exit->raw_reason));
  if (stuck) {
    p.error = fmt::format("the guest ({}) did not halt within 5 s", kProbeGuestDescription);
    return p;
  }
  const auto writes = port->writes();
  if (exit->kind != VcpuExitKind::kHalt || writes != std::vector<uint8_t>{kProbeValue}) {
    p.error = fmt::format("the guest ({}) should write {:#04x} to port 0x80 and halt; it did: {}",
                          kProbeGuestDescription, kProbeValue, fmt::join(p.exits, ", "));
    return p;
  }
  p.ok = true;
  if (auto cost = measure_exit_cost(*sys); cost.ok()) p.exit_round_trip_ns = cost->round_trip_ns;
  if (auto cost = measure_doorbell_cost(*sys); cost.ok()) {
    p.doorbell_pio_ns = cost->pio_ns;
    p.doorbell_mmio_ns = cost->mmio_ns;
  }
  return p;
}

HostReport check_host(const HostCheckOptions& options) {
  HostReport r;
  r.cpu = parse_cpuinfo(read_text(options.procfs_root / "cpuinfo").value_or(""));
  r.modules = read_kvm_modules(options.sysfs_root);
  r.device = probe_device(options.dev);
  if (r.device.opened && r.device.api_version == KVM_API_VERSION) r.probe = run_probe_guest(options.dev);
  decide(r);
  return r;
}

std::string format_text(const HostReport& r) {
  const auto yn = [](bool b) { return b ? "yes" : "no"; };
  const auto opt = [](const std::optional<bool>& b) -> std::string {
    return b ? (*b ? "on" : "off") : "n/a";
  };
  const auto& c = r.cpu;
  const auto& d = r.device;
  const auto& m = r.modules;
  std::string out;
  out +=
      fmt::format("CPU        {} ({}, family {} model {})\n", c.model_name.empty() ? "unknown" : c.model_name,
                  c.vendor.empty() ? "unknown vendor" : c.vendor, c.family, c.model);
  out += fmt::format("           {} logical CPUs, {} cores; 64-bit (lm): {}, NX: {}\n", c.logical_cpus,
                     c.cores, yn(c.long_mode), yn(c.nx));
  out += fmt::format("           vmx: {}, svm: {}, under a hypervisor: {}\n", yn(c.vmx), yn(c.svm),
                     yn(c.hypervisor));
  if (!d.exists) {
    out += fmt::format("{:<10} missing\n", d.path);
  } else {
    out += fmt::format("{:<10} {} {}:{} (mode {:04o}); this user {} open it\n", d.path,
                       mode_string(d.char_device, d.mode), d.owner, d.group, d.mode,
                       d.opened ? "can" : "cannot");
  }
  if (d.opened) {
    out += fmt::format("KVM API    version {}", d.api_version);
    if (d.api_version == KVM_API_VERSION)
      out += fmt::format("; vCPUs: {} recommended (KVM_CAP_NR_VCPUS), {} max (KVM_CAP_MAX_VCPUS)",
                         d.recommended_vcpus, d.max_vcpus);
    out += "\n";
    std::vector<std::string> missing;
    for (const auto& [name, value] : d.capabilities)
      if (value <= 0) missing.push_back(name);
    if (!d.capabilities.empty())
      out += fmt::format("           capabilities: {} checked, missing: {}\n", d.capabilities.size(),
                         missing.empty() ? std::string("none") : fmt::format("{}", fmt::join(missing, ", ")));
  }
  out += fmt::format("Backend    {}", backend_module_name(m.backend));
  if (m.backend == KvmBackend::kIntel)
    out += fmt::format(" (ept {}, unrestricted_guest {}, nested {})", opt(m.ept), opt(m.unrestricted_guest),
                       opt(m.nested));
  else if (m.backend == KvmBackend::kAmd)
    out += fmt::format(" (npt {}, nested {})", opt(m.npt), opt(m.nested));
  else if (m.backend == KvmBackend::kPvm)
    out += " (paravirtual: guests in ring 3, shadow paging; no nesting, EPT or NPT)";
  out += "\n";
  if (r.probe) {
    const auto& p = *r.probe;
    out += fmt::format(
        "Probe      {}: {} in {} us{}\n", kProbeGuestDescription,
        p.exits.empty() ? std::string("no exits") : fmt::format("{}", fmt::join(p.exits, ", then ")),
        p.microseconds, p.ok ? "" : " (FAILED: " + p.error + ")");
    if (p.exit_round_trip_ns) {
      const uint32_t us = auto_batch_us(*p.exit_round_trip_ns);
      out += fmt::format("Exit cost  {:.1f} us per VM exit to userspace; virtio batch_us=auto: {}\n",
                         static_cast<double>(*p.exit_round_trip_ns) / 1000.0,
                         us == 0 ? std::string("off (exits are cheap)") : fmt::format("{} us (exits are slow)", us));
    }
    if (p.doorbell_pio_ns && p.doorbell_mmio_ns)
      out += fmt::format("Doorbells  {:.1f} us per port write, {:.1f} us per MMIO write (virtio kicks, caught in the "
                         "kernel; --virtio-notify pio uses ports)\n",
                         static_cast<double>(*p.doorbell_pio_ns) / 1000.0,
                         static_cast<double>(*p.doorbell_mmio_ns) / 1000.0);
  } else {
    out += "Probe      not run (/dev/kvm unusable)\n";
  }
  out += fmt::format("Verdict    {}\n", r.verdict_text);
  for (const auto& n : r.notes) out += fmt::format("Note       {}\n", n);
  return out;
}

nlohmann::json to_json(const HostReport& r) {
  using nlohmann::json;
  const auto opt = [](const std::optional<bool>& b) { return b ? json(*b) : json(nullptr); };
  const auto& c = r.cpu;
  const auto& d = r.device;
  const auto& m = r.modules;
  json j;
  j["cpu"] = {{"vendor", c.vendor},
              {"model_name", c.model_name},
              {"family", c.family},
              {"model", c.model},
              {"logical_cpus", c.logical_cpus},
              {"cores", c.cores},
              {"long_mode", c.long_mode},
              {"nx", c.nx},
              {"vmx", c.vmx},
              {"svm", c.svm},
              {"hypervisor", c.hypervisor}};
  j["device"] = {{"path", d.path},
                 {"exists", d.exists},
                 {"char_device", d.char_device},
                 {"mode", fmt::format("{:04o}", d.mode)},
                 {"permissions", mode_string(d.char_device, d.mode)},
                 {"owner", d.owner},
                 {"group", d.group},
                 {"user_in_group", d.user_in_group},
                 {"can_open", d.opened},
                 {"open_error", d.open_errno != 0 ? json(std::strerror(d.open_errno)) : json(nullptr)}};
  j["kvm"] = {{"api_version", d.api_version >= 0 ? json(d.api_version) : json(nullptr)},
              {"recommended_vcpus", d.recommended_vcpus},
              {"max_vcpus", d.max_vcpus},
              {"capabilities", d.capabilities}};
  j["backend"] = {{"module", backend_module_name(m.backend)},
                  {"modules_loaded", m.loaded},
                  {"nested", opt(m.nested)},
                  {"ept", opt(m.ept)},
                  {"unrestricted_guest", opt(m.unrestricted_guest)},
                  {"npt", opt(m.npt)}};
  if (r.probe) {
    const auto& p = *r.probe;
    j["probe"] = {{"guest", kProbeGuestDescription},
                  {"ran", p.ran},
                  {"ok", p.ok},
                  {"exits", p.exits},
                  {"microseconds", p.microseconds},
                  {"exit_round_trip_ns", p.exit_round_trip_ns ? json(*p.exit_round_trip_ns) : json(nullptr)},
                  {"auto_batch_us", p.exit_round_trip_ns ? json(auto_batch_us(*p.exit_round_trip_ns)) : json(nullptr)},
                  {"doorbell_pio_ns", p.doorbell_pio_ns ? json(*p.doorbell_pio_ns) : json(nullptr)},
                  {"doorbell_mmio_ns", p.doorbell_mmio_ns ? json(*p.doorbell_mmio_ns) : json(nullptr)},
                  {"error", p.error.empty() ? json(nullptr) : json(p.error)}};
  } else {
    j["probe"] = nullptr;
  }
  j["verdict"] = verdict_id(r.verdict);
  j["verdict_text"] = r.verdict_text;
  j["exit_status"] = verdict_exit_status(r.verdict);
  j["problems"] = r.problems;
  j["notes"] = r.notes;
  return j;
}

}  // namespace ringvm
