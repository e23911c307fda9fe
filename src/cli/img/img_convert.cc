// `ringvm img convert [-f fmt] [-O fmt] [-c] [-p] [-m threads] [-o opts] src dst`
// Copies the source's contents into a new image. Zero areas are not written (the output is
// sparse); holes in a raw source and unallocated clusters of a qcow2 source are skipped without
// being read. Worker threads read, test for zeros, compress (-c) and write in 2 MiB chunks.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>

#include "block/image_open.h"
#include "block/qcow2/compress.h"
#include "block/raw_disk.h"
#include "cli/img/img_common.h"

namespace ringvm::img {

namespace {

struct ConvertArgs {
  std::string src_format, dst_format;
  std::vector<std::string> opts;
  bool compress = false, progress = false, quiet = false, sync = false;
  unsigned threads = 0;
  std::string src, dst;
};

bool is_zero(const uint8_t* p, size_t n) {
  if (n < 16) {
    for (size_t i = 0; i < n; ++i)
      if (p[i]) return false;
    return true;
  }
  static const uint8_t kZero[16] = {};
  return std::memcmp(p, kZero, 16) == 0 && std::memcmp(p, p + 16, n - 16) == 0;
}

// The first offset >= pos (and < end) that may hold non-zero data; `end` if none.
Result<uint64_t> next_data(Disk& src, uint64_t pos, uint64_t end) {
  if (auto* q = dynamic_cast<Qcow2Image*>(&src); q && !q->backing()) {
    while (pos < end) {
      auto e = TRY(q->block_status(pos, end - pos));
      if (e.kind == Qcow2ClusterKind::kData || e.kind == Qcow2ClusterKind::kCompressed) return pos;
      pos += e.length;
    }
    return end;
  }
  if (auto fd = src.direct_fd()) {
    const off_t d = ::lseek(*fd, static_cast<off_t>(pos), SEEK_DATA);
    if (d < 0) return errno == ENXIO ? end : pos;  // ENXIO: only a hole remains
    return std::min<uint64_t>(static_cast<uint64_t>(d), end);
  }
  return pos;
}

class Converter final {
 public:
  Converter(Disk& src, Disk& dst, Qcow2Image* dst_qcow2, uint64_t unit, bool compress)
      : src_(src), dst_(dst), q_(dst_qcow2), unit_(unit), compress_(compress) {}

