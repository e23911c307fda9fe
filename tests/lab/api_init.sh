#!/bin/sh
# /init of the lab's control-plane test guest (L2), driven by tests/lab/api_lab.sh (runs api_main
# and api_ctl). PID 1 is this busybox shell script: it has no Ctrl+Alt+Del handler, so it sets
# /proc/sys/kernel/ctrl-alt-del to 1 and the kernel restarts at once when the keyboard delivers
# Ctrl+Alt+Del (ringvm then exits 3). Then:
#   - prints what the kernel said about the i8042 controller and the AT keyboard (dmesg), and
#     whether /proc/bus/input/devices lists "AT Translated Set 2 keyboard";
#   - when the VM has a disk (api_main): waits for /dev/vda and prints its size and the tag the
#     host wrote at its start;
#   - when the VM has a NIC (api_main): gives eth0 172.16.0.2/24 (the host's tap is 172.16.0.1)
#     and prints its MAC and carrier, so the host can ping it;
#   - lowers the guest's watchdogs below the host's 10 s pause: soft lockup after 8 s
#     (watchdog_thresh 4) and RCU stall after 5 s, so a pause that the guest is not told about
#     (KVM_KVMCLOCK_CTRL) shows as "soft lockup" / "rcu ... stall" lines, and keeps CPU 1 busy
#     (ringvm_api_busy=0 does not): an idle CPU never reports a pause;
#   - says API-READY and prints "RINGVM-LAB-API-TICK N UPTIME" every 0.3 s until the host sends
#     Ctrl+Alt+Del (bounded: after 3000 ticks it powers off).
# Markers are "RINGVM-LAB-API-<KEY> <value>" lines that tests/lab/api_check.sh asserts.
export PATH=/bin
. /lib/lab-guest.sh
echo "RINGVM-LAB-API-UPTIME $(cut -d' ' -f1 /proc/uptime)"
lab_load_modules RINGVM-LAB-API
echo "RINGVM-LAB-API-MARKER ok"
echo "RINGVM-LAB-API-NPROC $(nproc)"
echo "RINGVM-LAB-API-MEMTOTAL-KB $(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"

# Ctrl+Alt+Del with no init handler: 1 = the kernel restarts at once (0 would send SIGINT to PID 1).
echo 1 >/proc/sys/kernel/ctrl-alt-del
echo "RINGVM-LAB-API-CAD $(cat /proc/sys/kernel/ctrl-alt-del)"
# serio probes the keyboard from a workqueue: give it up to 5 s.
i=0
while ! grep -q 'AT Translated Set 2 keyboard' /proc/bus/input/devices 2>/dev/null && [ $i -lt 50 ]; do
  sleep 0.1
  i=$((i + 1))
done
dmesg | grep -iE 'i8042|serio|atkbd|keyboard' | sed 's/^/RINGVM-LAB-API-KBD-DMESG /'
if grep -q 'AT Translated Set 2 keyboard' /proc/bus/input/devices 2>/dev/null; then
  echo "RINGVM-LAB-API-KEYBOARD yes"
else
  echo "RINGVM-LAB-API-KEYBOARD no"
fi

mode=main busy=1
for arg in $(cat /proc/cmdline); do
  case $arg in
    ringvm_api=*) mode=${arg#ringvm_api=} ;;
    ringvm_api_busy=*) busy=${arg#ringvm_api_busy=} ;;
  esac
done
echo "RINGVM-LAB-API-MODE $mode"

if [ "$mode" = main ]; then
  i=0
  while [ ! -e /sys/block/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  if [ -e /sys/block/vda ]; then
    echo "RINGVM-LAB-API-VDA-SECTORS $(cat /sys/block/vda/size)"
    echo "RINGVM-LAB-API-VDA-TAG $(head -c 64 /dev/vda | tr -cd 'A-Za-z0-9-')"
  else
    echo "RINGVM-LAB-API-VDA-SECTORS missing"
  fi
  i=0
  while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  if [ -e /sys/class/net/eth0 ]; then
    echo "RINGVM-LAB-API-ETH0-MAC $(cat /sys/class/net/eth0/address)"
    ip addr add 172.16.0.2/24 dev eth0
    ip link set eth0 up
    i=0
    while [ "$(cat /sys/class/net/eth0/carrier 2>/dev/null)" != 1 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    echo "RINGVM-LAB-API-ETH0-CARRIER $(cat /sys/class/net/eth0/carrier 2>/dev/null)"
  else
    echo "RINGVM-LAB-API-ETH0-MAC missing"
  fi
fi

echo 4 >/proc/sys/kernel/watchdog_thresh
echo 5 >/sys/module/rcupdate/parameters/rcu_cpu_stall_timeout
echo "RINGVM-LAB-API-WATCHDOG-THRESH $(cat /proc/sys/kernel/watchdog_thresh)"
echo "RINGVM-LAB-API-RCU-STALL-TIMEOUT $(cat /sys/module/rcupdate/parameters/rcu_cpu_stall_timeout)"
# A busy CPU 1: an idle CPU's soft-lockup watchdog is touched when it leaves idle (the kernel's
# NO_HZ path expects jumps there), so only a CPU that was running when paused shows a pause it
# was not told about.
if [ "$busy" = 1 ]; then
  taskset 2 sh -c 'while :; do :; done' &
  echo "RINGVM-LAB-API-BUSY-CPU 1 $!"
fi
echo "RINGVM-LAB-API-READY"
i=0
while [ $i -lt 3000 ]; do
  i=$((i + 1))
  echo "RINGVM-LAB-API-TICK $i $(cut -d' ' -f1 /proc/uptime)"
  sleep 0.3
done
echo "RINGVM-LAB-API-TICKS-EXHAUSTED"
poweroff -f
echo o >/proc/sysrq-trigger
sleep 1000000
