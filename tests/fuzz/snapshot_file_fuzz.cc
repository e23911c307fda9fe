// Fuzzes the snapshot state file's loader (vmm/snapshot_file.h decode_snapshot) and the decoders
// of the states inside it.
// Input: [mode u8] then a file. mode bit 0: the fuzzer's bytes are the payload, and a valid header
// (magic, version, size, checksum) is put before them, so mutations reach the payload's decoder
// instead of all dying at the checksum.
// Checks: decoding never crashes, reads out of bounds or allocates beyond the limits (ASan,
// libFuzzer's -rss_limit); a file it accepts encodes back to the same bytes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <zlib.h>

#include "vmm/snapshot_file.h"

uint32_t ringvm_fuzz_crc32(const uint8_t* p, size_t n) {
  return static_cast<uint32_t>(::crc32(::crc32(0L, Z_NULL, 0), p, static_cast<uInt>(n)));
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ringvm;
  if (size < 1) return 0;
  const uint8_t mode = data[0];
  std::vector<uint8_t> file;
  if (mode & 1) {
    // Borrow encode_snapshot's header for an empty state, then swap in the fuzzer's payload.
    std::vector<uint8_t> header = encode_snapshot(SnapshotState{});
    header.resize(kSnapshotHeaderBytes);
    std::vector<uint8_t> payload(data + 1, data + size);
    // Recompute size and checksum by encoding through the public API: build the file by hand.
    file = header;
    const uint64_t n = payload.size();
    for (int i = 0; i < 8; ++i) file[16 + i] = static_cast<uint8_t>(n >> (8 * i));
    const uint32_t crc = ringvm_fuzz_crc32(payload.data(), payload.size());
    for (int i = 0; i < 4; ++i) file[24 + i] = static_cast<uint8_t>(crc >> (8 * i));
    file.insert(file.end(), payload.begin(), payload.end());
  } else {
    file.assign(data + 1, data + size);
  }
  auto s = decode_snapshot(file, "fuzz");
  if (s) {
    // Accepted input re-encodes to exactly what was read: nothing is silently dropped.
    if (encode_snapshot(*s) != file) std::abort();
  }
  return 0;
}
