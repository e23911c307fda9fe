// Hostile headers, injected corruption (compared with qemu-img check) and crash consistency.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "block/qcow2/qcow2_image.h"
#include "block/qcow2/qcow2_test_util.h"

namespace ringvm {
namespace {

using testing::be32;
using testing::be64;
using testing::patch_file;
using testing::pattern;
using testing::run_cmd;

#define SKIP_WITHOUT_QEMU_IMG() \
  if (!testing::have_qemu_img()) GTEST_SKIP() << "qemu-img not installed (apt-get install qemu-utils)"

uint64_t rd64(const std::vector<uint8_t>& f, uint64_t off) { return qcow2::load_be64(f.data() + off); }

// A 1 MiB qemu-made image with 4 KiB clusters and data in its first 256 KiB.
std::string make_image(const testing::TempDir& dir, const std::string& name) {
  const std::string img = dir.file(name);
  EXPECT_EQ(run_cmd(fmt::format("qemu-img create -q -f qcow2 -o cluster_size=4096 {} 1M", img)).status, 0);
  EXPECT_EQ(run_cmd(fmt::format("qemu-io -f qcow2 -c 'write -P 0x33 0 256k' {}", img)).status, 0);
  return img;
}

TEST(Qcow2Hostile, AbsurdHeaderFieldsGiveErrors) {
  SKIP_WITHOUT_QEMU_IMG();
  testing::TempDir dir;
  const std::string good = make_image(dir, "good.qcow2");
  const auto orig = testing::read_file(good);
  struct Mutation {
    const char* what;
    uint64_t offset;
    std::vector<uint8_t> bytes;
  } muts[] = {
      {"version 4", 4, be32(4)},
      {"cluster_bits 30", 20, be32(30)},
      {"cluster_bits 8", 20, be32(8)},
      {"size 2^63", 24, be64(1ull << 63)},
      {"size larger than L1 covers", 24, be64(1ull << 40)},
      {"encryption", 32, be32(1)},
      {"l1_size huge", 36, be32(0x7fffffff)},
      {"l1 offset past EOF", 40, be64(1ull << 40)},
      {"l1 offset unaligned", 40, be64(4096 * 3 + 8)},
      {"refcount table offset 0", 48, be64(0)},
      {"refcount table huge", 56, be32(0x7fffffff)},
      {"refcount table past EOF", 48, be64(1ull << 50)},
      {"snapshots huge", 60, be32(0xffffffff)},
      {"snapshot table past EOF", 60, be32(1)},
      {"unknown incompatible bit", 72, be64(1ull << 40)},
      {"extended L2", 72, be64(1ull << 4)},
      {"external data file", 72, be64(1ull << 2)},
      {"refcount_order 7", 96, be32(7)},
      {"header_length huge", 100, be32(0x10000000)},
      {"backing name too long", 8, be64(200)},
      {"L1 overlaps refcount table", 40, be64(0)},
  };
  for (const auto& m : muts) {
    SCOPED_TRACE(m.what);
    const std::string bad = dir.file("bad.qcow2");
    testing::write_file(bad, orig);
    patch_file(bad, m.offset, m.bytes);
    if (std::string(m.what) == "backing name too long") patch_file(bad, 16, be32(5000));
    if (std::string(m.what) == "snapshot table past EOF") patch_file(bad, 64, be64(1ull << 40));
    if (std::string(m.what) == "L1 overlaps refcount table") patch_file(bad, 40, be64(rd64(orig, 48)));
    auto r = Qcow2Image::open(bad, Qcow2OpenOptions{});
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message().find(bad), std::string::npos) << r.error().message();
  }
}

TEST(Qcow2Hostile, GarbageTablesNeverCrash) {
  SKIP_WITHOUT_QEMU_IMG();
  testing::TempDir dir;
  const std::string img = make_image(dir, "g.qcow2");
  auto f = testing::read_file(img);
  // Scribble random bytes over everything after the header cluster, then read and write.
  auto junk = pattern(f.size() - 4096, 99);
  std::copy(junk.begin(), junk.end(), f.begin() + 4096);
  testing::write_file(img, f);
  Qcow2OpenOptions o;
  o.read_only = false;
  auto r = Qcow2Image::open(img, o);
  if (!r.ok()) return;  // refusing is fine
  std::vector<uint8_t> buf(65536);
  iovec v{buf.data(), buf.size()};
  for (uint64_t off = 0; off < (*r)->size(); off += buf.size()) {
    (void)(*r)->readv(off, {&v, 1});
    (void)(*r)->writev(off, {&v, 1});
  }
  (void)(*r)->check(Qcow2Repair::kNone);
}

struct Fault {
  const char* what;
  int expect_status;  // qemu-img check's exit status for the damaged image
};

// Damages `img` as named; qemu-img and ringvm must agree on the verdict and the repair.
void inject(const std::string& img, const std::string& what) {
  auto f = testing::read_file(img);
  const uint64_t rt = rd64(f, 48), l1 = rd64(f, 40);
  const uint64_t rb = rd64(f, rt);  // first refcount block (16-bit entries)
  const uint64_t l2 = rd64(f, l1) & qcow2::kOffsetMask;
  const uint64_t data0 = rd64(f, l2) & qcow2::kOffsetMask;
  if (what == "leak") {
    const uint64_t c = f.size() / 4096;
    std::vector<uint8_t> extra(4096, 0);
    f.insert(f.end(), extra.begin(), extra.end());
    testing::write_file(img, f);
    patch_file(img, rb + c * 2, {0, 1});
  } else if (what == "refcount too low") {
    patch_file(img, rb + data0 / 4096 * 2, {0, 0});
  } else if (what == "L2 past EOF") {
    patch_file(img, l2 + 8, be64((1ull << 40) | qcow2::kOflagCopied));
  }
}

TEST(Qcow2Corruption, CheckAgreesWithQemuImgAndRepairs) {
  SKIP_WITHOUT_QEMU_IMG();
  testing::TempDir dir;
  const std::string ringvm = std::string(RINGVM_BINARY_DIR) + "/ringvm";
  const bool have_cli = access(ringvm.c_str(), X_OK) == 0;
  struct Case {
    const char* fault;
    const char* repair;
  } cases[] = {{"leak", "leaks"}, {"refcount too low", "all"}, {"L2 past EOF", "all"}};
  for (const auto& c : cases) {
    SCOPED_TRACE(c.fault);
    const std::string img = make_image(dir, "c.qcow2");
    inject(img, c.fault);
    const auto q = run_cmd("qemu-img check -f qcow2 " + img);
    Qcow2OpenOptions ro;
    ro.open_backing = false;
    auto opened = Qcow2Image::open(img, ro);
    ASSERT_TRUE(opened.ok()) << opened.error().message();
    auto res = (*opened)->check(Qcow2Repair::kNone);
    ASSERT_TRUE(res.ok());
    const int ours = res->check_errors ? 1 : res->corruptions ? 2 : res->leaks ? 3 : 0;
    EXPECT_EQ(ours, q.status) << q.out;
    EXPECT_NE(ours, 0);
    opened->reset();
    if (have_cli) {
      const auto cli = run_cmd(fmt::format("{} img check -f qcow2 {}", ringvm, img));
      EXPECT_EQ(cli.status, q.status) << cli.out;
      const auto fix = run_cmd(fmt::format("{} img check -f qcow2 -r {} {}", ringvm, c.repair, img));
      EXPECT_EQ(fix.status, 0) << fix.out;
    } else {
      Qcow2OpenOptions rw;
      rw.read_only = false;
      rw.open_backing = false;
      rw.allow_corrupt = true;
      auto w = Qcow2Image::open(img, rw);
      ASSERT_TRUE(w.ok());
      ASSERT_TRUE((*w)->check(c.repair == std::string("all") ? Qcow2Repair::kAll : Qcow2Repair::kLeaks).ok());
      ASSERT_TRUE((*w)->close().ok());
    }
    const auto after = run_cmd("qemu-img check -f qcow2 " + img);
    EXPECT_EQ(after.status, 0) << after.out;
  }
}

// A writer killed with SIGKILL at a random point leaves an image that opens, that qemu-img check
// finds at most leaks in, and whose flushed writes read back intact.
TEST(Qcow2Crash, KilledWriterLeavesConsistentImage) {
  SKIP_WITHOUT_QEMU_IMG();
  testing::TempDir dir;
  const uint64_t region = 20000;  // not cluster aligned: exercises partial-cluster COW
  std::mt19937 rng(1234);
  for (int round = 0; round < 4; ++round) {
    SCOPED_TRACE(round);
    const std::string img = dir.file(fmt::format("crash{}.qcow2", round));
    Qcow2CreateOptions o;
    o.size = 16u << 20;
    o.cluster_size = round % 2 ? 4096 : 65536;
    o.lazy_refcounts = round == 3;
    ASSERT_TRUE(Qcow2Image::create(img, o).ok());
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      close(fds[0]);
      Qcow2OpenOptions w;
      w.read_only = false;
      w.l2_cache_bytes = 8192;  // tiny cache: evictions mid-run
      auto d = Qcow2Image::open(img, w);
      if (!d.ok()) _exit(2);
      for (uint32_t i = 0; i < o.size / region; ++i) {
        auto data = pattern(region, i);
        iovec v{data.data(), data.size()};
        if (!(*d)->writev(uint64_t{i} * region, {&v, 1}).ok()) _exit(3);
        if (i % 3 == 2) {
          if (!(*d)->discard(uint64_t{i - 2} * region, region).ok()) _exit(4);
        }
        if (i % 4 == 3) {
          if (!(*d)->flush().ok()) _exit(5);
          if (write(fds[1], &i, sizeof i) != sizeof i) _exit(6);
        }
      }
      _exit(0);
    }
    close(fds[1]);
    std::this_thread::sleep_for(std::chrono::milliseconds(5 + rng() % 60));
    kill(pid, SIGKILL);
    int st = 0;
    waitpid(pid, &st, 0);
    int64_t flushed = -1;
    uint32_t v;
    while (read(fds[0], &v, sizeof v) == sizeof v) flushed = v;
    close(fds[0]);
    const auto q = run_cmd("qemu-img check -f qcow2 " + img);
    EXPECT_TRUE(q.status == 0 || q.status == 3) << q.out;  // clean or leaks only
    auto d = Qcow2Image::open(img, Qcow2OpenOptions{});
    ASSERT_TRUE(d.ok()) << d.error().message();
    std::vector<uint8_t> buf(region);
    for (int64_t i = 0; i <= flushed; ++i) {
      iovec iv{buf.data(), buf.size()};
      ASSERT_TRUE((*d)->readv(static_cast<uint64_t>(i) * region, {&iv, 1}).ok());
      if (i % 3 == 0) continue;  // discarded later (whole clusters only): contents mixed by design
      EXPECT_TRUE(buf == pattern(region, static_cast<uint32_t>(i)))
          << "region " << i << " of " << flushed;
    }
    // A dirty (lazy refcounts) image is repaired when opened for writing.
    Qcow2OpenOptions rw;
    rw.read_only = false;
    auto w = Qcow2Image::open(img, rw);
    ASSERT_TRUE(w.ok()) << w.error().message();
    ASSERT_TRUE((*w)->close().ok());
  }
}

}  // namespace
}  // namespace ringvm
