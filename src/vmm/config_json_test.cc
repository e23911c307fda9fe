#include "vmm/config_json.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

namespace ringvm {
namespace {

namespace fs = std::filesystem;

// A fresh directory with a kernel, an initrd and two disk images in it, removed afterwards.
class ConfigJsonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "ringvm_cfgjson_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    kernel_ = file("vmlinux");
    initrd_ = file("initrd.img");
    root_ = file("root.img");
    data_ = file("data.img");
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string file(const std::string& name) {
    const std::string p = dir_ + "/" + name;
    std::ofstream(p) << "x";
    return p;
  }

  // Every object of Firecracker's config file, with ringvm's extra fields too.
  Json full_file() const {
    return Json{
        {"boot-source",
         {{"kernel_image_path", kernel_}, {"boot_args", "console=ttyS0 quiet"}, {"initrd_path", initrd_}}},
        {"machine-config",
         {{"vcpu_count", 2}, {"mem_size_mib", 256}, {"track_dirty_pages", true}, {"huge_pages", "None"}}},
        {"drives", Json::array({{{"drive_id", "data"},
                                 {"path_on_host", data_},
                                 {"is_root_device", false},
                                 {"is_read_only", true},
                                 {"cache_type", "Writeback"},
                                 {"io_engine", "Sync"},
                                 {"serial", "SER123"}},
                                {{"drive_id", "rootfs"},
                                 {"path_on_host", root_},
                                 {"is_root_device", true},
                                 {"format", "qcow2"},
                                 {"num_queues", 2},
                                 {"queue_size", 128}}})},
        {"network-interfaces", Json::array({{{"iface_id", "eth0"},
                                             {"host_dev_name", "tap0"},
                                             {"guest_mac", "06:00:ac:10:00:02"},
                                             {"num_queues", 2}}})},
        {"vsock", {{"guest_cid", 3}, {"uds_path", dir_ + "/v.sock"}, {"vsock_id", "vsock1"}}},
        {"entropy", Json::object()},
        {"logger", {{"log_path", dir_ + "/log"}, {"level", "Debug"}, {"show_level", true}}},
        {"metrics", {{"metrics_path", dir_ + "/metrics"}}},
        {"serial", {{"serial_out_path", dir_ + "/serial"}}},
    };
  }

