#include "vmm/config_json.h"

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <initializer_list>
#include <optional>

#include "arch/x86_64/cpuid.h"

namespace ringvm {

namespace {

std::string type_name(const Json& v) {
  if (v.is_string()) return "a string";
  if (v.is_boolean()) return "a boolean";
  if (v.is_number_integer() || v.is_number_unsigned()) return "an integer";
  if (v.is_number()) return "a number";
  if (v.is_object()) return "an object";
  if (v.is_array()) return "an array";
  return "null";
}

// One JSON object being read: every error names "<object>: <field>: ...".
class Fields {
 public:
  Fields(const Json& j, std::string_view object) : j_(j), object_(object) {}

  Result<void> object(std::initializer_list<std::string_view> known) const {
    if (!j_.is_object())
      return make_error(ErrorCode::kInvalidArgument, "{}: expected a JSON object, got {}", object_,
                        type_name(j_));
    for (const auto& [key, _] : j_.items()) {
      if (std::find(known.begin(), known.end(), key) == known.end()) {
        std::string list;
        for (auto k : known) list += (list.empty() ? "" : ", ") + std::string(k);
        return make_error(ErrorCode::kInvalidArgument, "{}: unknown field \"{}\" (known: {})", object_, key,
                          list);
      }
    }
    return Ok();
  }
  bool has(std::string_view key) const { return j_.contains(key) && !j_.at(std::string(key)).is_null(); }

  Result<std::optional<std::string>> str(std::string_view key, bool required = false) const {
    if (!has(key)) return missing<std::string>(key, required, "a string");
    const Json& v = j_.at(std::string(key));
    if (!v.is_string())
      return make_error(ErrorCode::kInvalidArgument, "{}: {}: expected a string, got {}", object_, key,
                        type_name(v));
    return std::optional<std::string>(v.get<std::string>());
  }
  Result<std::optional<bool>> boolean(std::string_view key, bool required = false) const {
    if (!has(key)) return missing<bool>(key, required, "true or false");
    const Json& v = j_.at(std::string(key));
    if (!v.is_boolean())
      return make_error(ErrorCode::kInvalidArgument, "{}: {}: expected true or false, got {}", object_, key,
                        type_name(v));
    return std::optional<bool>(v.get<bool>());
  }
  Result<std::optional<uint64_t>> integer(std::string_view key, uint64_t lo, uint64_t hi,
                                          bool required = false) const {
    if (!has(key)) return missing<uint64_t>(key, required, fmt::format("an integer from {} to {}", lo, hi));
    const Json& v = j_.at(std::string(key));
    if (!v.is_number_integer() && !v.is_number_unsigned())
      return make_error(ErrorCode::kInvalidArgument, "{}: {}: expected an integer from {} to {}, got {}",
                        object_, key, lo, hi, type_name(v));
    if (v.is_number_integer() && !v.is_number_unsigned() && v.get<int64_t>() < 0)
      return make_error(ErrorCode::kInvalidArgument, "{}: {}: {} is negative; give an integer from {} to {}",
                        object_, key, v.get<int64_t>(), lo, hi);
    const auto n = v.get<uint64_t>();
    if (n < lo || n > hi)
      return make_error(ErrorCode::kInvalidArgument,
                        "{}: {}: {} is out of range; give an integer from {} to {}", object_, key, n, lo, hi);
    return std::optional<uint64_t>(n);
  }
  // A string that must be one of `values` (exactly, as Firecracker's enums).
  Result<std::optional<std::string>> one_of(std::string_view key,
                                            std::initializer_list<std::string_view> values,
                                            bool required = false) const {
    auto s = TRY(str(key, required));
    if (!s) return s;
    if (std::find(values.begin(), values.end(), *s) == values.end()) {
      std::string list;
      for (auto k : values) list += (list.empty() ? "\"" : ", \"") + std::string(k) + "\"";
      return make_error(ErrorCode::kInvalidArgument, "{}: {}: \"{}\" is not one of {}", object_, key, *s,
                        list);
    }
    return s;
  }
  // The object's id field (drive_id, iface_id): required, and equal to the id in the request path.
  Result<std::string> id_field(std::string_view key, std::string_view path_id) const {
    const auto id = *TRY(str(key, true));
    if (id != path_id)
      return make_error(ErrorCode::kInvalidArgument,
                        "{}: {} \"{}\" differs from the id in the path; make them the same", object_, key,
                        id);
    return id;
  }
  // A Firecracker feature ringvm does not have yet: refused by name, never ignored.
  Result<void> refuse(std::string_view key, std::string_view why) const {
    if (!has(key)) return Ok();
    return make_error(ErrorCode::kUnsupported, "{}: {} is not supported by ringvm yet ({}); leave it out",
                      object_, key, why);
  }
  // A path to an existing regular file (block devices too with `allow_block`). A FIFO or a
  // character device would hang the build on its first read.
  Result<std::string> existing_file(std::string_view key, const std::string& path,
                                    bool allow_block = false) const {
    if (path.empty())
      return make_error(ErrorCode::kInvalidArgument, "{}: {} is empty: give a file's path", object_, key);
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0)
      return make_error(ErrorCode::kNotFound, "{}: {}: {}: {}; give the path of an existing file", object_,
                        key, path, std::strerror(errno));
    if (S_ISDIR(st.st_mode))
      return make_error(ErrorCode::kInvalidArgument, "{}: {}: {} is a directory; give a file", object_, key,
                        path);
    if (!S_ISREG(st.st_mode) && !(allow_block && S_ISBLK(st.st_mode)))
      return make_error(ErrorCode::kInvalidArgument, "{}: {}: {} is not a regular file{}; give a file",
                        object_, key, path, allow_block ? " or block device" : "");
    return path;
  }

