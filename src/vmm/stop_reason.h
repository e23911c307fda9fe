// StopReason: why a VM stopped, and the signals that stop one.
#pragma once

#include <csignal>

namespace ringvm {

// Why a VM stopped. The CLI maps these to exit statuses (cli/app.h).
enum class StopReason : int {
  kNone = 0,
  kPowerOff,  // ACPI S5, or KVM_SYSTEM_EVENT_SHUTDOWN
  kReboot,    // i8042 reset, KVM_SYSTEM_EVENT_RESET
  kCrash,     // triple fault, entry failure, emulation failure
  kSignal,    // SIGTERM / SIGINT / SIGHUP
  kQuit,      // console escape Ctrl-a x
  kError,     // ringvm failed while running
};
const char* stop_reason_name(StopReason r);

// SIGTERM, SIGINT, SIGHUP: the signals that stop a VM. Block them before the first thread exists;
// Vm::run reads them from a signalfd.
sigset_t stop_signal_set();

}  // namespace ringvm
