#!/usr/bin/env bash
# The lab's control-plane checks (issue 21), run inside L1 by tests/lab/lab_suite.sh: two L2 boots
# of Debian's stock kernel with the guest init tests/lab/api_init.sh, each driven through
# `ringvm run --api-sock SOCK`:
#   api_main  Firecracker's getting-started flow with curl: ringvm starts without --kernel, and
#             PUT /serial, /machine-config (2 vCPUs, 512 MiB), /boot-source, /drives/rootfs (a
#             raw image whose first bytes carry a tag the guest reads back from /dev/vda),
#             /network-interfaces/eth0 (a tap in a network namespace; the host pings the guest),
#             /actions InstanceStart; GET / says "Not started", then "Running". Then one pause of
#             10 s (PATCH /vm Paused / Resumed, GET / says "Paused"), then PUT /actions
#             SendCtrlAltDel: the guest's kernel reboots and ringvm exits 3.
#   api_ctl   `ringvm run --kernel ... --api-sock SOCK` (boots at once, post-boot API) driven by
#             `ringvm ctl`: info, --json info, pause, pause again (harmless), info (Paused), 10 s,
#             resume, info, start (refused: status 1), ctrl-alt-del (ringvm exits 3), then info
#             on the dead socket (status 6).
# In both the guest prints a tick line every 0.3 s: while paused the console file must not grow,
# after resuming the ticks go on (N+1, N+2, ...), and the guest (its watchdogs lowered below the
# pause: soft lockup after 8 s, RCU stall after 5 s; CPU 1 kept busy, since an idle CPU never
# reports a pause) reports neither after the 10 s pause.
# Leaves RESULTS/<run>.{log,console,result}, asserted by tests/lab/api_check.sh.
#
#   api_lab.sh --initramfs FILE           builds the guest's initramfs
#   api_lab.sh RESULTS RINGVM             the runs (inside L1); builds RESULTS/api-guest.cpio.gz
#                                         first if missing
#   api_lab.sh --run RUN WORK RINGVM      one run itself (what lab_run bounds and logs)
#
# Host-side results are printed as "RINGVM-LAB-HOST-<KEY> value" lines (into the run's log).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lab_lib.sh"
pause_secs=10
guest=172.16.0.2
guest_mac=06:00:ac:10:00:02

build_initramfs() {
  "$here/mkinitramfs.sh" --output "$1" --init "$here/api_init.sh" --module virtio_pci \
    --module virtio_blk --module virtio_net
}

# api METHOD PATH [BODY]: one request with curl on $sock; logs it and sets api_code (the HTTP
# status, or curl-failed-N) and api_body (the answer on one line).
api() {
  local method=$1 path=$2 body=${3:-} rc=0
  local args=(--unix-socket "$sock" -sS -m 30 -o api.resp -w '%{http_code}' -X "$method")
  [[ -n $body ]] && args+=(-H 'Content-Type: application/json' -d "$body")
  : >api.resp
  api_code=$(curl "${args[@]}" "http://localhost$path" 2>api.err) || rc=$?
  ((rc == 0)) || api_code="curl-failed-$rc"
  api_body=$(tr -d '\n' <api.resp)
  echo "RINGVM-LAB-HOST-API $method $path ${body:+$body }-> $api_code $api_body$(head -c 300 api.err)"
}

# step KEY METHOD PATH [BODY]: api, then "RINGVM-LAB-HOST-<KEY> <code>".
step() {
  local key=$1
  shift
  api "$@"
  echo "RINGVM-LAB-HOST-$key $api_code"
}

# The "state" of GET /'s answer in $1.
state_of() { sed -n 's/.*"state" *: *"\([^"]*\)".*/\1/p' <<<"$1"; }

# api_state KEY: GET / and "RINGVM-LAB-HOST-<KEY> <state>".
api_state() {
  api GET /
  echo "RINGVM-LAB-HOST-$1 $(state_of "$api_body")"
}

