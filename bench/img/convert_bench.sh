#!/usr/bin/env bash
# ringvm img convert vs qemu-img convert, interleaved, three runs each:
#   1. raw -> qcow2        (2 GiB raw, random data in 50% of its 64 KiB extents, holes elsewhere)
#   2. qcow2 -> raw        (the qcow2 from qemu-img, so both tools read the same input)
#   3. raw -> qcow2 -c     (compressed)
# Prints MB/s of virtual size per run, the medians, ringvm/qemu-img ratios (> 1 means ringvm is
# faster) and peak RSS from /usr/bin/time -v. Not part of the test suite.
#   RINGVM=build/ringvm SIZE_MIB=2048 RUNS=3 WORK=/tmp/ringvm-img-bench bench/img/convert_bench.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
RINGVM=${RINGVM:-build/ringvm}
SIZE_MIB=${SIZE_MIB:-2048}
RUNS=${RUNS:-3}
WORK=${WORK:-/tmp/ringvm-img-bench}
command -v qemu-img >/dev/null || { echo "qemu-img missing (apt-get install qemu-utils)"; exit 1; }
[[ -x /usr/bin/time ]] || { echo "/usr/bin/time missing (apt-get install time)"; exit 1; }
[[ -x $RINGVM ]] || { echo "$RINGVM missing: build it (ninja -C build ringvm) or set RINGVM="; exit 1; }
mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT
SRC=$WORK/src.raw

echo "making ${SIZE_MIB} MiB source with random data in half of its 64 KiB extents..."
python3 - "$SRC" "$SIZE_MIB" <<'PY'
import os, random, sys
path, mib = sys.argv[1], int(sys.argv[2])
ext = 64 * 1024
n = mib * 1024 * 1024 // ext
rng = random.Random(42)
with open(path, "wb") as f:
    f.truncate(n * ext)
    for i in rng.sample(range(n), n // 2):
        f.seek(i * ext)
        f.write(os.urandom(ext))
PY
sync

calc() { awk "BEGIN {print $1}"; }

# run NAME CMD...: appends "name seconds maxrss_kib" to $WORK/results
run() {
  local name=$1; shift
  rm -f "$WORK"/out.*
  sync
  /usr/bin/time -v -o "$WORK/time.txt" "$@" >/dev/null
  local secs rss
  secs=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$WORK/time.txt")
  rss=$(awk -F': ' '/Maximum resident/ {print $2}' "$WORK/time.txt")
  echo "$name $secs $rss" >> "$WORK/results"
  printf '  %-22s %7.2f s %8.1f MB/s %7d KiB peak RSS\n' "$name" "$secs" "$(calc "$SIZE_MIB * 1.048576 / $secs")" "$rss"
}

qemu-img convert -f raw -O qcow2 "$SRC" "$WORK/in.qcow2"
: > "$WORK/results"
for i in $(seq 1 "$RUNS"); do
  echo "run $i"
  run ringvm.raw2qcow2   "$RINGVM" img convert -f raw -O qcow2 "$SRC" "$WORK/out.qcow2"
  run qemu.raw2qcow2     qemu-img convert -f raw -O qcow2 "$SRC" "$WORK/out.qcow2"
  run ringvm.qcow22raw   "$RINGVM" img convert -f qcow2 -O raw "$WORK/in.qcow2" "$WORK/out.raw"
  run qemu.qcow22raw     qemu-img convert -f qcow2 -O raw "$WORK/in.qcow2" "$WORK/out.raw"
  run ringvm.compress    "$RINGVM" img convert -c -f raw -O qcow2 "$SRC" "$WORK/out.qcow2"
  run qemu.compress      qemu-img convert -c -f raw -O qcow2 "$SRC" "$WORK/out.qcow2"
done

echo
echo "medians (MB/s of virtual size; ratio = ringvm / qemu-img):"
for t in raw2qcow2 qcow22raw compress; do
  med() { grep "^$1.$t " "$WORK/results" | awk '{print $2}' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
  rss() { grep "^$1.$t " "$WORK/results" | awk '{print $3}' | sort -n | tail -1; }
  r=$(med ringvm); q=$(med qemu)
  printf '  %-10s ringvm %8.1f MB/s (%6d KiB)  qemu-img %8.1f MB/s (%6d KiB)  ratio %.2fx\n' "$t" \
    "$(calc "$SIZE_MIB * 1.048576 / $r")" "$(rss ringvm)" \
    "$(calc "$SIZE_MIB * 1.048576 / $q")" "$(rss qemu)" "$(calc "$q / $r")"
done
