// Fuzzes virtio-blk request handling on a scratch raw file: the input becomes guest memory
// (descriptor table, avail ring, request headers, data) of a 16-entry queue at fixed addresses.
// Layout: byte 0 = features (indirect, event idx), the rest = guest memory from address 0.
// Descriptor table at 0x0, avail ring at 0x100, used ring at 0x200; data anywhere below 16 KiB.
#include <fcntl.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "base/log.h"
#include "block/raw_disk.h"
#include "devices/virtio/block/virtio_block.h"
#include "devices/virtio/ring_abi.h"
#include "memory/guest_memory.h"

namespace {

constexpr uint64_t kMemBytes = 16 * 1024;

struct Fixture {
  ringvm::GuestMemory mem;
  std::shared_ptr<ringvm::Disk> disk;
};

Fixture& fixture() {
  static Fixture* f = [] {
    auto* fx = new Fixture();
    if (!fx->mem.add_region(0, kMemBytes).ok()) __builtin_trap();
    char path[] = "/tmp/ringvm-blk-fuzz-XXXXXX";
    const int fd = ::mkstemp(path);
    if (fd < 0 || ::ftruncate(fd, 64 * 1024) != 0) __builtin_trap();
    ::close(fd);
    auto d = ringvm::RawDisk::open(path, false);
    ::unlink(path);  // the open fd keeps it alive; nothing is left behind
    if (!d.ok()) __builtin_trap();
    fx->disk = std::shared_ptr<ringvm::Disk>(std::move(*d));
    return fx;
  }();
  return *f;
}

}  // namespace

// Rejected chains are logged (rate-limited); the fuzzer would spend its time formatting them.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  auto& fx = fixture();
  (void)fx.mem.fill(0, 0, kMemBytes);
  (void)fx.mem.write(0, {data + 1, std::min<size_t>(size - 1, kMemBytes)});
  uint64_t features = 1ULL << 32;  // VIRTIO_F_VERSION_1
  if (data[0] & 1) features |= 1ULL << VIRTIO_RING_F_INDIRECT_DESC;
  if (data[0] & 2) features |= 1ULL << VIRTIO_RING_F_EVENT_IDX;

  ringvm::VirtioBlockOptions opts;
  opts.read_only = (data[0] & 4) != 0;
  opts.serial = "fuzz";
  opts.queue_size = 16;
  opts.engine = ringvm::VirtioBlockOptions::Engine::kSync;  // requests complete inside process_queue
  if (data[0] & 8) opts.cache = ringvm::VirtioBlockOptions::Cache::kUnsafe;  // skip fdatasync: speed
  auto blk = ringvm::VirtioBlock::create(fx.disk, opts);
  if (!blk.ok()) __builtin_trap();
  ringvm::VirtQueue q(16);
  q.set_size(16);
  q.set_desc_addr(0x0);
  q.set_avail_addr(0x100);
  q.set_used_addr(0x200);
  q.set_ready(true);
  // kick_fd -1: no worker activity; the request processing runs right here, synchronously.
  std::vector<ringvm::ActivatedQueue> qs{ringvm::ActivatedQueue{&q, -1, [] {}}};
  if (!(*blk)->activate(fx.mem, features, std::move(qs)).ok()) return 0;
  (*blk)->process_queue(0);
  (*blk)->reset();
  return 0;
}
