# shellcheck shell=bash
# Shell functions shared by the lab suite (tests/lab/lab_suite.sh) and the boot benchmark
# (bench/boot/boot_bench.sh). Both run inside L1 (scripts/lab.sh); source this file from bash.
#
#   lab_run NAME SECS CMD...      runs CMD with stdin closed, bounded by SECS (then killed; status
#                                 124), output to $LAB_RESULTS/NAME.log, and writes
#                                 $LAB_RESULTS/NAME.result (status=, start=, end=, wall=); with
#                                 RINGVM_LAB_RESUME=1 a NAME that already has a result is not run again
#   lab_console NAME              prints run NAME's log and guest console file, CRs removed
#   lab_marker NAME KEY           prints the value of the guest's first "RINGVM-LAB-KEY value" line
#   lab_net_mib                   MiB net_main moves each way (RINGVM_LAB_NET_MIB, default 100)
#   lab_qemu_cmd MACHINE CONSOLE  prints (one per line) a QEMU command booting $LAB_KERNEL and
#                                 $LAB_INITRD with KVM on MACHINE (microvm|pc), console to file
#   lab_trace_start               clears and arms tracefs hist triggers counting VM exits
#   lab_trace_total EVENT         prints how many EVENT (kvm_exit | kvm_userspace_exit) fired
#                                 since lab_trace_start
#   lab_trace_save PREFIX         copies the hist files to PREFIX.EVENT.hist: kvm_exit (by exit
#                                 code), kvm_userspace_exit, and where the kernel has them
#                                 kvm_mmio (emulated MMIO by guest physical address: virtio kicks
#                                 and APIC writes), kvm_page_fault (nested page faults by
#                                 error code) and kvm_msr (MSR accesses by index: 0x80b is the
#                                 x2APIC EOI, 0x6e0 the TSC deadline, 0x830 the ICR, i.e. IPIs)
#
# Inputs: LAB_RESULTS (directory), LAB_KERNEL, LAB_INITRD, LAB_CMDLINE (guest kernel command line),
# LAB_CPUS (default 2), LAB_MEMORY_MIB (default 512).

lab_run() {
  local name=$1
  # A session resumed in a fresh L1 after L1 crashed or hung (lab_session.sh) keeps the runs that
  # finished before.
  if [[ ${RINGVM_LAB_RESUME:-0} == 1 && -e $LAB_RESULTS/$name.result ]]; then
    echo "lab: $name: finished in an earlier L1 (before L1 crashed), kept"
    return 0
  fi
  lab_run_once "$@"
  # One narrowly recognised lab failure is run again, once, and said so (docs/lab.md, failure 5):
  # the guest stalled with a vCPU that no longer takes timer interrupts or even NMIs while the VMM
  # itself answered SIGTERM at once, i.e. a halted vCPU that L1's KVM never woke.
  if lab_l2_stalled "$name"; then
    lab_console "$name" >"$LAB_RESULTS/$name.l2-stall.log"
    rm -f "$LAB_RESULTS/$name.console"
    echo "lab: $name: the guest stalled (a vCPU L1 never woke, or the guest's clock froze; docs/lab.md, failure 5); running it again" |
      tee -a "$LAB_RESULTS/l2-stalls.txt"
    lab_run_once "$@"
  elif lab_l2_triple_faulted "$name"; then
    # Up to RINGVM_LAB_L2_DEATH_RETRIES (2) reruns: the lab kills a guest under network load about
    # every other attempt on a bad day (docs/lab.md, failure 2: its traced cause is L2's memory
    # going bad under it, and guests die at boot too, before any device is touched). A fault
    # ringvm causes deterministically fails every attempt.
    local deaths=0 keep
    while :; do
      deaths=$((deaths + 1))
      keep=$LAB_RESULTS/$name.l2-died.log
      ((deaths > 1)) && keep=$LAB_RESULTS/$name.l2-died.$deaths.log
      lab_console "$name" >"$keep"
      rm -f "$LAB_RESULTS/$name.console"
      echo "lab: $name: the guest triple-faulted (attempt $deaths; docs/lab.md, failures 2 and 3, seen with QEMU too); running it again" |
        tee -a "$LAB_RESULTS/l2-stalls.txt"
      lab_run_once "$@"
      ((deaths < ${RINGVM_LAB_L2_DEATH_RETRIES:-2})) && lab_died_of_triple_fault "$name" || break
    done
  fi
}

