#include "vmm/config.h"

#include <gtest/gtest.h>

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
  EXPECT_EQ(plain->queues, 0);                  // one per vCPU, decided when the VM is built
  EXPECT_EQ(parse_disk("path=a,queues=16")->queues, 16);
  EXPECT_FALSE(parse_disk("path=a,queues=17").ok());  // more than a virtio-blk device offers
  EXPECT_FALSE(parse_disk("readonly=on").ok());
  EXPECT_FALSE(parse_disk("path=a,queues=0").ok());
  EXPECT_FALSE(parse_disk("path=a,queues=x").ok());
  EXPECT_EQ(plain->queue_size, kDefaultDiskQueueSize);
  EXPECT_EQ(parse_disk("path=a,queue_size=1024")->queue_size, 1024);
  EXPECT_EQ(parse_disk("path=a,queue_size=4")->queue_size, 4);
  for (const char* bad : {"path=a,queue_size=2", "path=a,queue_size=2048", "path=a,queue_size=300", "path=a,queue_size=x"}) {
    auto r = parse_disk(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.error().message().find("power of two"), std::string::npos) << r.error().message();
  }
  EXPECT_EQ(plain->poll_us, 0u);  // no polling unless asked for
  EXPECT_EQ(parse_disk("path=a,poll_us=64")->poll_us, 64u);
  EXPECT_EQ(parse_disk("path=a,poll_us=0")->poll_us, 0u);
  EXPECT_FALSE(parse_disk("path=a,poll_us=10001").ok());
  EXPECT_FALSE(plain->batch_us.has_value());  // auto: chosen from the measured exit cost
  EXPECT_FALSE(parse_disk("path=a,batch_us=auto")->batch_us.has_value());
  EXPECT_EQ(parse_disk("path=a,batch_us=2000")->batch_us, 2000u);
  EXPECT_EQ(parse_disk("path=a,batch_us=0")->batch_us, 0u);
  EXPECT_FALSE(parse_disk("path=a,batch_us=z").ok());
  EXPECT_EQ(plain->chain_passes, kDefaultDiskChainPasses);
  EXPECT_EQ(parse_disk("path=a,chain=1")->chain_passes, 1);
  EXPECT_EQ(parse_disk("path=a,chain=64")->chain_passes, 64);
  EXPECT_EQ(plain->chain_kib, kDefaultDiskChainKib);
  EXPECT_EQ(parse_disk("path=a,chain_kib=2048")->chain_kib, 2048u);
  EXPECT_FALSE(parse_disk("path=a,chain_kib=0").ok());
  for (const char* bad : {"path=a,chain=0", "path=a,chain=65", "path=a,chain=x"}) {
    auto r = parse_disk(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.error().message().find("chain"), std::string::npos) << r.error().message();
  }
  EXPECT_EQ(plain->merge_kib, kDefaultDiskMergeKib);
  EXPECT_EQ(parse_disk("path=a,merge_kib=128")->merge_kib, 128u);
  EXPECT_EQ(parse_disk("path=a,merge_kib=0")->merge_kib, 0u);
  for (const char* bad : {"path=a,merge_kib=16385", "path=a,merge_kib=1M", "path=a,merge_kib="}) {
    auto r = parse_disk(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.error().message().find("merge_kib"), std::string::npos) << r.error().message();
  }
  EXPECT_NE(parse_disk("path=a,batch_us=z").error().message().find("or auto"), std::string::npos);
  EXPECT_FALSE(parse_disk("path=a,poll_us=-1").ok());
  EXPECT_NE(parse_disk("path=a,poll_us=x").error().message().find("poll_us=x"), std::string::npos);
  EXPECT_FALSE(parse_disk("path=a,bogus=1").ok());
  EXPECT_FALSE(parse_disk("path=a,readonly=maybe").ok());
  EXPECT_FALSE(parse_disk("path=a,format=vmdk").ok());
  EXPECT_EQ(parse_disk("path=a,cache=none")->cache, CacheMode::kNone);
  EXPECT_FALSE(parse_disk("path=a,cache=directsync").ok());
  EXPECT_FALSE(parse_disk("path=a,serial=012345678901234567890").ok());
  EXPECT_FALSE(parse_disk("a.img").ok());
}

}  // namespace
}  // namespace ringvm
