#!/bin/sh
# /init of the lab's network test guest (L2), driven by tests/lab/net_lab.sh (the lab check) and
# bench/net/iperf_bench.sh (the benchmark). Loads the modules in /modules/order (virtio_pci,
# virtio_net), gives eth0 10.0.2.2/24 (the host's tap is 10.0.2.1), runs the scenario the kernel
# command line names with `ringvm_net=MODE`, prints "RINGVM-LAB-<KEY> <value>" markers that
# tests/lab/net_check.sh asserts, and powers off.
#
#   check  ping the host 3 times; send 2 x CHUNK bytes (ringvm_net_chunk=) of random bytes to the host's listeners on
#          10.0.2.1:5003 and :5004, one stream pinned to each vCPU (so each leaves on its own
#          transmit queue, by XPS); listen on :5001 and :5002 (again one per vCPU) for the host's
#          2 x CHUNK, say NET-WAITING so the host pings this guest and sends; print every
#          stream's md5 and byte count and the virtio-net interrupts per queue before and after
#   bench  start `iperf3 -s` and say NET-READY; power off when the host connects to :5999
#
# Every wait is bounded (busybox timeout); the host bounds the whole run.
export PATH=/bin
. /lib/lab-guest.sh
echo "RINGVM-LAB-UPTIME $(cut -d' ' -f1 /proc/uptime)"
lab_load_modules
echo "RINGVM-LAB-MARKER ok"

