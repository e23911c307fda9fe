// The OpenAPI agreement test: docs/api/ringvm.yaml and ApiHandler say the same thing.
//
// - every route ApiHandler::routes() lists is documented under its path and method, and marked
//   x-ringvm-unsupported exactly when the handler answers "not supported yet";
// - every documented path and method is routed (the handler answers neither 404 nor 405);
// - every request example matches its documented schema and is accepted (2xx) by a VM in the
//   state the example's x-ringvm-needs names (over a FakeMachine, no KVM);
// - every request schema lists exactly the fields the handler knows (its "unknown field"
//   answer names them);
// - every documented GET answers 200 with a body its response schema describes;
// - the documented unsupported routes answer 400 saying so;
// - the config-file example in docs/api.md is a config file ringvm accepts, and so is what
//   GET /vm/config answers.
// A failure names the path and method (and the example or field).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "api/api_handler.h"
#include "base/log.h"
#include "vmm/config_json.h"
#include "vmm/controller.h"
#include "vmm/testing/fake_machine.h"

namespace ringvm {
namespace {

constexpr const char* kDocPath = RINGVM_SOURCE_DIR "/docs/api/ringvm.yaml";
constexpr const char* kHowToPath = RINGVM_SOURCE_DIR "/docs/api.md";
constexpr const char* kExampleDir = "/tmp/ringvm-api-example";
constexpr const char* kMethods[] = {"get", "put", "patch", "post", "delete"};

std::string upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

// A YAML scalar as JSON: quoted scalars are strings; plain ones are YAML 1.2's core types.
Json scalar_to_json(const YAML::Node& n) {
  const std::string s = n.Scalar();
  if (n.Tag() == "!") return s;
  if (s == "true") return true;
  if (s == "false") return false;
  if (s == "null" || s == "~" || s.empty()) return nullptr;
  if (std::regex_match(s, std::regex("-?[0-9]+"))) {
    errno = 0;
    if (s[0] == '-') {
      const long long v = std::strtoll(s.c_str(), nullptr, 10);
      if (errno == 0) return v;
    } else {
      const unsigned long long v = std::strtoull(s.c_str(), nullptr, 10);
      if (errno == 0) return v;
    }
  }
  if (std::regex_match(s, std::regex("-?[0-9]+\\.[0-9]+([eE][-+]?[0-9]+)?")))
    return std::strtod(s.c_str(), nullptr);
  return s;
}

Json to_json(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Map: {
      Json o = Json::object();
      for (const auto& kv : n) o[kv.first.Scalar()] = to_json(kv.second);
      return o;
    }
    case YAML::NodeType::Sequence: {
      Json a = Json::array();
      for (const auto& item : n) a.push_back(to_json(item));
      return a;
    }
    case YAML::NodeType::Scalar: return scalar_to_json(n);
    default: return nullptr;
  }
}

// The document, loaded once.
const Json& doc() {
  static const Json d = [] {
    try {
      return to_json(YAML::LoadFile(kDocPath));
    } catch (const YAML::Exception& e) {
      ADD_FAILURE() << kDocPath << ": " << e.what();
      return Json::object();
    }
  }();
  return d;
}

// Follows a local "$ref" ("#/components/schemas/X").
const Json& deref(const Json& j) {
  if (!j.is_object() || !j.contains("$ref")) return j;
  const std::string ref = j["$ref"];
  if (!ref.starts_with("#/")) throw std::runtime_error("non-local $ref " + ref);
  return deref(doc().at(Json::json_pointer(ref.substr(1))));
}

// One documented operation.
struct Operation {
  std::string method;  // "GET"
  std::string path;    // "/drives/{drive_id}"
  const Json* op;
  const Json* path_item;
  std::string name() const { return method + " " + path; }
  bool unsupported() const { return op->value("x-ringvm-unsupported", false); }
  const Json* request_content() const {
    if (!op->contains("requestBody")) return nullptr;
    const Json& body = deref((*op)["requestBody"]);
    if (!body.contains("content") || !body["content"].contains("application/json")) return nullptr;
    return &body["content"]["application/json"];
  }
};

std::vector<Operation> operations() {
  std::vector<Operation> out;
  if (!doc().contains("paths")) return out;
  for (const auto& [path, item] : doc().at("paths").items())
    for (const char* m : kMethods)
      if (item.contains(m)) out.push_back(Operation{upper(m), path, &item[m], &item});
  return out;
}

const Operation* find_operation(std::string_view method, std::string_view path) {
  static const std::vector<Operation> ops = operations();
  for (const Operation& o : ops)
    if (o.method == method && o.path == path) return &o;
  return nullptr;
}

// Checks `v` against an OpenAPI schema (the subset docs/api/ringvm.yaml uses). Errors name `at`.
void validate(const Json& v, const Json& schema_in, const std::string& at, std::vector<std::string>* errors) {
  const Json& s = deref(schema_in);
  auto fail = [&](const std::string& what) { errors->push_back(at + ": " + what); };
  if (s.contains("enum")) {
    const Json& e = s["enum"];
    if (std::find(e.begin(), e.end(), v) == e.end()) fail(v.dump() + " is not one of " + e.dump());
  }
  const std::string type = s.value("type", "");
  if (type == "object") {
    if (!v.is_object()) return fail("expected an object, got " + v.dump());
    for (const Json& r : s.value("required", Json::array()))
      if (!v.contains(r.get<std::string>())) fail("required field " + r.get<std::string>() + " is missing");
    const Json props = s.value("properties", Json::object());
    for (const auto& [k, x] : v.items()) {
      if (props.contains(k)) {
        validate(x, props[k], at + "." + k, errors);
      } else if (s.contains("additionalProperties")) {
        const Json& extra = s["additionalProperties"];
        if (extra.is_boolean() && !extra.get<bool>())
          fail("field " + k + " is not in the schema");
        else if (extra.is_object())
          validate(x, extra, at + "." + k, errors);
      }
    }
  } else if (type == "array") {
    if (!v.is_array()) return fail("expected an array, got " + v.dump());
    for (size_t i = 0; i < v.size(); ++i)
      if (s.contains("items")) validate(v[i], s["items"], at + "[" + std::to_string(i) + "]", errors);
  } else if (type == "string") {
    if (!v.is_string()) return fail("expected a string, got " + v.dump());
    const auto str = v.get<std::string>();
    if (s.contains("minLength") && str.size() < s["minLength"].get<size_t>()) fail("shorter than minLength");
    if (s.contains("maxLength") && str.size() > s["maxLength"].get<size_t>()) fail("longer than maxLength");
    if (s.contains("pattern") && !std::regex_search(str, std::regex(s["pattern"].get<std::string>())))
      fail("\"" + str + "\" does not match " + s["pattern"].get<std::string>());
  } else if (type == "integer" || type == "number") {
    if (type == "integer" ? !v.is_number_integer() : !v.is_number())
      return fail("expected " + type + ", got " + v.dump());
    const double d = v.get<double>();
    if (s.contains("minimum") && d < s["minimum"].get<double>()) fail(v.dump() + " is below the minimum");
    if (s.contains("maximum") && d > s["maximum"].get<double>()) fail(v.dump() + " is above the maximum");
  } else if (type == "boolean") {
    if (!v.is_boolean()) fail("expected a boolean, got " + v.dump());
  }
}

// The path with each "{param}" replaced: the body's field of that name, else the parameter's
// documented example.
std::string concrete_path(const Operation& o, const Json& body) {
  std::string out;
  std::string_view rest = o.path;
  while (!rest.empty()) {
    const size_t open = rest.find('{');
    if (open == std::string_view::npos) {
      out += rest;
      break;
    }
    const size_t close = rest.find('}', open);
    out += rest.substr(0, open);
    const std::string name(rest.substr(open + 1, close - open - 1));
    std::string value = "x";
    if (body.is_object() && body.contains(name) && body[name].is_string()) {
      value = body[name];
    } else {
      for (const Json* params : {o.path_item, o.op})
        for (const Json& p : params->value("parameters", Json::array())) {
          const Json& param = deref(p);
          if (param.value("name", "") == name && param.contains("example")) value = param["example"];
        }
    }
    out += value;
    rest.remove_prefix(close + 1);
  }
  return out;
}

// Every string in an example that names a file under /tmp must be under kExampleDir; the inputs
// (kernel, initrd, drive images) are created.
void prepare_files(const Json& j, const std::string& where) {
  static const std::set<std::string> inputs = {"kernel_image_path", "initrd_path", "path_on_host"};
  if (!j.is_object()) return;
  for (const auto& [k, v] : j.items()) {
    if (v.is_object()) prepare_files(v, where);
    if (v.is_array())
      for (const Json& x : v) prepare_files(x, where);
    if (!v.is_string() || !v.get<std::string>().starts_with("/")) continue;
    const std::string path = v;
    EXPECT_TRUE(path.starts_with(std::string(kExampleDir) + "/"))
        << where << ": " << k << " \"" << path << "\" is not under " << kExampleDir;
    if (inputs.contains(k) && path.starts_with(kExampleDir)) {
      ::mkdir(kExampleDir, 0755);
      std::ofstream(path, std::ios::app).flush();
    }
  }
}

// A VmController over a FakeMachine with its main thread running, and the handler in front.
class TestVm {
 public:
  TestVm() : runner_([this] { controller_.run(false); }) {}
  ~TestVm() {
    controller_.request_stop(StopReason::kQuit);
    runner_.join();
  }
  ApiResponse send(std::string_view method, std::string_view path, std::string_view body) {
    return handler_.handle(method, path, body);
  }
  VmState state() const { return controller_.state(); }