  std::string dir_, kernel_, initrd_, root_, data_;
};

// The objects applied one at a time, in the order an API client might send them.
Result<void> apply_like_api(VmConfig& cfg, const Json& file) {
  RETURN_IF_ERROR(apply_boot_source(cfg, file["boot-source"]));
  RETURN_IF_ERROR(apply_machine_config(cfg, file["machine-config"], false));
  for (const Json& d : file["drives"]) RETURN_IF_ERROR(apply_drive(cfg, d["drive_id"].get<std::string>(), d));
  for (const Json& n : file["network-interfaces"])
    RETURN_IF_ERROR(apply_network_interface(cfg, n["iface_id"].get<std::string>(), n));
  RETURN_IF_ERROR(apply_vsock(cfg, file["vsock"]));
  RETURN_IF_ERROR(apply_entropy(cfg, file["entropy"]));
  RETURN_IF_ERROR(apply_logger(cfg, file["logger"]));
  RETURN_IF_ERROR(apply_metrics(cfg, file["metrics"]));
  return apply_serial(cfg, file["serial"]);
}

TEST_F(ConfigJsonTest, ConfigFileGivesTheSameConfigAsTheApiCalls) {
  const Json file = full_file();
  auto from_file = parse_config_file(file.dump());
  ASSERT_TRUE(from_file.ok()) << from_file.error().message();
  VmConfig from_api;
  auto r = apply_like_api(from_api, file);
  ASSERT_TRUE(r.ok()) << r.error().message();

  EXPECT_EQ(config_to_json(*from_file).dump(), config_to_json(from_api).dump());
  for (const VmConfig* c : {&*from_file, &from_api}) {
    EXPECT_EQ(c->kernel, kernel_);
    EXPECT_EQ(c->initrd, initrd_);
    EXPECT_EQ(c->cmdline, "console=ttyS0 quiet");
    EXPECT_EQ(c->cpus, 2u);
    EXPECT_EQ(c->memory_bytes, 256ULL << 20);
    EXPECT_TRUE(c->track_dirty_pages);
    EXPECT_EQ(c->huge_pages, HugePages::kNone);
    ASSERT_EQ(c->disks.size(), 2u);
    EXPECT_EQ(c->disks[0].id, "data");
    EXPECT_EQ(c->disks[0].path, data_);
    EXPECT_FALSE(c->disks[0].root);
    EXPECT_TRUE(c->disks[0].read_only);
    EXPECT_EQ(c->disks[0].cache, CacheMode::kWriteback);
    EXPECT_EQ(c->disks[0].engine, DiskEngine::kSync);
    EXPECT_EQ(c->disks[0].serial, "SER123");
    EXPECT_EQ(c->disks[1].id, "rootfs");
    EXPECT_TRUE(c->disks[1].root);
    EXPECT_EQ(c->disks[1].format, DiskFormat::kQcow2);
    EXPECT_EQ(c->disks[1].queues, 2);
    EXPECT_EQ(c->disks[1].queue_size, 128);
    EXPECT_EQ(c->disks[1].cache, CacheMode::kUnsafe);  // Firecracker's default cache_type
    ASSERT_EQ(c->nets.size(), 1u);
    EXPECT_EQ(c->nets[0].id, "eth0");
    EXPECT_EQ(c->nets[0].tap, "tap0");
    ASSERT_TRUE(c->nets[0].mac.has_value());
    EXPECT_EQ(format_mac(*c->nets[0].mac), "06:00:ac:10:00:02");
    EXPECT_EQ(c->nets[0].queues, 2);
    ASSERT_TRUE(c->vsock.has_value());
    EXPECT_EQ(c->vsock->cid, 3u);
    EXPECT_EQ(c->vsock->id, "vsock1");
    EXPECT_TRUE(c->rng);
    ASSERT_TRUE(c->logger.has_value());
    EXPECT_EQ(c->logger->level, "Debug");
    EXPECT_TRUE(c->logger->show_level);
    EXPECT_EQ(c->metrics_path, dir_ + "/metrics");
    EXPECT_EQ(c->console.kind, ConsoleSpec::Kind::kFile);
    EXPECT_EQ(c->console.path, dir_ + "/serial");
  }
}

TEST_F(ConfigJsonTest, VmConfigJsonIsAConfigFileThatReadsBackTheSame) {
  auto first = parse_config_file(full_file().dump());
  ASSERT_TRUE(first.ok()) << first.error().message();
  const std::string out = config_to_json(*first).dump();
  auto again = parse_config_file(out);
  ASSERT_TRUE(again.ok()) << again.error().message() << "\n" << out;
  EXPECT_EQ(config_to_json(*again).dump(), out);
}

TEST_F(ConfigJsonTest, ConfigFileKeepsWhatTheCommandLineSetAndTheFileDoesNot) {
  VmConfig base;
  base.stats = true;
  base.on_reboot = OnReboot::kRestart;
  base.cpus = 4;
  auto cfg = parse_config_file(Json{{"boot-source", {{"kernel_image_path", kernel_}}}}.dump(), base);
  ASSERT_TRUE(cfg.ok()) << cfg.error().message();
  EXPECT_TRUE(cfg->stats);
  EXPECT_EQ(cfg->on_reboot, OnReboot::kRestart);
  EXPECT_EQ(cfg->cpus, 4u);
  EXPECT_EQ(cfg->kernel, kernel_);
  EXPECT_EQ(cfg->cmdline, "console=ttyS0");  // absent boot_args: ringvm's default console
}

TEST_F(ConfigJsonTest, MachineConfigPutResetsOptionalFieldsPatchKeepsThem) {
  VmConfig cfg;
  ASSERT_TRUE(
      apply_machine_config(
          cfg,
          Json{{"vcpu_count", 3}, {"mem_size_mib", 64}, {"track_dirty_pages", true}, {"huge_pages", "None"}},
          false)
          .ok());
  ASSERT_TRUE(apply_machine_config(cfg, Json{{"vcpu_count", 4}}, true).ok());
  EXPECT_EQ(cfg.cpus, 4u);
  EXPECT_EQ(cfg.memory_bytes, 64ULL << 20);
  EXPECT_TRUE(cfg.track_dirty_pages);
  EXPECT_EQ(cfg.huge_pages, HugePages::kNone);
  ASSERT_TRUE(apply_machine_config(cfg, Json{{"vcpu_count", 1}, {"mem_size_mib", 16}}, false).ok());
  EXPECT_FALSE(cfg.track_dirty_pages);
  EXPECT_EQ(cfg.huge_pages, HugePages::kTransparent);
  EXPECT_EQ(cfg.memory_bytes, 16ULL << 20);
  // The limits themselves are accepted; smt false and cpu_template "None" are Firecracker's defaults.
  EXPECT_TRUE(apply_machine_config(
                  cfg,
                  Json{{"vcpu_count", 254}, {"mem_size_mib", 16}, {"smt", false}, {"cpu_template", "None"}},
                  false)
                  .ok());
  EXPECT_EQ(cfg.cpus, 254u);
  EXPECT_TRUE(apply_machine_config(cfg, Json::object(), true).ok());
}

TEST_F(ConfigJsonTest, DrivePutReplacesTheDriveWithThatId) {
  VmConfig cfg;
  ASSERT_TRUE(
      apply_drive(cfg, "d", Json{{"drive_id", "d"}, {"path_on_host", data_}, {"is_root_device", true}}).ok());
  ASSERT_TRUE(
      apply_drive(cfg, "d", Json{{"drive_id", "d"}, {"path_on_host", root_}, {"is_root_device", false}})
          .ok());
  ASSERT_EQ(cfg.disks.size(), 1u);
  EXPECT_EQ(cfg.disks[0].path, root_);
  EXPECT_FALSE(cfg.disks[0].root);
  // A root drive may be replaced by another root drive of the same id.
  ASSERT_TRUE(
      apply_drive(cfg, "d", Json{{"drive_id", "d"}, {"path_on_host", data_}, {"is_root_device", true}}).ok());
  ASSERT_TRUE(
      apply_drive(cfg, "d", Json{{"drive_id", "d"}, {"path_on_host", data_}, {"is_root_device", true}}).ok());
  EXPECT_EQ(cfg.disks.size(), 1u);
}

// One refused object: which apply_* call, the JSON, and the text the error must contain (the field).
struct Refusal {
  std::string what;  // for the failure message
  std::function<Result<void>(VmConfig&, const Json&)> apply;
  Json body;
  std::vector<std::string> expect;  // substrings of the message
  // The config-file key this object lives under ("" for objects the config file holds in arrays).
  std::string file_key;
};

TEST_F(ConfigJsonTest, EveryObjectRefusesBadInputNamingTheFieldAndChangesNothing) {
  auto machine = [](VmConfig& c, const Json& j) { return apply_machine_config(c, j, false); };
  auto machine_patch = [](VmConfig& c, const Json& j) { return apply_machine_config(c, j, true); };
  auto drive = [](VmConfig& c, const Json& j) { return apply_drive(c, "d1", j); };
  auto net = [](VmConfig& c, const Json& j) { return apply_network_interface(c, "eth1", j); };
  const Json mc{{"vcpu_count", 1}, {"mem_size_mib", 128}};
  auto with = [](Json j, const std::string& k, Json v) {
    j[k] = std::move(v);
    return j;
  };
  auto without = [](Json j, const std::string& k) {
    j.erase(k);
    return j;
  };
  const Json bs{{"kernel_image_path", kernel_}};
  const Json dr{{"drive_id", "d1"}, {"path_on_host", data_}, {"is_root_device", false}};
  const Json ni{{"iface_id", "eth1"}, {"host_dev_name", "tap1"}};
  const Json vs{{"guest_cid", 3}, {"uds_path", "/tmp/v.sock"}};
  const std::string missing = dir_ + "/no-such-file";
  const std::string long_name(5000, 'a');

  const std::vector<Refusal> cases = {
      // machine-config
      {"mc not an object", machine, Json::array(), {"machine-config", "object"}, "machine-config"},
      {"mc unknown", machine, with(mc, "vcpus", 2), {"unknown field", "vcpus"}, "machine-config"},
      {"mc vcpu string", machine, with(mc, "vcpu_count", "2"), {"vcpu_count", "string"}, "machine-config"},
      {"mc vcpu float", machine, with(mc, "vcpu_count", 2.5), {"vcpu_count"}, "machine-config"},
      {"mc vcpu 0", machine, with(mc, "vcpu_count", 0), {"vcpu_count", "out of range"}, "machine-config"},
      {"mc vcpu 255", machine, with(mc, "vcpu_count", 255), {"vcpu_count", "out of range"}, "machine-config"},
      {"mc vcpu -1", machine, with(mc, "vcpu_count", -1), {"vcpu_count", "negative"}, "machine-config"},
      {"mc vcpu null",
       machine,
       with(mc, "vcpu_count", nullptr),
       {"vcpu_count", "required"},
       "machine-config"},
      {"mc mem 15",
       machine,
       with(mc, "mem_size_mib", 15),
       {"mem_size_mib", "out of range"},
       "machine-config"},
      {"mc mem huge",
       machine,
       with(mc, "mem_size_mib", (1ULL << 20) + 1),
       {"mem_size_mib"},
       "machine-config"},
      {"mc no vcpu", machine, without(mc, "vcpu_count"), {"vcpu_count", "required"}, "machine-config"},
      {"mc no mem", machine, without(mc, "mem_size_mib"), {"mem_size_mib", "required"}, "machine-config"},
      {"mc smt", machine, with(mc, "smt", true), {"smt", "not supported"}, "machine-config"},
      {"mc smt type", machine, with(mc, "smt", "no"), {"smt"}, "machine-config"},
      {"mc huge 2M",
       machine,
       with(mc, "huge_pages", "2M"),
       {"huge_pages", "2M", "not supported"},
       "machine-config"},
      {"mc huge bad", machine, with(mc, "huge_pages", "1G"), {"huge_pages", "1G"}, "machine-config"},
      {"mc template T2", machine, with(mc, "cpu_template", "T2"), {"cpu_template", "T2"}, "machine-config"},
      {"mc dirty type", machine, with(mc, "track_dirty_pages", 1), {"track_dirty_pages"}, "machine-config"},
      {"mc patch vcpu 0", machine_patch, Json{{"vcpu_count", 0}}, {"vcpu_count"}, ""},
      {"mc patch unknown", machine_patch, Json{{"memory", 1}}, {"memory"}, ""},
      // boot-source
      {"bs unknown",
       apply_boot_source,
       with(bs, "kernel", kernel_),
       {"unknown field", "\"kernel\""},
       "boot-source"},
      {"bs no kernel", apply_boot_source, Json::object(), {"kernel_image_path", "required"}, "boot-source"},
      {"bs kernel type",
       apply_boot_source,
       Json{{"kernel_image_path", 1}},
       {"kernel_image_path"},
       "boot-source"},
      {"bs kernel empty",
       apply_boot_source,
       Json{{"kernel_image_path", ""}},
       {"kernel_image_path"},
       "boot-source"},
      {"bs kernel missing",
       apply_boot_source,
       Json{{"kernel_image_path", missing}},
       {"kernel_image_path", missing},
       "boot-source"},
      {"bs kernel dir",
       apply_boot_source,
       Json{{"kernel_image_path", dir_}},
       {"kernel_image_path", "directory"},
       "boot-source"},
      {"bs initrd missing",
       apply_boot_source,
       with(bs, "initrd_path", missing),
       {"initrd_path", missing},
       "boot-source"},
      {"bs initrd dir",
       apply_boot_source,
       with(bs, "initrd_path", dir_),
       {"initrd_path", "directory"},
       "boot-source"},
      {"bs args type", apply_boot_source, with(bs, "boot_args", Json::array()), {"boot_args"}, "boot-source"},
      {"bs args long",
       apply_boot_source,
       with(bs, "boot_args", long_name),
       {"boot_args", "4096"},
       "boot-source"},
      {"bs entry", apply_boot_source, with(bs, "entry", "efi"), {"entry", "efi"}, "boot-source"},
      // drives
      {"dr unknown", drive, with(dr, "readonly", true), {"unknown field", "readonly"}, ""},
      {"dr id differs", drive, with(dr, "drive_id", "d2"), {"drive_id", "d2", "differs"}, ""},
      {"dr id type", drive, with(dr, "drive_id", 1), {"drive_id"}, ""},
      {"dr no id", drive, without(dr, "drive_id"), {"drive_id", "required"}, ""},
      {"dr no path", drive, without(dr, "path_on_host"), {"path_on_host", "required"}, ""},
      {"dr no root", drive, without(dr, "is_root_device"), {"is_root_device", "required"}, ""},
      {"dr root type", drive, with(dr, "is_root_device", "false"), {"is_root_device", "string"}, ""},
      {"dr ro type", drive, with(dr, "is_read_only", 0), {"is_read_only"}, ""},
      {"dr path missing", drive, with(dr, "path_on_host", missing), {"path_on_host", missing}, ""},
      {"dr path dir", drive, with(dr, "path_on_host", dir_), {"path_on_host", "directory"}, ""},
      {"dr rate limiter",
       drive,
       with(dr, "rate_limiter", Json::object()),
       {"rate_limiter", "not supported"},
       ""},
      {"dr vhost-user", drive, with(dr, "socket", "/tmp/vhost.sock"), {"socket", "not supported"}, ""},
      {"dr cache", drive, with(dr, "cache_type", "writeback"), {"cache_type", "writeback"}, ""},
      {"dr engine", drive, with(dr, "io_engine", "Uring"), {"io_engine", "Uring"}, ""},
      {"dr format", drive, with(dr, "format", "vmdk"), {"format", "vmdk"}, ""},
      {"dr queues 0", drive, with(dr, "num_queues", 0), {"num_queues"}, ""},
      {"dr queues 17", drive, with(dr, "num_queues", 17), {"num_queues"}, ""},
      {"dr qsize pow2", drive, with(dr, "queue_size", 100), {"queue_size", "power of two"}, ""},
      {"dr qsize big", drive, with(dr, "queue_size", 2048), {"queue_size"}, ""},
      {"dr serial", drive, with(dr, "serial", std::string(21, 's')), {"serial", "20"}, ""},
      {"dr partuuid type", drive, with(dr, "partuuid", 5), {"partuuid"}, ""},
      {"dr bad path id",
       [](VmConfig& c, const Json& j) { return apply_drive(c, "a b", j); },
       with(dr, "drive_id", "a b"),
       {"id", "a b"},
       ""},
      {"dr empty path id",
       [](VmConfig& c, const Json& j) { return apply_drive(c, "", j); },
       with(dr, "drive_id", ""),
       {"id", "1 to 64"},
       ""},
      // network-interfaces
      {"ni unknown", net, with(ni, "host_dev", "tap1"), {"unknown field", "host_dev"}, ""},
      {"ni id differs", net, with(ni, "iface_id", "eth2"), {"iface_id", "eth2", "differs"}, ""},
      {"ni no id", net, without(ni, "iface_id"), {"iface_id", "required"}, ""},
      {"ni no tap", net, without(ni, "host_dev_name"), {"host_dev_name", "required"}, ""},
      {"ni tap type", net, with(ni, "host_dev_name", true), {"host_dev_name"}, ""},
      {"ni tap long", net, with(ni, "host_dev_name", "tap456789abcdef0"), {"host_dev_name", "15"}, ""},
      {"ni tap empty", net, with(ni, "host_dev_name", ""), {"host_dev_name"}, ""},
      {"ni mtu", net, with(ni, "mtu", 9000), {"mtu", "not supported"}, ""},
      {"ni rx limiter",
       net,
       with(ni, "rx_rate_limiter", Json::object()),
       {"rx_rate_limiter", "not supported"},
       ""},
      {"ni tx limiter",
       net,
       with(ni, "tx_rate_limiter", Json::object()),
       {"tx_rate_limiter", "not supported"},
       ""},
      {"ni mac", net, with(ni, "guest_mac", "06:00:zz:00:00:01"), {"guest_mac"}, ""},
      {"ni mac type", net, with(ni, "guest_mac", 6), {"guest_mac"}, ""},
      {"ni queues", net, with(ni, "num_queues", 17), {"num_queues"}, ""},
      {"ni qsize", net, with(ni, "queue_size", 3), {"queue_size"}, ""},
      {"ni qsize pow2", net, with(ni, "queue_size", 12), {"queue_size", "power of two"}, ""},
      // vsock
      {"vs unknown", apply_vsock, with(vs, "cid", 3), {"unknown field", "cid"}, "vsock"},
      {"vs cid 2", apply_vsock, with(vs, "guest_cid", 2), {"guest_cid", "out of range"}, "vsock"},
      {"vs cid type", apply_vsock, with(vs, "guest_cid", "3"), {"guest_cid"}, "vsock"},
      {"vs no cid", apply_vsock, without(vs, "guest_cid"), {"guest_cid", "required"}, "vsock"},
      {"vs no path", apply_vsock, without(vs, "uds_path"), {"uds_path", "required"}, "vsock"},
      {"vs empty path", apply_vsock, with(vs, "uds_path", ""), {"uds_path"}, "vsock"},
      {"vs long path", apply_vsock, with(vs, "uds_path", std::string(101, 'p')), {"uds_path"}, "vsock"},
      {"vs bad id", apply_vsock, with(vs, "vsock_id", "a/b"), {"id", "a/b"}, "vsock"},
      // entropy
      {"en limiter",
       apply_entropy,
       Json{{"rate_limiter", Json::object()}},
       {"rate_limiter", "not supported"},
       "entropy"},
      {"en unknown", apply_entropy, Json{{"device", 1}}, {"unknown field", "device"}, "entropy"},
      {"en not object", apply_entropy, Json("x"), {"entropy", "object"}, "entropy"},
      // logger
      {"lg level", apply_logger, Json{{"level", "Loud"}}, {"level", "Loud"}, "logger"},
      {"lg module", apply_logger, Json{{"module", "api"}}, {"module", "not supported"}, "logger"},
      {"lg unknown", apply_logger, Json{{"path", "/tmp/x"}}, {"unknown field", "path"}, "logger"},
      {"lg show type", apply_logger, Json{{"show_level", "yes"}}, {"show_level"}, "logger"},
      // metrics
      {"mt missing", apply_metrics, Json::object(), {"metrics_path", "required"}, "metrics"},
      {"mt empty", apply_metrics, Json{{"metrics_path", ""}}, {"metrics_path"}, "metrics"},
      {"mt unknown",
       apply_metrics,
       Json{{"metrics_path", "/tmp/m"}, {"x", 1}},
       {"unknown field", "\"x\""},
       "metrics"},
      // serial
      {"se limiter",
       apply_serial,
       Json{{"rate_limiter", Json::object()}},
       {"rate_limiter", "not supported"},
       "serial"},
      {"se empty", apply_serial, Json{{"serial_out_path", ""}}, {"serial_out_path"}, "serial"},
  };

  // A configuration with something of everything in it, so "unchanged" means something.
  auto base = parse_config_file(full_file().dump());
  ASSERT_TRUE(base.ok()) << base.error().message();
  const std::string before = config_to_json(*base).dump();
  for (const Refusal& c : cases) {
    SCOPED_TRACE(c.what);
    VmConfig cfg = *base;
    auto r = c.apply(cfg, c.body);
    ASSERT_FALSE(r.ok()) << c.body.dump();
    for (const std::string& s : c.expect)
      EXPECT_NE(r.error().message().find(s), std::string::npos) << r.error().message() << " lacks " << s;
    EXPECT_EQ(config_to_json(cfg).dump(), before);
    EXPECT_EQ(cfg.cpus, base->cpus);
    EXPECT_EQ(cfg.kernel, base->kernel);
    // The config file refuses the same object with the same message.
    if (!c.file_key.empty()) {
      auto f = parse_config_file(Json{{c.file_key, c.body}}.dump());
      ASSERT_FALSE(f.ok());
      EXPECT_EQ(f.error().message(), r.error().message());
    }
  }
}

TEST_F(ConfigJsonTest, ConfigFileRefusesDrivesAndInterfacesLikeTheApi) {
  const Json good{{"drive_id", "d1"}, {"path_on_host", data_}, {"is_root_device", true}};
  Json second = good;
  second["drive_id"] = "d2";
  // Two root devices: the second is refused, naming the first.
  auto two = parse_config_file(Json{{"drives", Json::array({good, second})}}.dump());
  ASSERT_FALSE(two.ok());
  EXPECT_NE(two.error().message().find("is_root_device"), std::string::npos) << two.error().message();
  EXPECT_NE(two.error().message().find("d1"), std::string::npos);
  VmConfig cfg;
  ASSERT_TRUE(apply_drive(cfg, "d1", good).ok());
  auto api = apply_drive(cfg, "d2", second);
  ASSERT_FALSE(api.ok());
  EXPECT_EQ(api.error().message(), two.error().message());
  EXPECT_EQ(cfg.disks.size(), 1u);

  // The same tap twice.
  const Json n1{{"iface_id", "eth0"}, {"host_dev_name", "tap0"}};
  const Json n2{{"iface_id", "eth1"}, {"host_dev_name", "tap0"}};
  auto taps = parse_config_file(Json{{"network-interfaces", Json::array({n1, n2})}}.dump());
  ASSERT_FALSE(taps.ok());
  EXPECT_NE(taps.error().message().find("tap0"), std::string::npos);

  // A drive with no (string) drive_id, and arrays that are not arrays.
  for (const Json& bad :
       {Json{{"drives", Json::array({{{"path_on_host", data_}, {"is_root_device", false}}})}},
        Json{{"drives", Json::array({{{"drive_id", 7}}})}}, Json{{"drives", Json::array({"d1"})}}}) {
    auto r = parse_config_file(bad.dump());
    ASSERT_FALSE(r.ok()) << bad.dump();
    EXPECT_NE(r.error().message().find("drive_id"), std::string::npos) << r.error().message();
  }
  auto no_iface =
      parse_config_file(Json{{"network-interfaces", Json::array({{{"host_dev_name", "t"}}})}}.dump());
  ASSERT_FALSE(no_iface.ok());
  EXPECT_NE(no_iface.error().message().find("iface_id"), std::string::npos);
  for (const char* key : {"drives", "network-interfaces"}) {
    auto r = parse_config_file(Json{{key, Json::object()}}.dump());
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message().find(key), std::string::npos) << r.error().message();
    EXPECT_NE(r.error().message().find("array"), std::string::npos) << r.error().message();
  }

