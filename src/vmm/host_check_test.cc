#include "vmm/host_check.h"

#include <gtest/gtest.h>
#include <linux/kvm.h>

#include <fstream>
#include <sstream>

namespace ringvm {
namespace {

const std::filesystem::path kFixtures = std::filesystem::path(RINGVM_SOURCE_DIR) / "tests/fixtures/check";

std::string fixture_text(const std::string& host, const std::string& file) {
  std::ifstream in(kFixtures / host / file);
  EXPECT_TRUE(in.good()) << "missing fixture " << (kFixtures / host / file);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// A /dev/kvm that opened, speaks API 12 and has every capability ringvm needs.
KvmDevice working_device() {
  KvmDevice d;
  d.path = "/dev/kvm";
  d.exists = true;
  d.char_device = true;
  d.mode = 0660;
  d.owner = "root";
  d.group = "kvm";
  d.opened = true;
  d.api_version = KVM_API_VERSION;
  d.recommended_vcpus = 2;
  d.max_vcpus = 1024;
  for (const auto& cap : required_capabilities()) d.capabilities[cap] = 1;
  return d;
}

ProbeResult probe_ok() {
  ProbeResult p;
  p.ran = true;
  p.ok = true;
  p.exits = {"io out port 0x80 value 0x5a", "hlt"};
  p.microseconds = 900;
  return p;
}

// The report for a fixture host whose /dev/kvm works and whose probe guest ran.
HostReport fixture_report(const std::string& host) {
  HostReport r;
  r.cpu = parse_cpuinfo(fixture_text(host, "proc/cpuinfo"));
  r.modules = read_kvm_modules(kFixtures / host / "sys");
  r.device = working_device();
  r.probe = probe_ok();
  decide(r);
  return r;
}

bool mentions(const std::vector<std::string>& lines, const std::string& what) {
  for (const auto& l : lines)
    if (l.find(what) != std::string::npos) return true;
  return false;
}

TEST(ParseCpuinfo, IntelTwoSocketsWithVmx) {
  const CpuInfo c = parse_cpuinfo(fixture_text("intel-vmx-ept-nested", "proc/cpuinfo"));
  EXPECT_EQ(c.vendor, "GenuineIntel");
  EXPECT_EQ(c.model_name, "Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz");
  EXPECT_EQ(c.family, 6);
  EXPECT_EQ(c.model, 85);
  EXPECT_EQ(c.logical_cpus, 4);
  EXPECT_EQ(c.cores, 4);  // 2 cores in each of 2 packages
  EXPECT_TRUE(c.long_mode);
  EXPECT_TRUE(c.nx);
  EXPECT_TRUE(c.vmx);
  EXPECT_FALSE(c.svm);
  EXPECT_FALSE(c.hypervisor);
}

TEST(ParseCpuinfo, AmdWithSvm) {
  const CpuInfo c = parse_cpuinfo(fixture_text("amd-svm-npt", "proc/cpuinfo"));
  EXPECT_EQ(c.vendor, "AuthenticAMD");
  EXPECT_EQ(c.family, 23);
  EXPECT_EQ(c.model, 49);
  EXPECT_EQ(c.logical_cpus, 4);
  EXPECT_EQ(c.cores, 4);
  EXPECT_TRUE(c.svm);
  EXPECT_FALSE(c.vmx);
  EXPECT_FALSE(c.hypervisor);
}

TEST(ParseCpuinfo, PvmHostIsAVmWithoutVmxOrSvm) {
  const CpuInfo c = parse_cpuinfo(fixture_text("pvm", "proc/cpuinfo"));
  EXPECT_EQ(c.vendor, "AuthenticAMD");
  EXPECT_EQ(c.model_name, "AMD EPYC");
  EXPECT_EQ(c.logical_cpus, 2);
  EXPECT_TRUE(c.hypervisor);
  EXPECT_TRUE(c.long_mode);
  EXPECT_TRUE(c.nx);
  EXPECT_FALSE(c.vmx);
  EXPECT_FALSE(c.svm);
}

TEST(ParseCpuinfo, HostileOrEmptyTextGivesEmptyFacts) {
  const CpuInfo empty = parse_cpuinfo("");
  EXPECT_EQ(empty.logical_cpus, 0);
  EXPECT_EQ(empty.family, -1);
  const CpuInfo junk =
      parse_cpuinfo("processor: 0\ncpu family: 99999999999999999\nmodel: x1\nflags: vmx\n:\n\n");
  EXPECT_EQ(junk.logical_cpus, 1);
  EXPECT_EQ(junk.family, -1);
  EXPECT_EQ(junk.model, -1);
  EXPECT_TRUE(junk.vmx);
  // Only the first processor's flags count: a later block cannot add vmx.
  const CpuInfo two = parse_cpuinfo("processor: 0\nflags: lm\n\nprocessor: 1\nflags: lm vmx\n");
  EXPECT_EQ(two.logical_cpus, 2);
  EXPECT_FALSE(two.vmx);
}

TEST(ParseModuleBool, AcceptsBoolAndIntParameters) {
  EXPECT_EQ(parse_module_bool("Y\n"), true);
  EXPECT_EQ(parse_module_bool("N\n"), false);
  EXPECT_EQ(parse_module_bool("1\n"), true);
  EXPECT_EQ(parse_module_bool("0"), false);
  EXPECT_EQ(parse_module_bool(""), std::nullopt);
  EXPECT_EQ(parse_module_bool("maybe"), std::nullopt);
}

TEST(ReadKvmModules, EachFixtureHost) {
  const auto intel = read_kvm_modules(kFixtures / "intel-vmx-ept-nested/sys");
  EXPECT_EQ(intel.backend, KvmBackend::kIntel);
  EXPECT_EQ(intel.nested, true);
  EXPECT_EQ(intel.ept, true);
  EXPECT_EQ(intel.unrestricted_guest, true);
  EXPECT_EQ(intel.npt, std::nullopt);

  const auto amd = read_kvm_modules(kFixtures / "amd-svm-npt/sys");
  EXPECT_EQ(amd.backend, KvmBackend::kAmd);
  EXPECT_EQ(amd.nested, true);
  EXPECT_EQ(amd.npt, true);
  EXPECT_EQ(amd.ept, std::nullopt);

  const auto pvm = read_kvm_modules(kFixtures / "pvm/sys");
  EXPECT_EQ(pvm.backend, KvmBackend::kPvm);
  EXPECT_EQ(pvm.loaded, std::vector<std::string>{"kvm_pvm"});
  EXPECT_EQ(pvm.nested, std::nullopt);
  EXPECT_STREQ(backend_module_name(pvm.backend), "kvm_pvm");

  const auto none = read_kvm_modules(kFixtures / "novirt/sys");
  EXPECT_EQ(none.backend, KvmBackend::kUnknown);
  EXPECT_TRUE(none.loaded.empty());
  EXPECT_EQ(read_kvm_modules("/nonexistent-sysfs").backend, KvmBackend::kUnknown);
}

TEST(Decide, IntelAndAmdHostsRunUnmodifiedGuests) {
  for (const char* host : {"intel-vmx-ept-nested", "amd-svm-npt"}) {
    const HostReport r = fixture_report(host);
    EXPECT_EQ(r.verdict, Verdict::kHardware) << host;
    EXPECT_EQ(r.verdict_text, "unmodified guests with hardware acceleration");
    EXPECT_EQ(verdict_exit_status(r.verdict), 0);
    EXPECT_TRUE(r.problems.empty()) << host;
  }
}

TEST(Decide, ShadowPagingIsNoted) {
  HostReport r = fixture_report("intel-vmx-ept-nested");
  r.modules.ept = false;
  decide(r);
  EXPECT_EQ(r.verdict, Verdict::kHardware);
  EXPECT_TRUE(mentions(r.notes, "ept=1"));
}

TEST(Decide, PvmHostRunsOnlyPvmGuests) {
  const HostReport r = fixture_report("pvm");
  EXPECT_EQ(r.verdict, Verdict::kPvmOnly);
  EXPECT_EQ(r.verdict_text, "only PVM-enabled guest kernels (PVM backend)");
  EXPECT_EQ(verdict_exit_status(r.verdict), 10);
  EXPECT_TRUE(r.problems.empty());
  EXPECT_TRUE(mentions(r.notes, "kvm_pvm"));
  EXPECT_TRUE(mentions(r.notes, "900 us")) << "the probe's measured time is reported";
}

TEST(Decide, NoDeviceOnHostWithoutVirtualization) {
  HostReport r = fixture_report("novirt");
  r.device = KvmDevice{};
  r.device.path = "/dev/kvm";
  r.probe.reset();
  decide(r);
  EXPECT_EQ(r.verdict, Verdict::kNoKvm);
  EXPECT_EQ(verdict_exit_status(r.verdict), 11);
  ASSERT_EQ(r.problems.size(), 1u);
  EXPECT_TRUE(mentions(r.problems, "/dev/kvm does not exist"));
  EXPECT_TRUE(mentions(r.problems, "firmware"));
  EXPECT_EQ(r.verdict_text.rfind("no KVM: ", 0), 0u);
}

TEST(Decide, NoDeviceReasonDependsOnTheCpu) {
  HostReport r = fixture_report("intel-vmx-ept-nested");
  r.device = KvmDevice{};
  r.device.path = "/dev/kvm";
  decide(r);
  EXPECT_EQ(r.verdict, Verdict::kNoKvm);
  EXPECT_TRUE(mentions(r.problems, "modprobe kvm_intel"));

  HostReport vm = fixture_report("pvm");
  vm.device = KvmDevice{};
  vm.device.path = "/dev/kvm";
  decide(vm);
  EXPECT_EQ(vm.verdict, Verdict::kNoKvm);
  EXPECT_TRUE(mentions(vm.problems, "nested virtualization"));
}

TEST(Decide, PermissionDeniedSaysWhichGroupToJoin) {
  HostReport r = fixture_report("amd-svm-npt");
  r.device.opened = false;
  r.device.open_errno = EACCES;
  r.device.api_version = -1;
  r.probe.reset();
  decide(r);
  EXPECT_EQ(r.verdict, Verdict::kUnusable);
  EXPECT_EQ(verdict_exit_status(r.verdict), 12);
  ASSERT_EQ(r.problems.size(), 1u);
  EXPECT_TRUE(mentions(r.problems, "/dev/kvm (crw-rw---- root:kvm)"));
  EXPECT_TRUE(mentions(r.problems, "usermod -aG kvm"));
  EXPECT_TRUE(mentions(r.problems, "do not make /dev/kvm world-writable"));

  r.device.user_in_group = true;
  decide(r);
  EXPECT_TRUE(mentions(r.problems, "log out and in again"));
}

TEST(Decide, WrongApiVersion) {
  HostReport r = fixture_report("intel-vmx-ept-nested");
  r.device.api_version = 11;
  r.probe.reset();
  decide(r);
  EXPECT_EQ(r.verdict, Verdict::kUnusable);
  EXPECT_TRUE(mentions(r.problems, "/dev/kvm speaks KVM API version 11, ringvm needs 12"));
}

TEST(Decide, MissingCapabilityIsNamed) {
  HostReport r = fixture_report("intel-vmx-ept-nested");
  r.device.capabilities["KVM_CAP_IRQFD"] = 0;
  decide(r);
  EXPECT_EQ(r.verdict, Verdict::kUnusable);
  ASSERT_EQ(r.problems.size(), 1u);
  EXPECT_TRUE(mentions(r.problems, "lacks KVM_CAP_IRQFD"));
  r.device.capabilities.erase("KVM_CAP_IRQFD");
  decide(r);
  EXPECT_TRUE(mentions(r.problems, "lacks KVM_CAP_IRQFD"));
}

TEST(Decide, FailedProbeMeansUnusable) {
  HostReport r = fixture_report("amd-svm-npt");
  r.probe->ok = false;
  r.probe->error = "create the VM: KVM_CREATE_VM: Device or resource busy";
  decide(r);
  EXPECT_EQ(r.verdict, Verdict::kUnusable);
  EXPECT_TRUE(mentions(r.problems, "KVM_CREATE_VM"));
}

TEST(Decide, UnknownBackendWithoutVmxOrSvmIsNotClaimedAsHardware) {
  HostReport r = fixture_report("novirt");
  decide(r);
  EXPECT_EQ(r.verdict, Verdict::kUnusable);
  EXPECT_TRUE(mentions(r.problems, "cannot tell what serves /dev/kvm"));
}

TEST(ModeString, LooksLikeLs) {
  EXPECT_EQ(mode_string(true, 0660), "crw-rw----");
  EXPECT_EQ(mode_string(false, 0755), "-rwxr-xr-x");
}

TEST(ProbeDevice, MissingPath) {
  const KvmDevice d = probe_device("/nonexistent/kvm");
  EXPECT_FALSE(d.exists);
  EXPECT_EQ(d.open_errno, ENOENT);
}

TEST(ProbeDevice, RegularFileIsNotADevice) {
  const auto path = (kFixtures / "pvm/proc/cpuinfo").string();
  HostReport r = fixture_report("pvm");
  r.device = probe_device(path);
  EXPECT_TRUE(r.device.exists);
  EXPECT_FALSE(r.device.char_device);
  decide(r);
  EXPECT_EQ(r.verdict, Verdict::kNoKvm);
  EXPECT_TRUE(mentions(r.problems, path + " is not a character device"));
}

TEST(ProbeDevice, CharacterDeviceThatIsNotKvm) {
  HostReport r = fixture_report("amd-svm-npt");
  r.device = probe_device("/dev/null");
  ASSERT_TRUE(r.device.opened);
  EXPECT_EQ(r.device.api_version, -1);
  r.probe.reset();
  decide(r);
  EXPECT_EQ(r.verdict, Verdict::kUnusable);
  EXPECT_TRUE(mentions(r.problems, "/dev/null does not answer KVM_GET_API_VERSION"));
}

TEST(CheckHost, FixtureHostWithoutDeviceEndToEnd) {
  HostCheckOptions o;
  o.dev = "/nonexistent/kvm";
  o.procfs_root = kFixtures / "intel-vmx-ept-nested/proc";
  o.sysfs_root = kFixtures / "intel-vmx-ept-nested/sys";
  const HostReport r = check_host(o);
  EXPECT_EQ(r.verdict, Verdict::kNoKvm);
  EXPECT_FALSE(r.probe.has_value());
  const auto j = to_json(r);
  EXPECT_EQ(j["verdict"], "no-kvm");
  EXPECT_EQ(j["exit_status"], 11);
  EXPECT_EQ(j["cpu"]["vendor"], "GenuineIntel");
  EXPECT_EQ(j["cpu"]["vmx"], true);
  EXPECT_EQ(j["backend"]["module"], "kvm_intel");
  EXPECT_EQ(j["backend"]["ept"], true);
  EXPECT_TRUE(j["backend"]["npt"].is_null());
  EXPECT_EQ(j["device"]["exists"], false);
  EXPECT_TRUE(j["probe"].is_null());
  EXPECT_EQ(nlohmann::json::parse(j.dump()), j);
  const std::string text = format_text(r);
  EXPECT_NE(text.find("Intel(R) Xeon(R) Gold 6230"), std::string::npos);
  EXPECT_NE(text.find("/nonexistent/kvm missing"), std::string::npos);
  EXPECT_NE(text.find("Verdict    no KVM: /nonexistent/kvm does not exist"), std::string::npos);
}

TEST(ToJson, PvmReportCarriesTheProbe) {
  const auto j = to_json(fixture_report("pvm"));
  EXPECT_EQ(j["verdict"], "pvm-only");
  EXPECT_EQ(j["exit_status"], 10);
  EXPECT_EQ(j["backend"]["module"], "kvm_pvm");
  EXPECT_EQ(j["kvm"]["api_version"], 12);
  EXPECT_EQ(j["kvm"]["max_vcpus"], 1024);
  EXPECT_EQ(j["device"]["permissions"], "crw-rw----");
  EXPECT_EQ(j["probe"]["ok"], true);
  EXPECT_EQ(j["probe"]["exits"][1], "hlt");
}

}  // namespace
}  // namespace ringvm
