#include "devices/virtio/chain_io.h"

#include <algorithm>
#include <cstring>

#include "memory/guest_memory.h"

namespace ringvm {

namespace {

// Calls fn(host_span, offset_in_request) for each piece of bytes [skip, skip + len) of `bufs`;
// stops early when fn returns false or a buffer is no longer inside guest memory.
template <typename Fn>
uint64_t for_each_piece(const GuestMemory& mem, std::span<const DescriptorBuffer> bufs, uint64_t skip,
                        uint64_t len, Fn fn) {
  uint64_t done = 0;
  for (const auto& b : bufs) {
    if (done == len) break;
    if (skip >= b.len) {
      skip -= b.len;
      continue;
    }
    const uint64_t n = std::min<uint64_t>(b.len - skip, len - done);
    auto s = mem.span(b.addr + skip, n);
    if (!s.ok()) break;
    if (!fn(*s, done)) break;
    done += n;
    skip = 0;
  }
  return done;
}

}  // namespace

size_t copy_from_buffers(const GuestMemory& mem, std::span<const DescriptorBuffer> bufs, uint64_t skip,
                         std::span<uint8_t> out) {
  return static_cast<size_t>(for_each_piece(mem, bufs, skip, out.size(), [&](std::span<uint8_t> s, uint64_t at) {
    // SAFETY: `s` is a bounds-checked host view of guest memory; a copy, so later guest writes
    // cannot change what we validated.
    std::memcpy(out.data() + at, s.data(), s.size());
    return true;
  }));
}

size_t copy_to_buffers(const GuestMemory& mem, std::span<const DescriptorBuffer> bufs, uint64_t skip,
                       std::span<const uint8_t> in) {
  return static_cast<size_t>(for_each_piece(mem, bufs, skip, in.size(), [&](std::span<uint8_t> s, uint64_t at) {
    // SAFETY: `s` is a bounds-checked host view of guest memory.
    std::memcpy(s.data(), in.data() + at, s.size());
    return true;
  }));
}

Result<void> append_buffers_iovecs(const GuestMemory& mem, std::span<const DescriptorBuffer> bufs, uint64_t skip,
                                   uint64_t len, std::vector<iovec>& out) {
  const uint64_t got = for_each_piece(mem, bufs, skip, len, [&](std::span<uint8_t> s, uint64_t) {
    // SAFETY: a bounds-checked host view of guest RAM, which stays mapped while the VM exists.
    out.push_back(iovec{s.data(), s.size()});
    return true;
  });
  if (got != len)
    return make_error(ErrorCode::kOutOfRange, "request data ({} bytes) does not fit its buffers ({} usable)", len,
                      got);
  return Ok();
}

Result<std::vector<iovec>> buffers_iovecs(const GuestMemory& mem, std::span<const DescriptorBuffer> bufs,
                                          uint64_t skip, uint64_t len) {
  std::vector<iovec> iov;
  RETURN_IF_ERROR(append_buffers_iovecs(mem, bufs, skip, len, iov));
  return iov;
}

}  // namespace ringvm
