#!/usr/bin/env bash
# Shared by the lab benchmarks (bench/blk/fio_bench.sh, bench/net/iperf_bench.sh): L1's VM exits
# by SVM exit code, from two snapshots of the tracefs hist file that lab_trace_start arms
# (tests/lab/lab_lib.sh: `hist:keys=exit_reason:vals=hitcount` on kvm/kvm_exit).
#
#   exit_hist_diff BEFORE AFTER LABEL UNITS   prints "LABEL run" and then "LABEL CODE EXITS_PER_UNIT"
#                                             per exit code (codes under 0.01 per unit left out)
#   hist_diff BEFORE AFTER KEY                "VALUE COUNT" per value of any hist key (gpa,
#                                             error_code) between the snapshots, most first
#   msr_hist_lines BEFORE AFTER LABEL UNITS   "LABEL run", then "LABEL MSR ACCESSES_PER_UNIT" per MSR
#                                             index (kvm_msr hist; nothing where the kernel lacks it)
#   l1_irq_lines BEFORE AFTER LABEL UNITS     the same for two /proc/interrupts snapshots: "LABEL NAME
#                                             PER_UNIT" for LOC, RES, CAL and TLB, summed over CPUs
#   exit_hist_table TITLE LABEL [msr]         reads exit_hist_diff output of LABEL and "qemu" from
#                                             stdin (one per run) and prints one line:
#                                             TITLE NAME(CODE) label/qemu ..., means over the runs
#                                             (with "msr", names are MSR indices: msr_hist_lines)

exit_hist_diff() {
  awk -v label="$3" -v units="$4" '
    match($0, /exit_reason: *[0-9]+/) {
      code = substr($0, RSTART, RLENGTH); sub(/.*: */, "", code)
      match($0, /hitcount: *[0-9]+/); n = substr($0, RSTART, RLENGTH); sub(/.*: */, "", n)
      if (FILENAME == ARGV[1]) before[code] = n; else after[code] = n
    }
    END {
      if (units <= 0) exit
      print label, "run"
      for (c in after) if ((after[c] - before[c]) / units >= 0.01) printf "%s %s %.3f\n", label, c, (after[c] - before[c]) / units
    }' "$1" "$2"
}

exit_hist_table() {
  awk -v title="$1" -v label="$2" -v msr="${3:-}" '
    BEGIN {
      if (msr != "") {
        name[2059] = "EOI"; name[1760] = "TSC_DEADLINE"; name[2096] = "ICR"; name[2104] = "TMICT"
        name[2050] = "APIC_ID"; name[27] = "APIC_BASE"; name[72] = "SPEC_CTRL"
      } else {
        name[96] = "INTR"; name[97] = "NMI"; name[100] = "VINTR"; name[114] = "CPUID"; name[120] = "HLT"
        name[123] = "IOIO"; name[124] = "MSR"; name[127] = "SHUTDOWN"; name[129] = "VMMCALL"; name[1024] = "NPF"
        name[65] = "EXCP_DB"; name[78] = "EXCP_PF"; name[118] = "PAUSE"; name[137] = "WBINVD"
      }
    }
    $2 == "run" { runs[$1]++; next }
    { sum[$2, $1] += $3; codes[$2] = 1 }
    function mean(c, l) { return runs[l] ? sum[c, l] / runs[l] : 0 }
    END {
      line = sprintf("%-17s", title)
      for (c in codes) line = line sprintf(" %s %.2f/%.2f", (c in name) ? name[c] "(" c ")" : c ~ /^[0-9]+$/ ? "code(" c ")" : c,
        mean(c, label), mean(c, "qemu"))
      print line
    }'
}

# hist_diff BEFORE AFTER KEY: "VALUE COUNT" for each value of KEY (e.g. gpa, error_code) that
# fired between two snapshots of one tracefs hist file, most frequent first.
hist_diff() {
  awk -v key="$3" '
    match($0, key ": *[0-9a-fx]+") {
      k = substr($0, RSTART, RLENGTH); sub(/.*: */, "", k)
      match($0, /hitcount: *[0-9]+/); n = substr($0, RSTART, RLENGTH); sub(/.*: */, "", n)
      if (FILENAME == ARGV[1]) before[k] = n; else after[k] = n
    }
    END { for (k in after) if (after[k] - before[k] > 0) print k, after[k] - before[k] }' "$1" "$2" | sort -k2,2nr
}

# msr_hist_lines BEFORE AFTER LABEL UNITS: MSR accesses (reads and writes the guest exited for) per
# unit by MSR index, in exit_hist_table's input format, so the table reads "x2APIC_EOI(0x80b) a/b".
msr_hist_lines() {
  [[ -f $1 && -f $2 ]] || return 0
  echo "$3 run"
  hist_diff "$1" "$2" ecx | awk -v label="$3" -v units="$4" '$2 / units >= 0.01 { printf "%s %s %.3f\n", label, $1, $2 / units }'
}

# l1_irq_lines BEFORE AFTER LABEL UNITS: L1's timer and IPI interrupts between two snapshots of
# /proc/interrupts, per unit, summed over CPUs, in exit_hist_table's input format.
l1_irq_lines() {
  awk -v label="$3" -v units="$4" '
    $1 ~ /^(LOC|RES|CAL|TLB):$/ {
      k = substr($1, 1, 3); n = 0
      for (f = 2; f <= NF && $f ~ /^[0-9]+$/; f++) n += $f
      if (FILENAME == ARGV[1]) before[k] = n; else after[k] = n
    }
    END {
      if (units <= 0) exit
      print label, "run"
      for (k in after) printf "%s %s %.3f\n", label, k, (after[k] - before[k]) / units
    }' "$1" "$2"
}
