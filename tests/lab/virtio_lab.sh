#!/usr/bin/env bash
# The lab's virtio checks (issue 4's ext4/read-only/hvc0/rng/durability tests, issue 5's qcow2
# test), run inside L1 by tests/lab/lab_suite.sh. Three L2 boots of Debian's stock kernel with the
# guest init tests/lab/virtio_init.sh; each leaves RESULTS/<run>.log (the host side's markers and
# the VMM's output), RESULTS/<run>.console (the guest console) and RESULTS/<run>.result, which
# tests/lab/virtio_check.sh asserts, one CTest test per aspect.
#
#   virtio_lab.sh --initramfs FILE        builds the guest's initramfs (on the host: under L1's
#                                         TCG this takes minutes; lab_session.sh does it)
#   virtio_lab.sh RESULTS RINGVM          all three runs (inside L1); uses
#                                         RESULTS/virtio-guest.cpio.gz, built there if missing
#   virtio_lab.sh --run RUN WORK RINGVM   one run (what lab_run bounds and logs)
#
#   virtio_main     --disk rw ext4 image, --disk read-only ext4 image, --rng, --console-device
#                   virtio; host then reads the file the guest wrote with debugfs, runs e2fsck
#   virtio_durable  the guest writes 1 MiB with conv=fsync and prints a marker; the host SIGKILLs
#                   ringvm as soon as the marker is in the console file, then reads the image
#   virtio_qcow2    a qcow2 overlay (made by `ringvm img create -b base.raw -F raw`) on a raw
#                   base; host then runs qemu-img check and qemu-img compare against the expected
#                   bytes, and checks the base is unchanged
#
# Host-side results are printed as "RINGVM-LAB-HOST-<KEY> value" lines (into the run's log).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export LAB_CPUS=${LAB_CPUS:-2} LAB_MEMORY_MIB=${LAB_MEMORY_MIB:-512}
cmdline_base="console=ttyS0 panic=-1"

sha() { sha256sum "$1" | cut -d' ' -f1; }
# Deterministic patterns: the same bytes the guest makes with busybox seq.
pattern() { seq "$1" "$2" | head -c "$3"; }

# Sets `cmd`: ringvm booting the test initramfs with ringvm_vtest=MODE plus EXTRA on the command
# line, console to RESULTS/RUN.console; more ringvm options follow. Prints the command.
vmm_cmd() {
  local run=$1 mode=$2 extra=$3
  shift 3
  cmd=("$ringvm" run --kernel "$LAB_KERNEL" --initrd "$initrd" --cpus "$LAB_CPUS"
    --memory "${LAB_MEMORY_MIB}M" --console "file:$results/$run.console" "$@"
    --cmdline "$cmdline_base$extra ringvm_vtest=$mode")
  { printf '+'; printf ' %q' "${cmd[@]}"; echo; }
}

run_main() {
  mkdir -p src-rw/dir src-ro
  pattern 1 150000 1048576 >src-rw/dir/known.bin
  cp src-rw/dir/known.bin src-rw/known.bin
  pattern 7 90000 65536 >src-ro/known.bin
  echo "RINGVM-LAB-HOST-KNOWN-SHA256 $(sha src-rw/known.bin)"
  echo "RINGVM-LAB-HOST-RO-KNOWN-SHA256 $(sha src-ro/known.bin)"
  mkfs.ext4 -q -F -d src-rw rw.img 64M || return 1
  mkfs.ext4 -q -F -d src-ro ro.img 16M || return 1
  local ro_before status=0
  ro_before=$(sha ro.img)
  vmm_cmd virtio_main main " console=hvc0" --disk path=rw.img,serial=rw0 \
    --disk path=ro.img,readonly=on,serial=ro0 --rng --console-device virtio
  timeout -k 10 "$secs" "${cmd[@]}" </dev/null || status=$?
  echo "RINGVM-LAB-HOST-VMM-STATUS $status"
  debugfs -R 'cat /written.txt' rw.img >written.txt 2>debugfs.err
  echo "RINGVM-LAB-HOST-WRITTEN-SHA256 $(sha written.txt)"
  echo "RINGVM-LAB-HOST-EXPECTED-WRITTEN-SHA256 $(seq 1 20000 | sha256sum | cut -d' ' -f1)"
  local fsck=0
  e2fsck -fn rw.img || fsck=$?
  echo "RINGVM-LAB-HOST-FSCK $fsck"
  [[ $(sha ro.img) == "$ro_before" ]] && echo "RINGVM-LAB-HOST-RO-UNCHANGED yes" || echo "RINGVM-LAB-HOST-RO-UNCHANGED no"
}

run_durable() {
  truncate -s 64M dur.img
  local console=$results/virtio_durable.console pid status=0 seen=no
  : >"$console"
  vmm_cmd virtio_durable durable "" --disk path=dur.img,serial=dur0
  "${cmd[@]}" </dev/null &
  pid=$!
  local deadline=$((SECONDS + secs))
  while ((SECONDS < deadline)) && kill -0 "$pid" 2>/dev/null; do
    if grep -q 'RINGVM-LAB-DURABLE-WRITTEN' "$console"; then
      seen=yes
      break
    fi
    sleep 0.05
  done
  # Right away: whatever ringvm had not written to the file by now is lost.
  kill -KILL "$pid" 2>/dev/null
  wait "$pid" || status=$?
  echo "RINGVM-LAB-HOST-KILLED-AFTER-MARKER $seen"
  echo "RINGVM-LAB-HOST-VMM-STATUS $status"
  echo "RINGVM-LAB-HOST-DURABLE-SHA256 $(dd if=dur.img bs=1M skip=1 count=1 2>/dev/null | sha256sum | cut -d' ' -f1)"
  echo "RINGVM-LAB-HOST-EXPECTED-DURABLE-SHA256 $(pattern 1 200000 1048576 | sha256sum | cut -d' ' -f1)"
}