  // At most kMaxApiDrives drives, kMaxApiNets interfaces.
  Json drives = Json::array();
  for (size_t i = 0; i <= kMaxApiDrives; ++i)
    drives.push_back(
        {{"drive_id", fmt::format("d{}", i)}, {"path_on_host", data_}, {"is_root_device", false}});
  auto many = parse_config_file(Json{{"drives", drives}}.dump());
  ASSERT_FALSE(many.ok());
  EXPECT_NE(many.error().message().find(fmt::format("{}", kMaxApiDrives)), std::string::npos);
  Json nets = Json::array();
  for (size_t i = 0; i <= kMaxApiNets; ++i)
    nets.push_back({{"iface_id", fmt::format("n{}", i)}, {"host_dev_name", fmt::format("tap{}", i)}});
  EXPECT_FALSE(parse_config_file(Json{{"network-interfaces", nets}}.dump()).ok());
}

TEST_F(ConfigJsonTest, ConfigFileRefusesUnknownAndUnsupportedObjects) {
  struct Case {
    std::string text;
    std::string expect;
  };
  const std::vector<Case> cases = {
      {"{", "not valid JSON"},
      {"", "not valid JSON"},
      {"{} {}", "not valid JSON"},
      {"[]", "object"},
      {R"({"boot_source": {}})", "boot_source"},
      {R"({"balloon": {"amount_mib": 1}})", "balloon"},
      {R"({"mmds-config": {}})", "mmds-config"},
      {R"({"cpu-config": {}})", "cpu-config"},
      {R"({"pmem": []})", "pmem"},
      {R"({"memory-hotplug": {}})", "memory-hotplug"},
  };
  for (const Case& c : cases) {
    auto r = parse_config_file(c.text);
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_NE(r.error().message().find(c.expect), std::string::npos) << c.text << ": " << r.error().message();
  }
  // Objects a file may leave null are the same as absent.
  EXPECT_TRUE(parse_config_file(R"({"balloon": null, "vsock": null})").ok());
}

