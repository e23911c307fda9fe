// `ringvm img` end to end, against qemu-img: images ringvm makes pass qemu-img check and compare
// equal to their source; info agrees with qemu-img info on shared fields; map agrees too.
#include <unistd.h>

#include <gtest/gtest.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "block/qcow2/qcow2_test_util.h"

namespace ringvm {
namespace {

using testing::run_cmd;

class ImgCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing::have_qemu_img()) GTEST_SKIP() << "qemu-img not installed (apt-get install qemu-utils)";
    if (access(bin_.c_str(), X_OK) != 0) GTEST_SKIP() << "ringvm binary not built at " << bin_ << " (ninja ringvm)";
  }
  testing::CmdResult img(const std::string& args) { return run_cmd(bin_ + " img " + args); }
  std::string f(const std::string& name) const { return dir_.file(name); }

  // 8 MiB raw: random data in half of the 64 KiB extents, text in some, holes elsewhere.
  std::string make_source() {
    std::vector<uint8_t> raw(8u << 20, 0);
    auto rnd = testing::pattern(raw.size(), 5);
    for (size_t e = 0; e < raw.size() / 65536; ++e) {
      auto* p = raw.data() + e * 65536;
      if (e % 2 == 0) std::copy_n(rnd.begin() + static_cast<std::ptrdiff_t>(e * 65536), 65536, p);
      if (e % 7 == 3)
        for (size_t i = 0; i < 65536; ++i) p[i] = static_cast<uint8_t>('a' + i % 17);
    }
    testing::write_file(f("src.raw"), raw);
    run_cmd(fmt::format("fallocate -d {}", f("src.raw")));  // make the zero extents holes
    return f("src.raw");
  }

  std::string bin_ = std::string(RINGVM_BINARY_DIR) + "/ringvm";
  testing::TempDir dir_;
};

TEST_F(ImgCliTest, ConvertOutputPassesQemuCheckAndCompare) {
  const std::string src = make_source();
  const char* variants[] = {"-O qcow2", "-O qcow2 -c", "-O qcow2 -c -o compression_type=zstd,cluster_size=4k",
                            "-O qcow2 -o cluster_size=512,refcount_bits=1", "-O qcow2 -o cluster_size=2M,compat=0.10"};
  int i = 0;
  for (const char* v : variants) {
    SCOPED_TRACE(v);
    const std::string out = f(fmt::format("out{}.qcow2", i++));
    auto r = img(fmt::format("convert -f raw {} {} {}", v, src, out));
    ASSERT_EQ(r.status, 0) << r.out;
    auto chk = run_cmd("qemu-img check -f qcow2 " + out);
    EXPECT_EQ(chk.status, 0) << chk.out;
    auto cmp = run_cmd(fmt::format("qemu-img compare -f raw -F qcow2 {} {}", src, out));
    EXPECT_EQ(cmp.status, 0) << cmp.out;
    // And back to raw through ringvm.
    auto back = img(fmt::format("convert -f qcow2 -O raw {} {}", out, f("back.raw")));
    ASSERT_EQ(back.status, 0) << back.out;
    EXPECT_TRUE(testing::read_file(f("back.raw")) == testing::read_file(src));
  }
  // Compression really compresses, and the output is sparse.
  auto info = nlohmann::json::parse(run_cmd("qemu-img info --output json " + f("out1.qcow2")).out);
  EXPECT_LT(info["actual-size"].get<uint64_t>(), 5u << 20);
}

TEST_F(ImgCliTest, ConvertsQemuMadeImagesByteIdentical) {
  const std::string src = make_source();
  const char* variants[] = {"-o cluster_size=512", "-o cluster_size=4k,refcount_bits=64", "-c -o compression_type=zstd",
                            "-c", "-o preallocation=metadata,lazy_refcounts=on"};
  int i = 0;
  for (const char* v : variants) {
    SCOPED_TRACE(v);
    const std::string q = f(fmt::format("q{}.qcow2", i++));
    ASSERT_EQ(run_cmd(fmt::format("qemu-img convert -f raw -O qcow2 {} {} {}", v, src, q)).status, 0);
    auto r = img(fmt::format("convert -f qcow2 -O raw {} {}", q, f("out.raw")));
    ASSERT_EQ(r.status, 0) << r.out;
    EXPECT_TRUE(testing::read_file(f("out.raw")) == testing::read_file(src));
  }
}

TEST_F(ImgCliTest, CreateAndInfoAgreeWithQemuImg) {
  ASSERT_EQ(img("create -q -f raw " + f("base.raw") + " 64M").status, 0);
  struct Case {
    std::string args;
  } cases[] = {{"-o cluster_size=4k,lazy_refcounts=on,refcount_bits=64 " + f("a.qcow2") + " 1G"},
               {"-o compression_type=zstd " + f("b.qcow2") + " 10G"},
               {"-o compat=0.10 " + f("c.qcow2") + " 3M"},
               {"-b base.raw -F raw " + f("d.qcow2")},
               {"-o preallocation=metadata " + f("e.qcow2") + " 8M"}};
  for (const auto& c : cases) {
    SCOPED_TRACE(c.args);
    auto r = img("create -f qcow2 " + c.args);
    ASSERT_EQ(r.status, 0) << r.out;
    const std::string file = c.args.substr(c.args.find(dir_.path()), c.args.find(".qcow2") + 6 - c.args.find(dir_.path()));
    auto chk = run_cmd("qemu-img check -f qcow2 " + file);
    EXPECT_EQ(chk.status, 0) << chk.out;
    auto ours = nlohmann::json::parse(img("info --output json -f qcow2 " + file).out);
    auto theirs = nlohmann::json::parse(run_cmd("qemu-img info --output json -f qcow2 " + file).out);
    for (const char* k : {"virtual-size", "filename", "cluster-size", "format", "dirty-flag", "backing-filename",
                          "full-backing-filename", "backing-filename-format"})
      EXPECT_EQ(ours.value(k, nlohmann::json()), theirs.value(k, nlohmann::json())) << k;
    auto od = ours["format-specific"]["data"], td = theirs["format-specific"]["data"];
    for (const char* k : {"compat", "compression-type", "lazy-refcounts", "refcount-bits", "corrupt", "extended-l2"})
      EXPECT_EQ(od.value(k, nlohmann::json()), td.value(k, nlohmann::json())) << k;
  }
  // Errors name the file and the fix.
  auto bad = img("create -f qcow2 -b base.raw " + f("x.qcow2"));
  EXPECT_EQ(bad.status, 1);
  EXPECT_NE(bad.out.find("-F raw"), std::string::npos) << bad.out;
  auto noformat = img("info " + f("mystery"));
  EXPECT_EQ(noformat.status, 1);
  EXPECT_NE(noformat.out.find("-f raw or -f qcow2"), std::string::npos) << noformat.out;
}

