// Firecracker's JSON objects ("machine-config", "boot-source", "drives", "network-interfaces",
// "vsock", "entropy", "logger", "metrics", "serial") read into the one typed VmConfig, and
// VmConfig written back as Firecracker's full VM configuration (GET /vm/config).
//
// The REST API (one object per request) and the config file (all objects at once) call the same
// apply_* functions, so both produce the same VmConfig the CLI does. Every function checks the
// whole object before it changes anything: on error `cfg` is untouched. Unknown fields are
// refused (Firecracker's deny_unknown_fields); errors name the object, the field and the fix.
// What ringvm has and Firecracker lacks are optional extra fields (docs/api.md), never a changed
// meaning; Firecracker features ringvm lacks (rate limiters, vhost-user, SMT, hugetlbfs, MTU) are
// refused by name, never accepted silently.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "base/result.h"
#include "vmm/config.h"

namespace ringvm {

using Json = nlohmann::json;

// Limits on what one VM may be given through the API or a config file.
inline constexpr size_t kMaxApiDrives = 16;
inline constexpr size_t kMaxApiNets = 8;
inline constexpr uint32_t kMaxApiMemMib = 1u << 20;  // 1 TiB

// PUT /machine-config (patch = false: vcpu_count and mem_size_mib required, absent optional
// fields return to their defaults) and PATCH /machine-config (patch = true: only what is given).
Result<void> apply_machine_config(VmConfig& cfg, const Json& j, bool patch);
// PUT /boot-source. The kernel and initrd must exist (checked now, not at boot).
Result<void> apply_boot_source(VmConfig& cfg, const Json& j);
// PUT /drives/{id}: creates or replaces the drive `id`; j["drive_id"] must equal it.
Result<void> apply_drive(VmConfig& cfg, std::string_view id, const Json& j);
// PUT /network-interfaces/{id}.
Result<void> apply_network_interface(VmConfig& cfg, std::string_view id, const Json& j);
Result<void> apply_vsock(VmConfig& cfg, const Json& j);
Result<void> apply_entropy(VmConfig& cfg, const Json& j);
Result<void> apply_logger(VmConfig& cfg, const Json& j);
Result<void> apply_metrics(VmConfig& cfg, const Json& j);
Result<void> apply_serial(VmConfig& cfg, const Json& j);

// The config file's "tuning": {"disk": {KEY: VALUE}, "net": {...}} (ringvm's extension;
// docs/tuning.md), the same constants RINGVM_TUNING sets.
Result<void> apply_tuning_json(VmConfig& cfg, const Json& j);

// PATCH /drives/{id} and /network-interfaces/{id} after boot: what may change live. Today
// nothing but the identity (rate limiters and media change are refused by name); checks the id
// exists and the body is well-formed.
Result<void> check_drive_patch(const VmConfig& cfg, std::string_view id, const Json& j);
Result<void> check_network_patch(const VmConfig& cfg, std::string_view id, const Json& j);

// A Firecracker config file (--config-file): the same objects, applied in a fixed order onto
// `base` (what the command line already set).
Result<VmConfig> parse_config_file(std::string_view text, VmConfig base = {});
Result<Json> parse_json_body(std::string_view text, std::string_view what);

// PUT /snapshot/create and PUT /snapshot/load bodies (Firecracker's fields; docs/api.md).
Result<SnapshotCreateRequest> parse_snapshot_create(const Json& j);
Result<SnapshotLoadRequest> parse_snapshot_load(const Json& j);

// GET /vm/config and GET /machine-config.
Json config_to_json(const VmConfig& cfg);
Json machine_config_to_json(const VmConfig& cfg);

}  // namespace ringvm