TEST_F(ConfigJsonTest, FinalizePutsTheRootDiskFirstAndCmdlineNamesIt) {
  auto cfg = parse_config_file(full_file().dump());
  ASSERT_TRUE(cfg.ok()) << cfg.error().message();
  ASSERT_EQ(cfg->disks[0].id, "data");
  auto extra = Json{{"drive_id", "extra"}, {"path_on_host", data_}, {"is_root_device", false}};
  ASSERT_TRUE(apply_drive(*cfg, "extra", extra).ok());
  ASSERT_TRUE(finalize_config(*cfg).ok());
  ASSERT_EQ(cfg->disks.size(), 3u);
  EXPECT_EQ(cfg->disks[0].id, "rootfs");
  EXPECT_EQ(cfg->disks[1].id, "data");  // the others keep their order
  EXPECT_EQ(cfg->disks[2].id, "extra");
  EXPECT_EQ(effective_cmdline(*cfg), "console=ttyS0 quiet root=/dev/vda rw");

  cfg->disks[0].read_only = true;
  EXPECT_EQ(effective_cmdline(*cfg), "console=ttyS0 quiet root=/dev/vda ro");
  cfg->disks[0].partuuid = "0eaa91a0-01";
  EXPECT_EQ(effective_cmdline(*cfg), "console=ttyS0 quiet root=PARTUUID=0eaa91a0-01 ro");
  cfg->disks[0].read_only = false;
  cfg->cmdline.clear();
  EXPECT_EQ(effective_cmdline(*cfg), "root=PARTUUID=0eaa91a0-01 rw");

  // Through the API's drive object: partuuid and is_read_only.
  VmConfig api;
  api.kernel = kernel_;
  api.cmdline = "console=ttyS0";
  ASSERT_TRUE(apply_drive(api, "r",
                          Json{{"drive_id", "r"},
                               {"path_on_host", root_},
                               {"is_root_device", true},
                               {"is_read_only", true},
                               {"partuuid", "abcd-02"}})
                  .ok());
  ASSERT_TRUE(finalize_config(api).ok());
  EXPECT_EQ(effective_cmdline(api), "console=ttyS0 root=PARTUUID=abcd-02 ro");

  // No root disk: the command line is the user's.
  VmConfig plain;
  plain.kernel = kernel_;
  plain.cmdline = "console=ttyS0";
  ASSERT_TRUE(
      apply_drive(plain, "d", Json{{"drive_id", "d"}, {"path_on_host", data_}, {"is_root_device", false}})
          .ok());
  ASSERT_TRUE(finalize_config(plain).ok());
  EXPECT_EQ(effective_cmdline(plain), "console=ttyS0");
}