TEST_F(ImgCliTest, MapMatchesQemuImgMap) {
  const std::string q = f("m.qcow2");
  ASSERT_EQ(run_cmd(fmt::format("qemu-img create -q -f qcow2 {} 4M", q)).status, 0);
  ASSERT_EQ(run_cmd(fmt::format("qemu-io -f qcow2 -c 'write -P 1 0 128k' -c 'write -z 1M 64k' -c 'write -P 2 2M 64k' {}", q))
                .status,
            0);
  auto ours = nlohmann::json::parse(img("map --output json -f qcow2 " + q).out);
  auto theirs = nlohmann::json::parse(run_cmd("qemu-img map --output json -f qcow2 " + q).out);
  ASSERT_EQ(ours.size(), theirs.size()) << ours.dump() << "\n" << theirs.dump();
  for (size_t i = 0; i < ours.size(); ++i)
    for (const char* k : {"start", "length", "depth", "present", "zero", "data", "offset"})
      EXPECT_EQ(ours[i].value(k, nlohmann::json()), theirs[i].value(k, nlohmann::json())) << i << " " << k;
}

TEST_F(ImgCliTest, ResizeCommitRebaseSnapshot) {
  // base.raw <- top.qcow2; write into top; commit; top is empty and base holds the data.
  std::vector<uint8_t> base(2u << 20, 7);
  testing::write_file(f("base.raw"), base);
  ASSERT_EQ(img("create -q -f qcow2 -b base.raw -F raw " + f("top.qcow2")).status, 0);
  ASSERT_EQ(run_cmd(fmt::format("qemu-io -f qcow2 -c 'write -P 9 100k 300k' {}", f("top.qcow2"))).status, 0);
  std::fill_n(base.begin() + 100 * 1024, 300 * 1024, 9);
  auto c = img("commit -f qcow2 " + f("top.qcow2"));
  ASSERT_EQ(c.status, 0) << c.out;
  EXPECT_TRUE(testing::read_file(f("base.raw")) == base);
  EXPECT_EQ(run_cmd("qemu-img check -f qcow2 " + f("top.qcow2")).status, 0);
  EXPECT_EQ(run_cmd(fmt::format("qemu-img compare -f qcow2 -F raw {} {}", f("top.qcow2"), f("base.raw"))).status, 0);

  // Safe rebase onto a different base keeps what the image reads.
  std::vector<uint8_t> other(2u << 20, 1);
  testing::write_file(f("other.raw"), other);
  auto r = img("rebase -f qcow2 -b other.raw -F raw " + f("top.qcow2"));
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(run_cmd(fmt::format("qemu-img compare -f qcow2 -F raw {} {}", f("top.qcow2"), f("base.raw"))).status, 0);
  auto info = nlohmann::json::parse(run_cmd("qemu-img info --output json " + f("top.qcow2")).out);
  EXPECT_EQ(info["backing-filename"], "other.raw");
  EXPECT_EQ(info["backing-filename-format"], "raw");
  EXPECT_EQ(run_cmd("qemu-img check -f qcow2 " + f("top.qcow2")).status, 0);

  // Resize: grow, relative grow, refuse shrink without --shrink.
  ASSERT_EQ(img("resize -f qcow2 " + f("top.qcow2") + " 4M").status, 0);
  ASSERT_EQ(img("resize -f qcow2 " + f("top.qcow2") + " +1M").status, 0);
  auto sz = nlohmann::json::parse(run_cmd("qemu-img info --output json " + f("top.qcow2")).out);
  EXPECT_EQ(sz["virtual-size"], 5u << 20);
  EXPECT_EQ(img("resize -f qcow2 " + f("top.qcow2") + " 1M").status, 1);
  EXPECT_EQ(img("resize -f qcow2 --shrink " + f("top.qcow2") + " 1M").status, 0);
  EXPECT_EQ(run_cmd("qemu-img check -f qcow2 " + f("top.qcow2")).status, 0);

  // Snapshots made by qemu-img are listed.
  ASSERT_EQ(run_cmd("qemu-img snapshot -c snap-one " + f("top.qcow2")).status, 0);
  auto l = img("snapshot -l " + f("top.qcow2"));
  EXPECT_EQ(l.status, 0);
  EXPECT_NE(l.out.find("snap-one"), std::string::npos) << l.out;
  auto ij = nlohmann::json::parse(img("info --output json " + f("top.qcow2")).out);
  EXPECT_EQ(ij["snapshots"][0]["name"], "snap-one");
  // Our check agrees with qemu-img's on an image with a snapshot (shared clusters).
  EXPECT_EQ(img("check " + f("top.qcow2")).status, 0);
}

}  // namespace
}  // namespace ringvm