run_qcow2() {
  qemu-img create -q -f raw base.raw 64M || return 1
  pattern 1 300000 1048576 >a.bin
  dd if=a.bin of=base.raw conv=notrunc status=none || return 1
  echo "RINGVM-LAB-HOST-BASE-SHA256 $(sha a.bin)"
  local base_before status=0
  base_before=$(sha base.raw)
  # ringvm's own img create makes the overlay; qemu-img judges the result.
  "$ringvm" img create -q -f qcow2 -b base.raw -F raw top.qcow2 || return 1
  echo "RINGVM-LAB-HOST-QCOW2-CREATED-BY ringvm"
  vmm_cmd virtio_qcow2 qcow2 "" --disk path=top.qcow2,format=qcow2,serial=qc0
  timeout -k 10 "$secs" "${cmd[@]}" </dev/null || status=$?
  echo "RINGVM-LAB-HOST-VMM-STATUS $status"
  local check=0 compare=0
  qemu-img check -f qcow2 top.qcow2 || check=$?
  echo "RINGVM-LAB-HOST-QCOW2-CHECK $check"
  cp base.raw expect.raw
  pattern 500000 700000 1048576 | dd of=expect.raw bs=1M seek=2 conv=notrunc iflag=fullblock status=none
  pattern 900000 901000 4096 | dd of=expect.raw bs=512 seek=129 conv=notrunc iflag=fullblock status=none
  qemu-img compare -f qcow2 -F raw top.qcow2 expect.raw || compare=$?
  echo "RINGVM-LAB-HOST-QCOW2-COMPARE $compare"
  [[ $(sha base.raw) == "$base_before" ]] && echo "RINGVM-LAB-HOST-BASE-UNCHANGED yes" || echo "RINGVM-LAB-HOST-BASE-UNCHANGED no"
}

build_initramfs() {
  "$here/mkinitramfs.sh" --output "$1" --init "$here/virtio_init.sh" --module virtio_pci --module virtio_blk \
    --module virtio_console --module virtio_rng --module ext4
}

if [[ ${1:-} == --initramfs ]]; then
  [[ $# -eq 2 ]] || { echo "usage: $0 --initramfs FILE" >&2; exit 2; }
  build_initramfs "$2"
  exit
fi

if [[ ${1:-} == --run ]]; then
  [[ $# -eq 4 ]] || { echo "usage: $0 --run RUN WORK RINGVM" >&2; exit 2; }
  run=$2 work=$3 ringvm=$4
  results=$LAB_RESULTS initrd=$results/virtio-guest.cpio.gz secs=${RINGVM_LAB_RUN_TIMEOUT:-480}
  rm -rf "$work"  # a rerun starts clean (FIFOs, pid files)
  mkdir -p "$work" && cd "$work" || exit 2
  "run_${run#virtio_}"
  echo "virtio_lab: $run finished"
  exit 0
fi

[[ $# -eq 2 ]] || { echo "usage: $0 RESULTS RINGVM | --run RUN WORK RINGVM" >&2; exit 2; }
[[ ${RINGVM_LAB:-} == 1 ]] || { echo "$0 runs inside the lab (tests/lab/lab_suite.sh)" >&2; exit 2; }
export LAB_RESULTS=$1
ringvm=$2
source "$here/lab_lib.sh"
export LAB_KERNEL=${LAB_KERNEL:-/boot/vmlinuz-$RINGVM_LAB_KVER}
secs=${RINGVM_LAB_RUN_TIMEOUT:-480}
if [[ ! -s $LAB_RESULTS/virtio-guest.cpio.gz ]] && ! build_initramfs "$LAB_RESULTS/virtio-guest.cpio.gz"; then
  echo "virtio_lab: building the guest initramfs failed: no virtio run" >&2
  exit 1
fi
# Images live in L1's tmpfs (fast, and gone with L1); logs on the shared results directory.
work=$(mktemp -d /tmp/virtio-lab.XXXXXX)
rm -f "$LAB_RESULTS"/virtio_*.skipped
for run in virtio_main virtio_qcow2 virtio_durable; do
  # The SIGKILL durability run once took L1's kernel down ("stack guard page was hit"): that is
  # the lab emulator's L1 crash (docs/lab.md), which lab_session.sh now survives by resuming in a
  # fresh L1, so the run is on by default; RINGVM_LAB_DURABLE=0 skips it.
  if [[ $run == virtio_durable && ${RINGVM_LAB_DURABLE:-1} == 0 ]]; then
    echo "RINGVM_LAB_DURABLE is 0: the SIGKILL durability run was switched off" >"$LAB_RESULTS/$run.skipped"
    continue
  fi
  # The run's own timeouts bound each VMM; this bound covers the host-side steps around it.
  lab_run "$run" "$((secs + 120))" "$here/virtio_lab.sh" --run "$run" "$work/$run" "$ringvm"
done
rm -rf "$work"
