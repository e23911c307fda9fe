#include "devices/virtio/net/chain_state.h"

#include <limits>
#include <string>

#include "memory/guest_memory.h"

namespace ringvm {

namespace {

void save_buffers(StateWriter& w, const std::vector<DescriptorBuffer>& bufs) {
  w.u32(static_cast<uint32_t>(bufs.size()));
  for (const auto& b : bufs) {
    w.u64(b.addr);
    w.u32(b.len);
  }
}

Result<void> load_buffers(StateReader& r, std::string_view field, uint32_t max, uint64_t& total,
                          std::vector<DescriptorBuffer>& out) {
  const uint32_t n = TRY(r.u32(field));
  RETURN_IF_ERROR(r.check_range(field, n, 0, max));
  // Each buffer takes 12 bytes of state: a count larger than what is left is a lie, caught
  // before anything is allocated for it.
  if (uint64_t{n} * 12 > r.remaining())
    return r.corrupt(fmt::format("`{}` claims {} buffers; only {} bytes remain", field, n, r.remaining()));
  out.reserve(n);
  for (uint32_t i = 0; i < n; ++i) {
    DescriptorBuffer b;
    b.addr = TRY(r.u64(field));
    b.len = TRY(r.u32(field));
    if (b.len == 0) return r.corrupt(fmt::format("`{}` buffer {} has length 0", field, i));
    if (b.addr > std::numeric_limits<uint64_t>::max() - b.len)
      return r.corrupt(fmt::format("`{}` buffer {} at {:#x} (+{}) wraps around", field, i, b.addr, b.len));
    total += b.len;
    out.push_back(b);
  }
  return Ok();
}

}  // namespace

void save_chain(StateWriter& w, const DescriptorChain& chain) {
  w.u16(chain.head);
  save_buffers(w, chain.readable);
  save_buffers(w, chain.writable);
}

Result<DescriptorChain> load_chain(StateReader& r, std::string_view field, uint32_t max_buffers) {
  DescriptorChain c;
  c.head = TRY(r.u16(field));
  uint64_t total = 0;
  const std::string rd = fmt::format("{}.readable", field), wr = fmt::format("{}.writable", field);
  RETURN_IF_ERROR(load_buffers(r, rd, max_buffers, total, c.readable));
  RETURN_IF_ERROR(load_buffers(r, wr, max_buffers - static_cast<uint32_t>(c.readable.size()), total, c.writable));
  if (c.readable.empty() && c.writable.empty()) return r.corrupt(fmt::format("`{}` has no buffers", field));
  if (total > std::numeric_limits<uint32_t>::max())
    return r.corrupt(fmt::format("`{}` holds {} bytes; a chain holds at most 4 GiB", field, total));
  return c;
}

Result<void> check_chain(const DescriptorChain& chain, const GuestMemory& mem, uint16_t queue_size,
                         std::string_view what) {
  if (chain.head >= queue_size)
    return make_error(ErrorCode::kCorrupt, "{}: a restored chain's head {} is outside the queue (size {})", what,
                      chain.head, queue_size);
  for (const auto* bufs : {&chain.readable, &chain.writable})
    for (const auto& b : *bufs)
      if (!mem.contains(b.addr, b.len))
        return make_error(ErrorCode::kCorrupt,
                          "{}: a restored chain's buffer at {:#x} ({} bytes) is outside guest memory", what,
                          b.addr, b.len);
  return Ok();
}

}  // namespace ringvm
