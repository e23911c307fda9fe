// Fuzzes the snapshot state file's loader (vmm/snapshot_file.h decode_snapshot) and the decoders
// of the states inside it.
// Input: [mode u8] then a file. mode bit 0: the fuzzer's bytes are the payload, and a valid header
// (magic, version, size, checksum) is put before them, so mutations reach the payload's decoder
// instead of all dying at the checksum. mode bit 1: the bytes are one state that a restore reads
// (mode >> 2 picks which: a vCPU's, the VM's, a virtqueue's, or the UART's, RTC's, i8042's,
// ACPI PM block's), handed to its decoder or to a fresh device's restore().
// Checks: decoding never crashes, reads out of bounds or allocates beyond the limits (ASan,
// libFuzzer's -rss_limit); a file it accepts encodes back to the same bytes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <zlib.h>

#include "base/state_codec.h"
#include "devices/legacy/acpi_pm.h"
#include "devices/legacy/cmos_rtc.h"
#include "devices/legacy/i8042.h"
#include "devices/legacy/serial.h"
#include "devices/virtio/queue.h"
#include "kvm/vcpu_state.h"
#include "kvm/vm_state.h"
#include "memory/guest_memory.h"
#include "vmm/snapshot_file.h"

uint32_t ringvm_fuzz_crc32(const uint8_t* p, size_t n) {
  return static_cast<uint32_t>(::crc32(::crc32(0L, Z_NULL, 0), p, static_cast<uInt>(n)));
}

namespace {

void fuzz_state(uint8_t which, std::span<const uint8_t> bytes) {
  using namespace ringvm;
  StateReader r(bytes, "fuzz");
  switch (which % 7) {
    case 0: {
      auto v = decode_vcpu_state(r);
      if (v) {
        // What decoding accepted encodes back to the bytes it read.
        StateWriter w;
        encode(*v, w);
        if (w.size() != r.position()) std::abort();
      }
      break;
    }
    case 1: (void)decode_vm_state(r); break;
    case 2: {
      static GuestMemory mem = *GuestMemory::create_x86(1 << 20, 1ULL << 30, false);
      VirtQueue q(256);
      (void)q.read_state(r, &mem);
      break;
    }
    case 3: {
      SerialPort com("com1", [](bool) {}, [](std::span<const uint8_t>) {});
      if (com.restore(bytes)) (void)com.save();
      break;
    }
    case 4: {
      CmosRtc rtc;
      if (rtc.restore(bytes)) (void)rtc.save();
      break;
    }
    case 5: {
      I8042 kbd([] {}, [](bool) {});
      if (kbd.restore(bytes)) (void)kbd.save();
      break;
    }
    default: {
      AcpiPmDevice::Hooks hooks;
      hooks.on_poweroff = [] {};
      hooks.sci = [](bool) {};
      hooks.clock = [] { return std::chrono::steady_clock::time_point{}; };
      AcpiPmDevice pm(std::move(hooks));
      if (pm.restore(bytes)) (void)pm.save();
      break;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ringvm;
  if (size < 1) return 0;
  const uint8_t mode = data[0];
  if (mode & 2) {
    fuzz_state(static_cast<uint8_t>(mode >> 2), std::span<const uint8_t>(data + 1, size - 1));
    return 0;
  }
  std::vector<uint8_t> file;
  if (mode & 1) {
    // Borrow encode_snapshot's header for an empty state, then swap in the fuzzer's payload.
    std::vector<uint8_t> header = encode_snapshot(SnapshotState{});
    header.resize(kSnapshotHeaderBytes);
    std::vector<uint8_t> payload(data + 1, data + size);
    // Recompute size and checksum by encoding through the public API: build the file by hand.
    file = header;
    const uint64_t n = payload.size();
    for (size_t i = 0; i < 8; ++i) file[16 + i] = static_cast<uint8_t>(n >> (8 * i));
    const uint32_t crc = ringvm_fuzz_crc32(payload.data(), payload.size());
    for (size_t i = 0; i < 4; ++i) file[24 + i] = static_cast<uint8_t>(crc >> (8 * i));
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
