// `ringvm ctl --api-sock PATH VERB`: the REST API for people and scripts.
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "api/api_client.h"
#include "cli/app.h"
#include "cli/commands.h"

namespace ringvm {

namespace {

// `ringvm ctl` statuses: 0 done; 1 the VM (API) refused, with its fault_message; 2 usage;
// 6 no API at that socket.
constexpr int kCtlRefused = 1;
constexpr int kCtlUnreachable = 6;

struct CtlOptions {
  std::string api_sock;
  std::vector<std::string> words;  // the verb ("pause") or two ("snapshot create")
  std::string verb;
  bool json = false;
  int timeout_s = 30;
  // snapshot create / load
  std::string snapshot, mem;
  bool diff = false, resume = false, track_dirty_pages = false, clock_realtime = false;
  std::vector<std::string> net_overrides;  // ID=TAP
  std::string body;                        // built from the above
};

struct Verb {
  const char* method;
  const char* path;
  const char* body;  // nullptr: none
  const char* done;  // what a human is told on success (GET verbs print the answer)
};

const std::map<std::string, Verb>& verbs() {
  static const std::map<std::string, Verb> v = {
      {"info", {"GET", "/", nullptr, nullptr}},
      {"config", {"GET", "/vm/config", nullptr, nullptr}},
      {"metrics", {"GET", "/metrics", nullptr, nullptr}},
      {"version", {"GET", "/version", nullptr, nullptr}},
      {"start", {"PUT", "/actions", R"({"action_type":"InstanceStart"})", "started"}},
      {"pause", {"PATCH", "/vm", R"({"state":"Paused"})", "paused"}},
      {"resume", {"PATCH", "/vm", R"({"state":"Resumed"})", "resumed"}},
      {"ctrl-alt-del", {"PUT", "/actions", R"({"action_type":"SendCtrlAltDel"})", "sent Ctrl+Alt+Del"}},
      {"flush-metrics", {"PUT", "/actions", R"({"action_type":"FlushMetrics"})", "metrics flushed"}},
  };
  return v;
}

constexpr const char* kCtlFooter = R"(Verbs:
  info           the instance: id, state (Not started, Running, Paused), version
  config         the whole VM configuration (Firecracker's GET /vm/config)
  metrics        the current counters (exits, devices) as JSON
  version        ringvm's version and the Firecracker API version it follows
  start          InstanceStart: boot the configured VM
  pause          park every vCPU and device; harmless when paused
  resume         go on; harmless when running
  ctrl-alt-del   press Ctrl+Alt+Del on the guest's keyboard (Linux reboots)
  flush-metrics  write one JSON line of metrics to the configured metrics file
  snapshot create --snapshot FILE --mem FILE [--diff]
                 write the paused VM's state and memory (PUT /snapshot/create; docs/snapshot.md)
  snapshot load --snapshot FILE --mem FILE [--resume] [--track-dirty-pages] [--clock-realtime]
                [--net-override IFACE=TAP]...
                build the VM of a fresh `ringvm run --api-sock` from a snapshot (PUT /snapshot/load)

Output: what a person reads; --json prints the API's JSON answer (or {"ok": true}) for scripts.

Exit status: 0 done; 1 the VM refused the request (its fault_message on stderr); 2 bad
command line; 6 nothing answers at --api-sock.

Examples:
  ringvm ctl --api-sock /tmp/vm.sock info
  ringvm ctl --api-sock /tmp/vm.sock pause && sleep 10 && ringvm ctl --api-sock /tmp/vm.sock resume
  ringvm ctl --api-sock /tmp/vm.sock --json config | jq '.drives'
  ringvm ctl --api-sock /tmp/vm.sock pause
  ringvm ctl --api-sock /tmp/vm.sock snapshot create --snapshot vm.snap --mem vm.mem
  ringvm ctl --api-sock /tmp/new.sock snapshot load --snapshot vm.snap --mem vm.mem --resume)";

void print_human(const std::string& verb, const nlohmann::json& j) {
  if (verb == "info") {
    std::printf("%s: %s (ringvm %s)\n", j.value("id", "?").c_str(), j.value("state", "?").c_str(),
                j.value("vmm_version", "?").c_str());
    return;
  }
  if (verb == "version") {
    std::printf("ringvm %s (Firecracker API %s)\n", j.value("ringvm_version", "?").c_str(),
                j.value("firecracker_api_version", "?").c_str());
    return;
  }
  std::printf("%s\n", j.dump(2).c_str());
}

// `snapshot create|load`: the verb and its JSON body from the options; false on a usage error.
bool snapshot_verb(CtlOptions& o, Verb* v) {
  if (o.words.size() != 2 || (o.words[1] != "create" && o.words[1] != "load")) {
    std::fprintf(stderr, "ringvm ctl: snapshot needs create or load (see ringvm ctl --help)\n");
    return false;
  }
  if (o.snapshot.empty() || o.mem.empty()) {
    std::fprintf(stderr, "ringvm ctl: snapshot %s needs --snapshot FILE and --mem FILE\n", o.words[1].c_str());
    return false;
  }
  nlohmann::json j;
  j["snapshot_path"] = o.snapshot;
  if (o.words[1] == "create") {
    if (o.resume || o.track_dirty_pages || o.clock_realtime || !o.net_overrides.empty()) {
      std::fprintf(stderr, "ringvm ctl: --resume, --track-dirty-pages, --clock-realtime and --net-override are "
                           "for snapshot load\n");
      return false;
    }
    j["mem_file_path"] = o.mem;
    j["snapshot_type"] = o.diff ? "Diff" : "Full";
    *v = {"PUT", "/snapshot/create", nullptr, "snapshot written"};
  } else {
    if (o.diff) {
      std::fprintf(stderr, "ringvm ctl: --diff is for snapshot create\n");
      return false;
    }
    j["mem_backend"] = {{"backend_type", "File"}, {"backend_path", o.mem}};
    j["resume_vm"] = o.resume;
    j["track_dirty_pages"] = o.track_dirty_pages;
    if (o.clock_realtime) j["clock_realtime"] = true;
    nlohmann::json nets = nlohmann::json::array();
    for (const std::string& n : o.net_overrides) {
      const auto eq = n.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == n.size()) {
        std::fprintf(stderr, "ringvm ctl: --net-override %s: give IFACE_ID=TAP\n", n.c_str());
        return false;
      }
      nets.push_back({{"iface_id", n.substr(0, eq)}, {"host_dev_name", n.substr(eq + 1)}});
    }
    if (!nets.empty()) j["network_overrides"] = nets;
    *v = {"PUT", "/snapshot/load", nullptr, o.resume ? "restored; running" : "restored; paused"};
  }
  o.body = j.dump();
  v->body = o.body.c_str();
  return true;
}

int run_ctl(CtlOptions& o) {
  o.verb = o.words.empty() ? "" : o.words[0];
  Verb v{};
  if (o.verb == "snapshot") {
    if (!snapshot_verb(o, &v)) return kExitUsage;
  } else {
    const auto it = verbs().find(o.verb);
    if (it == verbs().end() || o.words.size() != 1) {
      std::fprintf(stderr, "ringvm ctl: unknown verb '%s' (see ringvm ctl --help)\n",
                   fmt::format("{}", fmt::join(o.words, " ")).c_str());
      return kExitUsage;
    }
    v = it->second;
  }
  auto r = api_request(o.api_sock, v.method, v.path, v.body != nullptr ? v.body : "",
                       std::chrono::seconds(o.timeout_s));
  if (!r) {
    std::fprintf(stderr, "ringvm ctl: %s\n", r.error().message().c_str());
    return kCtlUnreachable;
  }
  if (r->status >= 300) {
    const auto j = nlohmann::json::parse(r->body, nullptr, false);
    const std::string msg = j.is_object() && j.contains("fault_message") && j["fault_message"].is_string()
                                ? j["fault_message"].get<std::string>()
                                : r->body;
    if (o.json) std::printf("%s\n", r->body.c_str());
    std::fprintf(stderr, "ringvm ctl: %s: %s (HTTP %d)\n", o.verb.c_str(), msg.c_str(), r->status);
    return kCtlRefused;
  }
  if (r->body.empty()) {
    if (o.json)
      std::printf("{\"ok\": true}\n");
    else if (v.done != nullptr)
      std::printf("%s\n", v.done);
    return kExitOk;
  }
  if (o.json) {
    std::printf("%s\n", r->body.c_str());
    return kExitOk;
  }
  const auto j = nlohmann::json::parse(r->body, nullptr, false);
  if (j.is_discarded())
    std::printf("%s\n", r->body.c_str());
  else
    print_human(o.verb, j);
  return kExitOk;
}

}  // namespace

