// Each verb registers itself on the root app. The callback it installs runs the verb and stores
// the process exit status in *status.
#pragma once

#include <CLI/CLI.hpp>

namespace ringvm {

void add_check_command(CLI::App& app, int* status);
void add_run_command(CLI::App& app, int* status);
void add_img_command(CLI::App& app, int* status);
void add_ctl_command(CLI::App& app, int* status);
void add_clone_command(CLI::App& app, int* status);
void add_snapshot_command(CLI::App& app, int* status);

}  // namespace ringvm
