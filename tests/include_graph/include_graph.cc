// include_graph SRC_DIR: checks that every quoted #include under SRC_DIR follows the module graph
// SRC_DIR/CMakeLists.txt declares (docs/ARCHITECTURE.md, "Modules"). Static libraries link even
// when a lower module includes a higher one's header, so the graph is only real if it is checked.
//
// The rules, for a file in module M (the DIR its path starts with):
// - it may include its own module's headers and those of every module M reaches through DEPS;
// - a test file (*_test.cc, anything under a testing/ directory, *_test_util.h) may also include
//   what M's TEST_DEPS reach, and testing helpers; other files may include no testing helper;
// - the executables' sources (add_executable in SRC_DIR/CMakeLists.txt) may use what they link.
// System includes (<...>) and quoted includes that name no module are out of scope.
// Exit status: 0 clean, 1 violations (each named: file, line, include, missing edge), 2 bad input.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

struct Module {
  std::string name;
  std::string dir;                 // relative to SRC_DIR; empty for an executable
  std::vector<std::string> files;  // an executable's sources, relative to SRC_DIR
  std::vector<std::string> deps, test_deps;
};

std::string read_file(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string strip_comments(const std::string& cmake) {
  std::string out;
  bool comment = false;
  for (char c : cmake) {
    if (c == '#') comment = true;
    if (c == '\n') comment = false;
    if (!comment) out += c;
  }
  return out;
}

// The arguments of every `command(...)` call in `cmake`, split at whitespace.
std::vector<std::vector<std::string>> calls(const std::string& cmake, const std::string& command) {
  std::vector<std::vector<std::string>> out;
  const std::regex re("(^|[^A-Za-z0-9_])" + command + "\\s*\\(([^)]*)\\)");
  for (std::sregex_iterator it(cmake.begin(), cmake.end(), re), end; it != end; ++it) {
    std::istringstream args((*it)[2].str());
    std::vector<std::string> words;
    for (std::string w; args >> w;) words.push_back(w);
    out.push_back(std::move(words));
  }
  return out;
}

std::map<std::string, Module> parse_modules(const fs::path& src) {
  const std::string cmake = strip_comments(read_file(src / "CMakeLists.txt"));
  std::map<std::string, Module> modules;
  for (const auto& args : calls(cmake, "ringvm_module")) {
    Module m;
    std::vector<std::string>* list = nullptr;
    for (size_t i = 0; i < args.size(); ++i) {
      if (args[i] == "NAME" && i + 1 < args.size()) {
        m.name = args[++i];
      } else if (args[i] == "DIR" && i + 1 < args.size()) {
        m.dir = args[++i];
      } else if (args[i] == "DEPS") {
        list = &m.deps;
      } else if (args[i] == "TEST_DEPS") {
        list = &m.test_deps;
      } else if (list != nullptr) {
        list->push_back(args[i]);
      }
    }
    if (!m.name.empty() && !m.dir.empty()) modules[m.name] = m;
  }
  for (const auto& args : calls(cmake, "add_executable")) {
    if (args.empty()) continue;
    Module m;
    m.name = args[0];
    for (size_t i = 1; i < args.size(); ++i)
      if (args[i].ends_with(".cc")) m.files.push_back(args[i]);
    if (!m.files.empty()) modules[m.name] = m;
  }
  for (const auto& args : calls(cmake, "target_link_libraries")) {
    if (args.empty() || !modules.contains(args[0]) || !modules[args[0]].dir.empty()) continue;
    for (size_t i = 1; i < args.size(); ++i) modules[args[0]].deps.push_back(args[i]);
  }
  // Only edges between modules count (fmt::fmt, PkgConfig::URING, ringvm_warnings are not ours).
  for (auto& [name, m] : modules) {
    auto drop = [&](std::vector<std::string>& v) {
      std::erase_if(v, [&](const std::string& d) { return !modules.contains(d) || d == name; });
    };
    drop(m.deps);
    drop(m.test_deps);
  }
  return modules;
}

// Every module `name` reaches through DEPS, itself included; a cycle is reported in `cycle`.
std::set<std::string> closure(const std::map<std::string, Module>& modules, const std::string& name,
                              std::string* cycle) {
  std::set<std::string> seen;
  std::vector<std::string> path;
  auto visit = [&](auto& self, const std::string& n) -> void {
    if (std::find(path.begin(), path.end(), n) != path.end()) {
      if (cycle != nullptr && cycle->empty()) {
        for (const auto& p : path) *cycle += p + " -> ";
        *cycle += n;
      }
      return;
    }
    if (!seen.insert(n).second) return;
    path.push_back(n);
    for (const auto& d : modules.at(n).deps) self(self, d);
    path.pop_back();
  };
  visit(visit, name);
  return seen;
}

bool is_test_file(const std::string& rel) {
  return rel.ends_with("_test.cc") || rel.ends_with("_test_util.h") ||
         rel.find("/testing/") != std::string::npos;
}

std::string join(const std::set<std::string>& s) {
  std::string out;
  for (const auto& x : s) out += (out.empty() ? "" : " ") + x;
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr,
                 "usage: include_graph SRC_DIR (the directory holding the modules' CMakeLists.txt)\n");
    return 2;
  }
  const fs::path src = fs::path(argv[1]).lexically_normal();
  if (!fs::is_regular_file(src / "CMakeLists.txt")) {
    std::fprintf(stderr, "include_graph: %s has no CMakeLists.txt\n", src.c_str());
    return 2;
  }
  const auto modules = parse_modules(src);
  if (modules.empty()) {
    std::fprintf(stderr, "include_graph: no ringvm_module(...) in %s/CMakeLists.txt\n", src.c_str());
    return 2;
  }

  int violations = 0;
  std::map<std::string, std::set<std::string>> uses, test_uses;
  std::set<std::string> cycles;
  for (const auto& [name, m] : modules) {
    std::string cycle;
    uses[name] = closure(modules, name, &cycle);
    if (!cycle.empty() && cycles.insert(cycle).second) {
      std::printf("%s/CMakeLists.txt: the module graph has a cycle: %s\n", src.c_str(), cycle.c_str());
      ++violations;
    }
    test_uses[name] = uses[name];
    for (const auto& d : m.test_deps) test_uses[name].merge(closure(modules, d, nullptr));
  }
  // The module a path (relative to SRC_DIR) belongs to, if any.
  auto owner = [&](const std::string& rel) -> std::optional<std::string> {
    for (const auto& [name, m] : modules) {
      if (!m.dir.empty() && rel.starts_with(m.dir + "/")) return name;
      if (std::find(m.files.begin(), m.files.end(), rel) != m.files.end()) return name;
    }
    return std::nullopt;
  };

  const std::regex include_re(R"re(^\s*#\s*include\s*"([^"]+)")re");
  std::vector<fs::path> files;
  for (const auto& e : fs::recursive_directory_iterator(src))
    if (e.is_regular_file() && (e.path().extension() == ".cc" || e.path().extension() == ".h"))
      files.push_back(e.path());
  std::sort(files.begin(), files.end());
  size_t checked = 0;
  for (const auto& file : files) {
    const std::string rel = file.lexically_relative(src).generic_string();
    const auto from = owner(rel);
    if (!from) continue;  // compiled by nothing
    const bool test = is_test_file(rel);
    const auto& allowed = test ? test_uses[*from] : uses[*from];
    std::ifstream in(file);
    std::string line;
    for (int lineno = 1; std::getline(in, line); ++lineno) {
      std::smatch m;
      if (!std::regex_search(line, m, include_re)) continue;
      const std::string inc = m[1].str();
      // As the compiler looks: beside the including file first, then from SRC_DIR (-I src).
      std::string target =
          (file.parent_path() / inc).lexically_normal().lexically_relative(src).generic_string();
      if (!fs::exists(file.parent_path() / inc)) target = fs::path(inc).lexically_normal().generic_string();
      const auto to = owner(target);
      if (!to) continue;  // not a module's header
      ++checked;
      const std::string where =
          src.generic_string() + "/" + rel + ":" + std::to_string(lineno) + ": #include \"" + inc + "\": ";
      if (is_test_file(target) && !test) {
        std::printf("%s%s is a testing helper; only tests (*_test.cc, testing/) may include it\n",
                    where.c_str(), target.c_str());
        ++violations;
      }
      if (allowed.contains(*to)) continue;
      ++violations;
      std::printf("%s%s may not use %s: missing edge %s -> %s in %s/CMakeLists.txt. %s may use: %s%s.\n",
                  where.c_str(), from->c_str(), to->c_str(), from->c_str(), to->c_str(), src.c_str(),
                  test ? ("A test in " + *from).c_str() : from->c_str(), join(allowed).c_str(),
                  test ? " (DEPS and TEST_DEPS)" : "");
      if (uses[*to].contains(*from))
        std::printf("  (%s already depends on %s: that edge would make a cycle; move the code instead)\n",
                    to->c_str(), from->c_str());
    }
  }
  std::printf("include_graph: %zu modules, %zu files, %zu quoted includes of module headers checked, %d %s\n",
              modules.size(), files.size(), checked, violations,
              violations == 1 ? "violation" : "violations");
  return violations == 0 ? 0 : 1;
}
