#!/usr/bin/env bash
# Builds a busybox initramfs (gzip'd newc cpio) for the lab's L1 VM and for test guests (L2).
#
#   tests/lab/mkinitramfs.sh --output FILE --init SCRIPT [--kver KVER] [--module NAME]...
#                            [--file SRC=DEST]...
#
#   --output FILE     where to write the .cpio.gz (written atomically: FILE.tmp.<pid>, then renamed)
#   --init SCRIPT     becomes /init (PID 1); run by busybox sh
#   --kver KVER       kernel version whose /lib/modules the modules come from
#                     (default: newest /boot/vmlinuz-* that has /lib/modules)
#   --module NAME     a kernel module to include with its dependencies (`modprobe --show-depends`);
#                     repeatable. The modules land in /modules and /modules/order lists them in load
#                     order (dependencies first, each once); /init loads them, e.g.
#                       while read -r m; do insmod /modules/$m; done </modules/order
#                     Compressed modules (.ko.xz, .ko.zst) are decompressed: busybox insmod needs .ko.
#   --file SRC=DEST   copies host file SRC to DEST inside the image; repeatable
#   --binary PATH     copies a dynamically linked host program to PATH inside the image, with every
#                     shared library `ldd` lists (at their host paths) and the dynamic loader; repeatable
#
#   tests/lab/mkinitramfs.sh --default-kver   prints the default kernel version and exits
#
# The image holds /bin/busybox (must be static: busybox-static) with a symlink for every applet,
# and /lib/lab-guest.sh (tests/lab/lab_guest.sh), which test guests' inits source.
set -euo pipefail

die() {
  echo "mkinitramfs.sh: $*" >&2
  exit 2
}

default_kver() {
  local k
  for k in $(ls /boot/vmlinuz-* 2>/dev/null | sed 's|^/boot/vmlinuz-||' | sort -V -r); do
    if [[ -d /lib/modules/$k/kernel ]]; then echo "$k"; return 0; fi
  done
  die "no /boot/vmlinuz-* with matching /lib/modules: install linux-image-amd64"
}

output="" init="" kver="" modules=() files=() binaries=()
while (($#)); do
  case "$1" in
    --default-kver) default_kver; exit 0 ;;
    --output) output=${2:?--output needs a file}; shift 2 ;;
    --init) init=${2:?--init needs a script}; shift 2 ;;
    --kver) kver=${2:?--kver needs a kernel version}; shift 2 ;;
    --module) modules+=("${2:?--module needs a name}"); shift 2 ;;
    --file) files+=("${2:?--file needs SRC=DEST}"); shift 2 ;;
    --binary) binaries+=("${2:?--binary needs a path}"); shift 2 ;;
    *) die "unknown argument '$1' (see the header of $0)" ;;
  esac
done
[[ -n $output ]] || die "--output is required"
[[ -r $init ]] || die "--init '$init' is not a readable file"

busybox=$(command -v busybox) || die "busybox not found: install busybox-static"
if command -v file >/dev/null && ! file -L "$busybox" | grep -q 'statically linked'; then
  die "$busybox is not statically linked: install busybox-static"
fi
if [[ -z $kver && ${#modules[@]} -gt 0 ]]; then
  kver=$(default_kver) || exit 2
fi

root=$(mktemp -d "${TMPDIR:-/tmp}/ringvm-initramfs.XXXXXX")
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,dev,proc,sys,tmp,run,etc,root,modules,mnt}
cp -L "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
  [[ $applet == busybox ]] || ln -s busybox "$root/bin/$applet"
done
install -m 755 "$init" "$root/init"
# Every test guest's /init sources this (mounts, module loading).
mkdir -p "$root/lib"
install -m 644 "$(dirname "$0")/lab_guest.sh" "$root/lib/lab-guest.sh"
: >"$root/modules/order"

for m in "${modules[@]}"; do
  # Dependencies come first, the module itself last; built-in modules print "builtin ...".
  deps=$(modprobe -S "$kver" --show-depends "$m" 2>&1) || die "module '$m' not found for kernel $kver: $deps"
  while read -r verb path _; do
    [[ $verb == insmod ]] || continue
    name=$(basename "$path")
    name=${name%.xz}
    name=${name%.zst}
    [[ -e $root/modules/$name ]] && continue
    case "$path" in
      *.ko.xz) xz -dc "$path" >"$root/modules/$name" ;;
      *.ko.zst) zstd -qdc "$path" >"$root/modules/$name" ;;
      *) cp "$path" "$root/modules/$name" ;;
    esac
    echo "$name" >>"$root/modules/order"
  done <<<"$deps"
done

for f in "${files[@]}"; do
  src=${f%%=*}
  dest=${f#*=}
  [[ $f == *=* && -n $src && $dest == /* ]] || die "--file '$f' must be SRC=/absolute/DEST"
  [[ -r $src ]] || die "--file source '$src' is not readable"
  mkdir -p "$root$(dirname "$dest")"
  cp -L "$src" "$root$dest"
done

for b in "${binaries[@]}"; do
  [[ $b == /* && -x $b ]] || die "--binary '$b' must be an absolute path to an executable"
  libs=$(ldd "$b") || die "ldd '$b' failed (is it dynamically linked?)"
  for f in "$b" $(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\/.*ld-linux/ { print $1 }' <<<"$libs"); do
    mkdir -p "$root$(dirname "$f")"
    cp -L "$f" "$root$f"
  done
done

mkdir -p "$(dirname "$output")"
(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 | gzip -1) >"$output.tmp.$$"
mv -f "$output.tmp.$$" "$output"
