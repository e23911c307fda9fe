#!/bin/sh
# /init of the fio benchmark guest (bench/blk/fio_bench.sh): loads virtio_pci and virtio_blk,
# runs fio's jobs on /dev/vda one after the other and powers off. Around each job it prints
# "RINGVM-FIO-BEGIN name" and "RINGVM-FIO-END name" and idles a second, so the host can snapshot
# its VM exit counters while the guest is quiet; then "RINGVM-FIO-RESULT name iops bw_bytes ios".
# Before each job the same pair without fio ("cal_name": a second's idling and the END line, which
# leaves through the UART) measures what the markers themselves cost, for the host to subtract.
# `fio_runtime=SECS` on the kernel command line sets each job's length (default 5).
export PATH=/bin:/usr/bin
. /lib/lab-guest.sh
lab_load_modules
runtime=5
for arg in $(cat /proc/cmdline); do
  case $arg in fio_runtime=*) runtime=${arg#fio_runtime=} ;; esac
done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
echo "RINGVM-LAB-MARKER ok"
echo "RINGVM-FIO-DISK $(cat /sys/block/vda/size 2>/dev/null || echo missing)"
# How the guest will split fio's 1 MiB requests: at most max_segments pages each.
echo "RINGVM-FIO-QUEUE max_segments=$(cat /sys/block/vda/queue/max_segments 2>/dev/null)" \
  "max_sectors_kb=$(cat /sys/block/vda/queue/max_sectors_kb 2>/dev/null)"

# name rw bs iodepth section
for job in "randread_4k_qd1 randread 4k 1 read" "randread_4k_qd32 randread 4k 32 read" \
  "randwrite_4k_qd1 randwrite 4k 1 write" "randwrite_4k_qd32 randwrite 4k 32 write" \
  "seqread_1m read 1M 8 read" "seqwrite_1m write 1M 8 write"; do
  set -- $job
  echo "RINGVM-FIO-BEGIN cal_$1"
  sleep 1
  echo "RINGVM-FIO-END cal_$1"
  sleep 1
  echo "RINGVM-FIO-BEGIN $1"
  sleep 1
  cat /proc/interrupts >/tmp/irq0
  fio --name="$1" --filename=/dev/vda --direct=1 --ioengine=libaio --rw="$2" --bs="$3" --iodepth="$4" \
    --size=192M --runtime="$runtime" --time_based --norandommap --randrepeat=0 \
    --output-format=json --output="/tmp/$1.json" >/dev/null 2>"/tmp/$1.err" ||
    echo "RINGVM-FIO-FAILED $1 $(tr '\n' ' ' <"/tmp/$1.err")"
  cat /proc/interrupts >/tmp/irq1
  echo "RINGVM-FIO-END $1"
  sleep 1
  # Interrupts the guest took during the job, per CPU: device vectors (which CPU completions reach)
  # and IPIs (CAL: a completion moved to the submitting CPU; RES: a reschedule).
  awk -v job="$1" 'FNR == 1 { next }
    { key = $1; if ($1 ~ /^[0-9]+:$/) key = $1 $NF; n = 0
      for (f = 2; f <= NF && $f ~ /^[0-9]+$/; f++) v[FILENAME, key, n++] = $f; cpus[key] = n }
    END { for (k in cpus) { line = ""; any = 0
      for (c = 0; c < cpus[k]; c++) { d = v["/tmp/irq1", k, c] - v["/tmp/irq0", k, c]; line = line " " d; if (d) any = 1 }
      if (any) print "RINGVM-FIO-IRQ " job " " k line } }' /tmp/irq0 /tmp/irq1
  # The job's own direction: first iops, bw_bytes and total_ios inside its "read"/"write" object.
  echo "RINGVM-FIO-RESULT $1 $(awk -v want="$5" '
    /"(read|write|trim)" : \{/ { sec = $1; gsub(/"/, "", sec) }
    sec == want && /"(iops|bw_bytes|total_ios)" :/ {
      k = $1; gsub(/"/, "", k); v = $3; gsub(/,/, "", v); if (!(k in got)) got[k] = v
    }
    END { print got["iops"], got["bw_bytes"], got["total_ios"] }' "/tmp/$1.json")"
done
echo "RINGVM-LAB-MARKER done"
poweroff -f
echo o >/proc/sysrq-trigger
sleep 1000000
