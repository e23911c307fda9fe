// 4 KiB random reads through Qcow2Image with a warm L2 cache, next to the same reads from the
// equivalent raw file through RawDisk: the difference is the cost of the qcow2 mapping layer.
//   build/bench/img/qcow2_read_bench [--benchmark_filter=...]
#include <benchmark/benchmark.h>
#include <stdlib.h>
#include <unistd.h>

#include <random>
#include <string>
#include <vector>

#include "block/qcow2/qcow2_image.h"
#include "block/raw_disk.h"

namespace {

constexpr uint64_t kSize = 256ull << 20;

struct Images {
  Images() {
    char tmpl[] = "/tmp/ringvm-qcow2-bench-XXXXXX";
    dir = mkdtemp(tmpl);
    qcow2 = dir + "/b.qcow2";
    raw = dir + "/b.raw";
    ringvm::Qcow2CreateOptions o;
    o.size = kSize;
    (void)ringvm::Qcow2Image::create(qcow2, o);
    ringvm::Qcow2OpenOptions w;
    w.read_only = false;
    auto img = std::move(*ringvm::Qcow2Image::open(qcow2, w));
    std::vector<uint8_t> buf(2u << 20);
    std::mt19937 rng(1);
    for (auto& b : buf) b = static_cast<uint8_t>(rng());
    for (uint64_t off = 0; off < kSize; off += buf.size()) {
      iovec v{buf.data(), buf.size()};
      (void)img->writev(off, {&v, 1});
    }
    (void)img->close();
  }
  ~Images() {
    unlink(qcow2.c_str());
    unlink(raw.c_str());
    rmdir(dir.c_str());
  }
  std::string dir, qcow2, raw;
};

Images& images() {
  static Images im;
  return im;
}

void read_loop(benchmark::State& state, ringvm::Disk& d) {
  std::vector<uint8_t> buf(4096);
  std::mt19937_64 rng(7);
  for (auto _ : state) {
    iovec v{buf.data(), buf.size()};
    const uint64_t off = (rng() % (kSize / 4096)) * 4096;
    if (!d.readv(off, {&v, 1}).ok()) state.SkipWithError("read failed");
    benchmark::DoNotOptimize(buf.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * 4096);
}

void BM_Qcow2RandomRead4K(benchmark::State& state) {
  auto img = ringvm::Qcow2Image::open(images().qcow2, ringvm::Qcow2OpenOptions{});
  if (!img.ok()) return state.SkipWithError(img.error().message().c_str());
  read_loop(state, **img);
}
BENCHMARK(BM_Qcow2RandomRead4K);

void BM_RawRandomRead4K(benchmark::State& state) {
  // The same bytes as a raw file: convert by reading the qcow2 image.
  static bool made = [] {
    auto q = std::move(*ringvm::Qcow2Image::open(images().qcow2, ringvm::Qcow2OpenOptions{}));
    FILE* f = fopen(images().raw.c_str(), "wb");
    std::vector<uint8_t> buf(2u << 20);
    for (uint64_t off = 0; off < kSize; off += buf.size()) {
      iovec v{buf.data(), buf.size()};
      (void)q->readv(off, {&v, 1});
      fwrite(buf.data(), 1, buf.size(), f);
    }
    fclose(f);
    return true;
  }();
  (void)made;
  auto d = ringvm::RawDisk::open(images().raw, true);
  if (!d.ok()) return state.SkipWithError(d.error().message().c_str());
  read_loop(state, **d);
}
BENCHMARK(BM_RawRandomRead4K);

}  // namespace

BENCHMARK_MAIN();
