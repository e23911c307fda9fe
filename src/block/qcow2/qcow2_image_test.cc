#include "block/qcow2/qcow2_image.h"

#include <gtest/gtest.h>

#include <cstring>

#include "block/image_open.h"
#include "block/qcow2/qcow2_test_util.h"

namespace ringvm {
namespace {

using testing::pattern;
using testing::run_cmd;

#define SKIP_WITHOUT_QEMU_IMG() \
  if (!testing::have_qemu_img()) GTEST_SKIP() << "qemu-img not installed (apt-get install qemu-utils)"

std::unique_ptr<Qcow2Image> open_rw(const std::string& path) {
  Qcow2OpenOptions o;
  o.read_only = false;
  auto r = Qcow2Image::open(path, o);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message());
  return r.ok() ? std::move(*r) : nullptr;
}

std::unique_ptr<Qcow2Image> open_ro(const std::string& path) {
  auto r = Qcow2Image::open(path, Qcow2OpenOptions{});
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message());
  return r.ok() ? std::move(*r) : nullptr;
}

Result<void> write_at(Disk& d, uint64_t off, const std::vector<uint8_t>& data) {
  iovec v{const_cast<uint8_t*>(data.data()), data.size()};
  return d.writev(off, {&v, 1});
}

std::vector<uint8_t> read_all(Disk& d) {
  std::vector<uint8_t> out(d.size());
  // Two iovecs split at an odd place exercise the scatter path.
  const size_t half = out.size() / 2 + 7;
  iovec v[2] = {{out.data(), half}, {out.data() + half, out.size() - half}};
  auto r = d.readv(0, v);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message());
  return out;
}

// Writes a mix of partial, spanning and whole-cluster writes to both a qcow2 image and a model.
void scribble(Disk& d, std::vector<uint8_t>& model, uint32_t seed, int count) {
  std::mt19937_64 rng(seed);
  for (int i = 0; i < count; ++i) {
    const uint64_t len = 1 + rng() % 20000;
    const uint64_t off = rng() % (model.size() - len);
    auto data = pattern(len, seed * 1000 + static_cast<uint32_t>(i));
    ASSERT_TRUE(write_at(d, off, data).ok());
    std::copy(data.begin(), data.end(), model.begin() + static_cast<std::ptrdiff_t>(off));
  }
}

bool qemu_check_clean(const std::string& path) {
  auto r = run_cmd("qemu-img check -f qcow2 " + path);
  if (r.status != 0) ADD_FAILURE() << r.out;
  return r.status == 0;
}

class Qcow2Test : public ::testing::Test {
 protected:
  testing::TempDir dir_;
};

TEST_F(Qcow2Test, CreatedImagesPassQemuCheckAndHoldWrites) {
  SKIP_WITHOUT_QEMU_IMG();
  struct Case {
    uint32_t cluster, refbits, version;
  } cases[] = {{512, 16, 3}, {4096, 1, 3}, {65536, 16, 3}, {65536, 64, 3}, {2u << 20, 16, 3}, {65536, 16, 2}};
  for (const auto& c : cases) {
    SCOPED_TRACE(fmt::format("cluster {} refbits {} v{}", c.cluster, c.refbits, c.version));
    const std::string img = dir_.file(fmt::format("c{}-{}-{}.qcow2", c.cluster, c.refbits, c.version));
    Qcow2CreateOptions o;
    o.size = (3u << 20) + 4096 + 1024;  // not a multiple of the cluster size
    o.cluster_size = c.cluster;
    o.refcount_bits = c.refbits;
    o.version = c.version;
    ASSERT_TRUE(Qcow2Image::create(img, o).ok());
    std::vector<uint8_t> model(o.size, 0);
    {
      auto d = open_rw(img);
      ASSERT_TRUE(d);
      scribble(*d, model, c.cluster + c.refbits, 40);
      const uint64_t zoff = std::min<uint64_t>(c.cluster * 2, 1u << 20), zlen = std::min<uint64_t>(c.cluster * 2, 1u << 20);
      ASSERT_TRUE(d->write_zeroes(zoff, zlen, true).ok());
      std::fill_n(model.begin() + static_cast<std::ptrdiff_t>(zoff), zlen, 0);
      ASSERT_TRUE(d->close().ok());
    }
    EXPECT_TRUE(qemu_check_clean(img));
    testing::write_file(dir_.file("model.raw"), model);
    auto cmp = run_cmd(fmt::format("qemu-img compare -f qcow2 -F raw {} {}", img, dir_.file("model.raw")));
    EXPECT_EQ(cmp.status, 0) << cmp.out;
    auto d = open_ro(img);
    ASSERT_TRUE(d);
    EXPECT_TRUE(read_all(*d) == model);
  }
}