TEST_F(ConfigJsonTest, FinalizeRefusesWhatOnlyAWholeConfigShows) {
  VmConfig no_kernel;
  auto r = finalize_config(no_kernel);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("kernel"), std::string::npos);

  VmConfig two_roots;
  two_roots.kernel = kernel_;
  DiskSpec a;
  a.id = "a";
  a.path = data_;
  a.root = true;
  DiskSpec b = a;
  b.id = "b";
  two_roots.disks = {a, b};
  r = finalize_config(two_roots);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("is_root_device"), std::string::npos);

  VmConfig same_id;
  same_id.kernel = kernel_;
  b.id = "a";
  b.root = false;
  same_id.disks = {a, b};
  r = finalize_config(same_id);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("a"), std::string::npos);

  // Disks from the command line have no id yet: they get blk<N> by position.
  VmConfig cli;
  cli.kernel = kernel_;
  DiskSpec c;
  c.path = data_;
  cli.disks = {c, c};
  ASSERT_TRUE(finalize_config(cli).ok());
  EXPECT_EQ(cli.disks[0].id, "blk0");
  EXPECT_EQ(cli.disks[1].id, "blk1");
}


TEST_F(ConfigJsonTest, SnapshotCreateFieldsAndDefaults) {
  auto r = parse_snapshot_create(Json{{"snapshot_path", "/s/vm.snap"}, {"mem_file_path", "/s/vm.mem"}});
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_FALSE(r->diff);  // Full by default
  EXPECT_EQ(r->snapshot_path, "/s/vm.snap");
  EXPECT_EQ(r->mem_path, "/s/vm.mem");
  // Nothing has to exist yet: these are files to write.
  r = parse_snapshot_create(
      Json{{"snapshot_type", "Diff"}, {"snapshot_path", dir_ + "/new/vm.snap"}, {"mem_file_path", "rel.mem"}});
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_TRUE(r->diff);
  EXPECT_EQ(r->mem_path, "rel.mem");
  r = parse_snapshot_create(Json{{"snapshot_type", "Full"}, {"snapshot_path", "a"}, {"mem_file_path", "b"}});
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->diff);
  // null is "left out", as for every other object.
  r = parse_snapshot_create(Json{{"snapshot_type", nullptr}, {"snapshot_path", "a"}, {"mem_file_path", "b"}});
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->diff);

  const Json ok{{"snapshot_path", "a"}, {"mem_file_path", "b"}};
  auto with = [&](const std::string& k, Json v) {
    Json j = ok;
    j[k] = std::move(v);
    return j;
  };
  auto without = [&](const std::string& k) {
    Json j = ok;
    j.erase(k);
    return j;
  };
  const std::vector<std::pair<Json, std::vector<std::string>>> bad = {
      {Json::array(), {"snapshot/create", "object"}},
      {Json("x"), {"snapshot/create", "object"}},
      {without("snapshot_path"), {"snapshot_path", "required"}},
      {without("mem_file_path"), {"mem_file_path", "required"}},
      {with("snapshot_path", 1), {"snapshot_path", "string"}},
      {with("mem_file_path", false), {"mem_file_path", "string"}},
      {with("snapshot_path", ""), {"snapshot_path", "files to write"}},
      {with("mem_file_path", ""), {"mem_file_path", "files to write"}},
      {with("mem_file_path", "a"), {"same file"}},
      {with("snapshot_type", "diff"), {"snapshot_type", "\"Full\", \"Diff\""}},
      {with("snapshot_type", "Incremental"), {"snapshot_type"}},
      {with("snapshot_type", 1), {"snapshot_type", "string"}},
      {with("version", "1.0.0"), {"version", "not supported"}},
      {with("compress", true), {"unknown field \"compress\"", "snapshot_type, snapshot_path, mem_file_path"}},
  };
  for (const auto& [j, words] : bad) {
    SCOPED_TRACE(j.dump());
    auto e = parse_snapshot_create(j);
    ASSERT_FALSE(e.ok());
    for (const std::string& w : words) EXPECT_NE(e.error().message().find(w), std::string::npos) << e.error().message();
  }
}

