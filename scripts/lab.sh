#!/usr/bin/env bash
# Runs a shell command inside the hardware-virtualization lab (docs/lab.md):
# an L1 Linux VM under QEMU's TCG that emulates AMD-V with nested paging, so `kvm_amd` loads and
# /dev/kvm has real hardware-assisted semantics. L1 mounts the host's root read-only over 9p and
# runs COMMAND chrooted into it, in the host's current directory, so host binaries run unchanged.
#
#   scripts/lab.sh [--timeout SECS] [--share DIR] [--memory SIZE] [--cpus N] -- COMMAND...
#
# COMMAND's stdout and stderr become this script's stdout and stderr, and its exit status becomes
# this script's. Exit statuses of the harness itself:
#   122  L1 stopped running (no heartbeat for RINGVM_LAB_HANG_SECS, default 300): QEMU killed
#   123  L1's kernel panicked before COMMAND reported an exit status (its oops is printed)
#   124  the lab run exceeded --timeout (QEMU was killed)
#   125  the lab failed: QEMU or L1 died before COMMAND reported an exit status
#   126  usage error, or a missing prerequisite (kernel, modules, busybox, QEMU)
#
# Inside L1 COMMAND sees: /dev/kvm (kvm_amd), /dev/net/tun, /dev/vhost-net, /dev/vhost-vsock, a
# tmpfs on /tmp, /run, /var/tmp and /dev/shm, tracefs on /sys/kernel/tracing, and DIR (read-write,
# at the same absolute path as on the host) for inputs and results. Everything else is read-only.
# Environment given to COMMAND: RINGVM_LAB=1, RINGVM_LAB_SHARE=DIR, RINGVM_LAB_KVER=<L1 kernel>,
# and every other RINGVM_LAB_* variable set on the host.
#
# Environment variables read here:
#   RINGVM_LAB_KVER     kernel version for L1 (default: newest /boot/vmlinuz-* with /lib/modules)
#   RINGVM_LAB_MEMORY   L1 memory, QEMU syntax (default 3072M; --memory overrides)
#   RINGVM_LAB_CPUS     L1 vCPUs (default 2; --cpus overrides)
#   RINGVM_LAB_QEMU     QEMU binary for L1 (default: scripts/build-lab-qemu.sh's build with the
#                       lab's fix when it exists, else qemu-system-x86_64)
#   RINGVM_LAB_CONSOLE  file to write L1's serial console to (default: stderr, prefixed "L1| ")
#   RINGVM_LAB_CACHE    cache directory for L1's initramfs
#                       (default ${XDG_CACHE_HOME:-$HOME/.cache}/ringvm-lab)
#   RINGVM_LAB_MODULES  extra kernel modules to load in L1, space separated (e.g. "vfio_pci nvme")
#   RINGVM_LAB_ACCEL    QEMU -accel value for L1 (default tcg; e.g. tcg,thread=single to rule out
#                       multi-threaded TCG when diagnosing)
#   RINGVM_LAB_L1_APPEND  extra L1 kernel command-line words (e.g. ftrace_dump_on_oops)
#   RINGVM_LAB_HANG_SECS  how stale L1's heartbeat may get before L1 counts as hung (default 300)
set -euo pipefail

die() {
  echo "lab.sh: $*" >&2
  exit 126
}

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 126
}

timeout_secs=1200
share=""
memory=${RINGVM_LAB_MEMORY:-3072M}
cpus=${RINGVM_LAB_CPUS:-2}
while (($#)); do
  case "$1" in
    --timeout) timeout_secs=${2:?--timeout needs seconds}; shift 2 ;;
    --share) share=${2:?--share needs a directory}; shift 2 ;;
    --memory) memory=${2:?--memory needs a size}; shift 2 ;;
    --cpus) cpus=${2:?--cpus needs a count}; shift 2 ;;
    -h | --help) usage ;;
    --) shift; break ;;
    *) echo "lab.sh: unknown option '$1' (the command goes after --)" >&2; usage ;;
  esac
