#!/bin/sh
# /init of the lab's snapshot test guest (L2), driven by tests/lab/snap_lab.sh (runs snap_main,
# snap_clones, snap_diff, snap_bad). The mode comes from the kernel command line
# (ringvm_snap=main|clones|diff). The guest:
#   - loads its modules (virtio_pci, virtio_blk, virtio_net, vsock, virtio_rng) and prints what
#     /sys/bus/acpi/drivers/vmgenid/ holds (Debian's kernel has CONFIG_VMGENID=y: the driver that
#     reseeds the kernel's RNG when the VM's generation ID changes, i.e. after every restore);
#   - main: writes 1 MiB of a known pattern to /dev/vda (raw) and /dev/vdb (qcow2) with fsync and
#     remembers its md5 (in its tmpfs, so in the snapshot); gives eth0 172.16.1.2/24;
#   - main, clones: serves vsock port 5000 (restarted in a loop: a restore resets the vsock
#     transport) with one-line commands: "hello" (answers "hello tick N"), "restored" (the host
#     says it restored the VM: a fallback trigger, see below), "poweroff";
#   - lowers its watchdogs (soft lockup after 8 s, RCU stall after 5 s) and, in main, keeps CPU 1
#     busy (an idle CPU never reports a pause it was not told about);
#   - says SNAP-READY and prints "RINGVM-LAB-SNAP-TICK N UPTIME HEX" every 0.3 s, HEX being 8
#     bytes read from /dev/urandom on that tick.
# After a restore: the tick loop notices it, the first of: a uevent carrying NEW_VMGENID=1 (busybox
# `uevent`), "crng reseeded due to virtual machine fork" in dmesg (the vmgenid driver's
# add_vmfork_randomness), or the host's "restored" command; it prints
# "RINGVM-LAB-SNAP-RESTORED N HOW HEX" with 8 fresh random bytes, then (in the background):
#   main    drops the page cache and re-reads both disks' pattern: "RINGVM-LAB-SNAP-DISK vda OK";
#   clones  rebinds virtio-net (unbind + bind: the driver reads the MAC the clone was given) and
#           prints "RINGVM-LAB-SNAP-MAC-AFTER-REBIND <mac>".
# Bounded: after 3000 ticks it powers off.
export PATH=/bin:/usr/bin
. /lib/lab-guest.sh
P=RINGVM-LAB-SNAP
echo "$P-UPTIME $(cut -d' ' -f1 /proc/uptime)"
lab_load_modules $P
echo "$P-MARKER ok"
echo "$P-NPROC $(nproc)"

mode=main
for arg in $(cat /proc/cmdline); do
  case $arg in ringvm_snap=*) mode=${arg#ringvm_snap=} ;; esac
done
echo "$P-MODE $mode"
echo "$P-VMGENID-DRIVER $(ls /sys/bus/acpi/drivers/vmgenid/ 2>&1 | tr '\n' ' ')"
dmesg | grep -i vmgenid | sed "s/^/$P-VMGENID-DMESG /"

rand() { head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

# uevents: a NEW_VMGENID=1 one marks the restore.
cat >/tmp/uevent.sh <<'EOF'
#!/bin/sh
[ "$NEW_VMGENID" = 1 ] && touch /tmp/vmgenid-uevent
exit 0
EOF
chmod 755 /tmp/uevent.sh
uevent /tmp/uevent.sh >/dev/null 2>&1 &

# The vsock command server.
cat >/tmp/vsock-cmd.sh <<'EOF'
#!/bin/sh
read -r cmd
case $cmd in
  hello) echo "hello tick $(cat /tmp/tick 2>/dev/null)" ;;
  restored) touch /tmp/host-restored; echo "restored noted" ;;
  poweroff) echo "powering off"; (sleep 1; sync; poweroff -f) >/dev/null 2>&1 & ;;
  *) echo "unknown command '$cmd'" ;;
esac
EOF
chmod 755 /tmp/vsock-cmd.sh