TEST_F(ConfigJsonTest, SnapshotLoadFieldsDefaultsAndLegacySpellings) {
  const std::string snap = file("vm.snap"), mem = file("vm.mem");
  const Json backend{{"backend_type", "File"}, {"backend_path", mem}};
  auto r = parse_snapshot_load(Json{{"snapshot_path", snap}, {"mem_backend", backend}});
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->snapshot_path, snap);
  EXPECT_EQ(r->mem_path, mem);
  EXPECT_FALSE(r->track_dirty_pages);
  EXPECT_FALSE(r->resume);
  EXPECT_FALSE(r->clock_realtime);
  EXPECT_TRUE(r->network_overrides.empty());
  // ringvm's clone-only overrides never come from the API.
  EXPECT_TRUE(r->mac_overrides.empty());
  EXPECT_TRUE(r->disk_overrides.empty());
  EXPECT_FALSE(r->vsock_cid);
  EXPECT_FALSE(r->vsock_uds);
  EXPECT_FALSE(r->id);

  r = parse_snapshot_load(Json{{"snapshot_path", snap},
                               {"mem_backend", backend},
                               {"track_dirty_pages", true},
                               {"resume_vm", true},
                               {"clock_realtime", true},
                               {"network_overrides", Json::array({{{"iface_id", "eth0"}, {"host_dev_name", "tap5"}},
                                                                  {{"iface_id", "eth1"}, {"host_dev_name", std::string(15, 't')}}})}});
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_TRUE(r->track_dirty_pages);
  EXPECT_TRUE(r->resume);
  EXPECT_TRUE(r->clock_realtime);
  ASSERT_EQ(r->network_overrides.size(), 2u);
  EXPECT_EQ(r->network_overrides[0], std::make_pair(std::string("eth0"), std::string("tap5")));
  EXPECT_EQ(r->network_overrides[1], std::make_pair(std::string("eth1"), std::string(15, 't')));

  // Firecracker's deprecated spellings: mem_file_path for mem_backend File, enable_diff_snapshots
  // for track_dirty_pages (which wins when both are given).
  r = parse_snapshot_load(Json{{"snapshot_path", snap}, {"mem_file_path", mem}, {"enable_diff_snapshots", true}});
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->mem_path, mem);
  EXPECT_TRUE(r->track_dirty_pages);
  r = parse_snapshot_load(Json{{"snapshot_path", snap},
                               {"mem_file_path", mem},
                               {"enable_diff_snapshots", true},
                               {"track_dirty_pages", false}});
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->track_dirty_pages);
  r = parse_snapshot_load(Json{{"snapshot_path", snap},
                               {"mem_backend", backend},
                               {"enable_diff_snapshots", false},
                               {"track_dirty_pages", true}});
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->track_dirty_pages);
  // An empty override list is no override.
  r = parse_snapshot_load(Json{{"snapshot_path", snap}, {"mem_backend", backend}, {"network_overrides", Json::array()}});
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->network_overrides.empty());
}

