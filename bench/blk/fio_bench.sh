#!/usr/bin/env bash
# virtio-blk benchmark (not part of the test suite): in ONE L1 boot of the lab (scripts/lab.sh),
# Debian's stock kernel with fio (Debian's package, copied with its libraries into the initramfs)
# runs 4 KiB random read and write at queue depth 1 and 32 and 1 MiB sequential read and write
# (queue depth 8), O_DIRECT with libaio on /dev/vda, on ringvm (--disk path=DISK,cache=none; set
# RINGVM_LAB_FIO_CACHE=writeback for the page-cache path) and on QEMU (virtio-blk-pci, cache=none,
# aio=io_uring), interleaved, RUNS times each: both bypass L1's page cache by default. The disk both use is
# the same 256 MiB brd RAM disk in L1 (/dev/ram0, filled with zeros first), so the host medium
# costs nothing and the VMMs' own paths are what is measured.
#
# Per job: IOPS, MB/s, and VM exits per request (all, and those that went to userspace), counted
# with tracefs hist triggers in L1 between the guest's BEGIN and END markers; then the ratios
# ringvm / QEMU. Compare only within one run of this script: the lab's speed varies between boots.
#
#   bench/blk/fio_bench.sh [--runs N] [--ringvm PATH] [--runtime SECS] [--qemu-machine M]
#
# Defaults: 1 run, build/ringvm, 5 s per job, QEMU `-M q35` (microvm needs `microvm,pcie=on`).
# RINGVM_LAB_FIO_VARIANTS="disk.poll_us=64 queues=1" adds ringvm runs with those extra --disk options
# (disk.KEY=V: a tuning constant, passed as RINGVM_TUNING; docs/tuning.md)
# (space-separated, one run each per round, labelled ringvm:OPTIONS), to compare settings in one
# L1 boot; a variant that starts with -- is a `ringvm run` option instead (e.g. --virtio-notify=mmio).
# About 5-10 minutes per round. Raw logs stay in ${TMPDIR:-/tmp}/ringvm-fio-bench/ (or $RINGVM_BENCH_DIR).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
jobs="randread_4k_qd1 randread_4k_qd32 randwrite_4k_qd1 randwrite_4k_qd32 seqread_1m seqwrite_1m"

if [[ ${1:-} == --in-lab ]]; then
  # ---- inside L1 --------------------------------------------------------------------------
  export LAB_RESULTS=$2
  ringvm=$3 runs=$4 runtime=$5 machine=$6
  source "$repo/tests/lab/lab_lib.sh"
  source "$repo/bench/lib/vmm_cpu.sh"
  kernel=/boot/vmlinuz-$RINGVM_LAB_KVER initrd=$LAB_RESULTS/fio-guest.cpio.gz
  cmdline="console=ttyS0 panic=-1 quiet fio_runtime=$runtime"
  modprobe brd rd_nr=1 rd_size=262144 || { echo "fio_bench: cannot load brd" >&2; exit 1; }
  disk=/dev/ram0
  dd if=/dev/zero of=$disk bs=1M count=256 status=none
  # Let L1 settle (writeback, page reclaim) before the first VMM, which would otherwise pay for it.
  sync
  echo 3 >/proc/sys/vm/drop_caches
  sleep 5
  table=$LAB_RESULTS/table cpu=$LAB_RESULTS/cpu
  : >"$table"
  : >"$cpu"
  for ((i = 1; i <= runs; i++)); do
    # shellcheck disable=SC2086 # one variant per word
    mapfile -t order < <(lab_bench_order "$i" ${RINGVM_LAB_FIO_VARIANTS:-})
    for vmm in "${order[@]}"; do
      name=$(tr ':=,' '-__' <<<"${vmm}")_$i
      console=$LAB_RESULTS/$name.console
      : >"$console"
      case $vmm in
        ringvm*)
          lab_bench_variant "$vmm"
          cmd=("$ringvm" run --kernel "$kernel" --initrd "$initrd" --cmdline "$cmdline" --cpus 2 --memory 1024M
            --disk "path=$disk,cache=${RINGVM_LAB_FIO_CACHE:-none}${extra:+,$extra}" --console "file:$console" --stats
            "${run_opt[@]}")
          ;;
        qemu)
          cmd=(qemu-system-x86_64 -enable-kvm -name bench,debug-threads=on -M "$machine" -cpu host -smp 2 -m 1024M -nodefaults
            -no-user-config -display none -no-reboot -chardev "file,id=con0,path=$console" -serial chardev:con0
            -kernel "$kernel" -initrd "$initrd" -append "$cmdline"
            -drive "if=none,id=d0,file=$disk,format=raw,cache=none,aio=io_uring" -device virtio-blk-pci,drive=d0)
          ;;
      esac
      { printf '+'; printf ' %q' "${cmd[@]}"; echo; } >"$LAB_RESULTS/$name.log"
      lab_trace_start
      timeout -k 10 900 "${cmd[@]}" </dev/null >>"$LAB_RESULTS/$name.log" 2>&1 &
      pid=$!
      # Snapshot the exit counters when each BEGIN/END marker shows up (the guest idles 1 s).
      declare -A snap=() snap_cpu=()
      vpid=
      while kill -0 "$pid" 2>/dev/null; do
        [[ -n $vpid ]] || vpid=$(vmm_pid "$console")
        while read -r marker; do
          [[ -n $marker && -z ${snap[$marker]:-} ]] || continue
          snap[$marker]="$(lab_trace_total kvm_exit) $(lab_trace_total kvm_userspace_exit)"
          snap_cpu[$marker]=$(vmm_cpu_ticks "${vpid:-0}")
          # Kept per marker for the breakdown of exits by SVM exit code.
          lab_trace_save "$LAB_RESULTS/$name.$marker"
          # L1's own interrupts (its timer, rescheduling and call IPIs): each one that lands on a
          # CPU running L2 is an INTR exit. A builtin read, no fork.
          printf '%s\n' "$(</proc/interrupts)" >"$LAB_RESULTS/$name.$marker.l1irq.hist"
        done < <(grep -ao 'RINGVM-FIO-\(BEGIN\|END\) [a-z0-9_]*' "$console" | tr ' ' '_')
        sleep 0.2
      done
      status=0
      wait "$pid" || status=$?
      echo "fio_bench: $name: status $status" >&2
      for job in $jobs; do
        read -r iops bw ios < <(tr -d '\r' <"$console" | sed -n "s/^.*RINGVM-FIO-RESULT $job //p" | head -n1) || true
        read -r e0 u0 <<<"${snap[RINGVM-FIO-BEGIN_$job]:-- -}" || true
        read -r e1 u1 <<<"${snap[RINGVM-FIO-END_$job]:-- -}" || true
        # The markers' own cost (a second's idling, the END line through the UART), from the
        # guest's calibration pair just before the job.
        read -r c0 cu0 <<<"${snap[RINGVM-FIO-BEGIN_cal_$job]:-- -}" || true
        read -r c1 cu1 <<<"${snap[RINGVM-FIO-END_cal_$job]:-- -}" || true
        echo "$vmm $i $status $job ${iops:--} ${bw:--} ${ios:--} $e0 $e1 $u0 $u1 $name $c0 $c1 $cu0 $cu1" >>"$table"
        echo "$vmm $i $job ${ios:-0} ${snap_cpu[RINGVM-FIO-BEGIN_$job]:-- -} ${snap_cpu[RINGVM-FIO-END_$job]:-- -}" >>"$cpu"
      done
      unset snap snap_cpu
    done
  done
  exit 0
