#!/usr/bin/env bash
# Network benchmark (not part of the test suite): in ONE L1 boot of the lab (scripts/lab.sh), boots
# Debian's stock kernel with the lab's network guest (tests/lab/net_init.sh, mode `bench`: iperf3
# server) on ringvm (`--net tap=TAP,queues=2`) and on QEMU's userspace virtio-net-pci (q35,
# `-netdev tap,...,vhost=off,queues=2`), same kernel, initramfs, 2 vCPUs and tap. Against each it
# runs, from L1 over the tap (in a network namespace: nothing leaves L1): ping (20, RTT average),
# then iperf3 TCP host->guest and guest->host (-R) with 1 and 4 streams. Prints Gbit/s per test
# and the ratios ringvm / QEMU (throughput: higher is better for ringvm; RTT: lower is).
#
#   bench/net/iperf_bench.sh [--runs N] [--ringvm PATH] [--seconds N]
#
# With --runs N the two VMMs alternate N times in the same L1 boot and the table gives each
# run's numbers and the means the ratios are taken from. Each test also counts L1's VM exits
# (tracefs) and prints them per MiB moved (per ping for the RTT); further tables: frames on the
# tap, the VMM's CPU per MiB, and L1 as a whole (busy %, CPU per MiB, iperf3's share).
# RINGVM_LAB_NET_VARIANTS="net.batch_us=2000" adds ringvm runs with those extra --net options
# (net.KEY=V: a tuning constant, passed as RINGVM_TUNING; docs/tuning.md)
# (space-separated, labelled ringvm:OPTIONS) to every round; a variant that starts with -- is a
# `ringvm run` option instead (e.g. --virtio-notify=mmio).
# Defaults: 1 run, build/ringvm, 10 s per iperf3 test. About 6-10 minutes a run. Raw logs stay in
# ${TMPDIR:-/tmp}/ringvm-net-bench/ (or $RINGVM_BENCH_DIR). Compare only numbers from one L1 boot.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
guest=10.0.2.2 tap=rvbench0