TEST_F(Qcow2Test, ReadsQemuImagesByteIdentical) {
  SKIP_WITHOUT_QEMU_IMG();
  // 4 MiB: random data in some 64 KiB extents, zeros elsewhere.
  std::vector<uint8_t> raw(4u << 20, 0);
  auto rnd = pattern(raw.size(), 7);
  for (size_t e = 0; e < raw.size() / 65536; ++e)
    if (e % 3 != 1) std::copy_n(rnd.begin() + static_cast<std::ptrdiff_t>(e * 65536), 65536, raw.begin() + static_cast<std::ptrdiff_t>(e * 65536));
  // Compressible text in one extent, so compressed clusters really occur.
  for (size_t i = 0; i < 65536; ++i) raw[65536 + i] = static_cast<uint8_t>("ringvm qcow2 "[i % 13]);
  const std::string src = dir_.file("src.raw");
  testing::write_file(src, raw);
  const char* opts[] = {"-o cluster_size=512",
                        "-o cluster_size=4096,refcount_bits=1",
                        "-o cluster_size=65536,refcount_bits=64",
                        "-o cluster_size=2M",
                        "-c -o compression_type=zlib",
                        "-c -o compression_type=zstd,cluster_size=4096",
                        "-o preallocation=metadata",
                        "-o preallocation=full,lazy_refcounts=on",
                        "-o compat=0.10"};
  int i = 0;
  for (const char* o : opts) {
    SCOPED_TRACE(o);
    const std::string img = dir_.file(fmt::format("q{}.qcow2", i++));
    auto r = run_cmd(fmt::format("qemu-img convert -f raw -O qcow2 {} {} {}", o, src, img));
    ASSERT_EQ(r.status, 0) << r.out;
    auto d = open_ro(img);
    ASSERT_TRUE(d);
    EXPECT_TRUE(read_all(*d) == raw);
    auto chk = d->check(Qcow2Repair::kNone);
    ASSERT_TRUE(chk.ok());
    EXPECT_EQ(chk->corruptions, 0u);
    EXPECT_EQ(chk->leaks, 0u) << (chk->messages.empty() ? "" : chk->messages[0]);
  }
}

TEST_F(Qcow2Test, BackingChainReadsAndCopyOnWrite) {
  SKIP_WITHOUT_QEMU_IMG();
  const std::string base = dir_.file("base.raw"), mid = dir_.file("mid.qcow2"), top = dir_.file("top.qcow2");
  std::vector<uint8_t> model = pattern(2u << 20, 3);
  testing::write_file(base, model);
  ASSERT_EQ(run_cmd(fmt::format("qemu-img create -f qcow2 -b base.raw -F raw {} 3M", mid)).status, 0);
  ASSERT_EQ(run_cmd(fmt::format("qemu-io -f qcow2 -c 'write -P 0x5a 100000 70000' {}", mid)).status, 0);
  std::fill_n(model.begin() + 100000, 70000, 0x5a);
  model.resize(3u << 20, 0);
  ASSERT_EQ(run_cmd(fmt::format("qemu-img create -f qcow2 -b mid.qcow2 -F qcow2 {} 3M", top)).status, 0);
  {
    auto d = open_rw(top);
    ASSERT_TRUE(d);
    EXPECT_TRUE(read_all(*d) == model);
    scribble(*d, model, 11, 20);
    ASSERT_TRUE(d->write_zeroes(0, 65536, true).ok());  // must hide the backing data
    std::fill_n(model.begin(), 65536, 0);
    ASSERT_TRUE(d->close().ok());
  }
  EXPECT_TRUE(qemu_check_clean(top));
  testing::write_file(dir_.file("model.raw"), model);
  auto cmp = run_cmd(fmt::format("qemu-img compare -f qcow2 -F raw {} {}", top, dir_.file("model.raw")));
  EXPECT_EQ(cmp.status, 0) << cmp.out;
}