fi

# ---- on the host ----------------------------------------------------------------------------
runs=1 ringvm=$repo/build/ringvm runtime=5 machine=q35
while (($#)); do
  case $1 in
    --runs) runs=$2; shift 2 ;;
    --ringvm) ringvm=$(realpath "$2"); shift 2 ;;
    --runtime) runtime=$2; shift 2 ;;
    --qemu-machine) machine=$2; shift 2 ;;
    *) echo "usage: $0 [--runs N] [--ringvm PATH] [--runtime SECS] [--qemu-machine M]" >&2; exit 2 ;;
  esac
done
[[ -x $ringvm ]] || { echo "fio_bench: $ringvm is not built" >&2; exit 2; }
fio=$(command -v fio) || { echo "fio_bench: fio not found: apt-get install fio" >&2; exit 2; }
source "$repo/bench/lib/bench_host.sh"
dir=$(bench_dir ringvm-fio-bench)
# L1 sees the host's files read-only, but its own tmpfs over /tmp: run a copy from the share.
cp "$ringvm" "$dir/ringvm"
bench_initramfs "$dir/fio-guest.cpio.gz" "$here/fio_init.sh" "$fio" /usr/bin/fio virtio_pci virtio_blk
"$repo/scripts/lab.sh" --timeout $((runs * 2 * 960 + 300)) --share "$dir" -- \
  "$here/fio_bench.sh" --in-lab "$dir" "$dir/ringvm" "$runs" "$runtime" "$machine" >&2 || lab_status=$?
# An L1 crash (docs/lab.md, failure 1) ends the lab run, not what it measured: report the runs
# that finished, and still fail.
if ((${lab_status:=0} != 0)); then
  echo "fio_bench: the lab run failed (status $lab_status); logs in $dir" >&2
  [[ -s $dir/table ]] || exit 1
  echo "fio_bench: reporting the runs that finished before that" >&2
fi

echo "virtio-blk under fio: Debian's $(ls /boot/vmlinuz-* | sort -V | tail -n1 | sed 's|.*/||'), 2 vCPUs," \
  "1 GiB, /dev/vda on a brd RAM disk in L1, libaio O_DIRECT, ${runtime}s per job, $runs interleaved runs;" \
  "QEMU -M $machine virtio-blk-pci cache=none aio=io_uring; exits counted in L1 between BEGIN and END, less the markers' own cost"