 private:
  template <typename T>
  Result<std::optional<T>> missing(std::string_view key, bool required, std::string_view what) const {
    if (required)
      return make_error(ErrorCode::kInvalidArgument, "{}: {} is required ({})", object_, key, what);
    return std::optional<T>();
  }

  const Json& j_;
  std::string object_;
};

Result<void> check_id(std::string_view what, std::string_view id) {
  if (id.empty() || id.size() > 64)
    return make_error(ErrorCode::kInvalidArgument, "{}: the id must be 1 to 64 characters", what);
  for (char c : id)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-' && c != '.')
      return make_error(ErrorCode::kInvalidArgument,
                        "{}: id \"{}\": use letters, digits, '_', '-' and '.' only", what, id);
  return Ok();
}

// "rate_limiter" and friends: issue-level features still to come, named in the refusal.
constexpr std::string_view kRateLimiterWhy = "rate limiters are planned";

}  // namespace

Result<Json> parse_json_body(std::string_view text, std::string_view what) {
  Json j = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded())
    return make_error(ErrorCode::kInvalidArgument, "{}: the body is not valid JSON", what);
  return j;
}

Result<void> apply_machine_config(VmConfig& cfg, const Json& j, bool patch) {
  Fields f(j, "machine-config");
  RETURN_IF_ERROR(
      f.object({"vcpu_count", "mem_size_mib", "smt", "track_dirty_pages", "huge_pages", "cpu_template"}));
  VmConfig next = cfg;
  if (auto n = TRY(f.integer("vcpu_count", 1, x86::kMaxVcpus, !patch))) next.cpus = static_cast<uint32_t>(*n);
  if (auto m = TRY(f.integer("mem_size_mib", 16, kMaxApiMemMib, !patch))) next.memory_bytes = *m << 20;
  auto smt = TRY(f.boolean("smt"));
  if (smt.value_or(false))
    return make_error(ErrorCode::kUnsupported,
                      "machine-config: smt: true is not supported by ringvm yet (each vCPU is its own core); "
                      "leave it out or set false");
  if (auto t = TRY(f.boolean("track_dirty_pages")); t || !patch) next.track_dirty_pages = t.value_or(false);
  if (auto h = TRY(f.one_of("huge_pages", {"None", "Transparent", "2M"})); h || !patch) {
    if (h && *h == "2M")
      return make_error(ErrorCode::kUnsupported,
                        "machine-config: huge_pages: \"2M\" (hugetlbfs) is not supported by ringvm yet; use "
                        "\"Transparent\" (ringvm's default) or \"None\"");
    next.huge_pages = h && *h == "None" ? HugePages::kNone : HugePages::kTransparent;
  }
  if (auto t = TRY(f.str("cpu_template")); t && *t != "None")
    return make_error(
        ErrorCode::kUnsupported,
        "machine-config: cpu_template: \"{}\" is not supported by ringvm (the guest sees the host's "
        "CPUID as KVM filters it); leave it out or use \"None\"",
        *t);
  cfg = std::move(next);
  return Ok();
}

