#!/bin/sh
# /init of the lab's virtio test guest (L2), driven by tests/lab/virtio_lab.sh. Loads the modules
# in /modules/order (virtio_pci, virtio_blk, virtio_console, virtio_rng, ext4), runs the scenario
# the kernel command line names with `ringvm_vtest=MODE`, prints "RINGVM-LAB-<KEY> <value>" markers
# that tests/lab/virtio_check.sh asserts, and powers off.
#
#   main     vdX with serial rw0: an ext4 image; check /known.bin's sha256, write /written.txt
#            vdX with serial ro0: a read-only ext4 image; mount -o ro works, every write fails
#            /dev/hwrng: 64 bytes from virtio-rng; /dev/hvc0: a marker written only there
#   durable  write 1 MiB to the raw disk at 1 MiB with conv=fsync, say so, then wait to be killed
#   qcow2    read the backing file's first MiB through the qcow2 overlay, write 1 MiB at 2 MiB and
#            4 KiB at byte 66048 (inside a cluster the backing file holds), fsync, power off
#
# The data patterns are `seq` output, so the host side computes the same bytes with GNU seq.
export PATH=/bin
. /lib/lab-guest.sh
echo "RINGVM-LAB-UPTIME $(cut -d' ' -f1 /proc/uptime)"
lab_load_modules
echo "RINGVM-LAB-MARKER ok"

