#!/usr/bin/env bash
# Builds the demo initramfs `ringvm run` boots when given no --kernel: busybox-static and an init
# that mounts the usual filesystems and drops to a shell on the console; leaving the shell powers
# the VM off. Usage: mkdemo-initramfs.sh OUTPUT.cpio.gz
set -euo pipefail
out=$1
busybox=${BUSYBOX:-/bin/busybox}
if ! "$busybox" --list >/dev/null 2>&1 || ldd "$busybox" >/dev/null 2>&1; then
  echo "mkdemo-initramfs: $busybox is not a static busybox: install busybox-static (scripts/setup.sh does)" >&2
  exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work"/{bin,sbin,proc,sys,dev,tmp,root,etc,usr/bin,usr/sbin}
cp "$busybox" "$work/bin/busybox"
for applet in $("$busybox" --list); do
  [[ $applet == busybox ]] || ln -sf busybox "$work/bin/$applet"
done
cat > "$work/init" <<'INIT'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
hostname ringvm
echo
echo "ringvm demo: $(uname -sr), $(nproc) CPU(s), $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) MiB"
echo "Type 'exit' (or Ctrl-d) to power off; Ctrl-a x quits ringvm at any time."
export PS1='ringvm:\w# ' HOME=/root PATH=/bin:/sbin:/usr/bin:/usr/sbin
cd /root
setsid cttyhack sh -l
poweroff -f
INIT
chmod +x "$work/init"
(cd "$work" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -9 > "$out.tmp"
mv "$out.tmp" "$out"
