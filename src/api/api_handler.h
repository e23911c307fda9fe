// ApiHandler: Firecracker's REST API (paths, fields, status codes, state rules) over one
// VmController, as a pure function of (method, path, body): the HTTP server (api_server.h)
// only moves bytes, and tests and the fuzz target call handle() directly.
//
// Success: 204 with no body, or 200 with JSON for GETs. Bad input: 400 with
// {"fault_message": "..."} naming the field and the fix, and nothing about the VM changes.
// Unknown path 404, known path with the wrong method 405, body over kMaxBodyBytes 413.
// Firecracker endpoints ringvm does not have yet (snapshots, balloon, MMDS, ...) answer 400
// saying so. docs/api/ringvm.yaml documents every route; a test keeps the two in step.
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "vmm/controller.h"

namespace ringvm {

struct ApiResponse {
  int status = 204;
  std::string body;  // JSON, or empty (204)
};

// One route: a method and a path template ("{id}" matches one path segment).
struct ApiRoute {
  std::string_view method;
  std::string_view path;
  // false: Firecracker has it and ringvm answers 400 "not supported yet".
  bool supported = true;
};

class ApiHandler {
 public:
  // Firecracker's own limit on a request body (its default http_api_max_payload_size).
  static constexpr size_t kMaxBodyBytes = 51200;
  // What GET /version calls the Firecracker API this server follows.
  static constexpr std::string_view kFirecrackerApiVersion = "1.10.0";

  explicit ApiHandler(VmController& vm) : vm_(vm) {}

  ApiResponse handle(std::string_view method, std::string_view path, std::string_view body);

  // Every route the handler knows, for the OpenAPI agreement test and `ringvm ctl`.
  static std::span<const ApiRoute> routes();

 private:
  ApiResponse dispatch(std::string_view method, std::string_view path, std::string_view body);
  ApiResponse actions(std::string_view body);
  ApiResponse patch_vm(std::string_view body);
  // PUT of one pre-boot object: parse, apply onto a copy, commit.
  template <typename Apply>
  ApiResponse put_config(std::string_view what, std::string_view body, Apply&& apply);

  VmController& vm_;
};

// {"fault_message": message}
std::string fault_json(std::string_view message);

}  // namespace ringvm
