// Saving the descriptor chains a device has popped and still holds, for save()/restore().
//
// A device may keep chains between passes: virtio-net gathers receive buffers for a frame that
// has not arrived (or does not fit yet) and parks a transmit frame the tap refused (EAGAIN);
// virtio-vsock keeps a receive buffer whose packet went away. The transport saves the queue's
// next_avail, which is already past these chains, so they are the device's to save: restored,
// they are used exactly as if they had never left the device, and the guest loses no buffer.
//
// A chain is saved as its head and its buffers (guest address and length). The bytes are hostile
// like any snapshot input: load_chain() bounds every count before allocating, and check_chain()
// (at activation, when guest memory and the queue size are known) refuses a head outside the
// queue or a buffer outside guest memory, so a restored chain is as safe as a freshly popped one.
//
// Shared by net/ and vsock/ (vsock already uses net/net_options.h); it can move up to
// src/devices/virtio/ beside queue.h once the transport's snapshot work lands.
#pragma once

#include <cstdint>
#include <string_view>

#include "base/result.h"
#include "base/state_codec.h"
#include "devices/virtio/queue.h"

namespace ringvm {

class GuestMemory;

void save_chain(StateWriter& w, const DescriptorChain& chain);
// `max_buffers`: the most buffers a chain may have (the queue's maximum size, as VirtQueue
// allows). Refuses empty chains, zero-length buffers, address ranges that wrap and chains over
// 4 GiB, as VirtQueue does.
Result<DescriptorChain> load_chain(StateReader& r, std::string_view field, uint32_t max_buffers);
// At activation: the head must name a descriptor of a `queue_size` queue and every buffer must
// lie wholly inside `mem`. `what` names the device and queue in the error.
Result<void> check_chain(const DescriptorChain& chain, const GuestMemory& mem, uint16_t queue_size,
                         std::string_view what);

}  // namespace ringvm
