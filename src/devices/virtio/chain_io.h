// Byte-level access to a validated chain's buffers, which may split any structure (a request
// header, a status byte) at any point: virtio 1.x drivers owe us no particular framing.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <span>
#include <vector>

#include "base/result.h"
#include "devices/virtio/queue.h"

namespace ringvm {

class GuestMemory;

// Copies bytes [skip, skip + out.size()) of `bufs` into `out`; returns how many were available.
size_t copy_from_buffers(const GuestMemory& mem, std::span<const DescriptorBuffer> bufs, uint64_t skip,
                         std::span<uint8_t> out);
// Copies `in` into bytes [skip, ...) of `bufs`; returns how many fitted.
size_t copy_to_buffers(const GuestMemory& mem, std::span<const DescriptorBuffer> bufs, uint64_t skip,
                       std::span<const uint8_t> in);
// Host iovecs covering bytes [skip, skip + len) of `bufs`, for readv/writev straight into guest
// memory. The buffers were checked against guest memory when the chain was popped, and guest RAM
// stays mapped for the VM's life, so the pointers stay valid while the request is in flight.
Result<std::vector<iovec>> buffers_iovecs(const GuestMemory& mem, std::span<const DescriptorBuffer> bufs,
                                          uint64_t skip, uint64_t len);
// The same, appended to `out` (a hot path can keep one vector and reuse its capacity).
Result<void> append_buffers_iovecs(const GuestMemory& mem, std::span<const DescriptorBuffer> bufs, uint64_t skip,
                                   uint64_t len, std::vector<iovec>& out);

}  // namespace ringvm
