#!/bin/sh
# /init of the lab's test guest (L2): prints markers the lab tests assert, then powers off or
# reboots. The kernel command line chooses the ending: `ringvm_lab.action=reboot` reboots, anything
# else powers off. Modules listed in /modules/order (tests/lab/mkinitramfs.sh --module) are loaded
# first. Every marker line starts with "RINGVM-LAB-" so tests can grep them out of a console log.
export PATH=/bin
. /lib/lab-guest.sh
echo "RINGVM-LAB-UPTIME $(cut -d' ' -f1 /proc/uptime)"
lab_load_modules
echo "RINGVM-LAB-MARKER ok"
echo "RINGVM-LAB-NPROC $(nproc)"
echo "RINGVM-LAB-CPUS-ONLINE $(cat /sys/devices/system/cpu/online)"
echo "RINGVM-LAB-MEMTOTAL-KB $(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
echo "RINGVM-LAB-DATE $(date +%s)"
action=poweroff
case " $(cat /proc/cmdline) " in
  *" ringvm_lab.action=reboot "*) action=reboot ;;
esac
echo "RINGVM-LAB-ACTION $action"
echo "RINGVM-LAB-MARKER done"
# -f: no init system to ask; the kernel powers off (ACPI) or resets right away.
"$action" -f
# Only reached if the power-off or reset failed: say so, then stop the CPU for good.
echo "RINGVM-LAB-ACTION-FAILED $action"
echo o >/proc/sysrq-trigger
sleep 1000000
