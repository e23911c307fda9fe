#!/usr/bin/env bash
# The lab suite's one L1 session: runs every lab check inside L1 (started by
# tests/lab/lab_session.sh through scripts/lab.sh) and writes, per check, RESULTS/<check>.log (the
# command and its output, including the guest console) and RESULTS/<check>.result (exit status and
# L1 clock at start and end). tests/lab/lab_check.sh asserts on them from the host, one CTest test
# per check. Every run is bounded (RINGVM_LAB_RUN_TIMEOUT seconds, default 480).
#
#   lab_suite.sh RESULTS RINGVM INTEGRATION_TEST|-
#
#   RINGVM_LAB_SUITE_PART  all (default), main (every check but the network one) or net (only
#                          it): lab_session.sh runs the network check in an L1 of its own
#   RINGVM_LAB_ONLY        runs only the runs named here (space or comma separated, shell
#                          patterns: "api_main api_ctl", 'api_*', 'virtio_*,vsock_main'); every other
#                          run is marked skipped (RUN.skipped), so its checks report Skipped.
#                          For iterating on a few runs in one L1; unset (the default) runs all
set -uo pipefail
[[ $# -eq 3 ]] || { echo "usage: $0 RESULTS RINGVM INTEGRATION_TEST|-" >&2; exit 2; }
[[ ${RINGVM_LAB:-} == 1 ]] || { echo "$0 runs inside the lab: use tests/lab/lab_session.sh" >&2; exit 2; }
export LAB_RESULTS=$1
ringvm=$2
integration=$3
source "$(dirname "$0")/lab_lib.sh"

secs=${RINGVM_LAB_RUN_TIMEOUT:-480}
export LAB_KERNEL=/boot/vmlinuz-$RINGVM_LAB_KVER
export LAB_INITRD=$LAB_RESULTS/guest.cpio.gz
export LAB_CPUS=2 LAB_MEMORY_MIB=512
# No `quiet`: a stalled boot must show where it stalled. panic=-1: a panic resets at once.
poweroff_cmdline="console=ttyS0 panic=-1"
reboot_cmdline="console=ttyS0 panic=-1 ringvm_lab.action=reboot"

part=${RINGVM_LAB_SUITE_PART:-all}

# lab_wanted RUN...: true when RINGVM_LAB_ONLY is unset or one of its patterns matches one of the
# RUNs (a group of runs made by one script); otherwise marks every RUN skipped and is false.
lab_wanted() {
  local r p
  [[ -n ${RINGVM_LAB_ONLY:-} ]] || return 0
  for r in "$@"; do
    for p in ${RINGVM_LAB_ONLY//,/ }; do
      # shellcheck disable=SC2053 # $p is a pattern
      [[ $r == $p ]] && return 0
    done
  done
  for r in "$@"; do
    echo "left out by RINGVM_LAB_ONLY='$RINGVM_LAB_ONLY'" >"$LAB_RESULTS/$r.skipped"
  done
  return 1
}
echo "lab: L1 $(uname -r), $(nproc) CPUs, /dev/kvm: $(ls -l /dev/kvm 2>&1), suite part $part"
if [[ $part == net ]]; then
  # 5. below, alone (lab_session.sh: an L1 of one vCPU).
  lab_wanted net_main && "$(dirname "$0")/net_lab.sh" "$LAB_RESULTS" "$ringvm"
  touch "$LAB_RESULTS/session.done"
  exit 0
fi

# 1. QEMU itself in L1: proves the lab (nested AMD-V, the stock kernel, the test initramfs).
export LAB_CMDLINE=$poweroff_cmdline
mapfile -t qemu_cmd < <(lab_qemu_cmd microvm "$LAB_RESULTS/qemu_microvm_poweroff.console")
lab_wanted qemu_microvm_poweroff && lab_run qemu_microvm_poweroff "$secs" "${qemu_cmd[@]}"

# 2. ringvm's host-KVM integration tests on real (nested) AMD-V.
# On by default since the lab's emulator lost its two races (docs/lab.md): the one L1 hang inside
# its real-mode guest test had the signature of the second race (GIF left clear). RINGVM_LAB_KVM_TESTS=0
# skips it (reported as Skipped, with this reason).
rm -f "$LAB_RESULTS/kvm_integration.skipped"
if [[ $integration != - && ${RINGVM_LAB_KVM_TESTS:-1} == 0 ]]; then
  echo "RINGVM_LAB_KVM_TESTS=0: the KVM integration tests in L1 were turned off" \
    >"$LAB_RESULTS/kvm_integration.skipped"
elif [[ $integration != - ]] && lab_wanted kvm_integration; then
  lab_run kvm_integration "$secs" "$integration" --gtest_color=no
fi

# 3. `ringvm run`: Debian's stock kernel to poweroff, then to reboot.
lab_wanted ringvm_poweroff && lab_run ringvm_poweroff "$secs" "$ringvm" run --kernel "$LAB_KERNEL" --initrd "$LAB_INITRD" \
  --cmdline "$poweroff_cmdline" --cpus "$LAB_CPUS" --memory "${LAB_MEMORY_MIB}M" \
  --console stdio --on-reboot exit
lab_wanted ringvm_reboot && lab_run ringvm_reboot "$secs" "$ringvm" run --kernel "$LAB_KERNEL" --initrd "$LAB_INITRD" \
  --cmdline "$reboot_cmdline" --cpus "$LAB_CPUS" --memory "${LAB_MEMORY_MIB}M" \
  --console stdio --on-reboot exit

# 4. virtio disks (ext4, read-only, SIGKILL durability, qcow2 overlay), hvc0, rng: three boots.
lab_wanted virtio_main virtio_durable virtio_qcow2 && "$(dirname "$0")/virtio_lab.sh" "$LAB_RESULTS" "$ringvm"

# 5. virtio-net on a multiqueue tap in a network namespace: ping, TCP both ways, both queues: one
# boot; with part main, lab_session.sh runs it in an L1 of its own.
[[ $part == main ]] || ! lab_wanted net_main || "$(dirname "$0")/net_lab.sh" "$LAB_RESULTS" "$ringvm"

# 6. virtio-vsock: an echo both ways through `--vsock cid=3,socket=SOCK`: one boot.
lab_wanted vsock_main && "$(dirname "$0")/vsock_lab.sh" "$LAB_RESULTS" "$ringvm"

# 7. The control plane (issue 21): Firecracker's flow with curl, pause/resume, SendCtrlAltDel and
# `ringvm ctl`, on `ringvm run --api-sock`: two boots (api_main, api_ctl).
lab_wanted api_main api_ctl && "$(dirname "$0")/api_lab.sh" "$LAB_RESULTS" "$ringvm"

# 8. Snapshots (issue 22): snapshot + kill -9 + restore of a guest with disks, a tap and vsock; 4
# clones; a Diff snapshot merged and restored; bad snapshot files refused: three boots
# (snap_main, snap_clones, snap_diff) and host-side loads (snap_bad, of snap_diff's snapshot).
lab_wanted snap_main snap_clones snap_diff snap_bad && "$(dirname "$0")/snap_lab.sh" "$LAB_RESULTS" "$ringvm"

touch "$LAB_RESULTS/session.done"