awk -v jobs="$jobs" '
  # Exits per request in a job window, less what the markers cost (calibration pair c0..c1) when
  # the guest measured it (never below zero).
  function cost(a, b, c0, c1,   d) {
    d = b - a
    if (c0 != "" && c0 != "-" && c1 != "-") d -= c1 - c0
    return d < 0 ? 0 : d
  }
  function per(a, b, n, c0, c1) {
    return (a == "-" || b == "-" || n + 0 == 0) ? "-" : sprintf("%.2f", cost(a, b, c0, c1) / n)
  }
  BEGIN {
    printf "%-7s %3s %6s %-17s %10s %9s %9s %12s %12s\n", "vmm", "run", "status", "job", "iops", "MB/s",
      "ios", "exits/req", "user_ex/req"
  }
  {
    mbs = ($6 == "-") ? "-" : sprintf("%.1f", $6 / 1e6)
    printf "%-7s %3s %6s %-17s %10s %9s %9s %12s %12s\n", $1, $2, $3, $4, $5, mbs, $7, per($8, $9, $7, $13, $14),
      per($10, $11, $7, $15, $16)
    if ($3 == 0 && $5 != "-") {
      k = $1 SUBSEP $4; n[k]++; iops[k] += $5; bw[k] += $6
      if ($7 + 0 > 0 && $8 != "-" && $9 != "-") {
        ex[k] += cost($8, $9, $13, $14) / $7; ux[k] += cost($10, $11, $15, $16) / $7; ne[k]++
      }
    }
  }
  $1 != "qemu" && !($1 in seen) { seen[$1] = 1; labels[++nl] = $1 }
  END {
    split(jobs, js, " ")
    for (l = 1; l <= nl; l++) {
      v = labels[l]
      print ""
      printf "%-17s %12s %12s %8s %10s %10s %12s %12s\n", "mean: " v, "iops", "qemu_iops", "ratio", "MB/s",
        "qemu_MB/s", "ux/req", "qemu_ux/req"
      for (j = 1; j in js; j++) {
        r = v SUBSEP js[j]; q = "qemu" SUBSEP js[j]
        if (!n[r] || !n[q]) { printf "%-17s %12s\n", js[j], "n/a (a run failed; see the logs)"; continue }
        printf "%-17s %12.0f %12.0f %8.2f %10.1f %10.1f %12s %12s\n", js[j], iops[r] / n[r], iops[q] / n[q],
          (iops[r] / n[r]) / (iops[q] / n[q]), bw[r] / n[r] / 1e6, bw[q] / n[q] / 1e6,
          ne[r] ? sprintf("%.2f", ux[r] / ne[r]) : "-", ne[q] ? sprintf("%.2f", ux[q] / ne[q]) : "-"
      }
    }
  }' "$dir/table"
# Exits per request by SVM exit code, and MSR exits by MSR index (END minus BEGIN of each job's
# hists), mean over the runs: one exit_hist_table line per job and label.
source "$repo/bench/lib/exit_hist.sh"
# per_job_hists EVENT LINES [msr]: EVENT is kvm_exit or kvm_msr, LINES the function that diffs two
# of its hists (exit_hist_diff or msr_hist_lines).
per_job_hists() {
  local label job vmm i name ios b e
  for label in $(awk '$1 != "qemu" && !s[$1]++ { print $1 }' "$dir/table"); do
    [[ $label == ringvm ]] || echo "$label:"
    for job in $jobs; do
      for vmm in "$label" qemu; do
        for ((i = 1; i <= runs; i++)); do
          name=$(awk -v v="$vmm" -v r="$i" -v j="$job" '$1 == v && $2 == r && $4 == j { print $12 }' "$dir/table")
          b=$dir/$name.RINGVM-FIO-BEGIN_$job.$1.hist e=$dir/$name.RINGVM-FIO-END_$job.$1.hist
          ios=$(awk -v v="$vmm" -v r="$i" -v j="$job" '$1 == v && $2 == r && $4 == j { print $7 }' "$dir/table")
          [[ -f $b && -f $e && $ios =~ ^[0-9]+$ && $ios -gt 0 ]] || continue
          "$2" "$b" "$e" "$([[ $vmm == qemu ]] && echo qemu || echo ringvm)" "$ios"
        done
      done | exit_hist_table "$job" ringvm "${3:-}"
    done
  done
}
echo
echo "exits per request by SVM exit code (ringvm / qemu), mean over runs; codes in docs/virtio.md"
per_job_hists kvm_exit exit_hist_diff
echo
echo "MSR exits per request by MSR index (ringvm / qemu), mean over runs (2059 EOI, 1760 TSC deadline, 2096 ICR)"
per_job_hists kvm_msr msr_hist_lines msr
echo
echo "L1's own interrupts per request, all CPUs (ringvm / qemu), mean over runs: LOC timer, RES reschedule IPI, CAL call IPI"
per_job_hists l1irq l1_irq_lines
# Where L1's CPU goes per request: the VMM's vCPU threads (L2's own execution included) and its
# other threads (I/O workers, main loop: the VMM's own cost), µs (10 ms ticks), mean over runs.
echo
echo "VMM CPU in L1 per request, us: vCPU threads (guest included) / other threads (the VMM's own work)"
source "$repo/bench/lib/vmm_cpu.sh"
vmm_cpu_table "$dir/cpu" 1e6
echo "Logs and consoles: $dir"
exit $((lab_status == 0 ? 0 : 1))