 private:
  std::shared_ptr<testing::FakeMachineLog> log_ = std::make_shared<testing::FakeMachineLog>();
  VmController controller_{VmConfig{}, testing::FakeMachine::factory(log_)};
  ApiHandler handler_{controller_};
  std::thread runner_;
};

// The first example of a documented operation's request body.
Json first_example(std::string_view method, std::string_view path) {
  const Operation* o = find_operation(method, path);
  if (o == nullptr || o->request_content() == nullptr) return nullptr;
  const Json& c = *o->request_content();
  if (c.contains("examples") && !c["examples"].empty())
    return deref(c["examples"].begin().value()).value("value", Json());
  return c.value("example", Json());
}

// Brings a fresh TestVm to what an example's x-ringvm-needs names: "fresh", "configured"
// (the first example of each getting-started PUT applied), "running" (and started), "paused"
// (and paused), or "snapshot" (still fresh, after another VM, paused, wrote the first example of
// PUT /snapshot/create).
void bring_to(TestVm& vm, const std::string& needs, const std::string& why) {
  if (needs == "fresh") return;
  if (needs == "snapshot") {
    TestVm other;
    bring_to(other, "paused", why);
    if (::testing::Test::HasFatalFailure()) return;
    const Json body = first_example("PUT", "/snapshot/create");
    ASSERT_FALSE(body.is_null()) << why << ": needs the document's first example of PUT /snapshot/create";
    prepare_files(body, why);
    const ApiResponse r = other.send("PUT", "/snapshot/create", body.dump());
    ASSERT_EQ(r.status, 204) << why << ": setting up with PUT /snapshot/create " << body.dump() << ": " << r.body;
    return;
  }
  ASSERT_TRUE(needs == "configured" || needs == "running" || needs == "paused")
      << why << ": x-ringvm-needs \"" << needs << "\" is not fresh, configured, running, paused or snapshot";
  for (const char* p : {"/boot-source", "/drives/{drive_id}", "/network-interfaces/{iface_id}", "/metrics"}) {
    const Json body = first_example("PUT", p);
    ASSERT_FALSE(body.is_null()) << why << ": needs the document's first example of PUT " << p;
    const Operation* o = find_operation("PUT", p);
    prepare_files(body, o->name());
    const ApiResponse r = vm.send("PUT", concrete_path(*o, body), body.dump());
    ASSERT_EQ(r.status, 204) << why << ": setting up with PUT " << p << " " << body.dump() << ": " << r.body;
  }
  if (needs == "running" || needs == "paused") {
    const ApiResponse r = vm.send("PUT", "/actions", R"({"action_type":"InstanceStart"})");
    ASSERT_EQ(r.status, 204) << why << ": setting up with InstanceStart: " << r.body;
    ASSERT_EQ(vm.state(), VmState::kRunning) << why;
  }
  if (needs == "paused") {
    const ApiResponse r = vm.send("PATCH", "/vm", R"({"state":"Paused"})");
    ASSERT_EQ(r.status, 204) << why << ": setting up with PATCH /vm Paused: " << r.body;
    ASSERT_EQ(vm.state(), VmState::kPaused) << why;
  }
}

// Every (name, example value, x-ringvm-needs) of an operation's request body.
struct Example {
  std::string name;
  Json value;
  std::string needs;
};
std::vector<Example> examples_of(const Operation& o) {
  std::vector<Example> out;
  const Json* c = o.request_content();
  if (c == nullptr) return out;
  if (c->contains("example")) out.push_back({"example", (*c)["example"], "fresh"});
  const Json examples = c->value("examples", Json::object());
  for (const auto& [name, ex] : examples.items()) {
    const Json& e = deref(ex);
    out.push_back({name, e.value("value", Json()), e.value("x-ringvm-needs", "fresh")});
  }
  return out;
}

class OpenApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(doc().is_object() && doc().contains("paths")) << kDocPath << " did not load";
    ASSERT_FALSE(operations().empty());
  }
};

