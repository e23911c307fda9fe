# shellcheck shell=bash
# Shell functions shared by the lab suite (tests/lab/lab_suite.sh) and the boot benchmark
# (bench/boot/boot_bench.sh). Both run inside L1 (scripts/lab.sh); source this file from bash.
#
#   lab_run NAME SECS CMD...      runs CMD with stdin closed, bounded by SECS (then killed; status
#                                 124), output to $LAB_RESULTS/NAME.log, and writes
#                                 $LAB_RESULTS/NAME.result (status=, start=, end=, wall=)
#   lab_console NAME              prints run NAME's log and guest console file, CRs removed
#   lab_marker NAME KEY           prints the value of the guest's first "RINGVM-LAB-KEY value" line
#   lab_qemu_cmd MACHINE CONSOLE  prints (one per line) a QEMU command booting $LAB_KERNEL and
#                                 $LAB_INITRD with KVM on MACHINE (microvm|pc), console to file
#   lab_trace_start               clears and arms tracefs hist triggers counting VM exits
#   lab_trace_total EVENT         prints how many EVENT (kvm_exit | kvm_userspace_exit) fired
#                                 since lab_trace_start
#
# Inputs: LAB_RESULTS (directory), LAB_KERNEL, LAB_INITRD, LAB_CMDLINE (guest kernel command line),
# LAB_CPUS (default 2), LAB_MEMORY_MIB (default 512).

lab_run() {
  local name=$1 secs=$2
  shift 2
  local log=$LAB_RESULTS/$name.log start end status=0
  rm -f "$LAB_RESULTS/$name.result"
  { printf '+'; printf ' %q' "$@"; echo; } >"$log"
  start=$(date +%s.%N)
  # -k: SIGKILL if SIGTERM did not end it; the VMM is killed by its pid, not by name.
  timeout -k 10 "$secs" "$@" </dev/null >>"$log" 2>&1 || status=$?
  end=$(date +%s.%N)
  printf 'status=%s\nstart=%s\nend=%s\nwall=%s\n' "$status" "$start" "$end" \
    "$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.2f", e - s }')" >"$LAB_RESULTS/$name.result"
  ((status == 124)) && echo "TIMEOUT: killed after ${secs}s" >>"$log"
  echo "lab: $name: status $status, $(sed -n 's/^wall=//p' "$LAB_RESULTS/$name.result")s wall"
}

lab_console() {
  cat "$LAB_RESULTS/$1.log" "$LAB_RESULTS/$1.console" 2>/dev/null | tr -d '\r'
  return 0
}

lab_marker() {
  lab_console "$1" | sed -n "s/^.*RINGVM-LAB-$2 //p" | head -n1
  return 0
}

lab_qemu_cmd() {
  local machine=$1 console=$2
  printf '%s\n' qemu-system-x86_64 -enable-kvm -M "$machine" -cpu host -smp "${LAB_CPUS:-2}" \
    -m "${LAB_MEMORY_MIB:-512}M" -nodefaults -no-user-config -display none -no-reboot \
    -chardev "file,id=con0,path=$console" -serial chardev:con0 \
    -kernel "$LAB_KERNEL" -initrd "$LAB_INITRD" -append "$LAB_CMDLINE"
}

LAB_TRACING=/sys/kernel/tracing

lab_trace_start() {
  [[ -d $LAB_TRACING/events/kvm ]] || mount -t tracefs tracefs "$LAB_TRACING" 2>/dev/null
  [[ -d $LAB_TRACING/events/kvm ]] || { echo "lab: no kvm trace events in $LAB_TRACING" >&2; return 1; }
  local ev
  for ev in kvm_exit:exit_reason kvm_userspace_exit:reason; do
    # Removing and re-adding the trigger clears its counts.
    echo "!hist:keys=${ev#*:}:vals=hitcount" >"$LAB_TRACING/events/kvm/${ev%%:*}/trigger" 2>/dev/null
    echo "hist:keys=${ev#*:}:vals=hitcount" >"$LAB_TRACING/events/kvm/${ev%%:*}/trigger" || return 1
  done
}

# The hist file ends with "Totals:\n    Hits: N"; each key's line carries hitcount: N.
lab_trace_total() {
  awk '/^ *Hits:/ { print $2; exit }' "$LAB_TRACING/events/kvm/$1/hist"
}

# In a checker: when the session skipped RUN on purpose (RUN.skipped holds why), report it to CTest
# as Skipped (exit 77, SKIP_RETURN_CODE) instead of a failure.
lab_exit_if_skipped() {
  if [[ -f $LAB_RESULTS/$1.skipped ]]; then
    echo "SKIPPED: $(cat "$LAB_RESULTS/$1.skipped")"
    exit 77
  fi
}
