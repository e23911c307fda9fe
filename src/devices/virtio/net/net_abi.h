// <linux/virtio_net.h> for C++: its control header names a field `class`, a C++ keyword, so the
// header is included with that one token renamed to `class_` (as QEMU's imported headers do).
// Include this instead of <linux/virtio_net.h>; the structs stay the UAPI's own.
#pragma once

// Everything <linux/virtio_net.h> includes, first, so the rename below touches only its own text.
#include <linux/if_ether.h>
#include <linux/types.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ids.h>
#include <linux/virtio_types.h>

#define class class_
#include <linux/virtio_net.h>
#undef class