TEST_F(OpenApiTest, EveryRouteIsDocumented) {
  for (const ApiRoute& r : ApiHandler::routes()) {
    const std::string name = std::string(r.method) + " " + std::string(r.path);
    const Operation* o = find_operation(r.method, r.path);
    if (o == nullptr) {
      ADD_FAILURE() << name << ": ApiHandler routes it but " << kDocPath << " does not document it";
      continue;
    }
    EXPECT_EQ(o->unsupported(), !r.supported)
        << name << ": the handler " << (r.supported ? "serves it" : "answers \"not supported yet\"")
        << " but the document " << (o->unsupported() ? "marks" : "does not mark")
        << " it x-ringvm-unsupported";
  }
}

TEST_F(OpenApiTest, EveryDocumentedOperationIsRouted) {
  TestVm vm;
  for (const Operation& o : operations()) {
    const std::string path = concrete_path(o, Json());
    const ApiResponse r = vm.send(o.method, path, o.method == "GET" ? "" : "{}");
    EXPECT_NE(r.status, 404) << o.name() << ": documented but the handler does not know the path: " << r.body;
    EXPECT_NE(r.status, 405) << o.name()
                             << ": documented but the handler does not route the method: " << r.body;
    const auto routes = ApiHandler::routes();
    EXPECT_TRUE(std::any_of(routes.begin(), routes.end(),
                            [&](const ApiRoute& x) { return x.method == o.method && x.path == o.path; }))
        << o.name() << ": documented but not in ApiHandler::routes() under that template";
  }
}

