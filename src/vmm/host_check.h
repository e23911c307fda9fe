// HostCheck: what can this host run? The logic behind `ringvm check`.
//
// Facts are gathered from text (/proc/cpuinfo, /sys/module/kvm_*/parameters/*), from the
// /dev/kvm node and its ioctls, and finally from running a tiny guest, because only running one
// proves the answer (kvm-ok on PVM hosts says KVM cannot be used; it can). Parsing and the
// verdict are pure functions over those facts so unit tests drive them from fixture text.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ringvm {

// The CPU as /proc/cpuinfo describes it (the first processor's fields, and counts over all).
struct CpuInfo {
  std::string vendor;       // vendor_id: GenuineIntel, AuthenticAMD, ...
  std::string model_name;   // "model name"
  int family = -1;          // "cpu family"
  int model = -1;           // "model"
  int logical_cpus = 0;     // number of "processor" entries
  int cores = 0;            // "cpu cores" times the number of distinct "physical id"s
  bool long_mode = false;   // lm: 64-bit
  bool nx = false;          // no-execute pages
  bool vmx = false;         // Intel VT-x visible to this kernel
  bool svm = false;         // AMD-V visible to this kernel
  bool hypervisor = false;  // the CPU says it runs under a hypervisor (this host is a VM)
};
CpuInfo parse_cpuinfo(std::string_view text);

// Which kernel module serves /dev/kvm.
enum class KvmBackend {
  kUnknown,  // none of the modules below is loaded (or /sys is not mounted)
  kIntel,    // kvm_intel: VT-x
  kAmd,      // kvm_amd: AMD-V
  kPvm,      // kvm_pvm: paravirtual KVM, guests in ring 3 with shadow paging
};
const char* backend_module_name(KvmBackend backend);  // "kvm_intel", ..., "unknown"

// The vendor module and the parameters it exposes; a parameter the module lacks is nullopt.
struct KvmModuleInfo {
  KvmBackend backend = KvmBackend::kUnknown;
  std::vector<std::string> loaded;         // every kvm_* vendor module under /sys/module
  std::optional<bool> nested;              // kvm_intel / kvm_amd: nested virtualization
  std::optional<bool> ept;                 // kvm_intel: extended page tables
  std::optional<bool> unrestricted_guest;  // kvm_intel: real mode without emulation
  std::optional<bool> npt;                 // kvm_amd: nested page tables
};
// A module parameter's text: "Y"/"N" (bool params) or "1"/"0" (int params), with a newline.
std::optional<bool> parse_module_bool(std::string_view text);
// Reads <sysfs_root>/module/{kvm_intel,kvm_amd,kvm_pvm}[/parameters/*].
KvmModuleInfo read_kvm_modules(const std::filesystem::path& sysfs_root);

// The device node and whether this process can use it.
struct KvmDevice {
  std::string path;
  bool exists = false;
  bool char_device = false;
  uint32_t mode = 0;           // st_mode & 07777
  std::string owner, group;    // names (or numbers when unknown)
  bool user_in_group = false;  // the node's group is one of this process's groups
  bool opened = false;
  int open_errno = 0;
  int api_version = -1;                     // KVM_GET_API_VERSION, -1 when not reached
  int recommended_vcpus = 0;                // KVM_CAP_NR_VCPUS
  int max_vcpus = 0;                        // KVM_CAP_MAX_VCPUS
  std::map<std::string, int> capabilities;  // KVM_CAP_* name -> KVM_CHECK_EXTENSION value
};
// "crw-rw----" for a mode and type.
std::string mode_string(bool char_device, uint32_t mode);
// The capabilities ringvm cannot run without; probe_device() asks for these and a few more.
const std::vector<std::string>& required_capabilities();

// The proof: a real-mode guest `out %al, $0x80; hlt` entered at 0x1000 with AL = 0x5a.
struct ProbeResult {
  bool ran = false;                // a VM and vCPU were created and KVM_RUN entered
  bool ok = false;                 // the guest wrote 0x5a to port 0x80 and then halted
  std::vector<std::string> exits;  // what happened, in order ("io out port 0x80 value 0x5a", "hlt")
  uint64_t microseconds = 0;       // wall time of the run
  std::string error;               // why it did not run or did not do what it should
  // After a good run: what one exit to userspace costs here (vmm/exit_probe.h), which decides
  // what batch_us=auto means for virtio devices.
  std::optional<uint64_t> exit_round_trip_ns;
  // What a virtio doorbell write costs, caught by an ioeventfd in the kernel: port I/O and MMIO
  // (vmm/exit_probe.h), which shows what --virtio-notify pio saves here.
  std::optional<uint64_t> doorbell_pio_ns;
  std::optional<uint64_t> doorbell_mmio_ns;
};

enum class Verdict {
  kHardware,  // unmodified guests with hardware acceleration
  kPvmOnly,   // only PVM-enabled guest kernels
  kNoKvm,     // no /dev/kvm to use at all
  kUnusable,  // /dev/kvm exists but cannot be used (permission, API version, capability, probe)
};
// Process exit status of `ringvm check` for each verdict (0, 10, 11, 12).
int verdict_exit_status(Verdict v);
const char* verdict_id(Verdict v);  // "hardware", "pvm-only", "no-kvm", "unusable"

struct HostReport {
  CpuInfo cpu;
  KvmModuleInfo modules;
  KvmDevice device;
  std::optional<ProbeResult> probe;  // nullopt when /dev/kvm could not be opened
  Verdict verdict = Verdict::kNoKvm;
  std::string verdict_text;           // the plain sentence
  std::vector<std::string> problems;  // one line each: names the path or capability and the fix
  std::vector<std::string> notes;     // honest remarks (e.g. how PVM ran the probe)
};

// Fills verdict, verdict_text, problems and notes from the facts in `report`. Pure.
void decide(HostReport& report);

struct HostCheckOptions {
  std::string dev = "/dev/kvm";
  std::filesystem::path sysfs_root = "/sys";
  std::filesystem::path procfs_root = "/proc";
};
// Gathers every fact, runs the probe when /dev/kvm answers, and decides.
HostReport check_host(const HostCheckOptions& options);

// Reads the node's metadata, opens it and asks for the API version and capabilities.
KvmDevice probe_device(const std::string& path);
// Creates a VM on `path` and runs the probe guest (bounded: a stuck guest is kicked out).
ProbeResult run_probe_guest(const std::string& path);

std::string format_text(const HostReport& report);
nlohmann::json to_json(const HostReport& report);

}  // namespace ringvm
