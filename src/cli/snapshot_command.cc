// `ringvm snapshot`: offline work on snapshot files (docs/snapshot.md).
//   info FILE                  what a state file holds (checked as a restore would check it)
//   merge --diff D --into F    applies a Diff snapshot's memory file onto its Full one's
#include <cstdio>
#include <ctime>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/app.h"
#include "cli/commands.h"
#include "vmm/snapshot.h"
#include "vmm/snapshot_file.h"

namespace ringvm {

namespace {

struct SnapshotOptions {
  std::string file, diff, into;
  bool json = false;
};

int snapshot_info(const SnapshotOptions& o) {
  auto s = read_snapshot_file(o.file);
  if (!s) {
    std::fprintf(stderr, "ringvm snapshot info: error: %s\n", s.error().message().c_str());
    return kExitVmmError;
  }
  nlohmann::json j;
  j["type"] = s->kind == SnapshotKind::kDiff ? "Diff" : "Full";
  j["format_version"] = kSnapshotFormatVersion;
  j["written_by"] = s->ringvm_version;
  j["created_unix_ns"] = s->created_unix_ns;
  j["memory_bytes"] = s->memory_bytes;
  j["vcpus"] = s->vcpus.size();
  nlohmann::json devices = nlohmann::json::array();
  for (const auto& d : s->devices) devices.push_back({{"name", d.name}, {"state_bytes", d.data.size()}});
  j["devices"] = devices;
  nlohmann::json disks = nlohmann::json::array();
  for (const auto& d : s->disks) disks.push_back({{"id", d.id}, {"path", d.path}, {"format", d.qcow2 ? "qcow2" : "raw"}});
  j["disks"] = disks;
  j["config"] = nlohmann::json::parse(s->config_json, nullptr, false);
  if (o.json) {
    std::printf("%s\n", j.dump(2).c_str());
    return kExitOk;
  }
  const time_t secs = static_cast<time_t>(s->created_unix_ns / 1'000'000'000);
  char when[64] = "?";
  if (tm t{}; gmtime_r(&secs, &t) != nullptr) std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &t);
  std::printf("%s snapshot (format %u, %s), taken %s\n", j["type"].get<std::string>().c_str(), kSnapshotFormatVersion,
              s->ringvm_version.c_str(), when);
  std::printf("  %zu vCPUs, %llu MiB of memory, %zu devices\n", s->vcpus.size(),
              static_cast<unsigned long long>(s->memory_bytes >> 20), s->devices.size());
  for (const auto& d : s->disks)
    std::printf("  disk %s: %s (%s)\n", d.id.c_str(), d.path.c_str(), d.qcow2 ? "qcow2" : "raw");
  return kExitOk;
}

int snapshot_merge(const SnapshotOptions& o) {
  auto r = merge_memory_diff(o.diff, o.into);
  if (!r) {
    std::fprintf(stderr, "ringvm snapshot merge: error: %s\n", r.error().message().c_str());
    return kExitVmmError;
  }
  if (o.json)
    std::printf("{\"bytes_copied\": %llu}\n", static_cast<unsigned long long>(*r));
  else
    std::printf("merged %llu bytes of %s into %s\n", static_cast<unsigned long long>(*r), o.diff.c_str(),
                o.into.c_str());
  return kExitOk;
}

}  // namespace

void add_snapshot_command(CLI::App& app, int* status) {
  auto opts = std::make_shared<SnapshotOptions>();
  auto* cmd = app.add_subcommand("snapshot", "Inspect snapshot files and apply Diff snapshots (offline)");
  cmd->require_subcommand(1);
  cmd->footer(R"(Snapshots are taken and loaded through a running ringvm: `ringvm ctl snapshot create|load`,
`ringvm run --restore`, `ringvm clone` (docs/snapshot.md).

A Diff snapshot's memory file holds only the pages written since the snapshot before it. To
restore one, merge it onto the memory file of that snapshot, then load the Diff's state file:
  ringvm snapshot merge --diff diff.mem --into full.mem
  ringvm run --restore diff.snap --restore-mem full.mem

Examples:
  ringvm snapshot info vm.snap
  ringvm snapshot info --json vm.snap | jq .devices)");
  auto* info = cmd->add_subcommand("info", "What a snapshot state file holds (checked as a restore checks it)");
  info->add_option("file", opts->file, "The state file")->required();
  info->add_flag("--json", opts->json, "JSON, for scripts");
  info->callback([opts, status] { *status = snapshot_info(*opts); });
  auto* merge = cmd->add_subcommand("merge", "Apply a Diff snapshot's memory file onto its base's memory file");
  merge->add_option("--diff", opts->diff, "The Diff snapshot's memory file")->required()->check(CLI::ExistingFile);
  merge->add_option("--into", opts->into, "The memory file it applies to (changed in place)")
      ->required()
      ->check(CLI::ExistingFile);
  merge->add_flag("--json", opts->json, "JSON, for scripts");
  merge->callback([opts, status] { *status = snapshot_merge(*opts); });
}

}  // namespace ringvm
