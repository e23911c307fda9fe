# shellcheck shell=bash
# Inside L1, for the network benchmarks (bench/net/iperf_bench.sh, bench/net/sched_trace.sh): the
# network namespace with the tap the guest's NIC attaches to, and each VMM's command line. Sourced.

# net_lab_netns NS TAP: creates namespace NS with tap TAP (multiqueue) at 10.0.2.1/24, up; the
# guest takes 10.0.2.2. The caller deletes NS (ip netns del) when done.
net_lab_netns() {
  ip netns add "$1"
  ip netns exec "$1" ip link set lo up
  ip netns exec "$1" ip tuntap add dev "$2" mode tap multi_queue
  ip netns exec "$1" ip addr add 10.0.2.1/24 dev "$2"
  ip netns exec "$1" ip link set "$2" up
}

# net_lab_cmd VMM RINGVM KERNEL INITRD CMDLINE CONSOLE TAP [NET_OPTIONS [RUN_OPTION...]]: sets the
# array `cmd` to boot the guest with 2 vCPUs, 512 MiB and two queue pairs on TAP: ringvm (`--net
# tap=TAP,queues=2[,NET_OPTIONS]`, `--stats`) when VMM is ringvm, QEMU's q35 virtio-net-pci with
# `vhost=off` when it is qemu (threads named, for bench/lib/vmm_cpu.sh).
# lab_split_tuning comes from the lab's library (sourced here when the caller has not).
declare -F lab_split_tuning >/dev/null || source "$(dirname "${BASH_SOURCE[0]}")/../../tests/lab/lab_lib.sh"

net_lab_cmd() {
  local vmm=$1 ringvm=$2 kernel=$3 initrd=$4 cmdline=$5 console=$6 tap=$7 extra=${8:-}
  shift $(($# < 8 ? $# : 8))
  lab_split_tuning "$extra"  # net.KEY=V items are tuning constants (RINGVM_TUNING), not --net options
  case $vmm in
    ringvm)
      # shellcheck disable=SC2034 # cmd is the caller's
      cmd=("$ringvm" run --kernel "$kernel" --initrd "$initrd" --cmdline "$cmdline" --cpus 2 --memory 512M
        --console "file:$console" --net "tap=$tap,queues=2${extra:+,$extra}" --stats "$@") ;;
    qemu)
      # shellcheck disable=SC2054 # QEMU's own comma-separated arguments
      # shellcheck disable=SC2034 # cmd is the caller's
      cmd=(qemu-system-x86_64 -enable-kvm -name bench,debug-threads=on -M q35 -cpu host -smp 2 -m 512M
        -nodefaults -no-user-config -display none -no-reboot -chardev "file,id=con0,path=$console"
        -serial chardev:con0 -netdev "tap,id=n0,ifname=$tap,script=no,downscript=no,vhost=off,queues=2"
        -device virtio-net-pci,netdev=n0,mq=on,vectors=6 -kernel "$kernel" -initrd "$initrd" -append "$cmdline") ;;
  esac
}
