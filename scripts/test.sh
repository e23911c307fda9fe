#!/usr/bin/env bash
# Builds (if needed) and runs the whole suite through CTest. Non-zero on any failure.
# RINGVM_TEST_LABEL=unit|kvm|lab|fuzz limits the run to one label.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -f build/build.ninja ]] || cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc)"
args=(--test-dir build --output-on-failure --timeout 1800)
[[ -n "${RINGVM_TEST_LABEL:-}" ]] && args+=(-L "$RINGVM_TEST_LABEL")
ctest "${args[@]}"