pattern() { yes 'RINGVM-SNAP-PATTERN-0123456789abcdefghijklmnopqrstuvwxyz' | head -c 1048576; }
disks=
if [ "$mode" = main ]; then
  i=0
  while { [ ! -e /sys/block/vda ] || [ ! -e /sys/block/vdb ]; } && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  pattern >/tmp/pattern
  md5sum </tmp/pattern | cut -d' ' -f1 >/tmp/pattern.md5
  echo "$P-PATTERN-MD5 $(cat /tmp/pattern.md5)"
  for d in vda vdb; do
    if [ -e /sys/block/$d ]; then
      echo "$P-DISK-SECTORS $d $(cat /sys/block/$d/size)"
      dd if=/tmp/pattern of=/dev/$d bs=1048576 count=1 conv=fsync 2>/dev/null
      echo "$P-DISK-WRITE $d $?"
      disks="$disks $d"
    else
      echo "$P-DISK-SECTORS $d missing"
    fi
  done
  sync
fi
if [ -e /sys/class/net/eth0 ]; then
  echo "$P-ETH0-MAC $(cat /sys/class/net/eth0/address)"
  if [ "$mode" = main ]; then
    ip addr add 172.16.1.2/24 dev eth0
    ip link set eth0 up
    i=0
    while [ "$(cat /sys/class/net/eth0/carrier 2>/dev/null)" != 1 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    echo "$P-ETH0-CARRIER $(cat /sys/class/net/eth0/carrier 2>/dev/null)"
  fi
fi
if [ -e /dev/vsock ]; then
  echo "$P-VSOCK-DEVICE ok"
  (while :; do socat -t 30 VSOCK-LISTEN:5000,reuseaddr,fork EXEC:/tmp/vsock-cmd.sh >>/tmp/socat.log 2>&1; sleep 0.2; done) &
fi

# After the restore (in the background, while the ticks go on).
post_restore() {
  if [ "$mode" = main ]; then
    echo 3 >/proc/sys/vm/drop_caches
    for d in $disks; do
      got=$(dd if=/dev/$d bs=1048576 count=1 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
      [ -n "$got" ] && [ "$got" != d41d8cd98f00b204e9800998ecf8427e ] ||
        got=$(dd if=/dev/$d bs=1048576 count=1 2>/dev/null | md5sum | cut -d' ' -f1)
      if [ "$got" = "$(cat /tmp/pattern.md5)" ]; then
        echo "$P-DISK $d OK $got"
      else
        echo "$P-DISK $d BAD $got"
      fi
    done
  fi
  if [ "$mode" = clones ] && [ -e /sys/class/net/eth0 ]; then
    echo "$P-MAC-BEFORE-REBIND $(cat /sys/class/net/eth0/address)"
    dev=$(basename "$(readlink /sys/class/net/eth0/device)")
    echo "$dev" >/sys/bus/virtio/drivers/virtio_net/unbind
    echo "$dev" >/sys/bus/virtio/drivers/virtio_net/bind
    i=0
    while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    echo "$P-MAC-AFTER-REBIND $(cat /sys/class/net/eth0/address 2>&1)"
  fi
  echo "$P-POST-RESTORE done"
}

echo 4 >/proc/sys/kernel/watchdog_thresh
echo 5 >/sys/module/rcupdate/parameters/rcu_cpu_stall_timeout
echo "$P-WATCHDOG-THRESH $(cat /proc/sys/kernel/watchdog_thresh)"
echo "$P-RCU-STALL-TIMEOUT $(cat /sys/module/rcupdate/parameters/rcu_cpu_stall_timeout)"
if [ "$mode" = main ]; then
  taskset 2 sh -c 'while :; do :; done' &
  echo "$P-BUSY-CPU 1 $!"
fi
echo "$P-READY"
i=0 restored=0
while [ $i -lt 3000 ]; do
  i=$((i + 1))
  echo $i >/tmp/tick
  echo "$P-TICK $i $(cut -d' ' -f1 /proc/uptime) $(rand)"
  if [ $restored = 0 ]; then
    how=
    if [ -e /tmp/vmgenid-uevent ]; then
      how=uevent
    elif dmesg | grep -q 'virtual machine fork'; then
      how=crng-reseed
    elif [ -e /tmp/host-restored ]; then
      how=host
    fi
    if [ -n "$how" ]; then
      restored=1
      echo "$P-RESTORED $i $how $(rand)"
      post_restore &
    fi
  fi
  sleep 0.3
done
echo "$P-TICKS-EXHAUSTED"
poweroff -f
echo o >/proc/sysrq-trigger
sleep 1000000