# ctl KEY ARGS...: `ringvm ctl --api-sock SOCK ARGS...`; "RINGVM-LAB-HOST-CTL-<KEY> <status> <stdout>"
# and "RINGVM-LAB-HOST-CTL-<KEY>-STDERR <stderr>", each on one line.
ctl() {
  local key=$1 rc=0
  shift
  timeout 60 "$ringvm" ctl --api-sock "$sock" "$@" >ctl.out 2>ctl.err </dev/null || rc=$?
  echo "RINGVM-LAB-HOST-CTL-$key $rc $(tr '\n' ' ' <ctl.out | sed 's/ *$//')"
  echo "RINGVM-LAB-HOST-CTL-$key-STDERR $(tr '\n' ' ' <ctl.err | sed 's/ *$//')"
}

# Tick numbers of the complete tick lines in the console (the last line may still be half written).
ticks() {
  local drop=
  [[ $(tail -c1 "$console" | od -An -tx1 | tr -d ' ') == 0a ]] || drop='$d'
  tr -d '\r' <"$console" | sed "$drop" | grep -ao 'RINGVM-LAB-API-TICK [0-9][0-9]* ' | awk '{ print $2 }'
}
last_tick() { ticks | tail -n1; }
size() { stat -c %s "$console"; }

# wait_ticks N: until the console has a tick above N, ringvm ended, or 120 s passed.
wait_ticks() {
  local until=$((SECONDS + 120)) t
  while ((SECONDS < until)) && kill -0 "$pid" 2>/dev/null; do
    t=$(last_tick)
    [[ -n $t ]] && ((t > $1)) && return 0
    sleep 0.2
  done
  return 1
}

# pause_cycle HOW (curl | ctl): pauses for $pause_secs, watching the console, and resumes.
pause_cycle() {
  local how=$1 t0 s0 sa sb ta tb
  echo "RINGVM-LAB-HOST-PAUSE-HOW $how"
  wait_ticks 3 || echo "RINGVM-LAB-HOST-PAUSE-NOTE no tick above 3 before pausing"
  t0=$SECONDS
  if [[ $how == curl ]]; then
    step PAUSE PATCH /vm '{"state":"Paused"}'
  else
    ctl PAUSE pause
  fi
  s0=$(size)
  sleep 0.5
  sa=$(size) ta=$(last_tick)
  if [[ $how == curl ]]; then
    api_state STATE-PAUSED
    step PAUSE-AGAIN PATCH /vm '{"state":"Paused"}'
  else
    ctl INFO-PAUSED info
    ctl PAUSE-AGAIN pause
  fi
  while ((SECONDS < t0 + pause_secs)); do sleep 0.2; done
  sb=$(size) tb=$(last_tick)
  echo "RINGVM-LAB-HOST-PAUSE-SECONDS $((SECONDS - t0))"
  # Console bytes right after the pause returned, 0.5 s later, and at the end of the pause.
  echo "RINGVM-LAB-HOST-PAUSE-SIZES $s0 $sa $sb"
  echo "RINGVM-LAB-HOST-PAUSE-TICKS $ta $tb"
  if [[ $how == curl ]]; then
    step RESUME PATCH /vm '{"state":"Resumed"}'
    api_state STATE-RESUMED
  else
    ctl RESUME resume
    ctl INFO-RESUMED info
  fi
  # The counter goes on: five more ticks.
  if wait_ticks $((tb + 5)); then
    echo "RINGVM-LAB-HOST-RESUME-TICKS $(ticks | awk -v n="$tb" '$1 > n' | head -n 6 | tr '\n' ' ')"
  else
    echo "RINGVM-LAB-HOST-RESUME-TICKS none"
  fi
  # Time for the guest's watchdogs (soft lockup 8 s, RCU stall 5 s; api_init.sh) to speak up.
  local w=$SECONDS
  while ((SECONDS < w + 8)) && kill -0 "$pid" 2>/dev/null; do sleep 0.5; done
  echo "RINGVM-LAB-HOST-POST-RESUME-WAIT $((SECONDS - w))"
}

# Waits (bounded, 120 s) for ringvm to end after Ctrl+Alt+Del; kills it by its pid otherwise.
wait_vmm_end() {
  local t0=$SECONDS
  while ((SECONDS < t0 + 120)) && kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "RINGVM-LAB-HOST-CAD-SECONDS never (still running after 120 s: killed)"
    kill "$pid" 2>/dev/null
  else
    echo "RINGVM-LAB-HOST-CAD-SECONDS $((SECONDS - t0))"
  fi
  wait "$pid" || status=$?
  echo "RINGVM-LAB-HOST-VMM-STATUS $status"
  echo "RINGVM-LAB-HOST-VMM-SECONDS $((SECONDS - start))"
  if [[ -e $sock ]]; then echo "RINGVM-LAB-HOST-SOCK-AFTER present"; else echo "RINGVM-LAB-HOST-SOCK-AFTER gone"; fi
}