TEST_F(Qcow2Test, BackingWithoutFormatIsRefusedWithAFix) {
  SKIP_WITHOUT_QEMU_IMG();
  testing::write_file(dir_.file("b.raw"), std::vector<uint8_t>(65536, 1));
  Qcow2CreateOptions o;
  o.size = 65536;
  o.backing_file = "b.raw";
  o.backing_format = "raw";
  const std::string img = dir_.file("t.qcow2");
  ASSERT_TRUE(Qcow2Image::create(img, o).ok());
  // Drop the format with qemu-img's unsafe rebase (which may record none).
  {
    auto d = open_rw(img);
    ASSERT_TRUE(d->set_backing("b.raw", "").ok());
  }
  auto r = Qcow2Image::open(img, Qcow2OpenOptions{});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("-F raw|qcow2"), std::string::npos) << r.error().message();
  Qcow2OpenOptions oo;
  oo.backing_format_override = "raw";
  auto ok = Qcow2Image::open(img, oo);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(read_all(**ok), std::vector<uint8_t>(65536, 1));
}

TEST_F(Qcow2Test, BackingLoopIsRefused) {
  Qcow2CreateOptions o;
  o.size = 65536;
  o.backing_file = "a.qcow2";
  o.backing_format = "qcow2";
  ASSERT_TRUE(Qcow2Image::create(dir_.file("a.qcow2"), o).ok());
  auto r = Qcow2Image::open(dir_.file("a.qcow2"), Qcow2OpenOptions{});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("deeper than 16"), std::string::npos) << r.error().message();
}

TEST_F(Qcow2Test, ManySmallClustersGrowTheRefcountTable) {
  SKIP_WITHOUT_QEMU_IMG();
  const std::string img = dir_.file("grow.qcow2");
  Qcow2CreateOptions o;
  o.size = 8u << 20;
  o.cluster_size = 512;
  o.refcount_bits = 64;  // 64 clusters per refcount block: many blocks, table growth
  ASSERT_TRUE(Qcow2Image::create(img, o).ok());
  std::vector<uint8_t> model(o.size, 0);
  {
    auto d = open_rw(img);
    auto data = pattern(o.size / 2, 9);
    ASSERT_TRUE(write_at(*d, 0, data).ok());
    std::copy(data.begin(), data.end(), model.begin());
    ASSERT_TRUE(d->close().ok());
  }
  EXPECT_TRUE(qemu_check_clean(img));
  auto d = open_ro(img);
  EXPECT_TRUE(read_all(*d) == model);
}

