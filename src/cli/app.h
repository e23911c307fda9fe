// The ringvm command line: one CLI11 app with a subcommand per verb (check, run, img, ...).
#pragma once

namespace ringvm {

// Process exit statuses. Documented in `ringvm --help` and docs/cli.md; scripts depend on them.
enum ExitStatus : int {
  kExitOk = 0,           // guest powered off / command succeeded
  kExitVmmError = 1,     // ringvm itself failed (bad option, host problem, I/O error)
  kExitUsage = 2,        // the command line does not parse
  kExitGuestReboot = 3,  // guest asked to reboot (run --on-reboot exit)
  kExitGuestCrash = 4,   // guest crashed (triple fault / internal error); registers on stderr
  kExitSignalled = 5,    // stopped by SIGTERM/SIGINT or the console's Ctrl-a x
};

int run_cli(int argc, char** argv);

}  // namespace ringvm
