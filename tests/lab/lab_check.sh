#!/usr/bin/env bash
# Asserts one aspect of one run of the lab session (tests/lab/lab_session.sh) from its log and
# result, and prints the run's whole log (command, VMM output, guest console) first.
#
#   lab_check.sh RESULTS RUN ASPECT
#
#   RUN     qemu_microvm_poweroff | ringvm_poweroff | ringvm_reboot | kvm_integration
#   ASPECT  poweroff  exit status 0, the guest's init ran to the end and chose poweroff
#           reboot    exit status 3 (guest rebooted, --on-reboot exit), init chose reboot
#           cpus      the guest saw 2 online CPUs
#           memory    the guest's MemTotal is 85-100% of 512 MiB (QEMU microvm gives 89%: the
#                     stock kernel reserves ~55 MiB for its image, memmap and tables)
#           clock     the guest's `date +%s` is within 60 s of L1's clock during the run
#           gtest     exit status 0 and at least one test passed
set -uo pipefail
[[ $# -eq 3 ]] || { echo "usage: $0 RESULTS RUN ASPECT" >&2; exit 2; }
export LAB_RESULTS=$1
run=$2 aspect=$3
result=$LAB_RESULTS/$run.result
source "$(dirname "$0")/lab_lib.sh"
lab_check_begin "$run"

field() { sed -n "s/^$1=//p" "$result"; }
# Markers come from the guest console: ringvm's stdout, or QEMU's console file.
console=$(lab_console "$run")
marker() { lab_marker "$run" "$1"; }
init_ran_to() {
  grep -q 'RINGVM-LAB-MARKER ok' <<<"$console" && grep -q 'RINGVM-LAB-MARKER done' <<<"$console" &&
    [[ $(marker ACTION) == "$1" ]]
}
int_between() { [[ $1 =~ ^[0-9]+$ ]] && (($2 <= $1 && $1 <= $3)); }

case $aspect in
  poweroff)
    expect "exit status is 0 (guest powered off); got $status" test "$status" = 0
    expect "init printed its markers and powered off (ACTION '$(marker ACTION)')" init_ran_to poweroff
    ;;
  reboot)
    expect "exit status is 3 (guest rebooted, --on-reboot exit); got $status" test "$status" = 3
    expect "init printed its markers and rebooted (ACTION '$(marker ACTION)')" init_ran_to reboot
    ;;
  cpus)
    expect "guest nproc is 2; got '$(marker NPROC)'" test "$(marker NPROC)" = 2
    expect "guest online CPUs are 0-1; got '$(marker CPUS-ONLINE)'" test "$(marker CPUS-ONLINE)" = 0-1
    ;;
  memory)
    mem=$(marker MEMTOTAL-KB)
    expect "guest MemTotal ${mem:-?} kB is within 85-100% of 524288 kB" int_between "$mem" 445645 524288
    ;;
  clock)
    guest=$(marker DATE)
    lo=$(($(field start | cut -d. -f1) - 60))
    hi=$(($(field end | cut -d. -f1) + 60))
    expect "guest date ${guest:-?} is within 60 s of L1's clock during the run [$lo, $hi]" \
      int_between "$guest" "$lo" "$hi"
    ;;
  gtest)
    passed=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' <<<"$console")
    expect "exit status is 0; got $status" test "$status" = 0
    expect "at least one test passed; got '${passed:-none}'" int_between "${passed:-0}" 1 1000000
    ;;
  *)
    echo "unknown aspect '$aspect'" >&2
    exit 2
    ;;
esac
lab_check_end "$run/$aspect"
