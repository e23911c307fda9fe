#!/usr/bin/env bash
# Control-plane benchmark (not part of the test suite), in ONE L1 boot of the lab (scripts/lab.sh):
#  1. start-up: process start (exec) to the first KVM_RUN (the first kvm_entry of its vCPUs), read
#     from tracefs in L1, for ringvm and QEMU microvm side by side, interleaved, RUNS times each:
#     with a tiny PVH guest (tests/guests/ticker_pvh.elf) and with Debian's kernel;
#  2. the API socket accepting: fork to the first successful connect(), ringvm --api-sock against
#     QEMU's QMP socket (-qmp unix:...), RUNS times each (api_bench socket);
#  3. latencies through ringvm's API (api_bench latency): GET / round trip, pause and resume
#     request to answer over 100 cycles, 8 clients x 125 requests while the guest runs.
# Prints medians and the ratios ringvm / QEMU.
#
#   bench/api/api_bench.sh [--runs N] [--build DIR]
#
# Defaults: 10 runs, build/. Raw logs in ${RINGVM_BENCH_DIR:-${TMPDIR:-/tmp}/ringvm-api-bench}.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

# first_entry_us CMD...: runs CMD under tracefs until it first enters the guest (60 s at most); prints microseconds from its exec to its
# first kvm_entry (the first time one of its vCPUs enters the guest), or "-" if none was seen.
first_entry_us() {
  local t=/sys/kernel/tracing pid
  [[ -d $t/events/kvm ]] || mount -t tracefs tracefs "$t"
  echo 0 >"$t/tracing_on"
  echo 8192 >"$t/buffer_size_kb"
  echo 0 >"$t/options/overwrite"  # keep the oldest events: the first entry is what counts
  echo 1 >"$t/options/record-tgid"
  : >"$t/trace"
  echo 1 >"$t/events/sched/sched_process_exec/enable"
  echo 1 >"$t/events/kvm/kvm_entry/enable"
  echo 1 >"$t/tracing_on"
  "$@" </dev/null >/dev/null 2>&1 &
  pid=$!
  # Until one of its threads entered the guest (L1 is slow: QEMU takes seconds), at most 60 s.
  local waited=0
  until grep -q "( *$pid) .*kvm_entry:" "$t/trace" 2>/dev/null || ((waited >= 120)); do
    sleep 0.5
    waited=$((waited + 1))
  done
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  echo 0 >"$t/tracing_on"
  echo 0 >"$t/events/sched/sched_process_exec/enable"
  echo 0 >"$t/events/kvm/kvm_entry/enable"
  # Lines: "comm-TID (TGID) [cpu] flags TIMESTAMP: event: ...".
  awk -v pid="$pid" '
    function ts(   i) { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+\.[0-9]+:$/) return substr($i, 1, length($i) - 1) }
    /sched_process_exec:/ && $0 ~ ("pid=" pid " ") && exec == "" { exec = ts() }
    /kvm_entry:/ && exec != "" && $0 ~ ("\\( *" pid "\\)") { printf "%.0f\n", (ts() - exec) * 1e6; found = 1; exit }
    END { if (!found) print "-" }' "$t/trace"
}

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else print v[int((NR + 1) / 2)] }'; }

if [[ ${1:-} == --in-lab ]]; then
  # ---- inside L1 --------------------------------------------------------------------------
  dir=$2 build=$3 runs=$4
  ringvm=$build/ringvm ticker=$build/tests/guests/ticker_pvh.elf
  kernel=/boot/vmlinuz-$RINGVM_LAB_KVER initrd=$dir/guest.cpio.gz
  cd "$dir"
  : >startup
  for ((i = 1; i <= runs; i++)); do
    for case in ringvm_tiny qemu_tiny ringvm_linux qemu_linux; do
      case $case in
        ringvm_tiny) cmd=("$ringvm" run --kernel "$ticker" --cmdline ticker --memory 256M --console none) ;;
        qemu_tiny) cmd=(qemu-system-x86_64 -enable-kvm -M microvm -cpu host -m 256M -nodefaults -no-user-config
          -display none -kernel "$ticker" -append ticker) ;;
        ringvm_linux) cmd=("$ringvm" run --kernel "$kernel" --initrd "$initrd" --cmdline "console=ttyS0 quiet"
          --cpus 2 --memory 512M --console none) ;;
        qemu_linux) cmd=(qemu-system-x86_64 -enable-kvm -M microvm -cpu host -smp 2 -m 512M -nodefaults
          -no-user-config -display none -kernel "$kernel" -initrd "$initrd" -append "console=ttyS0 quiet") ;;
      esac
      echo "$case $(first_entry_us "${cmd[@]}")" >>startup
    done
  done
  "$build/bench/api/api_bench" socket "$runs" "$ringvm" run --api-sock "{sock}" >socket 2>&1 || true
  "$build/bench/api/api_bench" socket "$runs" qemu-system-x86_64 -enable-kvm -M microvm -m 256M -nodefaults \
    -no-user-config -display none -S -qmp "unix:{sock},server=on,wait=off" >>socket 2>&1 || true
  "$build/bench/api/api_bench" latency "$ticker" >latency 2>&1 || true
  exit 0
fi

runs=10 build=$repo/build
while (($#)); do
  case $1 in
    --runs) runs=$2; shift 2 ;;
    --build) build=$(cd "$2" && pwd); shift 2 ;;
    *) echo "usage: $0 [--runs N] [--build DIR]" >&2; exit 2 ;;
  esac
done
dir=${RINGVM_BENCH_DIR:-${TMPDIR:-/tmp}/ringvm-api-bench}
rm -rf "$dir" && mkdir -p "$dir"
# The lab's busybox initramfs (it powers the guest off; only its first KVM_RUN matters here).
"$repo/tests/lab/mkinitramfs.sh" --output "$dir/guest.cpio.gz" --init "$repo/tests/lab/guest_init.sh" >/dev/null
"$repo/scripts/lab.sh" --timeout 1800 --share "$dir" -- "$here/api_bench.sh" --in-lab "$dir" "$build" "$runs" >&2

echo "== process start to first KVM_RUN (median of $runs, microseconds; tracefs in L1)"
for guest in tiny linux; do
  r=$(awk -v c="ringvm_$guest" '$1 == c && $2 != "-" { print $2 }' "$dir/startup" | median)
  q=$(awk -v c="qemu_$guest" '$1 == c && $2 != "-" { print $2 }' "$dir/startup" | median)
  ratio=$(awk -v r="$r" -v q="$q" 'BEGIN { if (r == "-" || q == "-" || q == 0) print "-"; else printf "%.3f", r / q }')
  printf '%-6s ringvm %8s us   QEMU microvm %8s us   ringvm/QEMU %s\n' "$guest" "$r" "$q" "$ratio"
done
echo "== API socket accepting (fork to first connect)"
cat "$dir/socket"
echo "== ringvm API latencies (tiny guest running)"
cat "$dir/latency"