# Waits (bounded, 30 s) until GET / answers on $sock.
wait_api() {
  local t0=$SECONDS
  while ((SECONDS < t0 + 30)) && kill -0 "$pid" 2>/dev/null; do
    [[ -S $sock ]] && curl --unix-socket "$sock" -s -m 5 -o /dev/null http://localhost/ && break
    sleep 0.1
  done
  echo "RINGVM-LAB-HOST-API-UP-SECONDS $((SECONDS - t0))"
}

run_main() {
  local tap=rvapi0
  ns=ringvm-api-$$
  nsx() { ip netns exec "$ns" "$@"; }
  cleanup() { ip netns del "$ns" 2>/dev/null; }
  trap cleanup EXIT
  ip netns add "$ns" || { echo "RINGVM-LAB-HOST-SETUP ip-netns-add-failed"; return 1; }
  # multi_queue: ringvm gives the NIC one queue pair per vCPU by default.
  nsx ip link set lo up &&
    nsx ip tuntap add dev "$tap" mode tap multi_queue &&
    nsx ip addr add 172.16.0.1/24 dev "$tap" &&
    nsx ip link set "$tap" up || { echo "RINGVM-LAB-HOST-SETUP tap-failed"; return 1; }
  # The drive: 16 MiB, a tag in its first bytes that the guest reads back.
  local tag
  tag=RINGVMAPIDISK-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
  truncate -s 16M disk.img && printf '%s\n' "$tag" | dd of=disk.img conv=notrunc status=none ||
    { echo "RINGVM-LAB-HOST-SETUP disk-failed"; return 1; }
  echo "RINGVM-LAB-HOST-DISK-TAG $tag"
  echo "RINGVM-LAB-HOST-SETUP ok"

  local cmd=("$ringvm" run --api-sock "$sock" --id api-main)
  { printf '+ ip netns exec %s' "$ns"; printf ' %q' "${cmd[@]}"; echo; }
  start=$SECONDS
  nsx timeout -k 10 "$secs" "${cmd[@]}" </dev/null &
  pid=$!
  wait_api
  api_state STATE-BEFORE
  step SERIAL PUT /serial "{\"serial_out_path\":\"$console\"}"
  step MACHINE-CONFIG PUT /machine-config '{"vcpu_count":2,"mem_size_mib":512}'
  step BOOT-SOURCE PUT /boot-source \
    "{\"kernel_image_path\":\"$LAB_KERNEL\",\"initrd_path\":\"$initrd\",\"boot_args\":\"console=ttyS0 panic=-1 ringvm_api=main\"}"
  step DRIVE PUT /drives/rootfs \
    "{\"drive_id\":\"rootfs\",\"path_on_host\":\"$PWD/disk.img\",\"is_root_device\":false,\"is_read_only\":false}"
  step NET PUT /network-interfaces/eth0 \
    "{\"iface_id\":\"eth0\",\"guest_mac\":\"$guest_mac\",\"host_dev_name\":\"$tap\"}"
  api GET /vm/config
  echo "RINGVM-LAB-HOST-VM-CONFIG $api_code $api_body"
  local t0=$SECONDS
  step START PUT /actions '{"action_type":"InstanceStart"}'
  api_state STATE-STARTED
  local deadline=$((SECONDS + secs))
  if ! lab_wait_marker "$console" 'RINGVM-LAB-API-READY' "$pid" "$deadline"; then
    echo "RINGVM-LAB-HOST-GUEST-READY never (ringvm ended or ${secs}s passed)"
    kill "$pid" 2>/dev/null
    wait_vmm_end
    return
  fi
  echo "RINGVM-LAB-HOST-GUEST-READY-AFTER $((SECONDS - t0))"
  api_state STATE-RUNNING
  if nsx busybox ping -c 3 -W 5 "$guest" >ping.out 2>&1; then
    echo "RINGVM-LAB-HOST-PING-GUEST ok"
  else
    echo "RINGVM-LAB-HOST-PING-GUEST failed"
  fi
  cat ping.out
  echo "RINGVM-LAB-HOST-PING-GUEST-SUMMARY $(grep 'packets transmitted' ping.out)"

  pause_cycle curl

  step CAD PUT /actions '{"action_type":"SendCtrlAltDel"}'
  wait_vmm_end
}

