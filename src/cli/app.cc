#include "cli/app.h"

#include <cstdlib>

#include "base/log.h"
#include "cli/commands.h"

namespace ringvm {

namespace {
constexpr const char* kFooter = R"(Exit status:
  0  success; for `run`, the guest powered off
  1  ringvm failed (the message names the thing and the fix)
  2  the command line did not parse
  3  the guest rebooted (run --on-reboot exit)
  4  the guest crashed (triple fault); its registers are printed on stderr
  5  stopped by SIGTERM/SIGINT or Ctrl-a x on the console
  `ringvm check` and `ringvm ctl` have their own statuses: see their --help.

Examples:
  ringvm check                      what can this host run?
  ringvm run                        boot the built-in demo (host kernel + busybox shell)
  ringvm run --kernel bzImage --initrd initrd.img --cmdline "console=ttyS0" --cpus 2 --memory 1G
  ringvm img create -f qcow2 disk.qcow2 8G
  ringvm run --api-sock /tmp/vm.sock        serve Firecracker's API; configure and start over it
  ringvm ctl --api-sock /tmp/vm.sock pause  pause (and `resume`) a running VM

Environment: RINGVM_LOG=trace|debug|info|warn|error sets the log level (default warn).
Docs: docs/ in the source tree.)";
}  // namespace

int run_cli(int argc, char** argv) {
  init_logging(std::getenv("RINGVM_LOG"));
  CLI::App app{"ringvm: a virtual machine monitor for Linux/KVM on x86-64", "ringvm"};
  app.footer(kFooter);
  app.require_subcommand(1);
  app.set_version_flag("--version", "ringvm 0.1.0");
  int status = kExitOk;
  add_check_command(app, &status);
  add_run_command(app, &status);
  add_img_command(app, &status);
  add_ctl_command(app, &status);
  add_clone_command(app, &status);
  add_snapshot_command(app, &status);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitUsage;
  }
  return status;
}

}  // namespace ringvm