TEST_F(ConfigJsonTest, SnapshotLoadRefusesBadFieldsNamingThem) {
  const std::string snap = file("vm.snap"), mem = file("vm.mem");
  const std::string missing = dir_ + "/no-such-file";
  const Json backend{{"backend_type", "File"}, {"backend_path", mem}};
  const Json ok{{"snapshot_path", snap}, {"mem_backend", backend}};
  auto with = [&](const std::string& k, Json v) {
    Json j = ok;
    j[k] = std::move(v);
    return j;
  };
  auto without = [&](const std::string& k) {
    Json j = ok;
    j.erase(k);
    return j;
  };
  auto nets = [&](Json arr) { return with("network_overrides", std::move(arr)); };
  auto net = [](const std::string& id, const std::string& tap) {
    return Json{{"iface_id", id}, {"host_dev_name", tap}};
  };
  Json nine = Json::array();
  for (int i = 0; i < 9; ++i) nine.push_back(net("eth" + std::to_string(i), "tap" + std::to_string(i)));
  const std::vector<std::pair<Json, std::vector<std::string>>> bad = {
      {Json::array(), {"snapshot/load", "object"}},
      {without("snapshot_path"), {"snapshot_path", "required"}},
      {with("snapshot_path", 3), {"snapshot_path", "string"}},
      {with("snapshot_path", ""), {"snapshot_path", "empty"}},
      {with("snapshot_path", missing), {"snapshot_path", missing}},
      {with("snapshot_path", dir_), {"snapshot_path", "directory"}},
      {with("snapshot_path", "/dev/null"), {"snapshot_path", "regular file"}},
      {without("mem_backend"), {"exactly one of mem_backend", "mem_file_path"}},
      {with("mem_file_path", mem), {"exactly one of mem_backend", "mem_file_path"}},
      {with("mem_backend", "File"), {"mem_backend", "object"}},
      {with("mem_backend", Json{{"backend_type", "Uffd"}, {"backend_path", mem}}), {"Uffd", "not supported"}},
      {with("mem_backend", Json{{"backend_type", "file"}, {"backend_path", mem}}), {"backend_type", "\"File\""}},
      {with("mem_backend", Json{{"backend_path", mem}}), {"backend_type", "required"}},
      {with("mem_backend", Json{{"backend_type", "File"}}), {"backend_path", "required"}},
      {with("mem_backend", Json{{"backend_type", "File"}, {"backend_path", missing}}), {"backend_path", missing}},
      {with("mem_backend", Json{{"backend_type", "File"}, {"backend_path", mem}, {"x", 1}}),
       {"mem_backend", "unknown field \"x\""}},
      {Json{{"snapshot_path", snap}, {"mem_file_path", missing}}, {"mem_file_path", missing}},
      {Json{{"snapshot_path", snap}, {"mem_file_path", 1}}, {"mem_file_path", "string"}},
      {with("track_dirty_pages", "true"), {"track_dirty_pages", "true or false"}},
      {with("enable_diff_snapshots", 1), {"enable_diff_snapshots"}},
      {with("resume_vm", "yes"), {"resume_vm"}},
      {with("clock_realtime", 0), {"clock_realtime"}},
      {with("version", "1"), {"unknown field \"version\"", "clock_realtime"}},
      {nets(Json::object()), {"network_overrides", "array"}},
      {nets(Json::array({"eth0"})), {"network_overrides[]", "object"}},
      {nets(Json::array({Json{{"iface_id", "eth0"}}})), {"host_dev_name", "required"}},
      {nets(Json::array({Json{{"host_dev_name", "tap0"}}})), {"iface_id", "required"}},
      {nets(Json::array({Json{{"iface_id", "eth0"}, {"host_dev_name", "tap0"}, {"guest_mac", "06:00:00:00:00:01"}}})),
       {"unknown field \"guest_mac\""}},
      {nets(Json::array({net("eth0", "")})), {"host_dev_name", "1 to 15"}},
      {nets(Json::array({net("eth0", std::string(16, 't'))})), {"host_dev_name", "1 to 15"}},
      {nets(Json::array({net("", "tap0")})), {"iface_id"}},
      {nets(Json::array({net("eth/0", "tap0")})), {"iface_id"}},
      {nets(Json::array({net(std::string(65, 'e'), "tap0")})), {"iface_id"}},
      {nets(Json::array({net("eth0", "tap0"), net("eth0", "tap1")})), {"eth0", "given twice"}},
      {nets(nine), {"network_overrides", "at most 8"}},
  };
  for (const auto& [j, words] : bad) {
    SCOPED_TRACE(j.dump().substr(0, 300));
    auto e = parse_snapshot_load(j);
    ASSERT_FALSE(e.ok());
    for (const std::string& w : words) EXPECT_NE(e.error().message().find(w), std::string::npos) << e.error().message();
  }
}

}  // namespace
}  // namespace ringvm