# True when ringvm reported that run NAME's guest died with a triple fault, the first time: the
# lab's failures 2 and 3 (docs/lab.md: under network load, and at boot, with no message from the
# guest; QEMU's guests died the same way). lab_run reruns it at most RINGVM_LAB_L2_DEATH_RETRIES
# times; a triple fault in the last attempt is not excused.
lab_l2_triple_faulted() {
  [[ ! -e $LAB_RESULTS/$1.l2-died.log ]] || return 1
  lab_died_of_triple_fault "$1"
}

lab_died_of_triple_fault() { lab_console "$1" | grep -q 'ringvm: guest crashed: triple fault'; }

lab_run_once() {
  local name=$1 secs=$2
  shift 2
  local log=$LAB_RESULTS/$name.log start end status=0
  rm -f "$LAB_RESULTS/$name.result"
  { printf '+'; printf ' %q' "$@"; echo; } >"$log"
  # Exercises lab_session.sh's recovery: crash L1's kernel as this run starts (first L1 only).
  if [[ ${RINGVM_LAB_INJECT_L1_PANIC:-} == "$name" && ${RINGVM_LAB_RESUME:-0} != 1 ]]; then
    echo 1 >/proc/sys/kernel/sysrq && echo c >/proc/sysrq-trigger
  fi
  lab_prepare_memory >>"$log"
  start=$(date +%s.%N)
  # -k: SIGKILL if SIGTERM did not end it; the VMM is killed by its pid, not by name.
  timeout -k 10 "$secs" "$@" </dev/null >>"$log" 2>&1 || status=$?
  end=$(date +%s.%N)
  printf 'status=%s\nstart=%s\nend=%s\nwall=%s\n' "$status" "$start" "$end" \
    "$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.2f", e - s }')" >"$LAB_RESULTS/$name.result"
  ((status == 124)) && echo "TIMEOUT: killed after ${secs}s" >>"$log"
  echo "lab: $name: status $status, $(sed -n 's/^wall=//p' "$LAB_RESULTS/$name.result")s wall"
}

# Inside L1, before each L2 run: gives back L1's page cache and compacts its memory, so the VMM's
# 2 MiB-aligned, THP-advised guest RAM gets huge pages even late in a session. An L2 guest on 4 KiB
# host pages was what made the lab's boot-time triple faults frequent (docs/lab.md, failure 3);
# late-session runs met triple faults again while fresh-L1 runs of the same test passed. Best
# effort (outside the lab, or without root, it does nothing) and logged, with L1's free memory
# and huge-page state, so a failing run's log shows what L2 had to work with.
lab_prepare_memory() {
  [[ ${RINGVM_LAB:-} == 1 ]] || return 0
  sync
  echo 3 >/proc/sys/vm/drop_caches 2>/dev/null
  echo 1 >/proc/sys/vm/compact_memory 2>/dev/null
  echo "lab: L1 memory before the run: $(awk '/^(MemFree|AnonHugePages):/ { printf "%s %s kB; ", $1, $2 }' /proc/meminfo)huge pages free (2 MiB order+): $(awk '{ s = 0; for (i = 14; i <= NF; i++) s += $i * 2 ^ (i - 14); t += s } END { print t }' /proc/buddyinfo 2>/dev/null)"
}

