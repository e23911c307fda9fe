# shellcheck shell=sh
# Sourced by every lab test guest's /init (busybox sh); tests/lab/mkinitramfs.sh puts it in each
# image as /lib/lab-guest.sh. Mounts /proc, /sys, /dev and a tmpfs on /tmp, and defines
#   lab_load_modules [PREFIX]   insmod every module in /modules/order (dependencies first); a
#                               module that fails prints "PREFIX-INSMOD-FAILED name"
#                               (PREFIX defaults to RINGVM-LAB), which the checks look for.
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mount -t tmpfs tmp /tmp

lab_load_modules() {
  while read -r m; do
    insmod "/modules/$m" || echo "${1:-RINGVM-LAB}-INSMOD-FAILED $m"
  done </modules/order
}