if [[ ${1:-} == --in-lab ]]; then
  # ---- inside L1 --------------------------------------------------------------------------
  export LAB_RESULTS=$2
  ringvm=$3 seconds=$4 runs=$5
  source "$repo/tests/lab/lab_lib.sh"
  source "$repo/bench/lib/vmm_cpu.sh"
  kernel=/boot/vmlinuz-$RINGVM_LAB_KVER initrd=$LAB_RESULTS/net-bench.cpio.gz
  cmdline="console=ttyS0 panic=-1 ringvm_net=bench"
  source "$repo/bench/lib/net_lab.sh"
  ns=ringvm-bench-$$
  nsx() { ip netns exec "$ns" "$@"; }
  trap 'ip netns del "$ns" 2>/dev/null' EXIT
  net_lab_netns "$ns" "$tap"
  table=$LAB_RESULTS/table cpu=$LAB_RESULTS/cpu frames=$LAB_RESULTS/frames l1cpu=$LAB_RESULTS/l1cpu
  : >"$table"
  : >"$cpu"
  : >"$frames"
  : >"$l1cpu"
  # L1's "BUSY TOTAL" clock ticks over all its CPUs (/proc/stat; idle and iowait are not busy).
  l1_ticks() { awk '$1 == "cpu" { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t; exit }' /proc/stat; }
  # The tap's "rx_packets rx_bytes tx_packets tx_bytes tx_dropped qdisc_dropped" (its tx is what
  # reaches the guest; a frame dropped on the way in tells the host's TCP to slow down).
  tap_frames() {
    local q
    q=$(nsx tc -s qdisc show dev "$tap" 2>/dev/null | awk '$1 == "Sent" { v = $7; gsub(/,/, "", v); d += v } END { print d + 0 }')
    nsx awk -v t="$tap:" -v q="${q:-0}" '$1 == t { print $3, $2, $11, $10, $13, q }' /proc/net/dev
  }
  for ((run = 1; run <= runs; run++)); do
    # shellcheck disable=SC2086 # one variant per word
    mapfile -t order < <(lab_bench_order "$run" ${RINGVM_LAB_NET_VARIANTS:-})
    for vmm in "${order[@]}"; do
      name=$(tr ':=,' '-__' <<<"$vmm")
      console=$LAB_RESULTS/$name.$run.console log=$LAB_RESULTS/$name.$run.log
      : >"$console"
      extra='' run_opt=()
      [[ $vmm == ringvm* ]] && lab_bench_variant "$vmm"
      net_lab_cmd "${vmm%%:*}" "$ringvm" "$kernel" "$initrd" "$cmdline" "$console" "$tap" "$extra" "${run_opt[@]}"
      { printf '+ ip netns exec %s' "$ns"; printf ' %q' "${cmd[@]}"; echo; } >"$log"
      nsx timeout -k 10 900 "${cmd[@]}" </dev/null >>"$log" 2>&1 &
      pid=$!
      deadline=$((SECONDS + 480)) ready=1
      until tr -d '\r' <"$console" | grep -q RINGVM-LAB-NET-READY; do
        if ((SECONDS > deadline)) || ! kill -0 "$pid" 2>/dev/null; then
          echo "iperf_bench: $vmm: the guest never said NET-READY" >&2
          ready=0
          break
        fi
        sleep 0.5
      done
      if ((ready == 0)); then
        # A guest that stalled in boot (docs/lab.md, failures 3 and 5) gets no tests: each would
        # wait out iperf3's bound, and the VMM its own, for nothing. Its console and log stay.
        # (Found by parent pid, not pgrep -f: reading a stuck process's cmdline can block.)
        pkill -TERM -P "$pid" 2>/dev/null || true
        kill "$pid" 2>/dev/null || true
        for ((i = 0; i < 60; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        if kill -0 "$pid" 2>/dev/null; then
          # SIGTERM unanswered for 30 s: its vCPU threads are stuck in L1's KVM (docs/lab.md,
          # failure 5); this L1 cannot be trusted with more runs.
          echo "$vmm $run status stuck -" >>"$table"
          echo "iperf_bench: $vmm run $run: the guest never became ready and the VMM ignores SIGTERM; ending the bench" >&2
          break 2
        fi
        status=0
        wait "$pid" || status=$?
        echo "$vmm $run status never-ready -" >>"$table"
        echo "iperf_bench: $vmm run $run: no tests, the guest never became ready (status $status)" >&2
        continue
      fi
      lab_trace_start || true
      vpid=$(vmm_pid "$console")
      e0=$(lab_trace_total kvm_exit 2>/dev/null || echo 0)
      rtt=$(nsx busybox ping -c 20 -i 0.2 -W 5 "$guest" 2>&1 | tee -a "$log" |
        sed -n 's|^round-trip min/avg/max = [0-9.]*/\([0-9.]*\)/.*|\1|p')
      e1=$(lab_trace_total kvm_exit 2>/dev/null || echo 0)
      echo "$vmm $run ping_rtt_ms ${rtt:--} $(((e1 - e0) / 20))" >>"$table"
      for test in "to_guest 1" "to_guest 4" "from_guest 1" "from_guest 4"; do
        read -r dir streams <<<"$test"
        flags=(-P "$streams")
        [[ $dir == from_guest ]] && flags+=(-R)
        json=$LAB_RESULTS/$name-$run-$dir-$streams.json
        e0=$(lab_trace_total kvm_exit 2>/dev/null || echo 0)
        hist=$LAB_RESULTS/$name-$run-$dir-$streams
        lab_trace_save "$hist.0"
        f0=$(tap_frames)
        c0=$(vmm_cpu_ticks "${vpid:-0}")
        l0=$(l1_ticks)
        nsx timeout 120 iperf3 -c "$guest" -t "$seconds" -J "${flags[@]}" >"$json" 2>>"$log" || true
        l1=$(l1_ticks)
        c1=$(vmm_cpu_ticks "${vpid:-0}")
        f1=$(tap_frames)
        e1=$(lab_trace_total kvm_exit 2>/dev/null || echo 0)
        lab_trace_save "$hist.1"
        gbps=$(jq -r '(.end.sum_received.bits_per_second // empty) / 1e6 | round / 1e3' "$json" 2>/dev/null || true)
        mib=$(jq -r '(.end.sum_received.bytes // 0) / 1048576 | floor' "$json" 2>/dev/null || echo 0)
        per=-
        ((mib > 0)) && per=$(((e1 - e0) / mib))
        echo "$vmm $run ${dir}_P$streams ${gbps:--} $per" >>"$table"
        echo "$vmm $run ${dir}_P$streams $mib $c0 $c1" >>"$cpu"
        # iperf3's own CPU in L1 (the client: the receiver in from_guest tests), percent of one CPU.
        ipc=$(jq -r '.end.cpu_utilization_percent.host_total // "-"' "$json" 2>/dev/null || echo -)
        echo "$vmm $run ${dir}_P$streams $mib ${l0:-- -} ${l1:-- -} ${ipc:--}" >>"$l1cpu"
        rtx=$(jq -r '.end.sum_sent.retransmits // "-"' "$json" 2>/dev/null || echo -)
        echo "$vmm $run ${dir}_P$streams $mib ${f0:-- - - - - -} ${f1:-- - - - - -} ${rtx:--}" >>"$frames"
      done
      # The guest powers off when this connection comes.
      nsx busybox nc -w 5 "$guest" 5999 </dev/null >/dev/null 2>&1 || true
      status=0
      wait "$pid" || status=$?
      echo "$vmm $run status $status -" >>"$table"
      echo "iperf_bench: $vmm run $run done (status $status)" >&2
    done
  done
  exit 0
fi

# ---- on the host ----------------------------------------------------------------------------
ringvm=$repo/build/ringvm seconds=10 runs=1
while (($#)); do
  case $1 in
    --runs) runs=$2; shift 2 ;;
    --ringvm) ringvm=$(realpath "$2"); shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    *) echo "usage: $0 [--runs N] [--ringvm PATH] [--seconds N]" >&2; exit 2 ;;
  esac
done
[[ -x $ringvm ]] || { echo "iperf_bench: $ringvm is not built" >&2; exit 1; }
iperf3=$(command -v iperf3) || { echo "iperf_bench: iperf3 not found: apt-get install iperf3" >&2; exit 1; }
command -v jq >/dev/null || { echo "iperf_bench: jq not found: apt-get install jq" >&2; exit 1; }
source "$repo/bench/lib/bench_host.sh"
dir=$(bench_dir ringvm-net-bench)
# L1 sees the host's files read-only, but its own tmpfs over /tmp: run a copy from the share.
cp "$ringvm" "$dir/ringvm"
bench_initramfs "$dir/net-bench.cpio.gz" "$repo/tests/lab/net_init.sh" "$iperf3" /bin/iperf3 virtio_pci virtio_net
"$repo/scripts/lab.sh" --timeout $((runs * 2400)) --share "$dir" -- \
  "$here/iperf_bench.sh" --in-lab "$dir" "$dir/ringvm" "$seconds" "$runs" >&2 || lab_status=$?
# An L1 crash (docs/lab.md, failure 1) ends the lab run, not what it measured: report the runs
# that finished, and still fail.
if ((${lab_status:=0} != 0)); then
  echo "iperf_bench: the lab run failed (status $lab_status); logs in $dir" >&2
  [[ -s $dir/table ]] || exit 1
  echo "iperf_bench: reporting the runs that finished before that" >&2
fi

echo "TCP over a tap: Debian's $(ls /boot/vmlinuz-* | sort -V | tail -n1 | sed 's|.*/||'), 2 vCPUs, 2 queue" \
  "pairs, L2 in the lab's L1 (nested AMD-V under TCG), iperf3 ${seconds}s per test, $runs interleaved run(s);" \
  "QEMU q35 virtio-net-pci vhost=off"
awk '
  # vmm run test value exits-per-MiB (per ping for ping_rtt_ms)
  {
    if (!seen[$3]++) order[++n] = $3
    runs[$1 " " $3] = runs[$1 " " $3] " " $4
    if ($4 ~ /^[0-9.]+$/ && $3 != "status") { sum[$1 " " $3] += $4; cnt[$1 " " $3]++ }
    if ($5 ~ /^[0-9]+$/) { ex[$1 " " $3] += $5; exn[$1 " " $3]++ }
  }
  $1 != "qemu" && !($1 in isv) { isv[$1] = 1; labels[++nl] = $1 }
  function mean(k) { return cnt[k] ? sum[k] / cnt[k] : "-" }
  function exits(k) { return exn[k] ? sprintf("%.0f", ex[k] / exn[k]) : "-" }
  END {
    for (l = 1; l <= nl; l++) {
      v = labels[l]
      if (l > 1) print ""
      printf "%-16s %10s %10s %8s %12s %12s   %s\n", "test", v, "qemu", "ratio", "exits", "qemu_exits",
        "per run (" v " | qemu)"
      for (i = 1; i <= n; i++) {
        t = order[i]; r = mean(v " " t); q = mean("qemu " t)
        ratio = (r != "-" && q != "-" && q > 0 && t != "status") ? sprintf("%.2f", r / q) : "-"
        if (t == "status") { r = "-"; q = "-" }
        printf "%-16s %10s %10s %8s %12s %12s  %s |%s\n", t, (r == "-") ? r : sprintf("%.3f", r),
          (q == "-") ? q : sprintf("%.3f", q), ratio, exits(v " " t), exits("qemu " t), runs[v " " t],
          runs["qemu " t]
      }
    }
  }' "$dir/table"
echo "(throughput in Gbit/s, ratio = ringvm / QEMU, means over runs; ping_rtt_ms in ms, lower is better;"
echo " exits = L1 VM exits per MiB received, per ping for ping_rtt_ms; logs in $dir)"
# Exits per MiB by SVM exit code, and MSR exits by MSR index (each test's hists after minus
# before), mean over the runs that moved data: one exit_hist_table line per test and label.
source "$repo/bench/lib/exit_hist.sh"
# per_test_hists EVENT LINES [msr]: EVENT is kvm_exit or kvm_msr, LINES the function that diffs
# two of its hists (exit_hist_diff or msr_hist_lines).
per_test_hists() {
  local label test vmm name i mib
  for label in $(awk '$1 != "qemu" && !s[$1]++ { print $1 }' "$dir/table"); do
    [[ $label == ringvm ]] || echo "$label:"
    for test in to_guest-1 to_guest-4 from_guest-1 from_guest-4; do
      for vmm in "$label" qemu; do
        name=$(tr ':=,' '-__' <<<"$vmm")
        for ((i = 1; i <= runs; i++)); do
          mib=$(jq -r '(.end.sum_received.bytes // 0) / 1048576 | floor' "$dir/$name-$i-$test.json" 2>/dev/null || echo 0)
          [[ -f $dir/$name-$i-$test.0.$1.hist && $mib =~ ^[0-9]+$ && $mib -gt 0 ]] || continue
          "$2" "$dir/$name-$i-$test.0.$1.hist" "$dir/$name-$i-$test.1.$1.hist" \
            "$([[ $vmm == qemu ]] && echo qemu || echo ringvm)" "$mib"
        done
      done | exit_hist_table "$test" ringvm "${3:-}"
    done
  done
}
echo
echo "exits per MiB by SVM exit code (ringvm / qemu), mean over runs; codes in docs/virtio.md"
per_test_hists kvm_exit exit_hist_diff
echo
echo "MSR exits per MiB by MSR index (ringvm / qemu), mean over runs (2059 EOI, 1760 TSC deadline, 2096 ICR)"
per_test_hists kvm_msr msr_hist_lines msr
# How the data was cut into frames on the tap: the host's TCP sizes its TSO frames to its pacing
# rate, so a slower receiver gets smaller frames (and more of them, each with its own cost); the
# other direction's frames are mostly ACKs.
echo
echo "frames on the tap per MiB moved: data frames (mean size, KiB) / frames the other way (ACKs) / frames the tap"
echo "or its qdisc dropped on the way to the guest and the sender's TCP retransmissions (totals over runs)"
awk '
  NF == 17 && $4 > 0 && $5 != "-" && $11 != "-" {
    k = $1 " " $3
    if (!(k in n)) keys[++nk] = k
    n[k]++
    rxp = $11 - $5; rxb = $12 - $6; txp = $13 - $7; txb = $14 - $8
    drops[k] += ($15 - $9) + ($16 - $10)
    if ($17 ~ /^[0-9]+$/) rtx[k] += $17
    if ($3 ~ /^to_guest/) { dp = txp; db = txb; op = rxp } else { dp = rxp; db = rxb; op = txp }
    fpm[k] += dp / $4; sz[k] += dp > 0 ? db / dp / 1024 : 0; opm[k] += op / $4
  }
  END {
    for (i = 1; i <= nk; i++) {
      k = keys[i]
      printf "%-40s %8.1f (%5.1f KiB) %8.1f %8d %8d\n", k, fpm[k] / n[k], sz[k] / n[k], opm[k] / n[k], drops[k], rtx[k]
    }
  }' "$dir/frames" | sort -k2,2 -k1,1
# Where L1's CPU goes: the VMM's vCPU threads (L2's own execution included) and its other threads
# (device workers, main loop), in ms per MiB (10 ms ticks), mean over runs.
echo
echo "VMM CPU in L1 per MiB moved, ms: vCPU threads (guest included) / other threads (the VMM's own work)"
source "$repo/bench/lib/vmm_cpu.sh"
vmm_cpu_table "$dir/cpu" 1000
# All of L1 (the VMM, iperf3 at the L1 end, L1's network stack): how busy its CPUs were during the
# test and what that cost per MiB; when busy nears 100 % the test is bound by L1's CPUs, and what
# the VMM saves per MiB moves the total only by its share.
echo
echo "L1 as a whole during each test: busy % of all its CPUs / busy CPU ms per MiB / iperf3's own CPU % in L1"
awk -v hz="$(getconf CLK_TCK)" '
  NF == 9 && $4 > 0 && $5 != "-" && $7 != "-" && $8 > $6 {
    k = $1 " " $3
    if (!(k in n)) keys[++nk] = k
    n[k]++
    b = $7 - $5; t = $8 - $6
    pct[k] += t > 0 ? 100 * b / t : 0; ms[k] += b * 1000 / hz / $4
    if ($9 != "-") { ipc[k] += $9; ni[k]++ }
  }
  END {
    for (i = 1; i <= nk; i++) {
      k = keys[i]
      printf "%-40s %7.0f %% %9.1f %9s\n", k, pct[k] / n[k], ms[k] / n[k], ni[k] ? sprintf("%.0f %%", ipc[k] / ni[k]) : "-"
    }
  }' "$dir/l1cpu" | sort -k2,2 -k1,1
# Where the nested page faults come from: emulated MMIO (virtio kicks above all) against the rest
# (pages L1's KVM had not mapped), per MiB, and the busiest MMIO addresses; first run of each.
echo
echo "run 1: emulated MMIO and nested page faults per MiB (busiest MMIO addresses: gpa count)"
for test in to_guest-1 to_guest-4 from_guest-1 from_guest-4; do
  for vmm in $(awk '$2 == 1 && !s[$1]++ { print $1 }' "$dir/table"); do
    name=$(tr ':=,' '-__' <<<"$vmm")
    p=$dir/$name-1-$test
    mib=$(jq -r '(.end.sum_received.bytes // 0) / 1048576 | floor' "$p.json" 2>/dev/null || echo 0)
    [[ -f $p.0.kvm_mmio.hist && $mib =~ ^[0-9]+$ && $mib -gt 0 ]] || continue
    mmio=$(hist_diff "$p.0.kvm_mmio.hist" "$p.1.kvm_mmio.hist" gpa | awk '{ n += $2 } END { print n + 0 }')
    pf=$(hist_diff "$p.0.kvm_page_fault.hist" "$p.1.kvm_page_fault.hist" error_code | awk '{ n += $2 } END { print n + 0 }')
    top=$(hist_diff "$p.0.kvm_mmio.hist" "$p.1.kvm_mmio.hist" gpa | head -n 4 | tr '\n' ' ')
    awk -v t="$test" -v v="$vmm" -v m="$mmio" -v f="$pf" -v n="$mib" -v top="$top" \
      'BEGIN { printf "%-13s %-22s mmio %6.2f  page faults %6.2f  %s\n", t, v, m / n, f / n, top }'
  done
done
exit $((lab_status == 0 ? 0 : 1))
