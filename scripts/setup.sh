#!/usr/bin/env bash
# Installs every Debian package ringvm needs (idempotent, as root) and builds build/ringvm.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/apt_mirror.sh
source scripts/lib/apt_mirror.sh

PACKAGES=(
  # toolchain
  build-essential cmake ninja-build pkg-config clang lld libclang-rt-14-dev
  # libraries
  libfmt-dev libspdlog-dev libcli11-dev nlohmann-json3-dev liburing-dev libseccomp-dev
  zlib1g-dev libzstd-dev liblzma-dev libgtest-dev libgmock-dev libbenchmark-dev
  # the REST API's HTTP/1.1 server and `ringvm ctl`'s client (docs/ARCHITECTURE.md, "The API")
  libboost1.81-dev curl
  # the OpenAPI agreement test reads docs/api/ringvm.yaml
  libyaml-cpp-dev
  # tests and the lab: a stock kernel, busybox for initramfs, QEMU for L1, qemu-img for interop
  qemu-system-x86 qemu-utils linux-image-amd64 busybox-static cpio e2fsprogs kmod iproute2
  jq fio iperf3 time
  # vsock lab test: socat speaks AF_VSOCK in the guest and Unix sockets on the host
  socat
  # iasl: the arch tests disassemble the generated DSDT with it
  acpica-tools
  # scripts/build-lab-qemu.sh: the lab's L1 emulator, Debian's QEMU source (apt-get source) with
  # the lab's fix
  xz-utils libglib2.0-dev libpixman-1-dev flex bison python3-venv
)

# QEMU comes from bookworm-backports (10.x) on Debian 12: the lab's L1 runs on QEMU's TCG
# emulation of AMD-V, and under bookworm's QEMU 7.2 L1 took interrupts right after VMRUN with
# the L2 guest's GS base still loaded (an L1 kernel panic) and L2 stalled; see docs/lab.md.
BACKPORTED=(qemu-system-x86 qemu-utils)
# QEMU 10's build needs meson 1.5 or newer (bookworm has 1.0) and pycotap.
BUILD_BACKPORTED=(meson python3-pycotap)
BACKPORTS_MIN_QEMU=1:10

SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
updated=0
apt_update() {
  ((updated)) || $SUDO apt-get update -q
  updated=1
}

# The packages among the arguments that are not installed, one per line.
not_installed() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}

mapfile -t missing < <(not_installed "${PACKAGES[@]}")
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  apt_update
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if grep -q '^VERSION_CODENAME=bookworm' /etc/os-release 2>/dev/null; then
  have=$(dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null || true)
  if ! dpkg --compare-versions "${have:-0}" ge "$BACKPORTS_MIN_QEMU"; then
    list=/etc/apt/sources.list.d/ringvm-bookworm-backports.list
    if ! apt_has_entry deb bookworm-backports main; then
      # The mirror apt already uses for bookworm serves its backports too.
      mirror=$(apt_mirror_uri bookworm main) || {
        echo "setup: no enabled Debian source for suite bookworm with component main in apt's" \
          "sources (/etc/apt/sources.list, sources.list.d/*.list or *.sources); add one, or add" \
          "bookworm-backports yourself, and run setup again" >&2
        exit 1
      }
      echo "setup: enabling bookworm-backports from $mirror for QEMU 10 ($list)"
      echo "deb $mirror bookworm-backports main" | $SUDO tee "$list" >/dev/null
      updated=0
    fi
    echo "setup: installing ${BACKPORTED[*]} from bookworm-backports (have QEMU ${have:-none})"
    apt_update
    $SUDO apt-get install -y -q --no-install-recommends -t bookworm-backports "${BACKPORTED[@]}"
  fi
fi

if grep -q '^VERSION_CODENAME=bookworm' /etc/os-release 2>/dev/null; then
  mapfile -t missing < <(not_installed "${BUILD_BACKPORTED[@]}")
  if ((${#missing[@]})) || ! dpkg --compare-versions "$(dpkg-query -W -f='${Version}' meson 2>/dev/null || echo 0)" ge 1.5; then
    apt_update
    $SUDO apt-get install -y -q --no-install-recommends -t bookworm-backports "${BUILD_BACKPORTED[@]}" ||
      echo "setup: could not install ${BUILD_BACKPORTED[*]} from bookworm-backports; the lab keeps Debian's QEMU"
  fi
fi
# The lab's L1 emulator (docs/lab.md): built once and cached; without it the lab runs on Debian's
# QEMU, whose emulated AMD-V crashes L1 and its guests now and then.
scripts/build-lab-qemu.sh >/dev/null || echo "setup: the lab's QEMU was not built; the lab uses Debian's QEMU"

cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc)"
echo "setup: built $(pwd)/build/ringvm"
