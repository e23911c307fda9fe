#!/usr/bin/env bash
# The lab suite's fixture (CTest `lab.session`): builds the test guest's initramfs, then boots L1
# once (scripts/lab.sh) and runs tests/lab/lab_suite.sh there, which leaves one log and one result
# per check in RESULTS. Fails only when the lab itself fails (timeout, L1 died); the checks
# themselves are asserted by tests/lab/lab_check.sh, one CTest test each.
#
#   lab_session.sh RESULTS RINGVM INTEGRATION_TEST|-
#
#   RINGVM_LAB_SESSION_TIMEOUT  bound on the whole L1 session in seconds (default 2100)
#   RINGVM_LAB_RUN_TIMEOUT      bound on each VMM run inside L1 in seconds (default 480)
#   and scripts/lab.sh's RINGVM_LAB_* variables.
set -euo pipefail
[[ $# -eq 3 ]] || { echo "usage: $0 RESULTS RINGVM INTEGRATION_TEST|-" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
results=$1
ringvm=$2
integration=$3

rm -rf "$results"
mkdir -p "$results"
results=$(cd "$results" && pwd -P)
"$here/mkinitramfs.sh" --output "$results/guest.cpio.gz" --init "$here/guest_init.sh"
"$here/virtio_lab.sh" --initramfs "$results/virtio-guest.cpio.gz"
"$here/net_lab.sh" --initramfs "$results/net-guest.cpio.gz"

start=$SECONDS
status=0
"$here/../../scripts/lab.sh" --timeout "${RINGVM_LAB_SESSION_TIMEOUT:-2100}" --share "$results" -- \
  "$here/lab_suite.sh" "$results" "$ringvm" "$integration" || status=$?
echo "lab.session: L1 session took $((SECONDS - start))s, status $status"
if [[ $status -ne 0 || ! -e $results/session.done ]]; then
  # Show the check that was running when the lab stopped, so the stall can be located.
  for log in "$results"/*.log; do
    [[ -e $log && ! -e ${log%.log}.result ]] || continue
    echo "lab.session: unfinished check $(basename "${log%.log}"):"
    cat "$log" "${log%.log}.console" 2>/dev/null
  done
  echo "lab.session: FAILED: the lab session did not complete (status $status)" >&2
  exit 1
fi