Result<void> apply_boot_source(VmConfig& cfg, const Json& j) {
  Fields f(j, "boot-source");
  RETURN_IF_ERROR(f.object({"kernel_image_path", "boot_args", "initrd_path", "entry"}));
  VmConfig next = cfg;
  const auto kernel = *TRY(f.str("kernel_image_path", true));
  next.kernel = TRY(f.existing_file("kernel_image_path", kernel));
  // Absent boot_args: ringvm's default console (Firecracker's default line names its own devices).
  next.cmdline = TRY(f.str("boot_args")).value_or("console=ttyS0");
  next.initrd.clear();
  next.initrd_data = {};
  if (auto p = TRY(f.str("initrd_path"))) next.initrd = TRY(f.existing_file("initrd_path", *p));
  // ringvm's extension: how a bzImage is entered (--entry).
  if (auto e = TRY(f.one_of("entry", {"linux", "pvh"})))
    next.entry = *e == "pvh" ? KernelEntry::kPvh : KernelEntry::kLinux64;
  else
    next.entry = KernelEntry::kLinux64;
  if (next.cmdline.size() > 4096)
    return make_error(ErrorCode::kInvalidArgument, "boot-source: boot_args: {} bytes is longer than 4096",
                      next.cmdline.size());
  cfg = std::move(next);
  return Ok();
}

Result<void> apply_drive(VmConfig& cfg, std::string_view id, const Json& j) {
  Fields f(j, fmt::format("drives/{}", id));
  RETURN_IF_ERROR(
      f.object({"drive_id", "path_on_host", "is_root_device", "is_read_only", "partuuid", "cache_type",
                "io_engine", "rate_limiter", "socket", "format", "num_queues", "queue_size", "serial"}));
  RETURN_IF_ERROR(check_id("drive", id));
  const auto drive_id = TRY(f.id_field("drive_id", id));
  RETURN_IF_ERROR(f.refuse("rate_limiter", kRateLimiterWhy));
  RETURN_IF_ERROR(f.refuse("socket", "vhost-user-block backends are not implemented"));
  DiskSpec d;
  d.id = drive_id;
  d.root = *TRY(f.boolean("is_root_device", true));
  d.read_only = TRY(f.boolean("is_read_only")).value_or(false);
  d.partuuid = TRY(f.str("partuuid")).value_or("");
  // It goes onto the kernel command line (root=PARTUUID=...): hex digits and dashes, no spaces.
  if (d.partuuid.size() > 64 || d.partuuid.find_first_not_of("0123456789abcdefABCDEF-") != std::string::npos)
    return make_error(ErrorCode::kInvalidArgument,
                      "drives/{}: partuuid: \"{}\" is not a partition UUID (hex digits and dashes)", id,
                      d.partuuid);
  const auto path = *TRY(f.str("path_on_host", true));
  d.path = TRY(f.existing_file("path_on_host", path, /*allow_block=*/true));
  // Firecracker's default is Unsafe (flush does nothing); "Direct" is ringvm's O_DIRECT (--disk cache=none).
  const auto cache = TRY(f.one_of("cache_type", {"Unsafe", "Writeback", "Direct"})).value_or("Unsafe");
  d.cache = cache == "Writeback" ? CacheMode::kWriteback
            : cache == "Direct"  ? CacheMode::kNone
                                 : CacheMode::kUnsafe;
  // Absent: ringvm's default (io_uring where it can); "Async" asks for the same.
  if (auto e = TRY(f.one_of("io_engine", {"Sync", "Async"})))
    d.engine = *e == "Sync" ? DiskEngine::kSync : DiskEngine::kAuto;
  if (auto fmt_name = TRY(f.one_of("format", {"raw", "qcow2"})))
    d.format = *fmt_name == "qcow2" ? DiskFormat::kQcow2 : DiskFormat::kRaw;
  if (auto q = TRY(f.integer("num_queues", 1, kMaxDiskQueues))) d.queues = static_cast<uint16_t>(*q);
  if (auto q = TRY(f.integer("queue_size", 4, 1024))) {
    if ((*q & (*q - 1)) != 0)
      return make_error(ErrorCode::kInvalidArgument,
                        "drives/{}: queue_size: {} is not a power of two (4 to 1024)", id, *q);
    d.queue_size = static_cast<uint16_t>(*q);
  }
  if (auto s = TRY(f.str("serial"))) {
    if (s->size() > 20)
      return make_error(ErrorCode::kInvalidArgument, "drives/{}: serial: at most 20 characters", id);
    d.serial = *s;
  }
  auto it = std::find_if(cfg.disks.begin(), cfg.disks.end(), [&](const DiskSpec& x) { return x.id == id; });
  if (d.root) {
    for (const DiskSpec& other : cfg.disks)
      if (other.root && other.id != id)
        return make_error(
            ErrorCode::kInvalidArgument,
            "drives/{}: drive {} is already the root device; only one drive can have is_root_device "
            "true",
            id, other.id);
  }
  if (it != cfg.disks.end()) {
    *it = std::move(d);
  } else {
    if (cfg.disks.size() >= kMaxApiDrives)
      return make_error(ErrorCode::kResourceExhausted, "drives/{}: a VM can have at most {} drives", id,
                        kMaxApiDrives);
    cfg.disks.push_back(std::move(d));
  }
  return Ok();
}