# True when run NAME timed out (itself, or the VMM inside it) with the signature of a vCPU that
# L1's KVM never woke: the guest's RCU reported a stall and sent an NMI that no CPU answered (no
# "NMI backtrace"), and the VMM stopped at once when its timeout sent SIGTERM (so its vCPU threads
# were inside KVM, not stuck in the VMM). Or the guest's clock froze: its last console lines all
# carry the same printk timestamp (the guest kept printing while no time passed, then waited
# forever for a timer), a boot hang seen once on 2026-11-23 that ringvm cannot cause (the guest's
# clock is KVM's kvmclock and TSC, which ringvm never touches after boot). Not retried twice: the
# rerun's result stands.
lab_l2_stalled() {
  local text
  [[ ! -e $LAB_RESULTS/$1.l2-stall.log ]] || return 1
  text=$(lab_console "$1")
  { grep -q '^status=124' "$LAB_RESULTS/$1.result" || grep -q 'RINGVM-LAB-HOST-VMM-STATUS 124' <<<"$text"; } ||
    return 1
  # QEMU's reference runs only prove that the lab works; when QEMU's own guest freezes (seen
  # mid-boot with no message at all: every vCPU stuck, so nothing reports a stall) that is the
  # lab's failure, and the reference is run once more. ringvm's runs need the full signature.
  if head -n1 "$LAB_RESULTS/$1.log" 2>/dev/null | grep -q '^+ qemu-system'; then
    return 0
  fi
  grep -q 'stopped by a signal\|terminating on signal' <<<"$text" || return 1
  if grep -q 'rcu: INFO: rcu_preempt detected stalls' <<<"$text" &&
    grep -q 'Sending NMI from CPU' <<<"$text" && ! grep -q 'NMI backtrace for cpu' <<<"$text"; then
    return 0
  fi
  lab_clock_froze <<<"$text"
}

# True when the last 6 timestamped console lines on stdin all carry the same printk time.
lab_clock_froze() {
  local stamps
  stamps=$(grep -ao '^\[ *[0-9]*\.[0-9]*\]' | tail -n 6)
  [[ $(wc -l <<<"$stamps") -eq 6 && $(sort -u <<<"$stamps" | wc -l) -eq 1 ]]
}

# The VMMs of one benchmark round (bench/), one per line: ringvm, a "ringvm:OPTIONS" variant per
# further argument, qemu. Even rounds start with qemu, so neither VMM always runs on the freshest
# (or most tired) L1.
#   lab_bench_order ROUND [OPTIONS...]
lab_bench_order() {
  local round=$1 v variants=()
  shift
  for v in "$@"; do variants+=("ringvm:$v"); done
  if ((round % 2 == 0)); then
    printf '%s\n' qemu ringvm "${variants[@]}"
  else
    printf '%s\n' ringvm "${variants[@]}" qemu
  fi
}

