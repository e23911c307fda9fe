// `ringvm img`: qemu-img's verbs for raw and qcow2 images (create, info, check, convert, resize,
// map, commit, rebase, snapshot). Each verb lives in src/cli/img/.
#include "cli/commands.h"
#include "cli/img/img_common.h"

namespace ringvm {

void add_img_command(CLI::App& app, int* status) {
  auto* cmd = app.add_subcommand("img", "Create, inspect, check and convert raw and qcow2 disk images (like qemu-img)");
  cmd->require_subcommand(1);
  cmd->footer(R"(Formats are never guessed from content: give -f raw|qcow2, or name files *.qcow2 / *.raw / *.img.
Exit status: 0 success, 1 error; `check`: 0 clean, 1 check incomplete, 2 corruptions, 3 leaks only.
See docs/img.md.)");
  img::add_create(*cmd, status);
  img::add_info(*cmd, status);
  img::add_check(*cmd, status);
  img::add_convert(*cmd, status);
  img::add_resize(*cmd, status);
  img::add_map(*cmd, status);
  img::add_commit(*cmd, status);
  img::add_rebase(*cmd, status);
  img::add_snapshot(*cmd, status);
}

}  // namespace ringvm