Result<void> apply_network_interface(VmConfig& cfg, std::string_view id, const Json& j) {
  Fields f(j, fmt::format("network-interfaces/{}", id));
  RETURN_IF_ERROR(f.object({"iface_id", "host_dev_name", "guest_mac", "mtu", "rx_rate_limiter",
                            "tx_rate_limiter", "num_queues", "queue_size"}));
  RETURN_IF_ERROR(check_id("network interface", id));
  const auto iface_id = TRY(f.id_field("iface_id", id));
  RETURN_IF_ERROR(f.refuse("rx_rate_limiter", kRateLimiterWhy));
  RETURN_IF_ERROR(f.refuse("tx_rate_limiter", kRateLimiterWhy));
  RETURN_IF_ERROR(f.refuse("mtu", "the guest uses its default MTU"));
  NetSpec n;
  n.id = iface_id;
  n.tap = *TRY(f.str("host_dev_name", true));
  if (n.tap.empty() || n.tap.size() >= 16)
    return make_error(ErrorCode::kInvalidArgument,
                      "network-interfaces/{}: host_dev_name: a tap name is 1 to 15 characters", id);
  if (auto mac = TRY(f.str("guest_mac"))) {
    auto parsed = parse_mac(*mac);
    if (!parsed) return wrap(std::move(parsed).error(), "network-interfaces/{}: guest_mac", id);
    n.mac = *parsed;
  }
  if (auto q = TRY(f.integer("num_queues", 1, 16))) n.queues = static_cast<uint16_t>(*q);
  if (auto q = TRY(f.integer("queue_size", 4, 512))) {
    if ((*q & (*q - 1)) != 0)
      return make_error(ErrorCode::kInvalidArgument,
                        "network-interfaces/{}: queue_size: {} is not a power of two (4 to 512)", id, *q);
    n.queue_size = static_cast<uint16_t>(*q);
  }
  auto it = std::find_if(cfg.nets.begin(), cfg.nets.end(), [&](const NetSpec& x) { return x.id == id; });
  for (const NetSpec& other : cfg.nets)
    if (other.id != id && other.tap == n.tap)
      return make_error(ErrorCode::kInvalidArgument, "network-interfaces/{}: tap {} is already used by {}",
                        id, n.tap, other.id);
  if (it != cfg.nets.end()) {
    *it = std::move(n);
  } else {
    if (cfg.nets.size() >= kMaxApiNets)
      return make_error(ErrorCode::kResourceExhausted,
                        "network-interfaces/{}: a VM can have at most {} interfaces", id, kMaxApiNets);
    cfg.nets.push_back(std::move(n));
  }
  return Ok();
}