mode=none
for arg in $(cat /proc/cmdline); do
  case $arg in ringvm_vtest=*) mode=${arg#ringvm_vtest=} ;; esac
done
echo "RINGVM-LAB-MODE $mode"

# Waits (bounded) for a block device whose virtio serial is $1; prints its name (vda, ...).
disk_by_serial() {
  i=0
  while [ $i -lt 100 ]; do
    for s in /sys/block/vd*/serial; do
      [ -e "$s" ] && [ "$(cat "$s")" = "$1" ] && { d=${s%/serial}; echo "${d##*/}"; return 0; }
    done
    sleep 0.1
    i=$((i + 1))
  done
  return 1
}

# Waits (bounded) for a device node to appear.
wait_node() {
  i=0
  while [ ! -e "$1" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  [ -e "$1" ]
}

sha() { sha256sum "$1" | cut -d' ' -f1; }
ok_or_failed() { if "$@"; then echo ok; else echo failed; fi; }

main_rw() {
  rw=$(disk_by_serial rw0) || { echo "RINGVM-LAB-RW-DISK missing"; return; }
  echo "RINGVM-LAB-RW-DISK $rw"
  mkdir -p /mnt/rw
  echo "RINGVM-LAB-RW-MOUNT $(ok_or_failed mount -t ext4 "/dev/$rw" /mnt/rw)"
  echo "RINGVM-LAB-RW-KNOWN-SHA256 $(sha /mnt/rw/known.bin)"
  seq 1 20000 >/mnt/rw/written.txt
  echo "RINGVM-LAB-RW-WRITTEN-SHA256 $(sha /mnt/rw/written.txt)"
  sync
  echo "RINGVM-LAB-RW-UMOUNT $(ok_or_failed umount /mnt/rw)"
}

main_ro() {
  ro=$(disk_by_serial ro0) || { echo "RINGVM-LAB-RO-DISK missing"; return; }
  echo "RINGVM-LAB-RO-DISK $ro"
  echo "RINGVM-LAB-RO-SYSFS $(cat "/sys/block/$ro/ro")"
  mkdir -p /mnt/ro
  echo "RINGVM-LAB-RO-MOUNT-RO $(ok_or_failed mount -t ext4 -o ro "/dev/$ro" /mnt/ro)"
  echo "RINGVM-LAB-RO-KNOWN-SHA256 $(sha /mnt/ro/known.bin)"
  echo "RINGVM-LAB-RO-FILE-WRITE $(ok_or_failed sh -c 'echo x >/mnt/ro/new.txt' 2>/dev/null)"
  umount /mnt/ro
  # A read-write mount must not give a writable filesystem (busybox mount may fall back to ro).
  if mount -t ext4 -o rw "/dev/$ro" /mnt/ro 2>/dev/null; then
    echo "RINGVM-LAB-RO-MOUNT-RW mounted-$(awk -v m=/mnt/ro '$2 == m { split($4, o, ","); print o[1] }' /proc/mounts)"
    echo "RINGVM-LAB-RO-RW-FILE-WRITE $(ok_or_failed sh -c 'echo x >/mnt/ro/new.txt' 2>/dev/null)"
    umount /mnt/ro
  else
    echo "RINGVM-LAB-RO-MOUNT-RW failed"
    echo "RINGVM-LAB-RO-RW-FILE-WRITE failed"
  fi
  # Past the filesystem: a direct write to the device itself.
  echo "RINGVM-LAB-RO-RAW-WRITE $(ok_or_failed dd if=/dev/zero of="/dev/$ro" bs=4096 count=1 oflag=direct conv=fsync 2>/dev/null)"
}

main_rng() {
  wait_node /dev/hwrng
  echo "RINGVM-LAB-RNG-CURRENT $(cat /sys/class/misc/hw_random/rng_current)"
  head -c 64 /dev/hwrng >/tmp/rng.bin
  echo "RINGVM-LAB-RNG-BYTES $(wc -c </tmp/rng.bin)"
  echo "RINGVM-LAB-RNG-HEX $(od -An -tx1 -v /tmp/rng.bin | tr -d ' \n')"
}

main_hvc() {
  wait_node /dev/hvc0
  # Only virtio-console carries this line: the other markers go to /dev/console (ttyS0). Both
  # reach the same console file, so let the UART drain first: its lines trickle out one byte per
  # interrupt and would otherwise be cut in two by this one.
  sleep 2
  echo "RINGVM-LAB-HVC0 hello-from-hvc0" >/dev/hvc0
  sleep 1
  echo "RINGVM-LAB-HVC0-WRITE $?"
}

durable() {
  d=$(disk_by_serial dur0) || { echo "RINGVM-LAB-DURABLE-DISK missing"; return; }
  seq 1 200000 | head -c 1048576 >/tmp/data
  echo "RINGVM-LAB-DURABLE-SHA256 $(sha /tmp/data)"
  if dd if=/tmp/data of="/dev/$d" bs=1M seek=1 count=1 conv=fsync 2>/dev/null; then
    echo "RINGVM-LAB-DURABLE-WRITTEN ok"
  else
    echo "RINGVM-LAB-DURABLE-WRITTEN failed"
  fi
  # The host kills the VMM (SIGKILL) as soon as it sees the marker above.
  sleep 1000000
}

qcow2() {
  d=$(disk_by_serial qc0) || { echo "RINGVM-LAB-QCOW2-DISK missing"; return; }
  echo "RINGVM-LAB-QCOW2-SECTORS $(cat "/sys/block/$d/size")"
  dd if="/dev/$d" of=/tmp/base bs=1M count=1 2>/dev/null
  echo "RINGVM-LAB-QCOW2-BASE-SHA256 $(sha /tmp/base)"
  seq 500000 700000 | head -c 1048576 >/tmp/b
  seq 900000 901000 | head -c 4096 >/tmp/c
  w1=$(ok_or_failed dd if=/tmp/b of="/dev/$d" bs=1M seek=2 count=1 conv=fsync 2>/dev/null)
  w2=$(ok_or_failed dd if=/tmp/c of="/dev/$d" bs=512 seek=129 count=8 conv=fsync 2>/dev/null)
  echo "RINGVM-LAB-QCOW2-WRITE $w1-$w2"
  # Read the partial-cluster write back from the device (O_DIRECT, caches dropped).
  echo 3 >/proc/sys/vm/drop_caches
  dd if="/dev/$d" of=/tmp/back bs=512 skip=129 count=8 iflag=direct 2>/dev/null
  echo "RINGVM-LAB-QCOW2-READBACK $(ok_or_failed cmp -s /tmp/back /tmp/c)"
}

case $mode in
  main)
    main_rw
    main_ro
    main_rng
    main_hvc
    ;;
  durable) durable ;;
  qcow2) qcow2 ;;
esac
echo "RINGVM-LAB-ACTION poweroff"
echo "RINGVM-LAB-MARKER done"
poweroff -f
echo "RINGVM-LAB-ACTION-FAILED poweroff"
echo o >/proc/sysrq-trigger
sleep 1000000
