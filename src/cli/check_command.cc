// `ringvm check`: what can this host run? Reports the CPU, /dev/kvm, the KVM backend and its
// limits, proves the answer by running a one-instruction guest, and ends with a verdict whose exit
// status scripts can test.
#include <cstdio>
#include <string>

#include "cli/commands.h"
#include "vmm/host_check.h"

namespace ringvm {

namespace {
constexpr const char* kCheckFooter = R"(Exit status:
  0   unmodified guests with hardware acceleration (VT-x/AMD-V via kvm_intel or kvm_amd)
  10  only PVM-enabled guest kernels: /dev/kvm is served by the PVM backend (kvm_pvm)
  11  no KVM: the device is missing or has no driver (the message says why and what to do)
  12  KVM present but unusable: no permission, wrong API version, a missing capability, or the
      probe guest failed (the message names the path or capability and the fix)
  2   the command line did not parse

Each problem is also printed to stderr as one line. With --json, stdout is one JSON object
(see docs/check.md) with the same facts, "verdict", "exit_status", "problems" and "notes".)";
}  // namespace

void add_check_command(CLI::App& app, int* status) {
  auto* cmd = app.add_subcommand(
      "check", "Report what this host can run (CPU, /dev/kvm, KVM backend) and prove it with a tiny guest");
  cmd->footer(kCheckFooter);
  auto opts = std::make_shared<HostCheckOptions>();
  auto json = std::make_shared<bool>(false);
  auto sysfs = std::make_shared<std::string>(opts->sysfs_root.string());
  auto procfs = std::make_shared<std::string>(opts->procfs_root.string());
  cmd->add_flag("--json", *json, "Print the report as one JSON object");
  cmd->add_option("--dev", opts->dev, "The KVM device node")->capture_default_str();
  cmd->add_option("--sysfs-root", *sysfs, "Where sysfs is mounted (module parameters are read below it)")
      ->capture_default_str();
  cmd->add_option("--procfs-root", *procfs, "Where procfs is mounted (cpuinfo is read below it)")
      ->capture_default_str();
  cmd->callback([status, opts, json, sysfs, procfs] {
    opts->sysfs_root = *sysfs;
    opts->procfs_root = *procfs;
    const HostReport report = check_host(*opts);
    if (*json) {
      std::fputs((to_json(report).dump(2) + "\n").c_str(), stdout);
    } else {
      std::fputs(format_text(report).c_str(), stdout);
    }
    std::fflush(stdout);
    for (const auto& problem : report.problems) std::fprintf(stderr, "ringvm check: %s\n", problem.c_str());
    *status = verdict_exit_status(report.verdict);
  });
}

}  // namespace ringvm