# Splits a benchmark label from lab_bench_order, "ringvm[:OPTIONS]", into `extra` (device options
# to append) and `run_opt` (a `ringvm run` option, when OPTIONS starts with --). OPTIONS that
# name a heuristic's constant, disk.KEY=V or net.KEY=V (comma-separated), are not device options:
# they go to RINGVM_TUNING (docs/tuning.md), exported for the ringvm started next.
lab_bench_variant() {
  extra=${1#ringvm}
  extra=${extra#:}
  run_opt=()
  if [[ $extra == --* ]]; then
    run_opt=("$extra")
    extra=
  fi
  lab_split_tuning "$extra"
}

# lab_split_tuning OPTIONS: `extra` gets OPTIONS' device options; its disk.KEY=V / net.KEY=V items
# are exported as RINGVM_TUNING (unset when there are none).
lab_split_tuning() {
  local item tuning=() device=()
  local IFS=,
  for item in $1; do
    if [[ $item == disk.* || $item == net.* ]]; then tuning+=("$item"); else device+=("$item"); fi
  done
  extra="${device[*]}"
  if ((${#tuning[@]})); then export RINGVM_TUNING="${tuning[*]}"; else unset RINGVM_TUNING; fi
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
  for ev in kvm_exit:exit_reason kvm_userspace_exit:reason kvm_mmio:gpa kvm_page_fault:error_code kvm_msr:ecx; do
    local trigger=$LAB_TRACING/events/kvm/${ev%%:*}/trigger
    # Removing and re-adding the trigger clears its counts. The last three are extras: a kernel
    # without them still counts exits (kvm_msr by MSR index tells EOI from timer writes).
    echo "!hist:keys=${ev#*:}:vals=hitcount" >"$trigger" 2>/dev/null
    if ! echo "hist:keys=${ev#*:}:vals=hitcount" >"$trigger" 2>/dev/null; then
      [[ $ev == kvm_exit:* || $ev == kvm_userspace_exit:* ]] && return 1
    fi
  done
}

lab_trace_save() {
  local ev
  for ev in kvm_exit kvm_userspace_exit kvm_mmio kvm_page_fault kvm_msr; do
    cp "$LAB_TRACING/events/kvm/$ev/hist" "$1.$ev.hist" 2>/dev/null || true
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
  # Say so when this run's first attempt died with L1 (lab_session.sh restarted L1 and ran it
  # again): the result below is the second attempt's.
  if [[ -f $LAB_RESULTS/$1.l2-stall.log ]]; then
    echo "NOTE: the guest stalled in this run's first attempt (a vCPU that L1's KVM never woke: no"
    echo "timer interrupt, no NMI, while the VMM answered SIGTERM at once; or the guest's clock"
    echo "frozen; or QEMU's own reference guest frozen): the lab emulator's flaw, docs/lab.md; this is the rerun's"
    echo "result. First attempt's last lines:"
    tail -n 5 "$LAB_RESULTS/$1.l2-stall.log"
  fi
  if [[ -f $LAB_RESULTS/$1.l2-died.log ]]; then
    local died
    died=$(ls "$LAB_RESULTS/$1".l2-died*.log | wc -l)
    echo "NOTE: the guest triple-faulted in $died earlier attempt(s) of this run (the lab's failures 2"
    echo "and 3, docs/lab.md, seen with QEMU too); this is the last attempt's result. First attempt's last lines:"
    tail -n 5 "$LAB_RESULTS/$1.l2-died.log"
  fi
  if [[ -f $LAB_RESULTS/$1.l1-crash.log ]]; then
    echo "NOTE: L1 itself crashed or hung during this run's first attempt (a flaw of the lab's"
    echo "emulator, docs/lab.md); the session restarted L1 and this is the rerun's result. First attempt:"
    tail -n 5 "$LAB_RESULTS/$1.l1-crash.log"
  fi
}

# The start of every checker (lab_check.sh, virtio_check.sh, net_check.sh, vsock_check.sh): report
# a skipped run as Skipped, print the run's log, guest console and result (so a failure shows what
# the guest did), fail when there is no result, and set `status` to the run's exit status.
lab_check_begin() {
  local run=$1
  lab_exit_if_skipped "$run"
  echo "==== $run: log (host side, VMM output)"
  cat "$LAB_RESULTS/$run.log" 2>/dev/null || echo "(no log: the lab session never started this run)"
  if [[ -e $LAB_RESULTS/$run.console ]]; then
    echo "==== $run: guest console"
    cat "$LAB_RESULTS/$run.console"
  fi
  echo "==== $run: result"
  cat "$LAB_RESULTS/$run.result" 2>/dev/null || { echo "FAIL: no result for $run: the lab session did not finish it"; exit 1; }
  echo "===="
  status=$(sed -n 's/^status=//p' "$LAB_RESULTS/$run.result")
  lab_failures=0
}

# expect WHAT CMD...: runs CMD; prints "ok:" or "FAIL:" with WHAT and counts failures.
expect() {
  local what=$1
  shift
  if "$@"; then
    echo "ok:   $what"
  else
    echo "FAIL: $what"
    lab_failures=$((lab_failures + 1))
  fi
}

# same A B: A is not empty and equals B.
same() { [[ -n $1 && $1 == "$2" ]]; }

# The end of every checker: exit 1 if an expectation failed.
lab_check_end() {
  ((lab_failures == 0)) || { echo "$1: $lab_failures check(s) FAILED"; exit 1; }
  echo "$1: passed"
}

# lab_wait_marker CONSOLE LINE PID DEADLINE: waits until the console file has LINE, process PID
# (the VMM) ended, or bash's SECONDS reached DEADLINE; true if the line is there.
lab_wait_marker() {
  while ((SECONDS < $4)) && kill -0 "$3" 2>/dev/null; do
    tr -d '\r' <"$1" | grep -q "$2" && return 0
    sleep 0.2
  done
  tr -d '\r' <"$1" | grep -q "$2"
}

# The volume net_main moves each way, in MiB: issue 6's 100 unless RINGVM_LAB_NET_MIB says
# otherwise (net_lab.sh moves it; net_check.sh checks it arrived).
lab_net_mib() { echo "${RINGVM_LAB_NET_MIB:-100}"; }