TEST_F(Qcow2Test, DiscardFreesClustersAndCompressedWritesInterop) {
  SKIP_WITHOUT_QEMU_IMG();
  for (auto ct : {qcow2::CompressionType::kZlib, qcow2::CompressionType::kZstd}) {
    const std::string img = dir_.file(fmt::format("z{}.qcow2", static_cast<int>(ct)));
    Qcow2CreateOptions o;
    o.size = 1u << 20;
    o.cluster_size = 4096;
    o.compression = ct;
    ASSERT_TRUE(Qcow2Image::create(img, o).ok());
    std::vector<uint8_t> model(o.size, 0);
    {
      auto d = open_rw(img);
      for (uint64_t c = 0; c < 100; ++c) {
        std::vector<uint8_t> cl(4096);
        for (size_t i = 0; i < cl.size(); ++i) cl[i] = static_cast<uint8_t>((i / (c + 1)) & 0xff);
        if (c % 10 == 3) cl = pattern(4096, static_cast<uint32_t>(c));  // incompressible: stored plain
        ASSERT_TRUE(d->write_compressed(c * 4096, cl).ok());
        std::copy(cl.begin(), cl.end(), model.begin() + static_cast<std::ptrdiff_t>(c * 4096));
      }
      // Overwrite part of a compressed cluster, discard a few.
      auto p = pattern(100, 1);
      ASSERT_TRUE(write_at(*d, 4096 * 5 + 10, p).ok());
      std::copy(p.begin(), p.end(), model.begin() + 4096 * 5 + 10);
      ASSERT_TRUE(d->discard(4096 * 20, 4096 * 10).ok());
      std::fill_n(model.begin() + 4096 * 20, 4096 * 10, 0);
      ASSERT_TRUE(d->close().ok());
    }
    EXPECT_TRUE(qemu_check_clean(img));
    testing::write_file(dir_.file("model.raw"), model);
    auto cmp = run_cmd(fmt::format("qemu-img compare -f qcow2 -F raw {} {}", img, dir_.file("model.raw")));
    EXPECT_EQ(cmp.status, 0) << cmp.out;
  }
}

TEST_F(Qcow2Test, ResizeGrowsAndShrinks) {
  SKIP_WITHOUT_QEMU_IMG();
  const std::string img = dir_.file("r.qcow2");
  Qcow2CreateOptions o;
  o.size = 1u << 20;
  o.cluster_size = 512;  // L1 must move when growing
  ASSERT_TRUE(Qcow2Image::create(img, o).ok());
  {
    auto d = open_rw(img);
    ASSERT_TRUE(write_at(*d, 0, pattern(1u << 20, 4)).ok());
    ASSERT_TRUE(d->resize(64u << 20).ok());
    ASSERT_TRUE(write_at(*d, 60u << 20, pattern(4096, 5)).ok());
    ASSERT_TRUE(d->resize(512u << 10).ok());
    ASSERT_TRUE(d->close().ok());
  }
  EXPECT_TRUE(qemu_check_clean(img));
  auto d = open_ro(img);
  ASSERT_EQ(d->size(), 512u << 10);
  auto want = pattern(1u << 20, 4);
  want.resize(512u << 10);
  EXPECT_TRUE(read_all(*d) == want);
}

TEST_F(Qcow2Test, PreallocationAndLazyRefcounts) {
  SKIP_WITHOUT_QEMU_IMG();
  for (auto p : {Qcow2Preallocation::kMetadata, Qcow2Preallocation::kFull}) {
    const std::string img = dir_.file(fmt::format("p{}.qcow2", static_cast<int>(p)));
    Qcow2CreateOptions o;
    o.size = 2u << 20;
    o.preallocation = p;
    o.lazy_refcounts = true;
    ASSERT_TRUE(Qcow2Image::create(img, o).ok());
    EXPECT_TRUE(qemu_check_clean(img));
    auto d = open_rw(img);
    EXPECT_EQ(read_all(*d), std::vector<uint8_t>(o.size, 0));
    ASSERT_TRUE(write_at(*d, 12345, pattern(99999, 2)).ok());
    // The dirty bit is on disk while the image is open for writing.
    auto hdr = testing::read_file(img);
    EXPECT_EQ(hdr[79] & 1, 1);
    ASSERT_TRUE(d->close().ok());
    hdr = testing::read_file(img);
    EXPECT_EQ(hdr[79] & 1, 0);
    EXPECT_TRUE(qemu_check_clean(img));
  }
}

