# shellcheck shell=bash
# Host-side steps the lab benchmarks share (bench/blk/fio_bench.sh, bench/net/*.sh). Sourced;
# expects $repo (the checkout's root).

# bench_dir NAME: the results directory, $RINGVM_BENCH_DIR or ${TMPDIR:-/tmp}/NAME, emptied, as an
# absolute path without symlinks (L1 sees the share at the same path).
bench_dir() {
  local d=${RINGVM_BENCH_DIR:-${TMPDIR:-/tmp}/$1}
  rm -rf "$d" && mkdir -p "$d" && (cd "$d" && pwd -P)
}

# bench_initramfs OUT INIT BINARY GUEST_PATH MODULE...: the lab guest's initramfs with /init INIT,
# BINARY at GUEST_PATH and every shared library it loads at their own paths (the dynamic loader
# included), and the kernel modules named.
bench_initramfs() {
  local out=$1 init=$2 bin=$3 at=$4 lib m args=()
  shift 4
  for m in "$@"; do args+=(--module "$m"); done
  args+=(--file "$bin=$at")
  while read -r lib; do
    args+=(--file "$lib=$lib")
  done < <(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\/.*ld-linux/ { print $1 }')
  # shellcheck disable=SC2154 # repo is the sourcing script's
  "$repo/tests/lab/mkinitramfs.sh" --output "$out" --init "$init" "${args[@]}"
}
