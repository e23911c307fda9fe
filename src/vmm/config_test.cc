#include "vmm/config.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "vmm/config_json.h"

namespace ringvm {
namespace {

TEST(Config, MemorySizes) {
  EXPECT_EQ(*parse_memory_size("512M"), 512ULL << 20);
  EXPECT_EQ(*parse_memory_size("2G"), 2ULL << 30);
  EXPECT_EQ(*parse_memory_size("1024"), 1024ULL << 20);  // MiB without a suffix, like QEMU's -m
  EXPECT_EQ(*parse_memory_size("65536K"), 64ULL << 20);
  EXPECT_FALSE(parse_memory_size("0").ok());
  EXPECT_FALSE(parse_memory_size("0M").ok());
  EXPECT_FALSE(parse_memory_size("").ok());
  EXPECT_FALSE(parse_memory_size("abc").ok());
  EXPECT_FALSE(parse_memory_size("1.5G").ok());
  EXPECT_FALSE(parse_memory_size("12X").ok());
  EXPECT_FALSE(parse_memory_size("1M").ok());  // too small to boot
  EXPECT_FALSE(parse_memory_size("99999999999999999999").ok());
  EXPECT_FALSE(parse_memory_size("18446744073709551615T").ok());
  auto e = parse_memory_size("0");
  EXPECT_NE(e.error().message().find("--memory"), std::string::npos);
}

TEST(Config, Disk) {
  auto d = parse_disk("path=a.img,readonly=on,serial=SER1,queues=4,cache=unsafe,format=qcow2");
  ASSERT_TRUE(d.ok()) << d.error().message();
  EXPECT_EQ(d->path, "a.img");
  EXPECT_TRUE(d->read_only);
  EXPECT_EQ(d->serial, "SER1");
  EXPECT_EQ(d->queues, 4);
  EXPECT_EQ(d->cache, CacheMode::kUnsafe);
  EXPECT_EQ(d->format, DiskFormat::kQcow2);
  auto plain = parse_disk("path=b.raw");
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->format, DiskFormat::kRaw);  // never guessed from content
  EXPECT_EQ(plain->queues, 0);                 // one per vCPU, decided when the VM is built
  EXPECT_EQ(parse_disk("path=a,queues=16")->queues, 16);
  EXPECT_FALSE(parse_disk("path=a,queues=17").ok());  // more than a virtio-blk device offers
  EXPECT_FALSE(parse_disk("readonly=on").ok());
  EXPECT_FALSE(parse_disk("path=a,queues=0").ok());
  EXPECT_FALSE(parse_disk("path=a,queues=x").ok());
  EXPECT_EQ(plain->queue_size, kDefaultDiskQueueSize);
  EXPECT_EQ(parse_disk("path=a,queue_size=1024")->queue_size, 1024);
  EXPECT_EQ(parse_disk("path=a,queue_size=4")->queue_size, 4);
  for (const char* bad :
       {"path=a,queue_size=2", "path=a,queue_size=2048", "path=a,queue_size=300", "path=a,queue_size=x"}) {
    auto r = parse_disk(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.error().message().find("power of two"), std::string::npos) << r.error().message();
  }
  EXPECT_FALSE(parse_disk("path=a,bogus=1").ok());
  EXPECT_FALSE(parse_disk("path=a,readonly=maybe").ok());
  EXPECT_FALSE(parse_disk("path=a,format=vmdk").ok());
  EXPECT_EQ(parse_disk("path=a,cache=none")->cache, CacheMode::kNone);
  EXPECT_FALSE(parse_disk("path=a,cache=directsync").ok());
  EXPECT_FALSE(parse_disk("path=a,serial=012345678901234567890").ok());
  EXPECT_FALSE(parse_disk("a.img").ok());
}

DiskSpec tuned(std::string_view key, std::string_view value) {
  DiskSpec d = *parse_disk("path=a");
  auto r = apply_disk_tuning(&d, key, value);
  EXPECT_TRUE(r.ok()) << key << "=" << value << ": " << r.error().message();
  return d;
}
bool tune_ok(std::string_view key, std::string_view value) {
  DiskSpec d;
  return apply_disk_tuning(&d, key, value).ok();
}
std::string tune_error(std::string_view key, std::string_view value) {
  DiskSpec d;
  auto r = apply_disk_tuning(&d, key, value);
  return r.ok() ? std::string("(accepted)") : r.error().message();
}

// The heuristics' constants are not --disk options: the refusal names the tuning spelling.
TEST(Config, DiskTuningConstantsAreNotOptions) {
  for (std::string_view key : kDiskTuningKeys) {
    auto r = parse_disk(fmt::format("path=a,{}=1", key));
    ASSERT_FALSE(r.ok()) << key;
    EXPECT_NE(r.error().message().find(fmt::format("RINGVM_TUNING=disk.{}=1", key)), std::string::npos)
        << r.error().message();
  }
}

// RINGVM_TUNING=disk.KEY=VALUE: the measured defaults and the values allowed.
TEST(Config, DiskTuningConstants) {
  const DiskSpec plain = *parse_disk("path=b.raw");
  EXPECT_EQ(plain.poll_us, 0u);  // no polling unless asked for
  EXPECT_EQ(tuned("poll_us", "64").poll_us, 64u);
  EXPECT_EQ(tuned("poll_us", "0").poll_us, 0u);
  EXPECT_FALSE(tune_ok("poll_us", "10001"));
  EXPECT_FALSE(plain.batch_us.has_value());  // auto: chosen from the measured exit cost
  EXPECT_FALSE(tuned("batch_us", "auto").batch_us.has_value());
  EXPECT_EQ(tuned("batch_us", "2000").batch_us, 2000u);
  EXPECT_EQ(tuned("batch_us", "0").batch_us, 0u);
  EXPECT_FALSE(tune_ok("batch_us", "z"));
  EXPECT_EQ(plain.chain_passes, kDefaultDiskChainPasses);
  EXPECT_EQ(tuned("chain", "1").chain_passes, 1);
  EXPECT_EQ(tuned("chain", "64").chain_passes, 64);
  EXPECT_EQ(plain.chain_kib, kDefaultDiskChainKib);
  EXPECT_EQ(tuned("chain_kib", "2048").chain_kib, 2048u);
  EXPECT_FALSE(tune_ok("chain_kib", "0"));
  for (const char* bad : {"0", "65", "x"}) {
    EXPECT_NE(tune_error("chain", bad).find("chain"), std::string::npos) << bad;
  }
  EXPECT_EQ(plain.merge_kib, kDefaultDiskMergeKib);
  EXPECT_EQ(tuned("merge_kib", "128").merge_kib, 128u);
  EXPECT_EQ(tuned("merge_kib", "0").merge_kib, 0u);
  for (const char* bad : {"16385", "1M", ""}) {
    EXPECT_NE(tune_error("merge_kib", bad).find("merge_kib"), std::string::npos) << bad;
  }
  EXPECT_NE(tune_error("batch_us", "z").find("or auto"), std::string::npos);
  EXPECT_FALSE(tune_ok("poll_us", "-1"));
  EXPECT_NE(tune_error("poll_us", "x").find("poll_us=x"), std::string::npos);
}

TEST(Config, TuningSpelling) {
  auto t = parse_tuning("disk.chain_kib=2048,net.nice=0,disk.merge_kib=0");
  ASSERT_TRUE(t.ok()) << t.error().message();
  ASSERT_EQ(t->disk.size(), 2u);
  ASSERT_EQ(t->net.size(), 1u);
  DiskSpec d = *parse_disk("path=a");
  ASSERT_TRUE(apply_tuning(*t, &d).ok());
  EXPECT_EQ(d.chain_kib, 2048u);
  EXPECT_EQ(d.merge_kib, 0u);
  NetSpec n;
  ASSERT_TRUE(apply_tuning(*t, &n).ok());
  EXPECT_EQ(n.worker_nice, 0);
  EXPECT_TRUE(parse_tuning("").ok());
  for (const char* bad :
       {"chain_kib=2048", "disk.chain_kib", "gpu.x=1", "disk.bogus=1", "net.nice=high", "disk.chain_kib=0"})
    EXPECT_FALSE(parse_tuning(bad).ok()) << bad;
  EXPECT_NE(parse_tuning("disk.bogus=1").error().message().find("known: poll_us"), std::string::npos);
}

// The config file's "tuning" is the same spelling, and GET /vm/config writes it back so that the
// configuration it returns is itself a config file.
TEST(Config, ConfigFileTuningRoundTrips) {
  auto cfg = parse_config_file(
      R"({"tuning": {"disk": {"chain_kib": 2048, "merge_kib": 0}, "net": {"pin_flows": false}}})");
  ASSERT_TRUE(cfg.ok()) << cfg.error().message();
  DiskSpec d = *parse_disk("path=a");
  ASSERT_TRUE(apply_tuning(cfg->tuning, &d).ok());
  EXPECT_EQ(d.chain_kib, 2048u);
  EXPECT_EQ(d.merge_kib, 0u);
  NetSpec n;
  ASSERT_TRUE(apply_tuning(cfg->tuning, &n).ok());
  EXPECT_FALSE(n.pin_flows);
  const Json out = config_to_json(*cfg);
  auto again = parse_config_file(out.dump());
  ASSERT_TRUE(again.ok()) << again.error().message();
  EXPECT_EQ(config_to_json(*again), out);
  for (const char* bad :
       {R"({"tuning": {"disk": {"chain_kib": 0}}})", R"({"tuning": {"gpu": {}}})",
        R"({"tuning": {"disk": {"chain_kib": [1]}}})", R"({"tuning": {"disk": {"bogus": 1}}})"})
    EXPECT_FALSE(parse_config_file(bad).ok()) << bad;
}
// Hostile paths and values the kernel command line or the build would choke on.
TEST(Config, FifosPartuuidsAndTuningNamesAreRefused) {
  char dir[] = "/tmp/ringvm-config-test-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  const std::string fifo = std::string(dir) + "/fifo", file = std::string(dir) + "/file";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  {
    std::FILE* f = std::fopen(file.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fclose(f);
  }
  VmConfig cfg;
  auto r = apply_boot_source(cfg, Json{{"kernel_image_path", fifo}});
  ASSERT_FALSE(r.ok()) << "a FIFO as the kernel would block the build on its first read";
  EXPECT_NE(r.error().message().find("not a regular file"), std::string::npos) << r.error().message();
  EXPECT_FALSE(apply_boot_source(cfg, Json{{"kernel_image_path", file}, {"initrd_path", fifo}}).ok());
  EXPECT_FALSE(
      apply_drive(cfg, "d", Json{{"drive_id", "d"}, {"path_on_host", fifo}, {"is_root_device", false}}).ok());
  EXPECT_TRUE(apply_drive(cfg, "d",
                          Json{{"drive_id", "d"},
                               {"path_on_host", file},
                               {"is_root_device", true},
                               {"partuuid", "0eaa91a0-01"}})
                  .ok());
  auto p = apply_drive(cfg, "e",
                       Json{{"drive_id", "e"},
                            {"path_on_host", file},
                            {"is_root_device", false},
                            {"partuuid", "1 init=/bin/sh"}});
  ASSERT_FALSE(p.ok()) << "a partuuid with a space would add kernel arguments";
  EXPECT_NE(p.error().message().find("partuuid"), std::string::npos);
  EXPECT_FALSE(parse_config_file(R"({"tuning": {"disk": {"chain_kib=1,net.nice": 0}}})").ok());
  std::filesystem::remove_all(dir);
}
}  // namespace
}  // namespace ringvm