TEST_F(Qcow2Test, ConcurrentWritersKeepImageConsistent) {
  SKIP_WITHOUT_QEMU_IMG();
  const std::string img = dir_.file("mt.qcow2");
  Qcow2CreateOptions o;
  o.size = 8u << 20;
  o.cluster_size = 4096;
  ASSERT_TRUE(Qcow2Image::create(img, o).ok());
  std::vector<uint8_t> model(o.size, 0);
  {
    auto d = open_rw(img);
    std::vector<std::thread> ts;
    for (uint32_t t = 0; t < 4; ++t) {
      ts.emplace_back([&, t] {
        // Each thread owns every fourth MiB.
        for (uint64_t m = t; m < 8; m += 4) {
          auto data = pattern(1u << 20, t * 10 + static_cast<uint32_t>(m));
          for (uint64_t off = 0; off < data.size(); off += 12288) {
            const uint64_t n = std::min<uint64_t>(12288, data.size() - off);
            iovec v{data.data() + off, n};
            EXPECT_TRUE(d->writev((m << 20) + off, {&v, 1}).ok());
          }
          std::copy(data.begin(), data.end(), model.begin() + static_cast<std::ptrdiff_t>(m << 20));
        }
      });
    }
    for (auto& t : ts) t.join();
    ASSERT_TRUE(d->close().ok());
  }
  EXPECT_TRUE(qemu_check_clean(img));
  auto d = open_ro(img);
  EXPECT_TRUE(read_all(*d) == model);
}

TEST_F(Qcow2Test, WritesCopyClustersSharedWithASnapshot) {
  SKIP_WITHOUT_QEMU_IMG();
  const std::string img = dir_.file("s.qcow2");
  ASSERT_EQ(run_cmd(fmt::format("qemu-img create -q -f qcow2 -o cluster_size=4096 {} 1M", img)).status, 0);
  ASSERT_EQ(run_cmd(fmt::format("qemu-io -f qcow2 -c 'write -P 0x11 0 512k' {}", img)).status, 0);
  ASSERT_EQ(run_cmd(fmt::format("qemu-img snapshot -c before {}", img)).status, 0);
  std::vector<uint8_t> model(1u << 20, 0);
  std::fill_n(model.begin(), 512 * 1024, 0x11);
  const std::vector<uint8_t> snap = model;
  {
    auto d = open_rw(img);
    ASSERT_TRUE(d);
    ASSERT_EQ(d->snapshots().size(), 1u);
    EXPECT_EQ(d->snapshots()[0].name, "before");
    scribble(*d, model, 77, 30);
    ASSERT_TRUE(d->discard(0, 65536).ok());
    std::fill_n(model.begin(), 65536, 0);
    ASSERT_TRUE(d->close().ok());
  }
  EXPECT_TRUE(qemu_check_clean(img));
  testing::write_file(dir_.file("model.raw"), model);
  testing::write_file(dir_.file("snap.raw"), snap);
  EXPECT_EQ(run_cmd(fmt::format("qemu-img compare -f qcow2 -F raw {} {}", img, dir_.file("model.raw"))).status, 0);
  // The snapshot still reads what it held.
  ASSERT_EQ(run_cmd(fmt::format("qemu-img convert -l snapshot.name=before -O raw {} {}", img, dir_.file("s.raw"))).status, 0);
  EXPECT_TRUE(testing::read_file(dir_.file("s.raw")) == snap);
}

TEST(ImageOpenTest, FormatIsExplicit) {
  testing::TempDir dir;
  testing::write_file(dir.file("x.raw"), std::vector<uint8_t>(4096, 0));
  auto bad = open_disk(dir.file("x.raw"), "vmdk", true);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message().find("raw or qcow2"), std::string::npos);
  auto raw = open_disk(dir.file("x.raw"), "raw", true);
  ASSERT_TRUE(raw.ok());
  EXPECT_EQ((*raw)->size(), 4096u);
  // A raw file is never taken for qcow2.
  EXPECT_FALSE(open_disk(dir.file("x.raw"), "qcow2", true).ok());
}

}  // namespace
}  // namespace ringvm