TEST_F(OpenApiTest, EverySupportedWriteHasAnExampleMatchingItsSchema) {
  for (const Operation& o : operations()) {
    if (o.unsupported() || o.method == "GET") continue;
    const Json* c = o.request_content();
    if (c == nullptr || !c->contains("schema")) {
      ADD_FAILURE() << o.name() << ": no application/json request body schema";
      continue;
    }
    const auto examples = examples_of(o);
    EXPECT_FALSE(examples.empty()) << o.name() << ": no request example";
    for (const Example& e : examples) {
      std::vector<std::string> errors;
      validate(e.value, (*c)["schema"], o.name() + " example " + e.name, &errors);
      for (const std::string& err : errors) ADD_FAILURE() << err;
    }
  }
}

TEST_F(OpenApiTest, EveryExampleIsAccepted) {
  int sent = 0;
  for (const Operation& o : operations()) {
    if (o.unsupported()) continue;
    for (const Example& e : examples_of(o)) {
      const std::string why = o.name() + " example " + e.name;
      SCOPED_TRACE(why);
      TestVm vm;
      bring_to(vm, e.needs, why);
      if (::testing::Test::HasFatalFailure()) return;
      prepare_files(e.value, why);
      const std::string path = concrete_path(o, e.value);
      const ApiResponse r = vm.send(o.method, path, e.value.dump());
      EXPECT_GE(r.status, 200) << why << " (" << o.method << " " << path << " " << e.value.dump()
                               << "): " << r.body;
      EXPECT_LT(r.status, 300) << why << " (" << o.method << " " << path << " " << e.value.dump()
                               << "): " << r.body;
      ++sent;
      if (o.path == "/logger") {
        // The example sent ringvm's log (this process's) to a file: back to stderr.
        EXPECT_TRUE(set_log_output("", "warn", false, false, nullptr));
      }
    }
  }
  EXPECT_GT(sent, 10);
}

