#!/usr/bin/env bash
# Where a guest-to-host frame's time goes in the lab's L1 (a diagnostic, not part of the test
# suite): in ONE L1 boot, boots the lab's network guest (tests/lab/net_init.sh, mode `bench`) on
# ringvm and on QEMU's userspace virtio-net-pci as iperf_bench.sh does, runs iperf3 guest to host
# (-R) with 1 and with 4 streams against each, and half a second into each run records L1's
# scheduler and KVM events (tracefs: sched_switch/sched_wakeup, kvm_exit/kvm_entry, kvm_pio,
# kvm_msi_set_irq, kvm_inj_virq, and the VMM's writev/read/epoll/ppoll calls); before that, 20
# pings, traced whole (their round trip as the tap sees it: echo out, reply in). Then prints per
# frame: the tap writev's duration, writev return to completion interrupt, the guest's kick until
# the device thread runs, interrupt until the vCPU enters the guest; and per thread the time it
# ran and the time it was runnable but waiting (docs/networking.md, "Worker priority").
#
#   bench/net/sched_trace.sh [--ringvm PATH] [-- EXTRA_NET_OPTIONS]   e.g. -- net.nice=0 (tuning)
#
# Traces and the tables stay in ${RINGVM_BENCH_DIR:-${TMPDIR:-/tmp}/ringvm-sched-trace}.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
guest=10.0.2.2 tap=rvtrace0

if [[ ${1:-} == --in-lab ]]; then
  # ---- inside L1 --------------------------------------------------------------------------
  dir=$2 ringvm=$3 extra=${4:-}
  kernel=/boot/vmlinuz-$RINGVM_LAB_KVER initrd=$dir/net-bench.cpio.gz
  cmdline="console=ttyS0 panic=-1 ringvm_net=bench"
  source "$repo/bench/lib/net_lab.sh"
  ns=ringvm-trace-$$
  nsx() { ip netns exec "$ns" "$@"; }
  trap 'ip netns del "$ns" 2>/dev/null' EXIT
  net_lab_netns "$ns" "$tap"
  t=/sys/kernel/tracing
  [[ -d $t/events/kvm ]] || mount -t tracefs tracefs "$t"
  echo 16384 >"$t/buffer_size_kb"
  events=(kvm/kvm_exit kvm/kvm_entry kvm/kvm_pio kvm/kvm_msi_set_irq kvm/kvm_inj_virq sched/sched_switch
    sched/sched_wakeup)
  events+=(net/net_dev_xmit net/netif_receive_skb)
  for call in writev read readv write epoll_wait ppoll; do
    events+=("syscalls/sys_enter_$call" "syscalls/sys_exit_$call")
  done
  for vmm in ringvm qemu; do
    console=$dir/$vmm.console
    : >"$console"
    net_lab_cmd "$vmm" "$ringvm" "$kernel" "$initrd" "$cmdline" "$console" "$tap" "$extra"
    nsx timeout -k 10 600 "${cmd[@]}" </dev/null >"$dir/$vmm.log" 2>&1 &
    pid=$!
    deadline=$((SECONDS + 480))
    until tr -d '\r' <"$console" | grep -q RINGVM-LAB-NET-READY; do
      if ((SECONDS > deadline)) || ! kill -0 "$pid" 2>/dev/null; then
        echo "sched_trace: $vmm: the guest never said NET-READY" >&2
        continue 2
      fi
      sleep 0.5
    done
    # Ping first (as iperf_bench does): 20 echoes traced whole, for the RTT from the tap's side.
    echo >"$t/trace"
    for e in "${events[@]}"; do echo 1 >"$t/events/$e/enable" 2>/dev/null || true; done
    nsx busybox ping -c 20 -i 0.2 -W 5 "$guest" >"$dir/$vmm-ping.txt" 2>&1 || true
    echo 0 >"$t/events/enable"
    cp "$t/trace" "$dir/$vmm-ping.trace"
    for streams in 1 4; do
      nsx timeout 60 iperf3 -c "$guest" -t 6 -J -R -P "$streams" >"$dir/$vmm-$streams.json" 2>&1 &
      ipf=$!
      sleep 3
      echo >"$t/trace"
      for e in "${events[@]}"; do echo 1 >"$t/events/$e/enable" 2>/dev/null || echo "sched_trace: no event $e" >&2; done
      sleep 0.5
      echo 0 >"$t/events/enable"
      cp "$t/trace" "$dir/$vmm-$streams.trace"
      wait "$ipf" || true
    done
    nsx busybox nc -w 5 "$guest" 5999 </dev/null >/dev/null 2>&1 || true
    wait "$pid" || true
  done
  exit 0
fi

# ---- on the host ----------------------------------------------------------------------------
ringvm=$repo/build/ringvm extra=
while (($#)); do
  case $1 in
    --ringvm) ringvm=$(realpath "$2"); shift 2 ;;
    --) extra=$(IFS=,; echo "${*:2}"); break ;;
    *) echo "usage: $0 [--ringvm PATH] [-- EXTRA_NET_OPTIONS]" >&2; exit 2 ;;
  esac
done
[[ -x $ringvm ]] || { echo "sched_trace: $ringvm is not built" >&2; exit 1; }
iperf3=$(command -v iperf3) || { echo "sched_trace: iperf3 not found: apt-get install iperf3" >&2; exit 1; }
command -v python3 >/dev/null || { echo "sched_trace: python3 not found" >&2; exit 1; }
source "$repo/bench/lib/bench_host.sh"
dir=$(bench_dir ringvm-sched-trace)
cp "$ringvm" "$dir/ringvm"
bench_initramfs "$dir/net-bench.cpio.gz" "$repo/tests/lab/net_init.sh" "$iperf3" /bin/iperf3 virtio_pci virtio_net
"$repo/scripts/lab.sh" --timeout 1800 --share "$dir" -- "$here/sched_trace.sh" --in-lab "$dir" "$dir/ringvm" "$extra" >&2
for vmm in ringvm qemu; do
  [[ -f $dir/$vmm-ping.trace ]] || continue
  echo "== $vmm ping ($(sed -n 's|^round-trip min/avg/max = |as ping saw it, min/avg/max |p' "$dir/$vmm-ping.txt"))"
  python3 "$here/sched_trace.py" --ping "$tap" "$dir/$vmm-ping.trace"
done
for f in "$dir"/{ringvm,qemu}-{1,4}.trace; do
  [[ -f $f ]] || continue
  gbps=$(jq -r '(.end.sum_received.bits_per_second // 0) / 1e6 | round / 1e3' "${f%.trace}.json" 2>/dev/null || echo -)
  echo "== $(basename "${f%.trace}") (guest to host, $gbps Gbit/s over the whole run)"
  python3 "$here/sched_trace.py" "$f"
done
