#include "cli/commands.h"

namespace ringvm {

void add_check_command(CLI::App& app, int* status) {
  auto* cmd = app.add_subcommand("check", "(not yet implemented)");
  cmd->callback([status] { *status = 1; });
}

}  // namespace ringvm
