#include "vmm/snapshot_file.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

namespace ringvm {
namespace {

SnapshotState sample() {
  SnapshotState s;
  s.kind = SnapshotKind::kDiff;
  s.ringvm_version = "0.1.0";
  s.created_unix_ns = 1'700'000'000'000'000'000;
  s.config_json = R"({"machine-config":{"vcpu_count":2,"mem_size_mib":256}})";
  s.console_device = 1;
  s.virtio_pio_notify = false;
  s.memory_bytes = 256ULL << 20;
  s.disks.push_back({"rootfs", "/images/root.qcow2", true, 123456, 42, 0xABCD});
  s.vm = {1, 2, 3};
  s.vcpus = {{4, 5}, {6}};
  s.devices.push_back({"com1", {7, 8, 9}});
  s.devices.push_back({"blk0", {}});
  return s;
}

void expect_equal(const SnapshotState& a, const SnapshotState& b) {
  EXPECT_EQ(a.kind, b.kind);
  EXPECT_EQ(a.ringvm_version, b.ringvm_version);
  EXPECT_EQ(a.created_unix_ns, b.created_unix_ns);
  EXPECT_EQ(a.config_json, b.config_json);
  EXPECT_EQ(a.console_device, b.console_device);
  EXPECT_EQ(a.virtio_pio_notify, b.virtio_pio_notify);
  EXPECT_EQ(a.memory_bytes, b.memory_bytes);
  EXPECT_EQ(a.disks, b.disks);
  EXPECT_EQ(a.vm, b.vm);
  EXPECT_EQ(a.vcpus, b.vcpus);
  ASSERT_EQ(a.devices.size(), b.devices.size());
  for (size_t i = 0; i < a.devices.size(); ++i) {
    EXPECT_EQ(a.devices[i].name, b.devices[i].name);
    EXPECT_EQ(a.devices[i].data, b.devices[i].data);
  }
}

TEST(SnapshotFileTest, RoundTrip) {
  auto bytes = encode_snapshot(sample());
  auto back = decode_snapshot(bytes, "t");
  ASSERT_TRUE(back) << back.error().message();
  expect_equal(*back, sample());
}

TEST(SnapshotFileTest, ForeignFileRefused) {
  std::vector<uint8_t> elf = {0x7F, 'E', 'L', 'F', 2, 1, 1, 0};
  elf.resize(64);
  auto r = decode_snapshot(elf, "snapshot file x");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kCorrupt);
  EXPECT_NE(r.error().message().find("not a ringvm snapshot"), std::string::npos);
}

TEST(SnapshotFileTest, NewerVersionRefusedByName) {
  auto bytes = encode_snapshot(sample());
  bytes[8] = 2;
  auto r = decode_snapshot(bytes, "t");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, ErrorCode::kUnsupported);
  EXPECT_NE(r.error().message().find("version 2"), std::string::npos);
  EXPECT_NE(r.error().message().find("newer ringvm"), std::string::npos);
}

TEST(SnapshotFileTest, EveryTruncationRefused) {
  auto bytes = encode_snapshot(sample());
  for (size_t n = 0; n < bytes.size(); ++n) {
    auto r = decode_snapshot(std::span(bytes).first(n), "t");
    EXPECT_FALSE(r) << "accepted a file cut at " << n << " bytes";
  }
}

TEST(SnapshotFileTest, EveryFlippedPayloadByteFailsTheChecksum) {
  auto bytes = encode_snapshot(sample());
  for (size_t i = kSnapshotHeaderBytes; i < bytes.size(); ++i) {
    auto copy = bytes;
    copy[i] ^= 0x40;
    auto r = decode_snapshot(copy, "t");
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message().find("checksum"), std::string::npos);
  }
}

// A file whose checksum is right but whose payload lies: counts and lengths are still checked.
TEST(SnapshotFileTest, HostileCountsRefusedEvenWithAGoodChecksum) {
  SnapshotState s = sample();
  s.vcpus.clear();  // zero vCPUs
  auto r = decode_snapshot(encode_snapshot(s), "t");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("vCPU count"), std::string::npos);
  s = sample();
  s.devices.push_back({"com1", {}});  // a name twice
  r = decode_snapshot(encode_snapshot(s), "t");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("twice"), std::string::npos);
  s = sample();
  s.memory_bytes = 4097;
  EXPECT_FALSE(decode_snapshot(encode_snapshot(s), "t"));
}

TEST(SnapshotFileTest, WriteThenReadFile) {
  char dir[] = "/tmp/ringvm-snapfile-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  const std::string path = std::string(dir) + "/vm.snap";
  ASSERT_TRUE(write_snapshot_file(path, sample()));
  EXPECT_NE(::access((path + ".tmp").c_str(), F_OK), 0);
  auto back = read_snapshot_file(path);
  ASSERT_TRUE(back) << back.error().message();
  expect_equal(*back, sample());
  auto missing = read_snapshot_file(std::string(dir) + "/nope");
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message().find("nope"), std::string::npos);
  ::unlink(path.c_str());
  ::rmdir(dir);
}

TEST(SnapshotFileTest, ChangedDiskRefused) {
  char path[] = "/tmp/ringvm-disk-XXXXXX";
  int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, 1 << 20), 0);
  auto before = disk_identity("rootfs", path, false);
  ASSERT_TRUE(before);
  auto same = disk_identity("rootfs", path, false);
  EXPECT_TRUE(check_disk_identity(*before, *same));
  ASSERT_EQ(::ftruncate(fd, 2 << 20), 0);
  auto after = disk_identity("rootfs", path, false);
  auto r = check_disk_identity(*before, *after);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("rootfs"), std::string::npos);
  EXPECT_NE(r.error().message().find("changed"), std::string::npos);
  ::close(fd);
  ::unlink(path);
}

}  // namespace
}  // namespace ringvm
