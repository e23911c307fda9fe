#include "vmm/config.h"

#include <algorithm>
#include <charconv>
#include <limits>

namespace ringvm {

namespace {

Result<uint64_t> parse_scaled(std::string_view text, uint64_t default_unit, std::string_view what) {
  if (text.empty())
    return make_error(ErrorCode::kInvalidArgument, "{}: empty size: give a number such as 512M or 2G", what);
  uint64_t value = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || ptr == text.data())
    return make_error(ErrorCode::kInvalidArgument, "{}: '{}' is not a size: give a number such as 512M or 2G",
                      what, text);
  std::string_view suffix(ptr, static_cast<size_t>(text.data() + text.size() - ptr));
  uint64_t unit = default_unit;
  if (suffix == "b" || suffix == "B") unit = 1;
  else if (suffix == "k" || suffix == "K" || suffix == "KiB") unit = 1ULL << 10;
  else if (suffix == "m" || suffix == "M" || suffix == "MiB") unit = 1ULL << 20;
  else if (suffix == "g" || suffix == "G" || suffix == "GiB") unit = 1ULL << 30;
  else if (suffix == "t" || suffix == "T" || suffix == "TiB") unit = 1ULL << 40;
  else if (!suffix.empty())
    return make_error(ErrorCode::kInvalidArgument, "{}: unknown size suffix '{}' in '{}': use K, M, G or T", what,
                      suffix, text);
  if (value > std::numeric_limits<uint64_t>::max() / unit)
    return make_error(ErrorCode::kOutOfRange, "{}: '{}' is too large", what, text);
  return value * unit;
}

}  // namespace

Result<uint64_t> parse_memory_size(std::string_view text) {
  auto bytes = TRY(parse_scaled(text, 1ULL << 20, "--memory"));
  if (bytes == 0) return make_error(ErrorCode::kInvalidArgument, "--memory 0: a VM needs memory; give e.g. --memory 512M");
  if (bytes < (16ULL << 20))
    return make_error(ErrorCode::kInvalidArgument, "--memory {}: at least 16M is needed to boot anything", text);
  if (bytes % 4096 != 0)
    return make_error(ErrorCode::kInvalidArgument, "--memory {}: must be a multiple of 4 KiB", text);
  if (bytes > (1ULL << 40))
    return make_error(ErrorCode::kOutOfRange, "--memory {}: more than 1 TiB is not supported", text);
  return bytes;
}

Result<uint64_t> parse_byte_size(std::string_view text) { return parse_scaled(text, 1, "size"); }

