# CPU time a VMM process spends, split into its vCPU threads (which include the guest's own
# execution: L1 accounts time in guest mode to the thread) and everything else (device threads,
# main loop: what the VMM itself costs). Sourced by the benchmarks inside L1. QEMU names its
# vCPU threads ("CPU 0/KVM") only with `-name ...,debug-threads=on`, which the benchmarks pass.

# The VMM process (ringvm or qemu-system-x86_64) whose command line mentions WORD (the console
# path), or nothing. Always succeeds: the benchmarks run under `set -e`, and right after the
# launch only `timeout` (not yet the VMM) may match.
vmm_pid() {
  local p comm
  for p in $(pgrep -f -- "$1"); do
    comm=$(cat "/proc/$p/comm" 2>/dev/null) || continue
    [[ $comm == ringvm || $comm == qemu-system-x86* ]] && { echo "$p"; return 0; }
  done
  return 0
}

# "VCPU_TICKS OTHER_TICKS" (utime + stime, clock ticks) of process PID's threads. No subprocesses:
# the fio benchmark snapshots this at its markers, and a fork costs milliseconds in L1.
vmm_cpu_ticks() {
  local t comm line vcpu=0 other=0
  local -a f
  for t in /proc/"$1"/task/*; do
    read -r comm 2>/dev/null <"$t/comm" || continue
    read -r line 2>/dev/null <"$t/stat" || continue
    # Fields after "pid (comm) ": state is index 0, utime (field 14) index 11, stime index 12.
    read -r -a f <<<"${line##*) }"
    ((${#f[@]} > 12)) || continue
    if [[ $comm =~ ^vcpu[0-9] || $comm =~ ^CPU\ [0-9]+/KVM ]]; then
      vcpu=$((vcpu + f[11] + f[12]))
    else
      other=$((other + f[11] + f[12]))
    fi
  done
  echo "$vcpu $other"
}

# The table both benchmarks print from their cpu files (lines "VMM RUN TEST UNITS VCPU0 OTHER0
# VCPU1 OTHER1", ticks): per VMM and test, the mean over runs of CPU per unit (a request, a MiB)
# in 1/SCALE seconds (1e6: µs, 1000: ms), vCPU threads then the rest; sorted by test.
vmm_cpu_table() {
  awk -v hz="$(getconf CLK_TCK)" -v scale="$2" '
    $4 > 0 && $5 != "-" && $7 != "-" && NF == 8 {
      k = $1 " " $3
      if (!(k in n)) { keys[++nk] = k }
      n[k]++; v[k] += ($7 - $5) * scale / hz / $4; o[k] += ($8 - $6) * scale / hz / $4
    }
    END { for (i = 1; i <= nk; i++) { k = keys[i]; printf "%-40s %9.1f %9.1f\n", k, v[k] / n[k], o[k] / n[k] } }
  ' "$1" 2>/dev/null | sort -k2,2 -k1,1
}
