// The command-line face of virtio-net: `--net tap=NAME[,mac=..][,queues=N][,batch_us=N]` or
// `--net fd=N[,mac=..]`, parsed into a NetSpec, and the factory the VM builder calls with it.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/result.h"
#include "devices/virtio/net/virtio_net.h"

namespace ringvm {

struct NetSpec {
  std::string id = "net0";
  std::string tap;                // tap=NAME: attach to (or create) this tap
  int fd = -1;                    // fd=N: an inherited, already attached tap fd
  std::optional<MacAddress> mac;  // default: a random locally administered address
  uint16_t queues = 0;            // queue pairs; 0 = one per vCPU (tap=), 1 with fd=
  uint16_t queue_size = 256;
  std::optional<uint32_t> batch_us;  // VirtioNetOptions::batch_us; unset: auto (the caller decides)
  bool pin_flows = true;             // VirtioNetOptions::pin_flows
  uint32_t tx_early_irq_kib = VirtioNetOptions::kDefaultTxEarlyIrqBytes / 1024;  // in KiB (0: off)
  // VirtioNetOptions::workers (0: one thread per queue pair); unset: auto, auto_net_workers().
  std::optional<uint32_t> workers;
  int worker_nice = VirtioNetOptions::kDefaultWorkerNice;  // nice=N, VirtioNetOptions::worker_nice
  bool worker_nice_always = false;                         // nice_when=always (default: sending)
};

// `workers=auto`: one worker thread per queue pair while the host has a CPU for each beyond the
// vCPUs, fewer (at least one) when it has not: on a host short of CPUs every extra thread to wake
// costs more than the parallelism it buys (docs/networking.md, "Workers").
uint32_t auto_net_workers(size_t pairs, size_t host_cpus, uint32_t num_vcpus);

// The heuristics' constants a NetSpec carries that are not options a user decides: they keep
// their measured defaults and are set only through the tuning spelling (RINGVM_TUNING=net.KEY=V,
// or "tuning" in the config file; docs/tuning.md), to measure another value.
inline constexpr std::string_view kNetTuningKeys[] = {"batch_us", "pin_flows", "tx_early_irq_kib",
                                                      "workers",  "nice",      "nice_when"};
bool is_net_tuning_key(std::string_view key);
Result<void> apply_net_tuning(NetSpec& spec, std::string_view key, std::string_view value);

// Errors name the option and the fix ("mac=zz: expected six hex pairs like 52:54:00:12:34:56").
Result<NetSpec> parse_net_spec(std::string_view spec);

// Opens the backend (creating the tap if needed and allowed) and builds the device. A tap that
// cannot be created without privilege fails with the `ip tuntap add` command that fixes it.
Result<std::shared_ptr<VirtioNet>> make_virtio_net(const NetSpec& spec, uint32_t num_vcpus);

// "key=value,key=value" into pairs; `what` ("--net") prefixes errors. Keys must be in `known`.
Result<std::vector<std::pair<std::string, std::string>>> split_device_options(
    std::string_view spec, std::string_view what, std::vector<std::string_view> known);
// A decimal integer in [min, max] for option `key`.
Result<uint64_t> parse_option_uint(std::string_view what, std::string_view key, std::string_view value,
                                   uint64_t min, uint64_t max);

}  // namespace ringvm
