#!/usr/bin/env bash
# Builds the lab's L1 emulator: the QEMU version Debian installed (qemu-system-x86), from Debian's
# own source tarball, with two fixes to its TCG emulation (docs/lab.md, "The emulator's two
# races"):
#  1. after VMRUN injects an interrupt into the guest, QEMU 10.0 leaves the vector in
#     cs->exception_index, and the next exit of the vCPU loop that is not itself an exception
#     (another thread's kick) delivers that vector a second time, ignoring IF and GIF (L2 guests
#     died of a double fault at the first instruction of the syscall entry, IF still 0);
#  2. loading x87 state (XRSTOR, FRSTOR, FLDENV) on any vCPU clears IGNNE in the *first* vCPU's
#     hflags2 with a plain read-modify-write from the loading vCPU's thread; when that races the
#     first vCPU's own update of hflags2 (#VMEXIT clearing GIF and NPT), the stale value is written
#     back: GIF stays set after #VMEXIT and an interrupt lands right after VMRUN with L2's GS base
#     loaded (L1's panic, always on CPU 0), or an L2 loses nested paging (dead L2 guests), or GIF
#     stays clear (L1 hangs). The fix makes both IGNNE updates atomic and skips the clear when
#     the bit is already clear.
#
#   scripts/build-lab-qemu.sh           prints the binary's path (builds it once, ~5 min on 2 cores)
#   scripts/build-lab-qemu.sh --built   prints it only if it is already built (exit 1 if not)
#
# The source comes from the Debian mirror apt already uses (scripts/lib/apt_mirror.sh): a
# private apt configuration in a temporary directory lists deb-src lines for the suites that serve
# the installed qemu-system-x86, and `apt-get source --download-only --tar-only` fetches the
# upstream tarball of exactly that version's source package, checked against the mirror's signed
# index. Nothing of the host's apt configuration changes, and no root is needed. As before, the
# build uses the upstream tarball alone (Debian's own patches are not applied).
#
# The binary is cached in RINGVM_LAB_CACHE (default ~/.cache/ringvm-lab), keyed by the Debian
# version and this script's fix level; scripts/lab.sh uses it when it exists. Exit status 1 when
# it cannot be built (no network, no configured Debian source serving the installed version, a
# QEMU whose source lacks the anchor line): the lab then runs on the stock emulator, as before.
set -euo pipefail
# shellcheck source=scripts/lib/apt_mirror.sh
source "$(dirname "$0")/lib/apt_mirror.sh"
fix=2
ver=$(dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null) || { echo "build-lab-qemu: qemu-system-x86 is not installed" >&2; exit 1; }
upstream=${ver#*:}
upstream=${upstream%%-*}  # e.g. 10.0.2+ds (Debian's repacked source)
cache=${RINGVM_LAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ringvm-lab}/qemu-$upstream-fix$fix
bin=$cache/qemu-system-x86_64
if [[ -x $bin ]]; then
  echo "$bin"
  exit 0
fi
[[ ${1:-} == --built ]] && exit 1
work=$(mktemp -d "${TMPDIR:-/tmp}/ringvm-lab-qemu.XXXXXX")
trap 'rm -rf "$work"' EXIT

# fetch_source DIR: the upstream tarball of the installed qemu-system-x86's source package into DIR
# (--tar-only: not the .dsc or Debian's patches), from the configured mirror's deb-src for the
# suites that serve that version.
fetch_source() {
  local dir=$1 src_pkg src_ver line uri suite comp
  src_pkg=$(dpkg-query -W -f='${source:Package}' qemu-system-x86)
  src_ver=$(dpkg-query -W -f='${source:Version}' qemu-system-x86)
  local apt=$dir/apt
  mkdir -p "$apt/parts" "$apt/lists/partial" "$apt/cache/archives/partial"
  : >"$apt/sources.list"
  # The suites apt lists the installed version in, e.g. "bookworm-backports/main"; each one's
  # URI is the one apt's own sources give for that suite.
  while read -r line; do
    suite=${line%%/*}
    comp=${line#*/}
    uri=$(apt_mirror_uri "$suite" "$comp") || continue
    echo "deb-src $uri $suite $comp" >>"$apt/sources.list"
  done < <(apt-cache madison qemu-system-x86 |
    awk -F'|' -v ver="$ver" '{ gsub(/ /, "", $2) } $2 == ver { split($3, w, " "); print w[2] }' | sort -u)
  if [[ ! -s $apt/sources.list ]]; then
    echo "build-lab-qemu: no enabled apt source (/etc/apt/sources.list, sources.list.d/*.list or" \
      "*.sources) serves qemu-system-x86 $ver; cannot fetch its source" >&2
    return 1
  fi
  local -a opts=(-q -o "Dir::Etc::sourcelist=$apt/sources.list" -o "Dir::Etc::sourceparts=$apt/parts"
    -o "Dir::State::lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o "APT::Sandbox::User=$(id -un)")
  echo "build-lab-qemu: fetching source $src_pkg $src_ver ($(cut -d' ' -f2- "$apt/sources.list" | paste -sd';'))" >&2
  if ! apt-get "${opts[@]}" update >"$dir/apt.log" 2>&1 ||
    ! (cd "$dir" && apt-get "${opts[@]}" source --download-only --tar-only "$src_pkg=$src_ver") >>"$dir/apt.log" 2>&1; then
    tail -5 "$dir/apt.log" >&2
    echo "build-lab-qemu: cannot fetch source $src_pkg=$src_ver" >&2
    return 1
  fi
}
fetch_source "$work" || exit 1
orig=$(find "$work" -maxdepth 1 -name "*_${upstream}.orig.tar.*" | head -n1)
[[ -n $orig ]] || { echo "build-lab-qemu: no upstream tarball for $upstream among the fetched source" >&2; exit 1; }
tar -C "$work" -xf "$orig"
src=$(find "$work" -maxdepth 1 -type d -name 'qemu-*' | head -n1)
# Both fixes, each an edit at a line that must occur exactly once (else the source is not the one
# they were written for: nothing is built and the lab falls back to the stock emulator).
python3 - "$src/target/i386/tcg/system" <<'PY' || { echo "build-lab-qemu: the source is not what the fixes expect; not building" >&2; exit 1; }
import re, sys
system = sys.argv[1]
edits = [
    # 1: once VMRUN delivered the injected interrupt, nothing is pending.
    ("svm_helper.c", r"^( *)(do_interrupt_x86_hardirq\(env, vector, 1\);)$",
     r"\1\2\n\1cs->exception_index = -1;  /* ringvm lab fix: delivered, not pending */"),
    # 2: IGNNE updates on the first vCPU's env come from any vCPU's thread: atomically.
    ("fpu_helper.c", r"^( *)env->hflags2 &= ~HF2_IGNNE_MASK;$",
     r"\1/* ringvm lab fix: any vCPU thread gets here for the first vCPU's env */\n"
     r"\1if (qatomic_read(&env->hflags2) & HF2_IGNNE_MASK) {\n"
     r"\1    qatomic_and(&env->hflags2, ~HF2_IGNNE_MASK);\n"
     r"\1}"),
    ("fpu_helper.c", r"^( *)env->hflags2 \|= HF2_IGNNE_MASK;$",
     r"\1qatomic_or(&env->hflags2, HF2_IGNNE_MASK);  /* ringvm lab fix */"),
]
for name, pattern, replacement in edits:
    path = f"{system}/{name}"
    text = open(path).read()
    text, n = re.subn(pattern, replacement, text, flags=re.M)
    if n != 1:
        sys.exit(f"build-lab-qemu: {path}: {n} matches for {pattern!r}, expected 1")
    open(path, "w").write(text)
PY
# Debian's repacked source has no firmware images; the Debian package's are used at run time.
sed -i 's/^\( *unpack_edk2_blobs = \)bzip2.found()/\1false/' "$src/meson.build"
mkdir "$src/build"
(
  cd "$src/build"
  ../configure --python=/usr/bin/python3 --target-list=x86_64-softmmu --enable-virtfs --disable-download \
    --disable-install-blobs --disable-docs --disable-user --disable-tools --disable-werror --disable-rust \
    --disable-gtk --disable-sdl --disable-vnc --disable-opengl --disable-slirp --disable-curses \
    --disable-spice --disable-libusb --disable-usb-redir --disable-xen --disable-guest-agent \
    --disable-capstone --disable-fdt >"$work/configure.log" 2>&1 ||
    { tail -20 "$work/configure.log" >&2; exit 1; }
  ninja -j "$(nproc)" qemu-system-x86_64 >"$work/build.log" 2>&1 || { tail -20 "$work/build.log" >&2; exit 1; }
)
install -D -m 0755 "$src/build/qemu-system-x86_64" "$bin"
echo "build-lab-qemu: built $bin" >&2
echo "$bin"
