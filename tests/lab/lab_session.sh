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
#   RINGVM_LAB_L1_RESTARTS      fresh L1 boots allowed after L1's kernel panics (default 5); the
#                               run it interrupted is rerun and its checker says so
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
"$here/vsock_lab.sh" --initramfs "$results/vsock-guest.cpio.gz"

# L1's console goes to a file (its oops is summarised by lab.sh if it crashes) unless the caller
# chose where it goes.
export RINGVM_LAB_CONSOLE=${RINGVM_LAB_CONSOLE:-$results/l1.console}
start=$SECONDS
deadline=$((SECONDS + ${RINGVM_LAB_SESSION_TIMEOUT:-2100}))
attempt=1
max_attempts=$((1 + ${RINGVM_LAB_L1_RESTARTS:-5}))
while :; do
  status=0
  "$here/../../scripts/lab.sh" --timeout "$((deadline > SECONDS ? deadline - SECONDS : 1))" --share "$results" -- \
    "$here/lab_suite.sh" "$results" "$ringvm" "$integration" || status=$?
  # 123: L1's own kernel panicked; 122: L1 stopped running altogether (no heartbeat; the run's
  # own timeouts inside L1 never fired). That is the lab's emulator failing (docs/lab.md: it
  # happens with QEMU as the L2 VMM too), not the run it interrupted: record it loudly, keep the
  # runs that finished, and resume the suite in a fresh L1. Anything else ends the session.
  ((status == 122 || status == 123)) && ((attempt < max_attempts && SECONDS < deadline)) || break
  what=CRASHED
  ((status == 122)) && what=HUNG
  for log in "$results"/*.log; do
    # Only a run's own log (NAME.log); the kept first attempts (NAME.l1-crash.log,
    # NAME.l2-stall.log, NAME.l2-died.log) stay as they are.
    [[ -e $log && ! -e ${log%.log}.result && $(basename "$log") != *.*.log ]] || continue
    run=$(basename "${log%.log}")
    mv "$log" "$results/$run.l1-crash.log"
    echo "lab.session: L1 $what during run $run (attempt $attempt); restarting L1 and resuming" |
      tee -a "$results/l1-crashes.txt"
  done
  cp "$RINGVM_LAB_CONSOLE" "$results/l1-crash-$attempt.console" 2>/dev/null || true
  attempt=$((attempt + 1))
  export RINGVM_LAB_RESUME=1
done
echo "lab.session: L1 session took $((SECONDS - start))s in $attempt L1 boot(s), status $status"
[[ -s $results/l1-crashes.txt ]] && cat "$results/l1-crashes.txt"
[[ -s $results/l2-stalls.txt ]] && cat "$results/l2-stalls.txt"
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