mode=none
chunk=8388608 # bytes per stream (ringvm_net_chunk=): 2 streams each way
for arg in $(cat /proc/cmdline); do
  case $arg in
    ringvm_net=*) mode=${arg#ringvm_net=} ;;
    ringvm_net_chunk=*) chunk=${arg#ringvm_net_chunk=} ;;
  esac
done
echo "RINGVM-LAB-MODE $mode"
host=10.0.2.1

finish() {
  echo "RINGVM-LAB-ACTION poweroff"
  echo "RINGVM-LAB-MARKER done"
  poweroff -f
  echo "RINGVM-LAB-ACTION-FAILED poweroff"
  echo o >/proc/sysrq-trigger
  sleep 1000000
}

# Sum of the interrupt counts (all CPUs) of the /proc/interrupts line ending in $1.
irqs() {
  awk -v n="$1" '$NF == n { s = 0; for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+$/) s += $i; else break; print s; f = 1 }
    END { if (!f) print "none" }' /proc/interrupts
}
# One line: the interrupt counts of both queue pairs' vectors.
queue_irqs() {
  echo "input.0=$(irqs virtio0-input.0) input.1=$(irqs virtio0-input.1)" \
    "output.0=$(irqs virtio0-output.0) output.1=$(irqs virtio0-output.1)"
}

i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
if [ ! -e /sys/class/net/eth0 ]; then
  echo "RINGVM-LAB-NET-ETH0 missing"
  finish
fi
echo "RINGVM-LAB-NET-ETH0 $(cat /sys/class/net/eth0/address)"
echo "RINGVM-LAB-NET-DRIVER $(basename "$(readlink /sys/class/net/eth0/device/driver)")"
echo "RINGVM-LAB-NET-RX-QUEUES $(ls -d /sys/class/net/eth0/queues/rx-* | wc -l)"
echo "RINGVM-LAB-NET-TX-QUEUES $(ls -d /sys/class/net/eth0/queues/tx-* | wc -l)"
ip addr add 10.0.2.2/24 dev eth0
ip link set eth0 up
i=0
while [ "$(cat /sys/class/net/eth0/carrier 2>/dev/null)" != 1 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
echo "RINGVM-LAB-NET-CARRIER $(cat /sys/class/net/eth0/carrier 2>/dev/null)"

# Sends $2 bytes (whole MiBs) to host port $1 from CPU mask $3; records md5 and count in
# /tmp/tx$1.*. One random MiB repeated: generating 100 MiB from /dev/urandom in a nested guest
# costs minutes and tests nothing about the network. The stream is laid out in a file and summed
# first (prepare_stream), so the transfer is nc alone: a tee and a md5sum in the pipeline cost a
# context switch per pipe buffer, which under the lab's emulator made 2 x 8 MiB take ~27 s.
prepare_stream() {
  head -c 1048576 /dev/urandom >"/tmp/blk$1"
  i=0
  while [ $i -lt $(($2 / 1048576)) ]; do cat "/tmp/blk$1"; i=$((i + 1)); done >"/tmp/tx$1.dat"
  rm -f "/tmp/blk$1"
  md5sum <"/tmp/tx$1.dat" | cut -d' ' -f1 >"/tmp/tx$1.sum"
}
send_stream() {
  taskset "$2" timeout 600 nc $host $1 <"/tmp/tx$1.dat"
  echo $? >"/tmp/tx$1.status"
  rm -f "/tmp/tx$1.dat"
}

# Receives from one connection on port $1 on CPU mask $2 into a file, then records its md5 and
# byte count in /tmp/rx$1.*. nc's stdin is fd 3, a FIFO that never ends: at EOF on stdin busybox
# nc would half-close and the sender would stop early.
recv_stream() {
  taskset "$2" timeout 600 nc -l -p $1 <&3 >"/tmp/rx$1.dat"
  echo $? >"/tmp/rx$1.status"
}
sum_received() {
  md5sum <"/tmp/rx$1.dat" | cut -d' ' -f1 >"/tmp/rx$1.sum"
  wc -c <"/tmp/rx$1.dat" | tr -d ' ' >"/tmp/rx$1.count"
  rm -f "/tmp/rx$1.dat"
}

check() {
  if ping -c 3 -W 5 "$host" >/tmp/ping.out 2>&1; then
    echo "RINGVM-LAB-NET-PING-HOST ok"
  else
    echo "RINGVM-LAB-NET-PING-HOST failed"
  fi
  echo "RINGVM-LAB-NET-PING-HOST-SUMMARY $(grep 'packets transmitted' /tmp/ping.out)"
  # What the streams cost without the network (a guest under nested TCG is slow).
  t0=$(cut -d' ' -f1 /proc/uptime)
  head -c 8388608 /dev/urandom | md5sum >/dev/null
  echo "RINGVM-LAB-NET-LOCAL-8MIB-SECONDS $(awk -v a="$t0" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN { print b - a }')"
  prepare_stream 5003 $chunk &
  prepare_stream 5004 $chunk &
  wait
  echo "RINGVM-LAB-NET-IRQS-BEFORE $(queue_irqs)"
  t0=$(cut -d' ' -f1 /proc/uptime)

  # Guest to host: one stream per vCPU, at the same time.
  send_stream 5003 1 &
  send_stream 5004 2 &
  wait
  for p in 5003 5004; do
    echo "RINGVM-LAB-NET-TX-$p $(cat /tmp/tx$p.status) $(cat /tmp/tx$p.sum)"
  done
  echo "RINGVM-LAB-NET-TX-SECONDS $(awk -v a="$t0" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN { print b - a }')"
  echo "RINGVM-LAB-NET-IRQS-AFTER-TX $(queue_irqs)"

  # Host to guest.
  mkfifo /tmp/hold
  exec 3<>/tmp/hold
  recv_stream 5001 1 &
  recv_stream 5002 2 &
  sleep 1
  t0=$(cut -d' ' -f1 /proc/uptime)
  echo "RINGVM-LAB-NET-WAITING 5001 5002"
  wait
  echo "RINGVM-LAB-NET-RX-SECONDS $(awk -v a="$t0" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN { print b - a }')"
  sum_received 5001 &
  sum_received 5002 &
  wait
  for p in 5001 5002; do
    echo "RINGVM-LAB-NET-RX-$p $(cat /tmp/rx$p.status) $(cat /tmp/rx$p.sum) $(cat /tmp/rx$p.count)"
  done
  echo "RINGVM-LAB-NET-IRQS-AFTER $(queue_irqs)"
  grep virtio /proc/interrupts
}

bench() {
  iperf3 -s -D >/tmp/iperf3.log 2>&1
  echo "RINGVM-LAB-NET-IPERF3-SERVER $?"
  mkfifo /tmp/hold
  exec 3<>/tmp/hold
  echo "RINGVM-LAB-NET-READY"
  # The host connects here when it is done.
  timeout 3600 nc -l -p 5999 <&3 >/dev/null
  # What the guest's TCP saw over the whole run (the non-zero TcpExt counters: drops, pruning,
  # out-of-order queueing explain the sender's retransmissions).
  echo "RINGVM-LAB-NET-TCPEXT $(awk '/^TcpExt:/ { if (!h) { split($0, k); h = 1 } else {
    for (i = 2; i <= NF; i++) if ($i != 0) printf "%s=%s ", k[i], $i } }' /proc/net/netstat)"
}

case $mode in
  check) check ;;
  bench) bench ;;
esac
finish