Result<DiskSpec> parse_disk(std::string_view text) {
  DiskSpec d;
  bool have_path = false;
  while (!text.empty()) {
    const size_t comma = text.find(',');
    std::string_view item = text.substr(0, comma);
    text = comma == std::string_view::npos ? std::string_view{} : text.substr(comma + 1);
    const size_t eq = item.find('=');
    if (eq == std::string_view::npos)
      return make_error(ErrorCode::kInvalidArgument, "--disk: '{}' is not key=value (e.g. path=disk.img,readonly=on)",
                        item);
    std::string_view key = item.substr(0, eq), val = item.substr(eq + 1);
    auto on_off = [&](bool* out) -> Result<void> {
      if (val == "on" || val == "true") *out = true;
      else if (val == "off" || val == "false") *out = false;
      else return make_error(ErrorCode::kInvalidArgument, "--disk {}={}: use on or off", key, val);
      return Ok();
    };
    // A whole number in [lo, hi]; false if `val` is anything else.
    auto number = [&](unsigned lo, unsigned hi, unsigned* out) {
      auto [p, ec] = std::from_chars(val.data(), val.data() + val.size(), *out);
      return ec == std::errc() && p == val.data() + val.size() && *out >= lo && *out <= hi;
    };
    if (key == "id") {
      if (val.empty()) return make_error(ErrorCode::kInvalidArgument, "--disk id= is empty");
      d.id = std::string(val);
    } else if (key == "path") {
      if (val.empty()) return make_error(ErrorCode::kInvalidArgument, "--disk path= is empty");
      d.path = std::string(val);
      have_path = true;
    } else if (key == "readonly") {
      RETURN_IF_ERROR(on_off(&d.read_only));
    } else if (key == "format") {
      if (val == "raw") d.format = DiskFormat::kRaw;
      else if (val == "qcow2") d.format = DiskFormat::kQcow2;
      else return make_error(ErrorCode::kInvalidArgument, "--disk format={}: use raw or qcow2", val);
    } else if (key == "serial") {
      if (val.size() > 20) return make_error(ErrorCode::kInvalidArgument, "--disk serial={}: at most 20 characters", val);
      d.serial = std::string(val);
    } else if (key == "queues") {
      unsigned q = 0;
      if (!number(1, kMaxDiskQueues, &q))
        return make_error(ErrorCode::kInvalidArgument, "--disk queues={}: give a number from 1 to {}", val,
                          kMaxDiskQueues);
      d.queues = static_cast<uint16_t>(q);
    } else if (key == "queue_size") {
      unsigned n = 0;
      if (!number(4, 1024, &n) || (n & (n - 1)) != 0)
        return make_error(ErrorCode::kInvalidArgument,
                          "--disk queue_size={}: give a power of two from 4 to 1024 (descriptors per queue)", val);
      d.queue_size = static_cast<uint16_t>(n);
    } else if (is_disk_tuning_key(key)) {
      return make_error(ErrorCode::kInvalidArgument,
                        "--disk {}={}: a tuning constant, not an option (its default is measured); to measure "
                        "another value set RINGVM_TUNING=disk.{}={} (docs/tuning.md)",
                        key, val, key, val);
    } else if (key == "cache") {
      if (val == "writeback") d.cache = CacheMode::kWriteback;
      else if (val == "none") d.cache = CacheMode::kNone;
      else if (val == "unsafe") d.cache = CacheMode::kUnsafe;
      else return make_error(ErrorCode::kInvalidArgument, "--disk cache={}: use writeback, none or unsafe", val);
    } else {
      return make_error(ErrorCode::kInvalidArgument,
                        "--disk: unknown key '{}' (known: path, format, readonly, serial, queues, queue_size, cache, id)",
                        key);
    }
  }
  if (!have_path) return make_error(ErrorCode::kInvalidArgument, "--disk needs path=FILE");
  return d;
}

bool is_disk_tuning_key(std::string_view key) {
  for (std::string_view k : kDiskTuningKeys)
    if (k == key) return true;
  return false;
}

Result<void> apply_disk_tuning(DiskSpec* d, std::string_view key, std::string_view val) {
  auto number = [&](unsigned lo, unsigned hi, unsigned* out) {
    auto [p, ec] = std::from_chars(val.data(), val.data() + val.size(), *out);
    return ec == std::errc() && p == val.data() + val.size() && *out >= lo && *out <= hi;
  };
  if (key == "chain") {
      unsigned n = 0;
      if (!number(1, kMaxDiskChainPasses, &n))
        return make_error(ErrorCode::kInvalidArgument,
                          "RINGVM_TUNING disk.chain={}: give the passes that may share an interrupt, 1 (each its own) to {}", val,
                          kMaxDiskChainPasses);
      d->chain_passes = static_cast<uint16_t>(n);
    } else if (key == "chain_kib") {
      unsigned n = 0;
      if (!number(1, kMaxDiskChainKib, &n))
        return make_error(ErrorCode::kInvalidArgument,
                          "RINGVM_TUNING disk.chain_kib={}: give the data a pass may move and still chain the next, in KiB, 1 to {}",
                          val, kMaxDiskChainKib);
      d->chain_kib = n;
    } else if (key == "merge_kib") {
      unsigned n = 0;
      if (!number(0, kMaxDiskMergeKib, &n))
        return make_error(ErrorCode::kInvalidArgument,
                          "RINGVM_TUNING disk.merge_kib={}: give the largest host I/O adjacent requests may be joined into, "
                          "in KiB, 0 (never join) to {}", val, kMaxDiskMergeKib);
      d->merge_kib = n;
    } else if (key == "batch_us" && val == "auto") {
      d->batch_us.reset();
    } else if (key == "poll_us" || key == "batch_us") {
      unsigned us = 0;
      if (!number(0, kMaxDiskPollUs, &us))
        return make_error(ErrorCode::kInvalidArgument, "RINGVM_TUNING disk.{}={}: give microseconds from 0 (off) to {}{}", key,
                          val, kMaxDiskPollUs, key == "batch_us" ? ", or auto" : "");
      if (key == "poll_us") d->poll_us = us;
      else d->batch_us = us;
  } else {
    return make_error(ErrorCode::kInvalidArgument,
                      "RINGVM_TUNING disk.{}: no such tuning constant (known: poll_us, batch_us, chain, chain_kib, "
                      "merge_kib)", key);
  }
  return Ok();
}

