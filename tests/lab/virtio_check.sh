#!/usr/bin/env bash
# Asserts one aspect of one virtio run of the lab session (tests/lab/virtio_lab.sh) from its log,
# console and result, and prints them first.
#
#   virtio_check.sh RESULTS RUN ASPECT
#
#   virtio_main     poweroff  ringvm exited 0, the guest's init ran to the end
#                   ext4      the guest mounted the ext4 disk, read known.bin with the host's
#                             sha256, wrote written.txt; the host's debugfs reads it back intact
#                             and e2fsck -fn finds the filesystem clean
#                   readonly  readonly=on: /sys/block/vdX/ro is 1, mount -o ro works and reads the
#                             file, file writes and a raw O_DIRECT write fail, the image is unchanged
#                   hvc0      a line the guest wrote only to /dev/hvc0 is in the console file
#                   rng       /dev/hwrng gave 64 bytes (not all zero) and its backend is virtio_rng
#   virtio_durable  sigkill   ringvm SIGKILLed right after the guest's fsync'd write: the data is in
#                             the image
#   virtio_qcow2    backing   the guest read the raw base through the qcow2 overlay and wrote to it;
#                             ringvm exited 0, qemu-img check is clean, qemu-img compare matches
#                             the expected bytes, the base file is unchanged
set -uo pipefail
[[ $# -eq 3 ]] || { echo "usage: $0 RESULTS RUN ASPECT" >&2; exit 2; }
export LAB_RESULTS=$1
run=$2 aspect=$3
source "$(dirname "$0")/lab_lib.sh"
lab_check_begin "$run"

m() { lab_marker "$run" "$1"; }
is_sha() { [[ $1 =~ ^[0-9a-f]{64}$ ]]; }
expect "the run's host side completed (status 0); got $status" test "$status" = 0

case $run:$aspect in
  virtio_main:poweroff | virtio_qcow2:backing)
    expect "ringvm exited 0 (guest powered off); got '$(m HOST-VMM-STATUS)'" same "$(m HOST-VMM-STATUS)" 0
    expect "the guest's init loaded its modules and ran to the end" \
      eval 'lab_console "$run" | grep -q "RINGVM-LAB-MARKER ok" && lab_console "$run" | grep -q "RINGVM-LAB-MARKER done"'
    ;;&
  virtio_main:ext4)
    expect "guest mounted the rw disk ($(m RW-DISK)): '$(m RW-MOUNT)'" same "$(m RW-MOUNT)" ok
    expect "guest's sha256 of known.bin '$(m RW-KNOWN-SHA256)' equals the host's '$(m HOST-KNOWN-SHA256)'" \
      same "$(m RW-KNOWN-SHA256)" "$(m HOST-KNOWN-SHA256)"
    expect "guest unmounted after sync: '$(m RW-UMOUNT)'" same "$(m RW-UMOUNT)" ok
    expect "debugfs reads written.txt from the image intact ('$(m HOST-WRITTEN-SHA256)')" \
      same "$(m HOST-WRITTEN-SHA256)" "$(m HOST-EXPECTED-WRITTEN-SHA256)"
    expect "the guest's sha256 of written.txt agrees" same "$(m RW-WRITTEN-SHA256)" "$(m HOST-EXPECTED-WRITTEN-SHA256)"
    expect "e2fsck -fn finds the image clean (status '$(m HOST-FSCK)')" same "$(m HOST-FSCK)" 0
    ;;
  virtio_main:readonly)
    expect "/sys/block/$(m RO-DISK)/ro is 1; got '$(m RO-SYSFS)'" same "$(m RO-SYSFS)" 1
    expect "mount -o ro works: '$(m RO-MOUNT-RO)'" same "$(m RO-MOUNT-RO)" ok
    expect "the read-only disk's file reads back intact" same "$(m RO-KNOWN-SHA256)" "$(m HOST-RO-KNOWN-SHA256)"
    expect "a file write on the ro mount fails: '$(m RO-FILE-WRITE)'" same "$(m RO-FILE-WRITE)" failed
    expect "mount -o rw gives no writable filesystem ('$(m RO-MOUNT-RW)'): write '$(m RO-RW-FILE-WRITE)'" \
      same "$(m RO-RW-FILE-WRITE)" failed
    expect "a raw O_DIRECT write to the device fails: '$(m RO-RAW-WRITE)'" same "$(m RO-RAW-WRITE)" failed
    expect "the read-only image is unchanged on the host" same "$(m HOST-RO-UNCHANGED)" yes
    ;;
  virtio_main:hvc0)
    expect "the command used --console-device virtio and console=hvc0" \
      grep -q -- '--console-device virtio.*console=hvc0' "$LAB_RESULTS/$run.log"
    expect "the line written to /dev/hvc0 is in the console: '$(m HVC0)'" same "$(m HVC0)" hello-from-hvc0
    ;;
  virtio_main:rng)
    expect "hw_random's current backend is virtio: '$(m RNG-CURRENT)'" grep -q '^virtio_rng' <<<"$(m RNG-CURRENT)"
    expect "head -c 64 /dev/hwrng gave 64 bytes; got '$(m RNG-BYTES)'" same "$(m RNG-BYTES)" 64
    hex=$(m RNG-HEX)
    expect "the bytes are 128 hex digits, not all zero: '$hex'" \
      eval '[[ $hex =~ ^[0-9a-f]{128}$ && $hex =~ [1-9a-f] ]]'
    ;;
  virtio_durable:sigkill)
    expect "the guest's fsync'd write succeeded: '$(m DURABLE-WRITTEN)'" same "$(m DURABLE-WRITTEN)" ok
    expect "the host saw the marker and killed ringvm right away" same "$(m HOST-KILLED-AFTER-MARKER)" yes
    expect "ringvm died of SIGKILL (status 137); got '$(m HOST-VMM-STATUS)'" same "$(m HOST-VMM-STATUS)" 137
    expect "the guest wrote the expected bytes" same "$(m DURABLE-SHA256)" "$(m HOST-EXPECTED-DURABLE-SHA256)"
    expect "the image holds them after the kill ('$(m HOST-DURABLE-SHA256)')" \
      same "$(m HOST-DURABLE-SHA256)" "$(m HOST-EXPECTED-DURABLE-SHA256)"
    ;;
  virtio_qcow2:backing)
    expect "the overlay was made by ringvm img create" same "$(m HOST-QCOW2-CREATED-BY)" ringvm
    expect "the disk has the base's 64 MiB (131072 sectors); got '$(m QCOW2-SECTORS)'" same "$(m QCOW2-SECTORS)" 131072
    expect "the guest read the base's bytes through the overlay" \
      eval 'is_sha "$(m HOST-BASE-SHA256)" && same "$(m QCOW2-BASE-SHA256)" "$(m HOST-BASE-SHA256)"'
    expect "the guest's writes succeeded: '$(m QCOW2-WRITE)'" same "$(m QCOW2-WRITE)" ok-ok
    expect "the guest read its partial-cluster write back: '$(m QCOW2-READBACK)'" same "$(m QCOW2-READBACK)" ok
    expect "qemu-img check is clean (status '$(m HOST-QCOW2-CHECK)')" same "$(m HOST-QCOW2-CHECK)" 0
    expect "qemu-img compare: overlay equals base + the guest's writes (status '$(m HOST-QCOW2-COMPARE)')" \
      same "$(m HOST-QCOW2-COMPARE)" 0
    expect "the raw base file is unchanged" same "$(m HOST-BASE-UNCHANGED)" yes
    ;;
  virtio_main:poweroff) ;;
  *)
    echo "unknown run/aspect '$run/$aspect'" >&2
    exit 2
    ;;
esac
lab_check_end "$run/$aspect"
