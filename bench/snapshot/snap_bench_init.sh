#!/bin/sh
# /init of the snapshot benchmark's guest (L2), driven by bench/snapshot/snapshot_bench.py through
# bench/snapshot/snapshot_bench.sh. It says who it is, then prints "SNAPB-TICK N UPTIME" about every
# 20 ms without forking (busybox `read -t` on a FIFO nobody writes is the sleep), so a restored
# guest's next tick shows it is running again within ~20 ms of its own time. Bounded: it powers
# off after 500000 ticks (hours).
export PATH=/bin:/usr/bin
. /lib/lab-guest.sh
echo "SNAPB-NPROC $(nproc)"
echo "SNAPB-MEMTOTAL-KB $(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)"
mkfifo /tmp/tick.fifo
exec 3<>/tmp/tick.fifo
echo "SNAPB-READY"
i=0
while [ $i -lt 500000 ]; do
  i=$((i + 1))
  read -r up _ </proc/uptime
  echo "SNAPB-TICK $i $up"
  read -r -t 0.02 -u 3 _
done
echo "SNAPB-TICKS-EXHAUSTED"
poweroff -f
echo o >/proc/sysrq-trigger
sleep 1000000