Result<void> apply_vsock(VmConfig& cfg, const Json& j) {
  Fields f(j, "vsock");
  RETURN_IF_ERROR(f.object({"guest_cid", "uds_path", "vsock_id"}));
  VsockSpec v;
  v.cid = *TRY(f.integer("guest_cid", 3, 0xFFFF'FFFEu, true));
  v.socket = *TRY(f.str("uds_path", true));
  if (v.socket.empty() || v.socket.size() > 100)
    return make_error(ErrorCode::kInvalidArgument,
                      "vsock: uds_path: give a socket path of 1 to 100 characters");
  if (auto id = TRY(f.str("vsock_id"))) {
    RETURN_IF_ERROR(check_id("vsock", *id));
    v.id = *id;
  }
  cfg.vsock = std::move(v);
  return Ok();
}

Result<void> apply_entropy(VmConfig& cfg, const Json& j) {
  Fields f(j, "entropy");
  RETURN_IF_ERROR(f.object({"rate_limiter"}));
  RETURN_IF_ERROR(f.refuse("rate_limiter", kRateLimiterWhy));
  cfg.rng = true;
  return Ok();
}

Result<void> apply_logger(VmConfig& cfg, const Json& j) {
  Fields f(j, "logger");
  RETURN_IF_ERROR(f.object({"log_path", "level", "show_level", "show_log_origin", "module"}));
  RETURN_IF_ERROR(f.refuse("module", "ringvm's log has no module filter"));
  LoggerConfig l;
  l.path = TRY(f.str("log_path")).value_or("");
  if (auto level = TRY(f.str("level"))) {
    std::string lower;
    for (char c : *level) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    static constexpr std::string_view kLevels[] = {"error", "warning", "warn", "info",
                                                   "debug", "trace",   "off"};
    if (std::find(std::begin(kLevels), std::end(kLevels), lower) == std::end(kLevels))
      return make_error(ErrorCode::kInvalidArgument,
                        "logger: level: \"{}\" is not one of Error, Warning, Info, Debug, Trace, Off",
                        *level);
    l.level = *level;
  }
  l.show_level = TRY(f.boolean("show_level")).value_or(false);
  l.show_log_origin = TRY(f.boolean("show_log_origin")).value_or(false);
  cfg.logger = std::move(l);
  return Ok();
}

Result<void> apply_metrics(VmConfig& cfg, const Json& j) {
  Fields f(j, "metrics");
  RETURN_IF_ERROR(f.object({"metrics_path"}));
  const auto path = *TRY(f.str("metrics_path", true));
  if (path.empty())
    return make_error(ErrorCode::kInvalidArgument, "metrics: metrics_path is empty: give a file's path");
  cfg.metrics_path = path;
  return Ok();
}

Result<void> apply_serial(VmConfig& cfg, const Json& j) {
  Fields f(j, "serial");
  RETURN_IF_ERROR(f.object({"serial_out_path", "rate_limiter"}));
  RETURN_IF_ERROR(f.refuse("rate_limiter", kRateLimiterWhy));
  if (auto p = TRY(f.str("serial_out_path"))) {
    if (p->empty()) return make_error(ErrorCode::kInvalidArgument, "serial: serial_out_path is empty");
    cfg.console.kind = ConsoleSpec::Kind::kFile;
    cfg.console.path = *p;
  }
  return Ok();
}

Result<void> check_drive_patch(const VmConfig& cfg, std::string_view id, const Json& j) {
  Fields f(j, fmt::format("drives/{}", id));
  RETURN_IF_ERROR(f.object({"drive_id", "path_on_host", "rate_limiter"}));
  const auto drive_id = TRY(f.id_field("drive_id", id));
  if (std::none_of(cfg.disks.begin(), cfg.disks.end(), [&](const DiskSpec& d) { return d.id == id; }))
    return make_error(ErrorCode::kNotFound, "drives/{}: no such drive (GET /vm/config lists them)", id);
  RETURN_IF_ERROR(f.refuse("rate_limiter", kRateLimiterWhy));
  RETURN_IF_ERROR(f.refuse("path_on_host", "changing a running drive's backing file"));
  return Ok();
}

Result<void> check_network_patch(const VmConfig& cfg, std::string_view id, const Json& j) {
  Fields f(j, fmt::format("network-interfaces/{}", id));
  RETURN_IF_ERROR(f.object({"iface_id", "rx_rate_limiter", "tx_rate_limiter"}));
  const auto iface_id = TRY(f.id_field("iface_id", id));
  if (std::none_of(cfg.nets.begin(), cfg.nets.end(), [&](const NetSpec& n) { return n.id == id; }))
    return make_error(ErrorCode::kNotFound,
                      "network-interfaces/{}: no such interface (GET /vm/config lists them)", id);
  RETURN_IF_ERROR(f.refuse("rx_rate_limiter", kRateLimiterWhy));
  RETURN_IF_ERROR(f.refuse("tx_rate_limiter", kRateLimiterWhy));
  return Ok();
}

Result<void> apply_tuning_json(VmConfig& cfg, const Json& j) {
  Fields f(j, "tuning");
  RETURN_IF_ERROR(f.object({"disk", "net"}));
  std::string spec;
  for (const char* dev : {"disk", "net"}) {
    if (!f.has(dev)) continue;
    const Json& o = j.at(dev);
    if (!o.is_object())
      return make_error(ErrorCode::kInvalidArgument, "tuning: {}: expected an object of KEY: VALUE", dev);
    for (const auto& [key, v] : o.items()) {
      if (key.empty() || key.find_first_of(",=. ") != std::string::npos)
        return make_error(ErrorCode::kInvalidArgument, "tuning: {}: \"{}\" is not a tuning constant's name",
                          dev, key);
      std::string text;
      if (v.is_string())
        text = v.get<std::string>();
      else if (v.is_boolean())
        text = v.get<bool>() ? "on" : "off";
      else if (v.is_number_integer())
        text = v.dump();
      else
        return make_error(ErrorCode::kInvalidArgument,
                          "tuning: {}.{}: expected a number, a string or a boolean", dev, key);
      if (text.find_first_of(",=") != std::string::npos)
        return make_error(ErrorCode::kInvalidArgument, "tuning: {}.{}: \"{}\" is not a value", dev, key,
                          text);
      spec += fmt::format("{}{}.{}={}", spec.empty() ? "" : ",", dev, key, text);
    }
  }
  cfg.tuning = TRY(parse_tuning(spec));
  return Ok();
}

Result<VmConfig> parse_config_file(std::string_view text, VmConfig cfg) {
  const Json j = TRY(parse_json_body(text, "config file"));
  Fields f(j, "config file");
  RETURN_IF_ERROR(f.object({"boot-source", "machine-config", "drives", "network-interfaces", "vsock",
                            "entropy", "logger", "metrics", "serial", "balloon", "mmds-config", "cpu-config",
                            "pmem", "memory-hotplug", "tuning"}));
  RETURN_IF_ERROR(f.refuse("balloon", "a balloon device is planned"));
  RETURN_IF_ERROR(f.refuse("mmds-config", "there is no metadata service"));
  RETURN_IF_ERROR(f.refuse("cpu-config", "custom CPU templates are not implemented"));
  RETURN_IF_ERROR(f.refuse("pmem", "virtio-pmem is not implemented"));
  RETURN_IF_ERROR(f.refuse("memory-hotplug", "virtio-mem is not implemented"));
  auto each = [&](const char* key, auto&& apply) -> Result<void> {
    if (!f.has(key)) return Ok();
    const Json& arr = j.at(key);
    if (!arr.is_array())
      return make_error(ErrorCode::kInvalidArgument, "config file: {}: expected an array, got {}", key,
                        type_name(arr));
    for (const Json& item : arr) RETURN_IF_ERROR(apply(item));
    return Ok();
  };
  // The order an API client would use: the logger first so later problems are logged.
  if (f.has("logger")) RETURN_IF_ERROR(apply_logger(cfg, j.at("logger")));
  if (f.has("metrics")) RETURN_IF_ERROR(apply_metrics(cfg, j.at("metrics")));
  if (f.has("machine-config")) RETURN_IF_ERROR(apply_machine_config(cfg, j.at("machine-config"), false));
  if (f.has("boot-source")) RETURN_IF_ERROR(apply_boot_source(cfg, j.at("boot-source")));
  RETURN_IF_ERROR(each("drives", [&](const Json& d) -> Result<void> {
    if (!d.is_object() || !d.contains("drive_id") || !d.at("drive_id").is_string())
      return make_error(ErrorCode::kInvalidArgument,
                        "config file: drives: every drive needs a string drive_id");
    return apply_drive(cfg, d.at("drive_id").get<std::string>(), d);
  }));
  RETURN_IF_ERROR(each("network-interfaces", [&](const Json& n) -> Result<void> {
    if (!n.is_object() || !n.contains("iface_id") || !n.at("iface_id").is_string())
      return make_error(ErrorCode::kInvalidArgument,
                        "config file: network-interfaces: every interface needs a string iface_id");
    return apply_network_interface(cfg, n.at("iface_id").get<std::string>(), n);
  }));
  if (f.has("vsock")) RETURN_IF_ERROR(apply_vsock(cfg, j.at("vsock")));
  if (f.has("entropy")) RETURN_IF_ERROR(apply_entropy(cfg, j.at("entropy")));
  if (f.has("serial")) RETURN_IF_ERROR(apply_serial(cfg, j.at("serial")));
  if (f.has("tuning")) RETURN_IF_ERROR(apply_tuning_json(cfg, j.at("tuning")));
  return cfg;
}

Json machine_config_to_json(const VmConfig& cfg) {
  return Json{{"vcpu_count", cfg.cpus},
              {"mem_size_mib", cfg.memory_bytes >> 20},
              {"smt", false},
              {"track_dirty_pages", cfg.track_dirty_pages},
              {"huge_pages", cfg.huge_pages == HugePages::kNone ? "None" : "Transparent"}};
}

Result<SnapshotCreateRequest> parse_snapshot_create(const Json& j) {
  Fields f(j, "snapshot/create");
  RETURN_IF_ERROR(f.object({"snapshot_type", "snapshot_path", "mem_file_path", "version"}));
  RETURN_IF_ERROR(f.refuse("version", "a snapshot is always written in this ringvm's format version"));
  SnapshotCreateRequest r;
  r.diff = TRY(f.one_of("snapshot_type", {"Full", "Diff"})).value_or("Full") == "Diff";
  r.snapshot_path = *TRY(f.str("snapshot_path", true));
  r.mem_path = *TRY(f.str("mem_file_path", true));
  if (r.snapshot_path.empty() || r.mem_path.empty())
    return make_error(ErrorCode::kInvalidArgument,
                      "snapshot/create: snapshot_path and mem_file_path must name files to write");
  if (r.snapshot_path == r.mem_path)
    return make_error(ErrorCode::kInvalidArgument,
                      "snapshot/create: snapshot_path and mem_file_path are the same file; give two paths");
  return r;
}

Result<SnapshotLoadRequest> parse_snapshot_load(const Json& j) {
  Fields f(j, "snapshot/load");
  RETURN_IF_ERROR(f.object({"snapshot_path", "mem_backend", "mem_file_path", "track_dirty_pages",
                            "enable_diff_snapshots", "resume_vm", "network_overrides", "clock_realtime"}));
  SnapshotLoadRequest r;
  const std::string snapshot_path = *TRY(f.str("snapshot_path", true));
  r.snapshot_path = TRY(f.existing_file("snapshot_path", snapshot_path));
  const bool backend = f.has("mem_backend"), file = f.has("mem_file_path");
  if (backend == file)
    return make_error(ErrorCode::kInvalidArgument,
                      "snapshot/load: give exactly one of mem_backend {{\"backend_type\": \"File\", "
                      "\"backend_path\": ...}} and mem_file_path (deprecated)");
  if (backend) {
    Fields m(j.at("mem_backend"), "snapshot/load: mem_backend");
    RETURN_IF_ERROR(m.object({"backend_type", "backend_path"}));
    const auto type = *TRY(m.one_of("backend_type", {"File", "Uffd"}, true));
    if (type == "Uffd")
      return make_error(ErrorCode::kUnsupported,
                        "snapshot/load: mem_backend: backend_type Uffd is not supported by ringvm yet (memory "
                        "comes from a file, mapped copy-on-write); use \"File\"");
    const std::string path = *TRY(m.str("backend_path", true));
    r.mem_path = TRY(m.existing_file("backend_path", path));
  } else {
    const std::string path = *TRY(f.str("mem_file_path", true));
    r.mem_path = TRY(f.existing_file("mem_file_path", path));
  }
  const auto track = TRY(f.boolean("track_dirty_pages"));
  const auto legacy = TRY(f.boolean("enable_diff_snapshots"));
  r.track_dirty_pages = track.value_or(legacy.value_or(false));
  r.resume = TRY(f.boolean("resume_vm")).value_or(false);
  r.clock_realtime = TRY(f.boolean("clock_realtime")).value_or(false);
  if (f.has("network_overrides")) {
    const Json& arr = j.at("network_overrides");
    if (!arr.is_array())
      return make_error(ErrorCode::kInvalidArgument, "snapshot/load: network_overrides: expected an array, got {}",
                        type_name(arr));
    if (arr.size() > kMaxApiNets)
      return make_error(ErrorCode::kInvalidArgument, "snapshot/load: network_overrides: at most {} entries",
                        kMaxApiNets);
    for (const Json& o : arr) {
      Fields n(o, "snapshot/load: network_overrides[]");
      RETURN_IF_ERROR(n.object({"iface_id", "host_dev_name"}));
      auto id = *TRY(n.str("iface_id", true));
      RETURN_IF_ERROR(check_id("snapshot/load: network_overrides[]: iface_id", id));
      auto tap = *TRY(n.str("host_dev_name", true));
      if (tap.empty() || tap.size() >= 16)
        return make_error(ErrorCode::kInvalidArgument,
                          "snapshot/load: network_overrides[]: host_dev_name \"{}\": a tap name has 1 to 15 "
                          "characters", tap);
      for (const auto& [prev, _] : r.network_overrides)
        if (prev == id)
          return make_error(ErrorCode::kInvalidArgument,
                            "snapshot/load: network_overrides: iface_id \"{}\" is given twice", id);
      r.network_overrides.emplace_back(std::move(id), std::move(tap));
    }
  }
  return r;
}

Json config_to_json(const VmConfig& cfg) {
  Json out;
  out["machine-config"] = machine_config_to_json(cfg);
  if (!cfg.kernel.empty()) {
    Json b{{"kernel_image_path", cfg.kernel}, {"boot_args", cfg.cmdline}};
    if (!cfg.initrd.empty()) b["initrd_path"] = cfg.initrd;
    b["entry"] = cfg.entry == KernelEntry::kPvh ? "pvh" : "linux";
    out["boot-source"] = b;
  }
  Json drives = Json::array();
  for (const DiskSpec& d : cfg.disks) {
    Json x{{"drive_id", d.id},
           {"path_on_host", d.path},
           {"is_root_device", d.root},
           {"is_read_only", d.read_only},
           {"cache_type", d.cache == CacheMode::kWriteback ? "Writeback"
                          : d.cache == CacheMode::kNone    ? "Direct"
                                                           : "Unsafe"},
           {"io_engine", d.engine == DiskEngine::kSync ? "Sync" : "Async"},
           {"format", d.format == DiskFormat::kQcow2 ? "qcow2" : "raw"},
           {"queue_size", d.queue_size}};
    if (!d.partuuid.empty()) x["partuuid"] = d.partuuid;
    if (d.queues != 0) x["num_queues"] = d.queues;
    if (!d.serial.empty()) x["serial"] = d.serial;
    drives.push_back(std::move(x));
  }
  out["drives"] = drives;
  Json nets = Json::array();
  for (const NetSpec& n : cfg.nets) {
    Json x{{"iface_id", n.id}, {"host_dev_name", n.tap}, {"queue_size", n.queue_size}};
    if (n.mac) x["guest_mac"] = format_mac(*n.mac);
    if (n.queues != 0) x["num_queues"] = n.queues;
    nets.push_back(std::move(x));
  }
  out["network-interfaces"] = nets;
  if (cfg.vsock)
    out["vsock"] =
        Json{{"guest_cid", cfg.vsock->cid}, {"uds_path", cfg.vsock->socket}, {"vsock_id", cfg.vsock->id}};
  if (cfg.rng) out["entropy"] = Json::object();
  if (cfg.logger) {
    Json l{{"level", cfg.logger->level},
           {"show_level", cfg.logger->show_level},
           {"show_log_origin", cfg.logger->show_log_origin}};
    if (!cfg.logger->path.empty()) l["log_path"] = cfg.logger->path;
    out["logger"] = l;
  }
  if (!cfg.metrics_path.empty()) out["metrics"] = Json{{"metrics_path", cfg.metrics_path}};
  if (cfg.console.kind == ConsoleSpec::Kind::kFile)
    out["serial"] = Json{{"serial_out_path", cfg.console.path}};
  if (!cfg.tuning.empty()) {
    // As the config file spells it, so GET /vm/config is itself a config file.
    Json t = Json::object();
    for (const auto& [k, v] : cfg.tuning.disk) t["disk"][k] = v;
    for (const auto& [k, v] : cfg.tuning.net) t["net"][k] = v;
    out["tuning"] = t;
  }
  return out;
}

}  // namespace ringvm
