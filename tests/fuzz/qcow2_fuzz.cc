// libFuzzer target: the input is a qcow2 image file. Opens it read-only and reads it, checks it,
// then opens a copy writable and writes, discards, zeroes, checks with repair and closes. Any
// crash, hang, sanitizer report or huge allocation is a bug: hostile images must give errors.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "block/qcow2/qcow2_image.h"

namespace {

// An in-memory file reachable by path, so the image code sees a real file.
struct MemFile {
  explicit MemFile(const uint8_t* data, size_t size) {
    fd = memfd_create("qcow2-fuzz", MFD_CLOEXEC);
    if (fd < 0) return;
    size_t done = 0;
    while (done < size) {
      const ssize_t n = write(fd, data + done, size - done);
      if (n <= 0) break;
      done += static_cast<size_t>(n);
    }
    path = "/proc/self/fd/" + std::to_string(fd);
  }
  ~MemFile() {
    if (fd >= 0) close(fd);
  }
  int fd = -1;
  std::string path;
};

void exercise_reads(ringvm::Qcow2Image& img) {
  std::vector<uint8_t> buf(65536);
  const uint64_t size = img.size();
  const uint64_t limit = std::min<uint64_t>(size, 1u << 20);
  for (uint64_t off = 0; off < limit; off += buf.size()) {
    iovec v{buf.data(), std::min<uint64_t>(buf.size(), limit - off)};
    (void)img.readv(off, {&v, 1});
  }
  if (size > limit) {
    iovec v{buf.data(), std::min<uint64_t>(buf.size(), size - limit)};
    (void)img.readv(size - v.iov_len, {&v, 1});
  }
  for (uint64_t off = 0; off < size && off < (64u << 20);) {
    auto e = img.block_status(off, size - off);
    if (!e.ok() || e->length == 0) break;
    off += e->length;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > (4u << 20)) return 0;
  {
    MemFile f(data, size);
    if (f.fd < 0) return 0;
    ringvm::Qcow2OpenOptions o;
    o.open_backing = false;  // never follow names from the input to host files
    o.l2_cache_bytes = 16384;
    auto img = ringvm::Qcow2Image::open(f.path, o);
    if (img.ok()) {
      exercise_reads(**img);
      (void)(*img)->check(ringvm::Qcow2Repair::kNone);
    }
  }
  {
    MemFile f(data, size);
    if (f.fd < 0) return 0;
    ringvm::Qcow2OpenOptions o;
    o.read_only = false;
    o.open_backing = false;
    o.allow_corrupt = true;
    o.l2_cache_bytes = 16384;
    auto img = ringvm::Qcow2Image::open(f.path, o);
    if (!img.ok()) return 0;
    auto& d = **img;
    std::vector<uint8_t> buf(6000, 0xa5);
    const uint64_t vsize = d.size();
    for (uint64_t off : {uint64_t{0}, uint64_t{4000}, vsize / 2, vsize > 6000 ? vsize - 6000 : 0}) {
      if (off + buf.size() > vsize) continue;
      iovec v{buf.data(), buf.size()};
      if (!d.writev(off, {&v, 1}).ok()) break;
    }
    if (vsize > 0) {
      (void)d.discard(0, std::min<uint64_t>(vsize, 1u << 20));
      (void)d.write_zeroes(vsize / 3, std::min<uint64_t>(vsize - vsize / 3, 70000), false);
      if (vsize >= 4096) {
        std::vector<uint8_t> cl(d.cluster_size(), 0x5a);
        if (cl.size() <= vsize) (void)d.write_compressed(0, cl);
      }
    }
    (void)d.flush();
    (void)d.check(ringvm::Qcow2Repair::kAll);
    (void)d.close();
  }
  return 0;
}
