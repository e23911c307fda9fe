#include "api/api_handler.h"

#include <array>
#include <vector>

#include "base/log.h"
#include "vmm/config_json.h"

namespace ringvm {

namespace {

constexpr std::string_view kVersion = "0.1.0";

// Firecracker's routes and ringvm's extensions (GET /metrics). Firecracker routes ringvm does
// not serve yet are listed with supported = false, so they answer "not supported yet" (400)
// instead of "no such path" (404), and the OpenAPI document lists them too.
constexpr std::array kRoutes = {
    ApiRoute{"GET", "/"},
    ApiRoute{"GET", "/version"},
    ApiRoute{"GET", "/vm/config"},
    ApiRoute{"GET", "/machine-config"},
    ApiRoute{"PUT", "/machine-config"},
    ApiRoute{"PATCH", "/machine-config"},
    ApiRoute{"PUT", "/boot-source"},
    ApiRoute{"PUT", "/drives/{drive_id}"},
    ApiRoute{"PATCH", "/drives/{drive_id}"},
    ApiRoute{"PUT", "/network-interfaces/{iface_id}"},
    ApiRoute{"PATCH", "/network-interfaces/{iface_id}"},
    ApiRoute{"PUT", "/vsock"},
    ApiRoute{"PUT", "/entropy"},
    ApiRoute{"PUT", "/serial"},
    ApiRoute{"PUT", "/logger"},
    ApiRoute{"PUT", "/metrics"},
    ApiRoute{"GET", "/metrics"},
    ApiRoute{"PUT", "/actions"},
    ApiRoute{"PATCH", "/vm"},
    ApiRoute{"PUT", "/snapshot/create", true},
    ApiRoute{"PUT", "/snapshot/load", true},
    ApiRoute{"GET", "/balloon", false},
    ApiRoute{"PUT", "/balloon", false},
    ApiRoute{"PATCH", "/balloon", false},
    ApiRoute{"GET", "/balloon/statistics", false},
    ApiRoute{"PATCH", "/balloon/statistics", false},
    ApiRoute{"PATCH", "/balloon/hinting/start", false},
    ApiRoute{"GET", "/balloon/hinting/status", false},
    ApiRoute{"PATCH", "/balloon/hinting/stop", false},
    ApiRoute{"GET", "/mmds", false},
    ApiRoute{"PUT", "/mmds", false},
    ApiRoute{"PATCH", "/mmds", false},
    ApiRoute{"PUT", "/mmds/config", false},
    ApiRoute{"PUT", "/cpu-config", false},
    ApiRoute{"PUT", "/pmem/{id}", false},
    ApiRoute{"PATCH", "/pmem/{id}", false},
    ApiRoute{"PUT", "/hotplug/memory", false},
    ApiRoute{"GET", "/hotplug/memory", false},
    ApiRoute{"PATCH", "/hotplug/memory", false},
};

// Why an unsupported route is unsupported, by its first path segment.
std::string_view not_yet_reason(std::string_view path) {
  if (path.starts_with("/balloon")) return "the balloon device is planned";
  if (path.starts_with("/mmds")) return "ringvm has no metadata service (MMDS)";
  if (path.starts_with("/cpu-config")) return "custom CPU templates are not implemented";
  if (path.starts_with("/pmem")) return "virtio-pmem is not implemented";
  return "memory hotplug (virtio-mem) is not implemented";
}

// Splits "/a/b/c" into segments; false for an empty segment ("//", a trailing "/").
bool split_path(std::string_view path, std::vector<std::string_view>* out) {
  if (path.empty() || path[0] != '/') return false;
  if (path == "/") return true;
  path.remove_prefix(1);
  while (true) {
    const size_t slash = path.find('/');
    std::string_view seg = path.substr(0, slash);
    if (seg.empty()) return false;
    out->push_back(seg);
    if (slash == std::string_view::npos) return true;
    path.remove_prefix(slash + 1);
  }
}

// Matches `path` against a template; the "{...}" segment's value goes to *param.
bool match(std::string_view tmpl, const std::vector<std::string_view>& segs, std::string_view* param) {
  std::vector<std::string_view> t;
  split_path(tmpl, &t);
  if (t.size() != segs.size()) return false;
  for (size_t i = 0; i < t.size(); ++i) {
    if (t[i].starts_with('{'))
      *param = segs[i];
    else if (t[i] != segs[i])
      return false;
  }
  return true;
}

// Bytes that are not UTF-8 (a file name from the command line, a raw request path in a fault)
// become U+FFFD: dump() would throw, out of the API thread, and end ringvm.
ApiResponse ok_json(const Json& j) {
  return ApiResponse{200, j.dump(-1, ' ', false, Json::error_handler_t::replace)};
}
ApiResponse no_content() { return ApiResponse{204, {}}; }

ApiResponse error_response(const Error& e) {
  const int status = e.code == ErrorCode::kInternal ? 500 : 400;
  return ApiResponse{status, fault_json(e.message())};
}

// A request path's value may be percent-encoded; ids are plain ([A-Za-z0-9_.-]), so a '%' is refused.
Result<std::string> path_id(std::string_view what, std::string_view raw) {
  if (raw.find('%') != std::string_view::npos)
    return make_error(ErrorCode::kInvalidArgument, "{}: \"{}\": ids are letters, digits, '_', '-' and '.'",
                      what, raw);
  return std::string(raw);
}

}  // namespace

std::string fault_json(std::string_view message) {
  return Json{{"fault_message", message}}.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::span<const ApiRoute> ApiHandler::routes() { return kRoutes; }

ApiResponse ApiHandler::handle(std::string_view method, std::string_view path, std::string_view body) {
  if (body.size() > kMaxBodyBytes)
    return ApiResponse{413, fault_json(fmt::format("the request body is {} bytes; at most {} are accepted",
                                                   body.size(), kMaxBodyBytes))};
  // A query string is not part of any route; refuse it rather than ignore it.
  if (path.find('?') != std::string_view::npos || path.find('#') != std::string_view::npos)
    return ApiResponse{400, fault_json(fmt::format("{}: ringvm's API takes no query string", path))};
  ApiResponse r;
  try {
    r = dispatch(method, path, body);
  } catch (const std::exception& e) {
    // Nothing a client sends may end the server thread (and with it ringvm): a library's
    // exception is this request's 500, named.
    r = ApiResponse{500, fault_json(fmt::format("{} {}: internal error: {}", method, path, e.what()))};
  }
  spdlog::debug("API {} {}: {}", method, path, r.status);
  return r;
}

template <typename Apply>
ApiResponse ApiHandler::put_config(std::string_view what, std::string_view body, Apply&& apply) {
  auto j = parse_json_body(body, what);
  if (!j) return error_response(j.error());
  auto r = vm_.configure(what, [&](VmConfig& cfg) { return apply(cfg, *j); });
  if (!r) return error_response(r.error());
  return no_content();
}

ApiResponse ApiHandler::dispatch(std::string_view method, std::string_view path, std::string_view body) {
  std::vector<std::string_view> segs;
  if (!split_path(path, &segs))
    return ApiResponse{404, fault_json(fmt::format("{}: not a valid path (see docs/api.md)", path))};
  std::string_view param;
  const ApiRoute* route = nullptr;
  bool path_known = false;
  for (const ApiRoute& r : kRoutes) {
    std::string_view p;
    if (!match(r.path, segs, &p)) continue;
    path_known = true;
    if (r.method == method) {
      route = &r;
      param = p;
      break;
    }
  }
  if (route == nullptr) {
    if (!path_known)
      return ApiResponse{404, fault_json(fmt::format("{}: no such path (see docs/api.md)", path))};
    std::string allowed;
    for (const ApiRoute& r : kRoutes) {
      std::string_view p;
      if (match(r.path, segs, &p)) allowed += (allowed.empty() ? "" : ", ") + std::string(r.method);
    }
    return ApiResponse{
        405, fault_json(fmt::format("{} {}: method not allowed here (allowed: {})", method, path, allowed))};
  }
  if (!route->supported)
    return ApiResponse{400, fault_json(fmt::format("{} {}: not supported by ringvm yet: {}", method,
                                                   route->path, not_yet_reason(route->path)))};
  const std::string_view p = route->path;
  const bool get = method == "GET";
  if (get && !body.empty() && body.find_first_not_of(" \t\r\n") != std::string_view::npos)
    return ApiResponse{400, fault_json(fmt::format("GET {}: takes no body", p))};

  if (p == "/" && get)
    return ok_json(Json{{"id", vm_.id()},
                        {"state", vm_state_name(vm_.state())},
                        {"vmm_version", kVersion},
                        {"app_name", "ringvm"}});
  if (p == "/version")
    return ok_json(Json{{"firecracker_version", kVersion},
                        {"ringvm_version", kVersion},
                        {"firecracker_api_version", kFirecrackerApiVersion}});
  if (p == "/vm/config") return ok_json(config_to_json(vm_.config()));
  if (p == "/machine-config" && get) return ok_json(machine_config_to_json(vm_.config()));
  if (p == "/machine-config")
    return put_config("machine-config", body, [patch = method == "PATCH"](VmConfig& c, const Json& j) {
      return apply_machine_config(c, j, patch);
    });
  if (p == "/boot-source") return put_config("boot-source", body, apply_boot_source);
  if (p == "/vsock") return put_config("vsock", body, apply_vsock);
  if (p == "/entropy") return put_config("entropy", body, apply_entropy);
  if (p == "/serial") return put_config("serial", body, apply_serial);
  if (p == "/metrics" && get) {
    auto m = vm_.metrics();
    if (!m) return error_response(m.error());
    return ok_json(*m);
  }
  if (p == "/metrics") return put_config("metrics", body, apply_metrics);
  if (p == "/logger")
    // The log output changes inside the edit, so a file that cannot be opened leaves both the
    // configuration and the log as they were.
    return put_config("logger", body, [](VmConfig& c, const Json& j) -> Result<void> {
      RETURN_IF_ERROR(apply_logger(c, j));
      const LoggerConfig& l = *c.logger;
      std::string err;
      if (!set_log_output(l.path, l.level, l.show_level, l.show_log_origin, &err))
        return make_error(ErrorCode::kInvalidArgument, "logger: log_path {}: {}", l.path, err);
      return Ok();
    });
  if (p == "/drives/{drive_id}") {
    auto id = path_id("drives", param);
    if (!id) return error_response(id.error());
    if (method == "PUT")
      return put_config(fmt::format("drives/{}", *id), body,
                        [&](VmConfig& c, const Json& j) { return apply_drive(c, *id, j); });
    auto j = parse_json_body(body, fmt::format("drives/{}", *id));
    if (!j) return error_response(j.error());
    auto r = vm_.inspect_running(fmt::format("PATCH drives/{}", *id),
                                 [&](const VmConfig& c) { return check_drive_patch(c, *id, *j); });
    return r ? no_content() : error_response(r.error());
  }
  if (p == "/network-interfaces/{iface_id}") {
    auto id = path_id("network-interfaces", param);
    if (!id) return error_response(id.error());
    if (method == "PUT")
      return put_config(fmt::format("network-interfaces/{}", *id), body,
                        [&](VmConfig& c, const Json& j) { return apply_network_interface(c, *id, j); });
    auto j = parse_json_body(body, fmt::format("network-interfaces/{}", *id));
    if (!j) return error_response(j.error());
    auto r = vm_.inspect_running(fmt::format("PATCH network-interfaces/{}", *id),
                                 [&](const VmConfig& c) { return check_network_patch(c, *id, *j); });
    return r ? no_content() : error_response(r.error());
  }
  if (p == "/actions") return actions(body);
  if (p == "/vm") return patch_vm(body);
  if (p == "/snapshot/create" || p == "/snapshot/load") {
    auto j = parse_json_body(body, p.substr(1));
    if (!j) return error_response(j.error());
    if (p == "/snapshot/create") {
      auto req = parse_snapshot_create(*j);
      if (!req) return error_response(req.error());
      auto r = vm_.snapshot_create(*req);
      return r ? no_content() : error_response(r.error());
    }
    auto req = parse_snapshot_load(*j);
    if (!req) return error_response(req.error());
    auto r = vm_.snapshot_load(*req);
    return r ? no_content() : error_response(r.error());
  }
  return ApiResponse{500, fault_json(fmt::format("{} {}: routed but not handled (a ringvm bug)", method, p))};
}

ApiResponse ApiHandler::actions(std::string_view body) {
  auto j = parse_json_body(body, "actions");
  if (!j) return error_response(j.error());
  if (!j->is_object() || !j->contains("action_type") || !(*j)["action_type"].is_string())
    return ApiResponse{
        400, fault_json("actions: action_type is required (InstanceStart, SendCtrlAltDel or FlushMetrics)")};
  for (const auto& [key, _] : j->items())
    if (key != "action_type")
      return ApiResponse{400,
                         fault_json(fmt::format("actions: unknown field \"{}\" (known: action_type)", key))};
  const std::string type = (*j)["action_type"];
  Result<void> r = Ok();
  if (type == "InstanceStart")
    r = vm_.start();
  else if (type == "SendCtrlAltDel")
    r = vm_.send_ctrl_alt_del();
  else if (type == "FlushMetrics")
    r = vm_.flush_metrics();
  else
    return ApiResponse{400, fault_json(fmt::format("actions: action_type \"{}\" is not one of InstanceStart, "
                                                   "SendCtrlAltDel, FlushMetrics",
                                                   type))};
  return r ? no_content() : error_response(r.error());
}

ApiResponse ApiHandler::patch_vm(std::string_view body) {
  auto j = parse_json_body(body, "vm");
  if (!j) return error_response(j.error());
  if (!j->is_object() || !j->contains("state") || !(*j)["state"].is_string())
    return ApiResponse{400, fault_json("vm: state is required (\"Paused\" or \"Resumed\")")};
  for (const auto& [key, _] : j->items())
    if (key != "state")
      return ApiResponse{400, fault_json(fmt::format("vm: unknown field \"{}\" (known: state)", key))};
  const std::string state = (*j)["state"];
  Result<void> r = Ok();
  if (state == "Paused")
    r = vm_.pause();
  else if (state == "Resumed")
    r = vm_.resume();
  else
    return ApiResponse{400,
                       fault_json(fmt::format("vm: state \"{}\" is not \"Paused\" or \"Resumed\"", state))};
  return r ? no_content() : error_response(r.error());
}

}  // namespace ringvm
