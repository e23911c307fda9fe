#!/usr/bin/env bash
# Snapshot benchmark (issue 22's Performance section; not part of the test suite), in ONE L1 boot
# of the lab (scripts/lab.sh), ringvm side by side with QEMU (-M microvm, KVM) on the same 256 MiB,
# 2-vCPU guest: Debian's kernel and a busybox initramfs whose init (snap_bench_init.sh) prints
# "SNAPB-TICK N UPTIME" every ~20 ms. bench/snapshot/snapshot_bench.py does the work inside L1:
#  1. snapshot create: ringvm pause + snapshot create (API requests) (Full, CREATE_RUNS times; then Diff after
#     5 s of running with --track-dirty-pages) against QEMU `stop` + `migrate "exec:cat > FILE"`
#     over QMP, interleaved: times and file sizes (apparent and allocated), ratios;
#  2. restore latency, RUNS interleaved restores each: `ringvm run --restore` against
#     `qemu ... -incoming "exec:cat FILE"`: exec to the first kvm_entry (tracefs in L1), to QMP
#     `paused` after loading (the source was stopped, so QEMU's destination stays paused: the
#     driver sends `cont`, as ringvm resumes at once), to the guest's next tick on the console;
#     ringvm's start.build_us and start.first_entry_us from GET /metrics; medians and ratios (goal <= 0.1);
#  3. clone density: one `ringvm run --restore` against `ringvm clone --count 8`, Rss and Pss
#     (/proc/PID/smaps_rollup) after the same settling time (goal: 8 clones' Pss <= 1.5x one's Rss);
#  4. tiny guest: tests/guests/counter_pvh.elf with --memory 256M, snapshot once, restore
#     TINY_RUNS times: median first_entry_us (goal <= 5 ms) and exec to first entry.
# Snapshot files live on L1's tmpfs (/tmp) for both VMMs; both binaries load over 9p.
#
#   bench/snapshot/snapshot_bench.sh [--runs N] [--tiny-runs N] [--clones N] [--settle SECS]
#                                    [--create-runs N] [--qemu-machine microvm|pc] [--build DIR]
#                                    [--steps create,restore,clones,tiny]
#
# Defaults: 5 restores, 20 tiny restores, 8 clones, 10 s settling, 3 creates, microvm, build/.
# About 10-15 minutes of lab time. Raw logs, consoles and results.json in
# ${RINGVM_BENCH_DIR:-${TMPDIR:-/tmp}/ringvm-snapshot-bench}; the report is printed at the end.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

if [[ ${1:-} == --in-lab ]]; then
  # ---- inside L1 --------------------------------------------------------------------------
  shift
  dir=$1 build=$2
  shift 2
  work=/tmp/snapshot-bench
  rm -rf "$work" && mkdir -p "$work"
  echo "L1: $(nproc) CPUs, $(awk '/^MemTotal:/ { print $2 }' /proc/meminfo) kB, kernel $(uname -r)," \
    "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)" >"$dir/l1.txt"
  status=0
  /usr/bin/python3 "$here/snapshot_bench.py" --work "$work" --ringvm "$build/ringvm" \
    --kernel "/boot/vmlinuz-$RINGVM_LAB_KVER" --initrd "$dir/guest.cpio.gz" \
    --counter "$build/tests/guests/counter_pvh.elf" "$@" >"$dir/report.txt" 2>"$dir/driver.log" || status=$?
  # The small files back to the share (the snapshot and memory files stay in L1).
  mkdir -p "$dir/work"
  find "$work" -maxdepth 2 -type f \( -name '*.log' -o -name '*.console' -o -name '*.json' -o -name '*.txt' \) \
    -size -4M -exec cp --parents {} "$dir/work" \; 2>/dev/null || true
  exit "$status"
fi

# ---- on the host ----------------------------------------------------------------------------
build=$repo/build args=()
while (($#)); do
  case $1 in
    --runs) args+=(--restores "$2"); shift 2 ;;
    --tiny-runs) args+=(--tiny-runs "$2"); shift 2 ;;
    --clones) args+=(--clones "$2"); shift 2 ;;
    --settle) args+=(--settle "$2"); shift 2 ;;
    --create-runs) args+=(--create-runs "$2"); shift 2 ;;
    --qemu-machine) args+=(--qemu-machine "$2"); shift 2 ;;
    --steps) args+=(--steps "$2"); shift 2 ;;
    --build) build=$(cd "$2" && pwd); shift 2 ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
  esac
done
for f in "$build/ringvm" "$build/tests/guests/counter_pvh.elf"; do
  [[ -e $f ]] || { echo "snapshot_bench: $f is not built (cmake --build --preset release --target ringvm ringvm_test_guests)" >&2; exit 2; }
done
dir=${RINGVM_BENCH_DIR:-${TMPDIR:-/tmp}/ringvm-snapshot-bench}
rm -rf "$dir" && mkdir -p "$dir"
dir=$(cd "$dir" && pwd -P)
"$repo/tests/lab/mkinitramfs.sh" --output "$dir/guest.cpio.gz" --init "$here/snap_bench_init.sh" >/dev/null
status=0
"$repo/scripts/lab.sh" --timeout "${RINGVM_BENCH_TIMEOUT:-1800}" --share "$dir" -- \
  "$here/snapshot_bench.sh" --in-lab "$dir" "$build" "${args[@]}" >&2 || status=$?
echo "Snapshot benchmark, $(date -u +%F), ringvm $(git -C "$repo" rev-parse --short HEAD)," \
  "QEMU $(qemu-system-x86_64 --version | head -n1 | sed 's/QEMU emulator version //'); $(cat "$dir/l1.txt" 2>/dev/null)"
cat "$dir/report.txt" 2>/dev/null || true
if ((status != 0)); then
  echo "snapshot_bench: the lab run ended with status $status; the driver's log: $dir/driver.log, the VMMs' logs and consoles: $dir/work" >&2
  tail -n 20 "$dir/driver.log" >&2 2>/dev/null || true
fi
exit "$status"