TEST_F(OpenApiTest, RequestSchemasListTheHandlersFields) {
  for (const Operation& o : operations()) {
    if (o.unsupported() || o.method == "GET") continue;
    const auto examples = examples_of(o);
    const Json* c = o.request_content();
    if (examples.empty() || c == nullptr || !c->contains("schema")) continue;  // reported above
    const Example& e = examples.front();
    const std::string why = o.name() + " fields";
    TestVm vm;
    bring_to(vm, e.needs, why);
    if (::testing::Test::HasFatalFailure()) return;
    prepare_files(e.value, why);
    Json probe = e.value;
    probe["zz_not_a_field"] = 1;
    const ApiResponse r = vm.send(o.method, concrete_path(o, e.value), probe.dump());
    const Json answer = Json::parse(r.body, nullptr, false);
    const std::string message = answer.is_object() ? answer.value("fault_message", "") : "";
    const size_t at = message.find("(known: ");
    if (r.status != 400 || message.find("unknown field \"zz_not_a_field\"") == std::string::npos ||
        at == std::string::npos || !message.ends_with(")")) {
      ADD_FAILURE() << why << ": an unknown field got " << r.status << " " << r.body
                    << "; expected 400 naming it and the known fields";
      continue;
    }
    std::set<std::string> known;
    std::stringstream list(message.substr(at + 8, message.size() - at - 9));
    for (std::string f; std::getline(list, f, ',');) known.insert(f.substr(f.find_first_not_of(' ')));
    std::set<std::string> documented;
    const Json properties = deref((*c)["schema"]).value("properties", Json::object());
    for (const auto& [k, _] : properties.items()) documented.insert(k);
    for (const std::string& f : known)
      EXPECT_TRUE(documented.contains(f))
          << why << ": the handler knows \"" << f << "\"; the schema does not list it";
    for (const std::string& f : documented)
      EXPECT_TRUE(known.contains(f)) << why << ": the schema lists \"" << f
                                     << "\"; the handler does not know it";
  }
}

// GET /vm/config answers in the config file's shape: its answer is a config file.
TEST_F(OpenApiTest, VmConfigIsAConfigFile) {
  TestVm vm;
  bring_to(vm, "configured", "GET /vm/config as a config file");
  if (::testing::Test::HasFatalFailure()) return;
  const ApiResponse r = vm.send("GET", "/vm/config", "");
  ASSERT_EQ(r.status, 200) << r.body;
  auto cfg = parse_config_file(r.body);
  ASSERT_TRUE(cfg.ok()) << "GET /vm/config's answer is refused as a config file: " << cfg.error().message()
                        << "\n"
                        << r.body;
  EXPECT_EQ(config_to_json(*cfg).dump(), r.body);
}

// A documented minimum and maximum are the handler's: both accepted, one beyond either refused.
TEST_F(OpenApiTest, DocumentedRangesAreTheHandlersRanges) {
  int checked = 0;
  for (const Operation& o : operations()) {
    if (o.unsupported() || o.method == "GET") continue;
    const auto examples = examples_of(o);
    const Json* c = o.request_content();
    if (examples.empty() || c == nullptr || !c->contains("schema")) continue;
    const Example& e = examples.front();
    const Json properties = deref((*c)["schema"]).value("properties", Json::object());
    for (const auto& [field, prop_ref] : properties.items()) {
      const Json& prop = deref(prop_ref);
      if (prop.value("type", "") != "integer" || prop.value("x-ringvm-unsupported", false)) continue;
      for (const char* bound : {"minimum", "maximum"}) {
        if (!prop.contains(bound)) continue;
        const int64_t edge = prop[bound].get<int64_t>();
        const int64_t beyond = std::string_view(bound) == "minimum" ? edge - 1 : edge + 1;
        for (const int64_t v : {edge, beyond}) {
          const std::string why = o.name() + " " + field + " = " + std::to_string(v) + " (documented " +
                                  bound + " " + std::to_string(edge) + ")";
          TestVm vm;
          bring_to(vm, e.needs, why);
          if (::testing::Test::HasFatalFailure()) return;
          Json body = e.value;
          body[field] = v;
          prepare_files(body, why);
          const ApiResponse r = vm.send(o.method, concrete_path(o, body), body.dump());
          if (v == edge)
            EXPECT_EQ(r.status, 204) << why << ": the edge is refused: " << r.body;
          else
            EXPECT_EQ(r.status, 400) << why << ": beyond the edge is not refused: " << r.body;
          ++checked;
        }
      }
    }
  }
  EXPECT_GT(checked, 0);
}

