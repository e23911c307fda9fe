// The built-in demo: the host's installed kernel and an initramfs linked into the binary.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "base/result.h"

namespace ringvm {

std::span<const uint8_t> demo_initramfs();
// /boot/vmlinuz-$(uname -r) if present, else the newest /boot/vmlinuz-*.
Result<std::string> find_host_kernel(const std::string& boot_dir = "/boot");

}  // namespace ringvm