done
(($#)) || { echo "lab.sh: no COMMAND given after --" >&2; usage; }
[[ $timeout_secs =~ ^[0-9]+$ && $timeout_secs -gt 0 ]] || die "--timeout must be a positive number of seconds, got '$timeout_secs'"
[[ $cpus =~ ^[0-9]+$ && $cpus -gt 0 ]] || die "--cpus must be a positive integer, got '$cpus'"
command_line="$*"

# One lab at a time: two L1s on a 2-core machine starve each other (benchmarks measure nothing,
# guests time out). A second lab.sh waits for the first; the lock goes with the process.
lock=${RINGVM_LAB_LOCK:-${TMPDIR:-/tmp}/ringvm-lab.lock}
exec 9>>"$lock" || die "cannot open the lab lock $lock"
if ! flock -n 9; then
  echo "lab.sh: another lab is running (lock $lock); waiting for it to finish" >&2
  flock 9
fi

# The L1 emulator: the build with the lab's fix (scripts/build-lab-qemu.sh, docs/lab.md) when
# scripts/setup.sh could make one, with the Debian package's firmware; else Debian's own.
qemu_args=()
if [[ -n ${RINGVM_LAB_QEMU:-} ]]; then
  qemu=$RINGVM_LAB_QEMU
elif qemu=$("$(dirname "$0")/build-lab-qemu.sh" --built 2>/dev/null); then
  qemu_args=(-L /usr/share/qemu -L /usr/share/seabios)
else
  qemu=qemu-system-x86_64
  echo "lab.sh: using Debian's QEMU for L1, without the lab's fix (scripts/build-lab-qemu.sh could not build it); expect L1 panics (docs/lab.md)" >&2
fi
command -v "$qemu" >/dev/null || die "$qemu not found: install qemu-system-x86 (scripts/setup.sh)"
busybox=$(command -v busybox) || die "busybox not found: install busybox-static"
command -v modprobe >/dev/null || die "modprobe not found: install kmod"
mkinitramfs=$(dirname "$0")/../tests/lab/mkinitramfs.sh
[[ -x $mkinitramfs ]] || die "$mkinitramfs is missing"
kver=${RINGVM_LAB_KVER:-$("$mkinitramfs" --default-kver)} || exit 126
kernel=/boot/vmlinuz-$kver
[[ -r $kernel ]] || die "$kernel is missing or unreadable (RINGVM_LAB_KVER=$kver)"

# ---------------------------------------------------------------------------------------------
# L1's /init. Runs as PID 1 in L1's initramfs (busybox sh).
read -r -d '' L1_INIT <<'EOF' || true
#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
fail() {
  echo "lab-l1: FAILED: $*"
  poweroff -f
}
while read -r m; do
  insmod "/modules/$m" || echo "lab-l1: insmod $m failed"
done </modules/order
[ -c /dev/kvm ] || echo "lab-l1: warning: /dev/kvm missing after insmod kvm_amd"
mkdir -p /host /share
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000 hostroot /host || fail "mount hostroot"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 labshare /share || fail "mount labshare"
. /share/.ringvm-lab/conf || fail "read lab conf"
mount -t proc proc /host/proc
mount -t sysfs sys /host/sys
mount -t tracefs tracefs /host/sys/kernel/tracing 2>/dev/null
mount -t devtmpfs dev /host/dev
mkdir -p /host/dev/pts /host/dev/shm
# devtmpfs lacks what udev adds; bash's process substitution needs /dev/fd.
ln -sf /proc/self/fd /host/dev/fd
ln -sf /proc/self/fd/0 /host/dev/stdin
ln -sf /proc/self/fd/1 /host/dev/stdout
ln -sf /proc/self/fd/2 /host/dev/stderr
mount -t devpts -o newinstance,ptmxmode=0666 devpts /host/dev/pts
mount -t tmpfs -o mode=1777 tmpfs /host/dev/shm
# A working directory under the host's /tmp (a CI checkout may live there) must stay visible
# through L1's tmpfs: keep its top-level directory bound over it.
keep=
case "$LAB_CWD" in /tmp/?*) keep=/tmp/$(echo "${LAB_CWD#/tmp/}" | cut -d/ -f1) ;; esac
if [ -n "$keep" ]; then mkdir -p /keep && mount --bind "/host$keep" /keep; fi
mount -t tmpfs -o mode=1777 tmpfs /host/tmp
if [ -n "$keep" ]; then mkdir -p "/host$keep" && mount --bind /keep "/host$keep" || fail "bind $keep"; fi
mount -t tmpfs -o mode=0755 tmpfs /host/run
mount -t tmpfs -o mode=1777 tmpfs /host/var/tmp 2>/dev/null
mkdir -p "/host$LAB_SHARE" 2>/dev/null
mount --bind /share "/host$LAB_SHARE" || fail "bind the share at $LAB_SHARE"
ip link set lo up 2>/dev/null
hostname ringvm-lab
# A heartbeat for the host (lab.sh): L1's uptime every 10 s. If it stops, L1 itself has stopped
# (its own timers no longer fire) and lab.sh ends the run as hung instead of waiting it out.
( while :; do cut -d' ' -f1 /proc/uptime >/share/.ringvm-lab/heartbeat; sleep 10; done ) &
echo "lab-l1: ready ($(cut -d' ' -f1 /proc/uptime)s), running the command"
chroot /host /bin/sh "$LAB_SHARE/.ringvm-lab/run.sh"
echo "lab-l1: command finished ($(cut -d' ' -f1 /proc/uptime)s)"
sync
umount "/host$LAB_SHARE" /share 2>/dev/null
poweroff -f
EOF

# RINGVM_LAB_MODULES is a space-separated list: split on purpose.
# shellcheck disable=SC2206
modules=(kvm_amd virtio_pci 9pnet_virtio 9p tun veth bridge vhost_net vhost_vsock ${RINGVM_LAB_MODULES:-})
cache_dir=${RINGVM_LAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ringvm-lab}
key=$( (cat "$0" "$mkinitramfs"; echo "${modules[*]}"; sha256sum "$busybox") | sha256sum | cut -c1-16)
initramfs=$cache_dir/l1-$kver-$key.cpio.gz

build_initramfs() {
  local init_file args=() m
  init_file=$(mktemp "${TMPDIR:-/tmp}/ringvm-lab-init.XXXXXX")
  printf '%s\n' "$L1_INIT" >"$init_file"
  for m in "${modules[@]}"; do args+=(--module "$m"); done
  mkdir -p "$cache_dir"
  "$mkinitramfs" --output "$initramfs" --init "$init_file" --kver "$kver" "${args[@]}" ||
    { rm -f "$init_file"; die "building L1's initramfs failed"; }
  rm -f "$init_file"
  echo "lab.sh: built $initramfs" >&2
}
[[ -s $initramfs ]] || build_initramfs

# ---------------------------------------------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/ringvm-lab.XXXXXX")
qemu_pid=""
tail_pids=()
cleanup() {
  [[ -n $qemu_pid ]] && kill -KILL "$qemu_pid" 2>/dev/null
  for p in "${tail_pids[@]}"; do kill "$p" 2>/dev/null; done
  rm -rf "$work"
  [[ -n ${ctl:-} ]] && rm -rf "$ctl"
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ -z $share ]]; then
  share=$work/share
