#!/usr/bin/env bash
# Installs every Debian package ringvm needs (idempotent, as root) and builds build/ringvm.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  # toolchain
  build-essential cmake ninja-build pkg-config clang lld libclang-rt-14-dev
  # libraries
  libfmt-dev libspdlog-dev libcli11-dev nlohmann-json3-dev liburing-dev libseccomp-dev
  zlib1g-dev libzstd-dev liblzma-dev libgtest-dev libgmock-dev libbenchmark-dev
  # tests and the lab: a stock kernel, busybox for initramfs, QEMU for L1, qemu-img for interop
  qemu-system-x86 qemu-utils linux-image-amd64 busybox-static cpio e2fsprogs kmod iproute2
  jq fio iperf3 time
  # iasl: the arch tests disassemble the generated DSDT with it
  acpica-tools
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc)"
echo "setup: built $(pwd)/build/ringvm"