  Result<void> run(unsigned threads, bool progress) {
    const uint64_t size = src_.size();
    chunks_ = (size + kChunk - 1) / kChunk;
    std::vector<std::thread> ts;
    for (unsigned i = 0; i < threads; ++i) ts.emplace_back([this] { worker(); });
    while (progress && done_chunks_.load() < chunks_ && !failed_.load()) {
      std::fprintf(stderr, "    (%.2f/100%%)\r", 100.0 * static_cast<double>(done_chunks_.load()) / static_cast<double>(chunks_));
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    for (auto& t : ts) t.join();
    if (progress) std::fprintf(stderr, "    (100.00/100%%)\n");
    if (failed_) return error_;
    return Ok();
  }

 private:
  static constexpr uint64_t kChunk = 2ull << 20;

  void worker() {
    std::vector<uint8_t> buf(kChunk);
    for (;;) {
      const uint64_t i = next_chunk_.fetch_add(1);
      if (i >= chunks_ || failed_.load()) return;
      auto r = copy_chunk(i * kChunk, std::min(kChunk, src_.size() - i * kChunk), buf);
      if (!r.ok()) {
        std::lock_guard lock(err_mu_);
        if (!failed_.exchange(true)) error_ = std::move(r).error();
        return;
      }
      done_chunks_.fetch_add(1);
    }
  }

  Result<void> copy_chunk(uint64_t off, uint64_t len, std::vector<uint8_t>& buf) {
    const uint64_t data = TRY(next_data(src_, off, off + len));
    if (data >= off + len) return Ok();
    iovec v{buf.data(), len};
    RETURN_IF_ERROR(src_.readv(off, {&v, 1}));
    // Write runs of non-zero units; leave zero units unwritten (the new image reads zeros there).
    for (uint64_t u = 0; u < len;) {
      const uint64_t n = std::min(unit_, len - u);
      if (is_zero(buf.data() + u, n)) {
        u += n;
        continue;
      }
      if (compress_ && q_ && n == unit_) {
        auto c = qcow2::compress_cluster(q_->header().compression_type, {buf.data() + u, n});
        if (c) RETURN_IF_ERROR(q_->write_precompressed(off + u, *c));
        else RETURN_IF_ERROR(write(off + u, buf.data() + u, n));
        u += n;
        continue;
      }
      uint64_t end = u + n;
      while (!compress_ && end < len) {
        const uint64_t m = std::min(unit_, len - end);
        if (is_zero(buf.data() + end, m)) break;
        end += m;
      }
      RETURN_IF_ERROR(write(off + u, buf.data() + u, end - u));
      u = end;
    }
    return Ok();
  }

  Result<void> write(uint64_t off, uint8_t* p, uint64_t n) {
    iovec v{p, n};
    return dst_.writev(off, {&v, 1});
  }

  Disk& src_;
  Disk& dst_;
  Qcow2Image* q_;
  uint64_t unit_;
  bool compress_;
  uint64_t chunks_ = 0;
  std::atomic<uint64_t> next_chunk_{0}, done_chunks_{0};
  std::atomic<bool> failed_{false};
  std::mutex err_mu_;
  Error error_;
};

Result<void> run_convert(const ConvertArgs& a) {
  const std::string sfmt = TRY(resolve_format(a.src_format, a.src));
  std::string dfmt = a.dst_format;
  if (dfmt.empty()) {
    auto by_name = resolve_format("", a.dst);
    dfmt = by_name.ok() ? *by_name : "raw";  // qemu-img's default output format
  }
  dfmt = TRY(resolve_format(dfmt, a.dst));
  if (a.compress && dfmt != "qcow2")
    return make_error(ErrorCode::kInvalidArgument, "-c needs -O qcow2 (raw images cannot be compressed)");
  auto src = open_disk(a.src, sfmt, true);
  if (!src.ok()) return wrap(std::move(src).error(), "source");
  Qcow2CreateOptions o;
  for (const auto& s : a.opts) RETURN_IF_ERROR(apply_create_options(s, o));
  if (!o.backing_file.empty())
    return make_error(ErrorCode::kUnsupported, "convert does not create backing files; use create -b and rebase");
  o.size = (*src)->size();
  std::shared_ptr<Disk> dst;
  Qcow2Image* q = nullptr;
  uint64_t unit = 4096;
  if (dfmt == "qcow2") {
    RETURN_IF_ERROR(Qcow2Image::create(a.dst, o));
    Qcow2OpenOptions oo;
    oo.read_only = false;
    oo.unsafe_no_sync = !a.sync;
    auto img = TRY(Qcow2Image::open(a.dst, oo));
    q = img.get();
    unit = img->cluster_size();
    dst = std::move(img);
  } else {
    RETURN_IF_ERROR(create_raw(a.dst, o.size, o.preallocation));
    dst = TRY(RawDisk::open(a.dst, false));
  }
  unsigned threads = a.threads;
  // Copying waits on the page cache and the disk more than on CPUs: overlap four requests. With
  // -c the deflate work is CPU-bound: two per CPU keeps every core busy while others write.
  if (threads == 0) threads = a.compress ? std::clamp(2 * std::thread::hardware_concurrency(), 4u, 16u) : 4u;
  Converter conv(**src, *dst, q, unit, a.compress);
  RETURN_IF_ERROR(conv.run(threads, a.progress));
  if (q) return q->close();
  return a.sync ? dst->flush() : Ok();
}

}  // namespace

void add_convert(CLI::App& img, int* status) {
  auto a = std::make_shared<ConvertArgs>();
  auto* c = img.add_subcommand("convert", "Copy an image into a new raw or qcow2 image (sparse; -c compresses)");
  c->add_option("-f", a->src_format, "Source format: raw or qcow2 (default: from the file name)");
  c->add_option("-O", a->dst_format, "Output format: raw or qcow2 (default: from the file name, else raw)");
  c->add_option("-o", a->opts, "Output options, as for create")->allow_extra_args(false);
  c->add_flag("-c", a->compress, "Compress the output clusters (qcow2)");
  c->add_flag("-p", a->progress, "Show progress on stderr");
  c->add_flag("-q", a->quiet, "Quiet");
  c->add_flag("--sync", a->sync,
              "fdatasync the output before exiting (like qemu-img -t writeback; default: leave it to the page cache)");
  c->add_option("-m", a->threads, "Worker threads (default 4; with -c two per CPU)");
  c->add_option("src", a->src, "Source image")->required();
  c->add_option("dst", a->dst, "Output image (created or overwritten)")->required();
  c->callback([a, status] {
    auto r = run_convert(*a);
    *status = r.ok() ? 0 : fail("convert", r.error());
  });
}

}  // namespace ringvm::img