fi
mkdir -p "$share"
share=$(cd "$share" && pwd -P)
[[ $share != *[[:space:]\'\"\\]* ]] || die "the share path '$share' must not contain spaces or quotes"
ctl=$share/.ringvm-lab
rm -rf "$ctl"
mkdir -p "$ctl"
: >"$ctl/stdout"
: >"$ctl/stderr"
cwd=$(pwd -P)
printf 'LAB_SHARE=%q\nLAB_CWD=%q\n' "$share" "$cwd" >"$ctl/conf"
printf '%s\n' "$command_line" >"$ctl/command"
# The host's other RINGVM_LAB_* settings (e.g. the opt-in runs RINGVM_LAB_NET, RINGVM_LAB_DURABLE,
# RINGVM_LAB_KVM_TESTS) reach COMMAND in L1 too.
forward_lab_env() {
  local v
  for v in $(compgen -e); do
    case $v in
      RINGVM_LAB_SHARE | RINGVM_LAB_KVER) ;;
      RINGVM_LAB_*) printf 'export %s=%q\n' "$v" "${!v}" ;;
    esac
  done
}
cat >"$ctl/run.sh" <<EOF
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/tmp TERM=dumb LANG=C.UTF-8 TMPDIR=/tmp
export RINGVM_LAB=1 RINGVM_LAB_SHARE=$(printf '%q' "$share") RINGVM_LAB_KVER=$(printf '%q' "$kver")
$(forward_lab_env)
cd $(printf '%q' "$cwd") || { echo 125 >$(printf '%q' "$ctl")/rc; exit; }
/bin/bash $(printf '%q' "$ctl")/command </dev/null >$(printf '%q' "$ctl")/stdout 2>$(printf '%q' "$ctl")/stderr
echo \$? >$(printf '%q' "$ctl")/rc
EOF

console=$work/console.log
# No terminal, no stdin: the serial port writes to a file (with stdin closed, `-serial stdio` fails).
"$qemu" "${qemu_args[@]}" -M q35 -accel "${RINGVM_LAB_ACCEL:-tcg}" -cpu EPYC,+svm,+npt -smp "$cpus" -m "$memory" \
  -nodefaults -display none -no-user-config -no-reboot \
  -chardev file,id=con0,path="$console" -serial chardev:con0 \
  -kernel "$kernel" -initrd "$initramfs" \
  -append "console=ttyS0 panic=-1 quiet ${RINGVM_LAB_L1_APPEND:-}" \
  -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
  -virtfs local,path="$share",mount_tag=labshare,security_model=none,multidevs=remap \
  </dev/null >"$work/qemu.log" 2>&1 &
qemu_pid=$!

: >"$console"
tail -n +1 -F -s 0.5 --pid="$qemu_pid" "$ctl/stdout" 2>/dev/null &
tail_pids+=($!)
tail -n +1 -F -s 0.5 --pid="$qemu_pid" "$ctl/stderr" >&2 2>/dev/null &
tail_pids+=($!)
if [[ -n ${RINGVM_LAB_CONSOLE:-} ]]; then
  tail -n +1 -F -s 0.5 --pid="$qemu_pid" "$console" 2>/dev/null >"$RINGVM_LAB_CONSOLE" &
else
  tail -n +1 -F -s 0.5 --pid="$qemu_pid" "$console" 2>/dev/null | sed -u 's/^/L1| /' >&2 &
fi
tail_pids+=($!)

deadline=$((SECONDS + timeout_secs))
hang_secs=${RINGVM_LAB_HANG_SECS:-300}
timed_out=0
hung=0
while kill -0 "$qemu_pid" 2>/dev/null; do
  if ((SECONDS >= deadline)); then
    timed_out=1
    kill -KILL "$qemu_pid" 2>/dev/null || true
    break
  fi
  # L1 writes its heartbeat every 10 s once it is up; a stale one means L1 stopped running.
  if [[ -e $ctl/heartbeat && ! -s $ctl/rc ]] &&
    (($(date +%s) - $(stat -c %Y "$ctl/heartbeat") > hang_secs)); then
    hung=1
    kill -KILL "$qemu_pid" 2>/dev/null || true
    break
  fi
  sleep 1
done
qemu_status=0
{ wait "$qemu_pid"; } 2>/dev/null || qemu_status=$?  # no "Killed" job message
qemu_pid=""
for p in "${tail_pids[@]}"; do wait "$p" 2>/dev/null || true; done
tail_pids=()

if ((hung)); then
  echo "lab.sh: L1 HUNG: no heartbeat from L1 for over ${hang_secs}s (L1's uptime stopped at" \
    "$(cat "$ctl/heartbeat")s): killed QEMU; L1's last console lines:" >&2
  tail -n 15 "$console" | sed 's/^/L1| /' >&2
  exit 122
fi
if ((timed_out)); then
  echo "lab.sh: TIMEOUT after ${timeout_secs}s: killed QEMU (see L1's console above)" >&2
  exit 124
fi
if [[ ! -s $ctl/rc ]] && grep -q "Kernel panic - not syncing" "$console"; then
  # L1's own kernel died (docs/lab.md: under QEMU's TCG emulation of AMD-V, L1 sometimes takes an
  # interrupt right after VMRUN with the L2 guest's GS base loaded, whichever VMM runs L2). Print
  # the oops once, without registers, repeated frames or timestamps.
  echo "lab.sh: L1 CRASHED: L1's kernel panicked before the command finished; its oops:" >&2
  sed -n '/BUG:\|Oops\|general protection\|Kernel panic/,$p' "$console" |
    sed 's/^\[ *[0-9.]*\] //' | grep -v '^R\(AX\|BX\|CX\|DX\|SI\|DI\|BP\|SP\|08\|09\|1[0-5]\):\|^Code:\|^FS:\|^CS:' |
    awk '!seen[$0]++' | head -n 40 | sed 's/^/L1| /' >&2
  exit 123
fi
if [[ ! -s $ctl/rc ]]; then
  echo "lab.sh: LAB FAILURE: QEMU exited with status $qemu_status before the command reported its status" >&2
  sed 's/^/qemu| /' "$work/qemu.log" | grep -v "doesn't support requested feature" >&2 || true
  exit 125
fi
exit "$(cat "$ctl/rc")"