Result<Tuning> parse_tuning(std::string_view text) {
  Tuning t;
  while (!text.empty()) {
    const size_t comma = text.find(',');
    const std::string_view item = text.substr(0, comma);
    text = comma == std::string_view::npos ? std::string_view{} : text.substr(comma + 1);
    if (item.empty()) continue;
    const size_t dot = item.find('.'), eq = item.find('=');
    if (dot == std::string_view::npos || eq == std::string_view::npos || dot > eq)
      return make_error(ErrorCode::kInvalidArgument,
                        "RINGVM_TUNING: '{}' is not DEVICE.KEY=VALUE (e.g. disk.chain_kib=2048 or net.nice=0)", item);
    const std::string_view dev = item.substr(0, dot), key = item.substr(dot + 1, eq - dot - 1), val = item.substr(eq + 1);
    if (dev == "disk") {
      DiskSpec scratch;
      RETURN_IF_ERROR(apply_disk_tuning(&scratch, key, val));
      t.disk.emplace_back(key, val);
    } else if (dev == "net") {
      NetSpec scratch;
      RETURN_IF_ERROR(apply_net_tuning(scratch, key, val));
      t.net.emplace_back(key, val);
    } else {
      return make_error(ErrorCode::kInvalidArgument, "RINGVM_TUNING: '{}': the device is disk or net", item);
    }
  }
  return t;
}

Result<void> apply_tuning(const Tuning& t, DiskSpec* d) {
  for (const auto& [k, v] : t.disk) RETURN_IF_ERROR(apply_disk_tuning(d, k, v));
  return Ok();
}

Result<void> apply_tuning(const Tuning& t, NetSpec* n) {
  for (const auto& [k, v] : t.net) RETURN_IF_ERROR(apply_net_tuning(*n, k, v));
  return Ok();
}

std::string effective_cmdline(const VmConfig& cfg) {
  std::string out = cfg.cmdline;
  for (const DiskSpec& d : cfg.disks) {
    if (!d.root) continue;
    // The root disk is the first virtio-blk device, so /dev/vda (finalize_config orders it).
    std::string root = d.partuuid.empty() ? "root=/dev/vda" : "root=PARTUUID=" + d.partuuid;
    root += d.read_only ? " ro" : " rw";
    out += out.empty() ? root : " " + root;
    break;
  }
  return out;
}

Result<void> finalize_config(VmConfig& cfg) {
  if (cfg.kernel.empty())
    return make_error(ErrorCode::kInvalidArgument,
                      "no kernel: set one with PUT /boot-source {{\"kernel_image_path\": ...}} (or --kernel)");
  if (cfg.cpus == 0) return make_error(ErrorCode::kInvalidArgument, "vcpu_count 0: a VM needs at least one vCPU");
  size_t roots = 0;
  for (size_t i = 0; i < cfg.disks.size(); ++i) {
    DiskSpec& d = cfg.disks[i];
    if (d.id.empty()) d.id = fmt::format("blk{}", i);
    if (d.root) ++roots;
  }
  if (roots > 1)
    return make_error(ErrorCode::kInvalidArgument,
                      "{} drives have is_root_device true: at most one can be the root device", roots);
  for (size_t i = 0; i < cfg.disks.size(); ++i)
    for (size_t j = i + 1; j < cfg.disks.size(); ++j)
      if (cfg.disks[i].id == cfg.disks[j].id)
        return make_error(ErrorCode::kInvalidArgument, "two drives have the id {}: give each its own", cfg.disks[i].id);
  // The root disk goes first, so it is /dev/vda; the others keep their order.
  std::stable_partition(cfg.disks.begin(), cfg.disks.end(), [](const DiskSpec& d) { return d.root; });
  for (size_t i = 0; i < cfg.nets.size(); ++i)
    for (size_t j = i + 1; j < cfg.nets.size(); ++j)
      if (cfg.nets[i].id == cfg.nets[j].id)
        return make_error(ErrorCode::kInvalidArgument, "two network interfaces have the id {}: give each its own",
                          cfg.nets[i].id);
  return Ok();
}

}  // namespace ringvm
