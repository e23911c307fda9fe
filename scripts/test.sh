#!/usr/bin/env bash
# Builds (if needed) and runs the whole suite through CTest. Non-zero on any failure.
#   RINGVM_TEST_LABEL=unit|kvm|lab   limits the main run to one CTest label
#   RINGVM_SKIP_FUZZ=1               skips the clang/libFuzzer build and its short fuzz runs
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -f build/build.ninja ]] || cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc)"
args=(--test-dir build --output-on-failure --timeout 1800)
[[ -n "${RINGVM_TEST_LABEL:-}" ]] && args+=(-L "$RINGVM_TEST_LABEL")
status=0
ctest "${args[@]}" || status=$?

# Fuzz targets need clang's libFuzzer: a second build tree, run by label.
if [[ -z "${RINGVM_SKIP_FUZZ:-}" && -z "${RINGVM_TEST_LABEL:-}" ]] && command -v clang++ >/dev/null; then
  [[ -f build-fuzz/build.ninja ]] || cmake --preset fuzz >/dev/null
  if ls tests/fuzz/*_fuzz.cc >/dev/null 2>&1; then
    cmake --build --preset fuzz -j "$(nproc)" --target $(cd tests/fuzz && ls *_fuzz.cc | sed 's/\.cc$//')
    ctest --test-dir build-fuzz -L fuzz --output-on-failure || status=$?
  fi
fi
exit $status
