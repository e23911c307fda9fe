// <linux/virtio_ring.h> without its legacy vring_init() helper, which is C-only (it converts
// void* implicitly) and which we never use: only the ABI structs and constants.
#pragma once

#ifndef VIRTIO_RING_NO_LEGACY
#define VIRTIO_RING_NO_LEGACY
#endif
#include <linux/virtio_ring.h>
