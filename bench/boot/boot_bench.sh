#!/usr/bin/env bash
# Boot benchmark (not part of the test suite): in ONE L1 boot of the lab (scripts/lab.sh), boots
# Debian's stock kernel and the lab's busybox initramfs to poweroff with ringvm, with QEMU microvm
# and with QEMU pc (reference), RUNS times each, interleaved. Per run it prints the wall time from
# process start to exit, the guest's uptime when its init started (/proc/uptime), and the VM exits
# (all, and those that went to userspace) counted with tracefs hist triggers in L1. Then the mean
# of each and the ratios ringvm / QEMU microvm. Compare only numbers from the same L1 boot: the
# lab's speed varies two- to three-fold between boots.
#
#   bench/boot/boot_bench.sh [--runs N] [--ringvm PATH] [--cpus N] [--memory-mib N]
#
# Defaults: 3 runs, build/ringvm, 2 vCPUs, 512 MiB. Takes about 3-4 minutes per round of three
# boots. Raw logs stay in ${TMPDIR:-/tmp}/ringvm-boot-bench/ (or $RINGVM_BENCH_DIR).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

if [[ ${1:-} == --in-lab ]]; then
  # ---- inside L1 --------------------------------------------------------------------------
  shift
  export LAB_RESULTS=$1 LAB_CPUS=$4 LAB_MEMORY_MIB=$5
  ringvm=$2 runs=$3
  source "$repo/tests/lab/lab_lib.sh"
  export LAB_KERNEL=/boot/vmlinuz-$RINGVM_LAB_KVER LAB_INITRD=$LAB_RESULTS/guest.cpio.gz
  export LAB_CMDLINE="console=ttyS0 panic=-1 quiet"
  vmms=(ringvm qemu_microvm qemu_pc)
  table=$LAB_RESULTS/table
  : >"$table"
  for ((i = 1; i <= runs; i++)); do
    for vmm in "${vmms[@]}"; do
      name=${vmm}_$i
      case $vmm in
        ringvm)
          cmd=("$ringvm" run --kernel "$LAB_KERNEL" --initrd "$LAB_INITRD" --cmdline "$LAB_CMDLINE"
            --cpus "$LAB_CPUS" --memory "${LAB_MEMORY_MIB}M" --console stdio --on-reboot exit)
          ;;
        qemu_microvm) mapfile -t cmd < <(lab_qemu_cmd microvm "$LAB_RESULTS/$name.console") ;;
        qemu_pc) mapfile -t cmd < <(lab_qemu_cmd pc "$LAB_RESULTS/$name.console") ;;
      esac
      lab_trace_start
      lab_run "$name" 300 "${cmd[@]}"
      exits=$(lab_trace_total kvm_exit) user_exits=$(lab_trace_total kvm_userspace_exit)
      status=$(sed -n 's/^status=//p' "$LAB_RESULTS/$name.result")
      wall=$(sed -n 's/^wall=//p' "$LAB_RESULTS/$name.result")
      uptime=$(lab_marker "$name" UPTIME)
      echo "$vmm $i $status $wall ${uptime:--} ${exits:--} ${user_exits:--}" >>"$table"
    done
  done
  exit 0
fi

# ---- on the host ----------------------------------------------------------------------------
runs=3 ringvm=$repo/build/ringvm cpus=2 memory_mib=512
while (($#)); do
  case $1 in
    --runs) runs=$2; shift 2 ;;
    --ringvm) ringvm=$(realpath "$2"); shift 2 ;;
    --cpus) cpus=$2; shift 2 ;;
    --memory-mib) memory_mib=$2; shift 2 ;;
    *) echo "usage: $0 [--runs N] [--ringvm PATH] [--cpus N] [--memory-mib N]" >&2; exit 2 ;;
  esac
done
[[ -x $ringvm ]] || echo "boot_bench: warning: $ringvm is not built; its runs will fail" >&2
dir=${RINGVM_BENCH_DIR:-${TMPDIR:-/tmp}/ringvm-boot-bench}
rm -rf "$dir"
mkdir -p "$dir"
dir=$(cd "$dir" && pwd -P)
"$repo/tests/lab/mkinitramfs.sh" --output "$dir/guest.cpio.gz" --init "$repo/tests/lab/guest_init.sh"
"$repo/scripts/lab.sh" --timeout $((runs * 3 * 320 + 120)) --share "$dir" -- \
  "$here/boot_bench.sh" --in-lab "$dir" "$ringvm" "$runs" "$cpus" "$memory_mib" >&2 ||
  { echo "boot_bench: the lab run failed (status $?); logs in $dir" >&2; exit 1; }

echo "Boot to poweroff: Debian's $(ls /boot/vmlinuz-* | sort -V | tail -n1 | sed 's|.*/||'), busybox init," \
  "$cpus vCPUs, $memory_mib MiB; L2 in the lab's L1 (nested AMD-V under TCG), $runs interleaved runs"
awk -v runs="$runs" '
  BEGIN { printf "%-13s %3s %6s %9s %10s %9s %11s\n", "vmm", "run", "status", "wall_s", "uptime_s", "exits", "user_exits" }
  {
    printf "%-13s %3s %6s %9s %10s %9s %11s\n", $1, $2, $3, $4, $5, $6, $7
    if ($3 == 0) { n[$1]++; wall[$1] += $4; up[$1] += $5; ex[$1] += $6; ux[$1] += $7 }
    else failed[$1]++
  }
  END {
    print ""
    printf "%-13s %7s %9s %10s %9s %11s\n", "mean", "ok_runs", "wall_s", "uptime_s", "exits", "user_exits"
    split("ringvm qemu_microvm qemu_pc", order, " ")
    for (k = 1; k <= 3; k++) {
      v = order[k]
      if (n[v]) printf "%-13s %7d %9.2f %10.2f %9.0f %11.0f\n", v, n[v], wall[v]/n[v], up[v]/n[v], ex[v]/n[v], ux[v]/n[v]
      else printf "%-13s %7d %9s %10s %9s %11s\n", v, 0, "-", "-", "-", "-"
    }
    print ""
    if (n["ringvm"] && n["qemu_microvm"]) {
      r = "ringvm/qemu_microvm"
      printf "%-20s wall %.2f  uptime %.2f  exits %.2f  user_exits %.2f\n", r,
        (wall["ringvm"]/n["ringvm"]) / (wall["qemu_microvm"]/n["qemu_microvm"]),
        (up["ringvm"]/n["ringvm"]) / (up["qemu_microvm"]/n["qemu_microvm"]),
        (ex["ringvm"]/n["ringvm"]) / (ex["qemu_microvm"]/n["qemu_microvm"]),
        (ux["ringvm"]/n["ringvm"]) / ((ux["qemu_microvm"]/n["qemu_microvm"]) ? ux["qemu_microvm"]/n["qemu_microvm"] : 1)
    } else {
      print "ratios: n/a (ringvm or QEMU microvm has no successful run; logs in '"$dir"')"
    }
  }' "$dir/table"
