#include "devices/virtio/net/net_options.h"

#include <sched.h>

#include <algorithm>
#include <charconv>

#include "devices/virtio/net/tap.h"

namespace ringvm {

Result<std::vector<std::pair<std::string, std::string>>> split_device_options(
    std::string_view spec, std::string_view what, std::vector<std::string_view> known) {
  std::vector<std::pair<std::string, std::string>> out;
  if (spec.empty())
    return make_error(ErrorCode::kInvalidArgument, "{}: empty; expected key=value[,key=value...]", what);
  while (!spec.empty()) {
    const size_t comma = spec.find(',');
    const std::string_view item = spec.substr(0, comma);
    spec = comma == std::string_view::npos ? std::string_view{} : spec.substr(comma + 1);
    const size_t eq = item.find('=');
    if (eq == std::string_view::npos || eq == 0)
      return make_error(ErrorCode::kInvalidArgument, "{}: '{}' is not key=value (known keys: {})", what, item,
                        fmt::join(known, ", "));
    const std::string_view key = item.substr(0, eq);
    if (std::find(known.begin(), known.end(), key) == known.end())
      return make_error(ErrorCode::kInvalidArgument, "{}: unknown option '{}' (known keys: {})", what, key,
                        fmt::join(known, ", "));
    for (const auto& [k, v] : out)
      if (k == key) return make_error(ErrorCode::kInvalidArgument, "{}: option '{}' given twice", what, key);
    out.emplace_back(std::string(key), std::string(item.substr(eq + 1)));
  }
  return out;
}

Result<uint64_t> parse_option_uint(std::string_view what, std::string_view key, std::string_view value,
                                   uint64_t min, uint64_t max) {
  uint64_t v = 0;
  const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
  if (value.empty() || ec != std::errc() || end != value.data() + value.size() || v < min || v > max)
    return make_error(ErrorCode::kInvalidArgument, "{}: {}={} must be a number between {} and {}", what, key,
                      value, min, max);
  return v;
}

Result<NetSpec> parse_net_spec(std::string_view text) {
  constexpr std::string_view kWhat = "--net";
  NetSpec spec;
  const auto opts =
      TRY(split_device_options(text, kWhat,
                               {"tap", "fd", "mac", "queues", "id", "queue_size", "batch_us", "pin_flows",
                                "tx_early_irq_kib", "workers", "nice", "nice_when"}));
  bool have_fd = false;
  for (const auto& [key, value] : opts) {
    if (key == "tap") {
      if (value.empty())
        return make_error(ErrorCode::kInvalidArgument, "--net: tap= needs a tap name, e.g. tap=tap0");
      spec.tap = value;
    } else if (key == "fd") {
      if (value.empty())
        return make_error(ErrorCode::kInvalidArgument,
                          "--net: fd= needs the number of an open tap fd the launcher passed to ringvm");
      spec.fd = static_cast<int>(TRY(parse_option_uint(kWhat, key, value, 0, 1 << 20)));
      have_fd = true;
    } else if (key == "mac") {
      auto mac = parse_mac(value);
      if (!mac.ok()) return wrap(std::move(mac).error(), "--net");
      spec.mac = *mac;
    } else if (key == "queues") {
      spec.queues =
          static_cast<uint16_t>(TRY(parse_option_uint(kWhat, key, value, 1, VirtioNet::kMaxQueuePairs)));
    } else if (is_net_tuning_key(key)) {
      return make_error(ErrorCode::kInvalidArgument,
                        "--net {}={}: a tuning constant, not an option (its default is measured); to measure "
                        "another value set RINGVM_TUNING=net.{}={} (docs/tuning.md)",
                        key, value, key, value);
    } else if (key == "queue_size") {
      spec.queue_size = static_cast<uint16_t>(TRY(parse_option_uint(kWhat, key, value, 4, 512)));
    } else if (key == "id") {
      if (value.empty()) return make_error(ErrorCode::kInvalidArgument, "--net: id= needs a name");
      spec.id = value;
    }
  }
  if (have_fd && !spec.tap.empty())
    return make_error(ErrorCode::kInvalidArgument, "--net: give either tap=NAME or fd=N, not both");
  if (!have_fd && spec.tap.empty())
    return make_error(ErrorCode::kInvalidArgument,
                      "--net: no backend; add tap=NAME (a tap device) or fd=N (an inherited tap fd)");
  if (have_fd && spec.queues > 1)
    return make_error(
        ErrorCode::kInvalidArgument,
        "--net: fd={} is one tap queue, so queues={} cannot be served; use tap=NAME for multiqueue", spec.fd,
        spec.queues);
  return spec;
}

bool is_net_tuning_key(std::string_view key) {
  for (std::string_view k : kNetTuningKeys)
    if (k == key) return true;
  return false;
}

Result<void> apply_net_tuning(NetSpec& spec, std::string_view key, std::string_view value) {
  constexpr std::string_view what = "RINGVM_TUNING net";
  if (key == "batch_us") {
    if (value == "auto")
      spec.batch_us.reset();
    else
      spec.batch_us = static_cast<uint32_t>(TRY(parse_option_uint(what, key, value, 0, 10000)));
  } else if (key == "pin_flows") {
    if (value == "on")
      spec.pin_flows = true;
    else if (value == "off")
      spec.pin_flows = false;
    else
      return make_error(ErrorCode::kInvalidArgument, "{} pin_flows={}: use on or off", what, value);
  } else if (key == "tx_early_irq_kib") {
    spec.tx_early_irq_kib = static_cast<uint32_t>(TRY(parse_option_uint(what, key, value, 0, 64)));
  } else if (key == "workers") {
    if (value == "auto")
      spec.workers.reset();
    else
      spec.workers =
          static_cast<uint32_t>(TRY(parse_option_uint(what, key, value, 0, VirtioNet::kMaxQueuePairs)));
  } else if (key == "nice") {
    // A signed step count relative to ringvm's own nice: "-5", "0", "3".
    const bool neg = value.starts_with('-');
    const auto steps = parse_option_uint(what, key, neg ? value.substr(1) : std::string_view(value), 0, 39);
    const int n = steps.ok() ? (neg ? -1 : 1) * static_cast<int>(*steps) : 0;
    if (!steps.ok() || n < -20 || n > 19)
      return make_error(ErrorCode::kInvalidArgument,
                        "{}: nice={} must be a whole number of nice steps between -20 and 19 (relative to "
                        "ringvm's own; 0 keeps the workers at ringvm's priority)",
                        what, value);
    spec.worker_nice = n;
  } else if (key == "nice_when") {
    if (value == "sending")
      spec.worker_nice_always = false;
    else if (value == "always")
      spec.worker_nice_always = true;
    else
      return make_error(ErrorCode::kInvalidArgument,
                        "{} nice_when={}: use sending (while the guest transmits in bulk) or always", what,
                        value);
  } else {
    std::string known;
    for (std::string_view k : kNetTuningKeys) known += (known.empty() ? "" : ", ") + std::string(k);
    return make_error(ErrorCode::kInvalidArgument, "{}.{}: no such tuning constant (known: {})", what, key,
                      known);
  }
  return Ok();
}

uint32_t auto_net_workers(size_t pairs, size_t host_cpus, uint32_t num_vcpus) {
  const size_t spare = host_cpus > num_vcpus ? host_cpus - num_vcpus : 0;
  return static_cast<uint32_t>(std::max<size_t>(1, std::min(pairs, spare)));
}

Result<std::shared_ptr<VirtioNet>> make_virtio_net(const NetSpec& spec, uint32_t num_vcpus) {
  std::unique_ptr<Tap> tap;
  if (spec.fd >= 0) {
    auto t = Tap::adopt(spec.fd);
    if (!t.ok()) return wrap(std::move(t).error(), "--net {}", spec.id);
    tap = std::move(*t);
  } else {
    size_t queues = spec.queues;
    if (queues == 0) queues = std::clamp<size_t>(num_vcpus, 1, VirtioNet::kMaxQueuePairs);
    auto t = Tap::open(spec.tap, queues);
    if (!t.ok()) return wrap(std::move(t).error(), "--net {}", spec.id);
    tap = std::move(*t);
  }
  VirtioNetOptions o;
  o.id = spec.id;
  o.mac = spec.mac ? *spec.mac : random_mac();
  o.queue_size = spec.queue_size;
  o.batch_us = spec.batch_us.value_or(0);
  o.pin_flows = spec.pin_flows;
  o.tx_early_irq_bytes = uint64_t{spec.tx_early_irq_kib} * 1024;
  o.worker_nice = spec.worker_nice;
  o.worker_nice_always = spec.worker_nice_always;
  if (spec.workers) {
    o.workers = *spec.workers;
  } else {
    cpu_set_t set;
    CPU_ZERO(&set);
    const size_t host_cpus =
        ::sched_getaffinity(0, sizeof set, &set) == 0 ? static_cast<size_t>(CPU_COUNT(&set)) : 1;
    o.workers = auto_net_workers(tap->queue_count(), host_cpus, num_vcpus);
  }
  auto dev = VirtioNet::create(std::move(tap), std::move(o));
  if (!dev.ok()) return std::move(dev).error();
  return std::shared_ptr<VirtioNet>(std::move(*dev));
}

}  // namespace ringvm