run_ctl() {
  local cmd=("$ringvm" run --api-sock "$sock" --id api-ctl --kernel "$LAB_KERNEL" --initrd "$initrd"
    --cmdline "console=ttyS0 panic=-1 ringvm_api=ctl" --cpus 2 --memory 512M --console "file:$console")
  { printf '+'; printf ' %q' "${cmd[@]}"; echo; }
  start=$SECONDS
  timeout -k 10 "$secs" "${cmd[@]}" </dev/null &
  pid=$!
  wait_api
  ctl INFO info
  ctl INFO-JSON --json info
  local deadline=$((SECONDS + secs))
  if ! lab_wait_marker "$console" 'RINGVM-LAB-API-READY' "$pid" "$deadline"; then
    echo "RINGVM-LAB-HOST-GUEST-READY never (ringvm ended or ${secs}s passed)"
    kill "$pid" 2>/dev/null
    wait_vmm_end
    return
  fi
  echo "RINGVM-LAB-HOST-GUEST-READY-AFTER $((SECONDS - start))"

  pause_cycle ctl

  # InstanceStart after boot: refused (status 1, the fault message on stderr), nothing changes.
  ctl START start
  ctl CAD ctrl-alt-del
  wait_vmm_end
  # Nothing answers any more: status 6.
  ctl INFO-AFTER info
}

if [[ ${1:-} == --initramfs ]]; then
  [[ $# -eq 2 ]] || { echo "usage: $0 --initramfs FILE" >&2; exit 2; }
  build_initramfs "$2"
  exit
fi

if [[ ${1:-} == --run ]]; then
  [[ $# -eq 4 ]] || { echo "usage: $0 --run RUN WORK RINGVM" >&2; exit 2; }
  run=$2 work=$3 ringvm=$4
  results=$LAB_RESULTS initrd=$LAB_RESULTS/api-guest.cpio.gz secs=${RINGVM_LAB_RUN_TIMEOUT:-480}
  rm -rf "$work"  # a rerun starts clean
  mkdir -p "$work" && cd "$work" || exit 2
  sock=$PWD/api.sock console=$results/$run.console status=0
  : >"$console"
  case $run in
    api_main) run_main ;;
    api_ctl) run_ctl ;;
    *) echo "unknown run '$run'" >&2; exit 2 ;;
  esac
  echo "api_lab: finished"
  exit 0
fi

[[ $# -eq 2 ]] || { echo "usage: $0 RESULTS RINGVM | --run RUN WORK RINGVM | --initramfs FILE" >&2; exit 2; }
[[ ${RINGVM_LAB:-} == 1 ]] || { echo "$0 runs inside the lab (tests/lab/lab_suite.sh)" >&2; exit 2; }
export LAB_RESULTS=$1
ringvm=$2
export LAB_KERNEL=${LAB_KERNEL:-/boot/vmlinuz-$RINGVM_LAB_KVER}
if [[ ! -s $LAB_RESULTS/api-guest.cpio.gz ]]; then
  t0=$SECONDS
  build_initramfs "$LAB_RESULTS/api-guest.cpio.gz" ||
    { echo "api_lab: building the guest initramfs failed: no control-plane runs" >&2; exit 1; }
  echo "api_lab: built the guest initramfs in L1 in $((SECONDS - t0))s"
fi
work=$(mktemp -d /tmp/api-lab.XXXXXX)
# The run's own timeouts bound ringvm (RINGVM_LAB_RUN_TIMEOUT); this bound covers the host-side
# steps around it (a 10 s pause, the waits for ticks, the waits for ringvm to end).
for run in api_main api_ctl; do
  lab_run "$run" "$((${RINGVM_LAB_RUN_TIMEOUT:-480} + 300))" "$here/api_lab.sh" --run "$run" "$work/$run" "$ringvm"
done
rm -rf "$work"