void add_ctl_command(CLI::App& app, int* status) {
  auto opts = std::make_shared<CtlOptions>();
  auto* cmd =
      app.add_subcommand("ctl", "Control a running ringvm through its API socket: info, pause, resume, ...");
  cmd->footer(kCtlFooter);
  cmd->add_option("--api-sock", opts->api_sock, "The socket `ringvm run --api-sock` serves")->required();
  cmd->add_flag("--json", opts->json, "Print the API's JSON answer, for scripts");
  cmd->add_option("--timeout", opts->timeout_s, "Seconds to wait for the answer")
      ->capture_default_str()
      ->check(CLI::Range(1, 3600));
  cmd->add_option("verb", opts->words,
                  "info, config, metrics, version, start, pause, resume, ctrl-alt-del, flush-metrics, "
                  "snapshot create, snapshot load")
      ->required();
  cmd->add_option("--snapshot", opts->snapshot, "snapshot create/load: the state file");
  cmd->add_option("--mem", opts->mem, "snapshot create/load: the memory file");
  cmd->add_flag("--diff", opts->diff,
                "snapshot create: only the pages written since the last snapshot (needs dirty page tracking)");
  cmd->add_flag("--resume", opts->resume, "snapshot load: run the VM at once (else it comes up paused)");
  cmd->add_flag("--track-dirty-pages", opts->track_dirty_pages,
                "snapshot load: log written pages, for Diff snapshots of the restored VM");
  cmd->add_flag("--clock-realtime", opts->clock_realtime,
                "snapshot load: set the guest's clock to now (else it continues from the snapshot)");
  cmd->add_option("--net-override", opts->net_overrides,
                  "snapshot load: IFACE_ID=TAP, the restored NIC's new tap (repeatable)");
  cmd->callback([opts, status] { *status = run_ctl(*opts); });
}

}  // namespace ringvm