TEST_F(OpenApiTest, EveryGetAnswersWhatItsSchemaSays) {
  for (const std::string needs : {"fresh", "configured"}) {
    TestVm vm;
    bring_to(vm, needs, "GET in a " + needs + " VM");
    if (::testing::Test::HasFatalFailure()) return;
    for (const Operation& o : operations()) {
      if (o.method != "GET" || o.unsupported()) continue;
      const std::string why = o.name() + " (" + needs + " VM)";
      const ApiResponse r = vm.send("GET", concrete_path(o, Json()), "");
      EXPECT_EQ(r.status, 200) << why << ": " << r.body;
      const Json body = Json::parse(r.body, nullptr, false);
      ASSERT_FALSE(body.is_discarded()) << why << ": not JSON: " << r.body;
      const Json& ok = (*o.op)["responses"].value("200", Json());
      const Json schema = deref(ok)
                              .value("content", Json::object())
                              .value("application/json", Json::object())
                              .value("schema", Json());
      if (schema.is_null()) {
        ADD_FAILURE() << why << ": no 200 application/json schema";
        continue;
      }
      std::vector<std::string> errors;
      validate(body, schema, why + " response", &errors);
      for (const std::string& err : errors) ADD_FAILURE() << err << " (body " << r.body << ")";
    }
  }
}

TEST_F(OpenApiTest, DocumentedUnsupportedRoutesAnswer400) {
  TestVm vm;
  int checked = 0;
  for (const Operation& o : operations()) {
    if (!o.unsupported()) continue;
    const ApiResponse r = vm.send(o.method, concrete_path(o, Json()), o.method == "GET" ? "" : "{}");
    EXPECT_EQ(r.status, 400) << o.name() << ": documented as not supported yet: " << r.body;
    EXPECT_NE(r.body.find("not supported by ringvm yet"), std::string::npos) << o.name() << ": " << r.body;
    EXPECT_TRUE((*o.op)["responses"].contains("400")) << o.name() << ": documents no 400 response";
    ++checked;
  }
  EXPECT_GT(checked, 0);
}

TEST_F(OpenApiTest, EveryOperationDocumentsItsErrors) {
  for (const Operation& o : operations()) {
    const Json& responses = (*o.op)["responses"];
    EXPECT_TRUE(responses.contains("400")) << o.name() << ": no 400 response";
    if (o.unsupported()) continue;
    if (o.method == "GET")
      EXPECT_TRUE(responses.contains("200")) << o.name() << ": no 200 response";
    else
      EXPECT_TRUE(responses.contains("204") && responses.contains("413"))
          << o.name() << ": needs 204 and 413";
    for (const auto& [status, resp] : responses.items()) {
      if (status == "200" || status == "204") continue;
      const Json& r = deref(resp);
      EXPECT_EQ(r.value("content", Json::object())
                    .value("application/json", Json::object())
                    .value("schema", Json()),
                Json({{"$ref", "#/components/schemas/Error"}}))
          << o.name() << " " << status << ": an error answers with the Error schema";
    }
  }
}

// docs/api.md's config file (the ```json block after "<!-- config-file-example -->") is one
// ringvm runs with. The how-to keeps its files in /tmp/vm/; here they live in kExampleDir.
TEST_F(OpenApiTest, HowToConfigFileIsAccepted) {
  std::ifstream f(kHowToPath);
  ASSERT_TRUE(f) << kHowToPath;
  std::stringstream text;
  text << f.rdbuf();
  const std::string md = text.str();
  const size_t marker = md.find("<!-- config-file-example -->");
  ASSERT_NE(marker, std::string::npos) << kHowToPath << ": no <!-- config-file-example --> marker";
  const size_t open = md.find("```json\n", marker);
  ASSERT_NE(open, std::string::npos);
  const size_t close = md.find("\n```", open + 8);
  ASSERT_NE(close, std::string::npos);
  std::string file = md.substr(open + 8, close - open - 8);
  const std::string to = fmt::format("\"{}/", kExampleDir);
  for (size_t at; (at = file.find("\"/tmp/vm/")) != std::string::npos;) file.replace(at, 9, to);
  const Json j = Json::parse(file, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << kHowToPath << ": the config-file example is not JSON";
  prepare_files(j, "docs/api.md config file");
  auto cfg = parse_config_file(file);
  ASSERT_TRUE(cfg.ok()) << kHowToPath << ": the config-file example is refused: " << cfg.error().message();
  EXPECT_TRUE(finalize_config(*cfg).ok());
}

}  // namespace
}  // namespace ringvm
