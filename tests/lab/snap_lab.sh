#!/usr/bin/env bash
# The lab's snapshot checks (issue 22), run inside L1 by tests/lab/lab_suite.sh: Debian's stock
# kernel, 2 vCPUs, 512 MiB, the guest init tests/lab/snap_init.sh (a 0.3 s tick counter with 8
# random bytes per tick), driven by `ringvm run --api-sock` and `ringvm ctl`. Four runs, in this
# order (snap_bad uses snap_diff's Full snapshot):
#   snap_main    virtio-blk raw + qcow2, virtio-net on a multi_queue tap in a network namespace,
#                vsock, rng, console on COM1. The guest writes a pattern to both disks (fsync),
#                then ticks. Host: pause, `ctl snapshot create`, kill -9 ringvm, 30 s, then
#                `ringvm run --restore --net-override eth0=TAP --api-sock` (a new process): the
#                ticks go on from the snapshot, the host pings the guest through the tap, a new
#                vsock connection to the guest answers, the guest re-reads both disks' pattern
#                (page cache dropped), no soft lockup / RCU stall after the restore, qemu-img check
#                on the qcow2 disk after ringvm ended. RESTORE-MS: `ringvm run --restore`
#                launched to the first tick in the new console.
#   snap_clones  one NIC on a tap, vsock, rng: pause, snapshot, kill -9, then `ringvm clone
#                --count 4 --tap eth0=PREFIX` (taps PREFIX0..3 made first): each clone's API says
#                Running, ticks, prints a different random number after the restore (VMGenID), has
#                its own MAC (GET /vm/config; in the guest after rebinding virtio-net); the 4
#                clones' Pss/Rss summed (CLONE-PSS, CLONE-RSS).
#   snap_diff    `ringvm run --track-dirty-pages`: Full snapshot, resume, ticks, pause, Diff
#                snapshot; the diff memory file has far fewer blocks than the full one; `ringvm
#                snapshot merge` onto a copy of the full one; restore from the diff's state file
#                and the merged memory: the ticks go on from the diff point.
#   snap_bad     host side only, on a fresh `ringvm run --api-sock`: PUT /snapshot/load (curl and
#                `ringvm ctl snapshot load`) of a corrupted, truncated, version-raised and foreign
#                (the kernel image) state file, a memory file of the wrong size and a changed disk:
#                each 400 with a fault_message (ctl status 1), the process stays up and GET / says
#                "Not started"; then the good snapshot loads and runs.
# Leaves RESULTS/<run>.{log,console,result} (snap_main also <run>.restore.console, snap_clones
# <run>.cloneK.{console,log}, snap_diff <run>.restore.console), asserted by tests/lab/snap_check.sh.
#
#   snap_lab.sh --initramfs FILE           builds the guest's initramfs
#   snap_lab.sh RESULTS RINGVM             the runs (inside L1); builds RESULTS/snap-guest.cpio.gz
#                                          first if missing
#   snap_lab.sh --run RUN WORK RINGVM      one run itself (what lab_run bounds and logs)
#
# Host-side results are printed as "RINGVM-LAB-HOST-<KEY> value" lines (into the run's log).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lab_lib.sh"
gap_secs=${RINGVM_LAB_SNAP_GAP:-30}

build_initramfs() {
  local socat
  socat=$(command -v socat) || { echo "snap_lab: socat not found: install socat (scripts/setup.sh)" >&2; return 1; }
  "$here/mkinitramfs.sh" --output "$1" --init "$here/snap_init.sh" --module virtio_pci \
    --module virtio_blk --module virtio_net --module vmw_vsock_virtio_transport --module virtio_rng \
    --binary "$socat"
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# api SOCK METHOD PATH [BODY]: one request with curl; logs it and sets api_code (the HTTP status,
# or curl-failed-N) and api_body (the answer on one line).
api() {
  local s=$1 method=$2 path=$3 body=${4:-} rc=0
  local args=(--unix-socket "$s" -sS -m 30 -o api.resp -w '%{http_code}' -X "$method")
  [[ -n $body ]] && args+=(-H 'Content-Type: application/json' -d "$body")
  : >api.resp
  api_code=$(curl "${args[@]}" "http://localhost$path" 2>api.err) || rc=$?
  ((rc == 0)) || api_code="curl-failed-$rc"
  api_body=$(tr -d '\n' <api.resp)
  echo "RINGVM-LAB-HOST-API $method $path ${body:+$body }-> $api_code $api_body$(head -c 300 api.err)"
}

state_of() { sed -n 's/.*"state" *: *"\([^"]*\)".*/\1/p' <<<"$1"; }

# api_state SOCK KEY: GET / and "RINGVM-LAB-HOST-<KEY> <state>".
api_state() {
  api "$1" GET /
  echo "RINGVM-LAB-HOST-$2 $(state_of "$api_body")"
}

# ctl SOCK KEY ARGS...: `ringvm ctl --api-sock SOCK ARGS...`; "RINGVM-LAB-HOST-CTL-<KEY> <status>
# <stdout>" and "RINGVM-LAB-HOST-CTL-<KEY>-STDERR <stderr>", each on one line.
ctl() {
  local s=$1 key=$2 rc=0
  shift 2
  timeout 120 "$ringvm" ctl --api-sock "$s" "$@" >ctl.out 2>ctl.err </dev/null || rc=$?
  echo "RINGVM-LAB-HOST-CTL-$key $rc $(tr '\n' ' ' <ctl.out | sed 's/ *$//')"
  echo "RINGVM-LAB-HOST-CTL-$key-STDERR $(tr '\n' ' ' <ctl.err | sed 's/ *$//')"
}

# Tick numbers of the complete tick lines in console FILE (the last line may be half written).
ticks_of() {
  local drop=
  [[ -s $1 ]] || return 0
  [[ $(tail -c1 "$1" | od -An -tx1 | tr -d ' ') == 0a ]] || drop='$d'
  tr -d '\r' <"$1" | sed "$drop" | grep -ao 'RINGVM-LAB-SNAP-TICK [0-9][0-9]* [0-9.]* [0-9a-f]*$' | awk '{ print $2 }'
}
last_tick_of() { ticks_of "$1" | tail -n1; }

# wait_tick FILE N PID SECS: until FILE has a tick above N, PID ended, or SECS passed.
wait_tick() {
  local until=$((SECONDS + $4)) t
  while ((SECONDS < until)) && kill -0 "$3" 2>/dev/null; do
    t=$(last_tick_of "$1")
    [[ -n $t ]] && ((t > $2)) && return 0
    sleep 0.2
  done
  return 1
}

# wait_line FILE REGEX PID SECS: until FILE has a line matching REGEX (grep -E).
wait_line() {
  local until=$((SECONDS + $4))
  while ((SECONDS < until)) && kill -0 "$3" 2>/dev/null; do
    tr -d '\r' <"$1" 2>/dev/null | grep -aqE "$2" && return 0
    sleep 0.2
  done
  tr -d '\r' <"$1" 2>/dev/null | grep -aqE "$2"
}

# wait_api SOCK PID: until GET / answers (bounded, 60 s).
wait_api() {
  local t0=$SECONDS
  while ((SECONDS < t0 + 60)) && kill -0 "$2" 2>/dev/null; do
    [[ -S $1 ]] && curl --unix-socket "$1" -s -m 5 -o /dev/null http://localhost/ && return 0
    sleep 0.1
  done
  return 1
}

# vsock_cmd SOCK CMD: one command to the guest's vsock port 5000 through ringvm's Unix socket;
# prints the guest's answer lines (after the "OK <port>" of the CONNECT handshake) on one line.
vsock_cmd() {
  local out rc=0
  # Our side ends after the command (ringvm passes the half-close on as SHUTDOWN(SEND)); socat
  # waits up to 30 s for the guest's answer and its close (a just-restored guest is slow: its
  # memory comes in page by page).
  out=$(printf 'CONNECT 5000\n%s\n' "$2" | timeout 40 socat -t 30 - UNIX-CONNECT:"$1" 2>vsock.err) || rc=$?
  echo "$(tr -d '\r' <<<"$out" | tr '\n' ' ' | sed 's/ *$//') (status $rc$(head -c 200 vsock.err | tr '\n' ' '))"
}

# stop_vmm PID SECS: waits up to SECS for PID to end, else SIGTERM (then SIGKILL); sets vmm_status.
stop_vmm() {
  local t0=$SECONDS
  while ((SECONDS < t0 + $2)) && kill -0 "$1" 2>/dev/null; do sleep 0.2; done
  if kill -0 "$1" 2>/dev/null; then
    echo "RINGVM-LAB-HOST-VMM-STOP SIGTERM (still running after $2 s)"
    kill "$1" 2>/dev/null
    t0=$SECONDS
    while ((SECONDS < t0 + 20)) && kill -0 "$1" 2>/dev/null; do sleep 0.2; done
    kill -9 "$1" 2>/dev/null
  fi
  vmm_status=0
  wait "$1" || vmm_status=$?
}

# netns_up NS TAP... : a namespace holding multi_queue taps (172.16.1.1/24 on the first).
netns_up() {
  local ns=$1 t first=1
  shift
  ip netns add "$ns" || return 1
  ip netns exec "$ns" ip link set lo up || return 1
  for t in "$@"; do
    ip netns exec "$ns" ip tuntap add dev "$t" mode tap multi_queue || return 1
    ((first)) && { ip netns exec "$ns" ip addr add 172.16.1.1/24 dev "$t" || return 1; }
    ip netns exec "$ns" ip link set "$t" up || return 1
    first=0
  done
}

# boot_guest MODE CONSOLE SOCK [NETNS] -- EXTRA...: `ringvm run --kernel` of the test guest with
# --api-sock, in the background (in NETNS when given; no `timeout` wrapper, so $pid is ringvm's own
# and kill -9 hits it); sets pid.
boot_guest() {
  local mode=$1 con=$2 s=$3 ns=$4
  shift 5
  local cmd=("$ringvm" run --kernel "$LAB_KERNEL" --initrd "$initrd" --cmdline "console=ttyS0 panic=-1 ringvm_snap=$mode"
    --cpus 2 --memory 512M --console "file:$con" --api-sock "$s" --id "snap-$mode" "$@")
  if [[ -n $ns ]]; then
    { printf '+ ip netns exec %s' "$ns"; printf ' %q' "${cmd[@]}"; echo; }
    ip netns exec "$ns" "${cmd[@]}" </dev/null &
  else
    { printf '+'; printf ' %q' "${cmd[@]}"; echo; }
    "${cmd[@]}" </dev/null &
  fi
  pid=$!
}

# guest_ready CONSOLE: waits for the guest's SNAP-READY and 3 ticks after it.
guest_ready() {
  local t0=$SECONDS
  if ! lab_wait_marker "$1" 'RINGVM-LAB-SNAP-READY' "$pid" $((SECONDS + secs)); then
    echo "RINGVM-LAB-HOST-GUEST-READY never (ringvm ended or ${secs}s passed)"
    return 1
  fi
  echo "RINGVM-LAB-HOST-GUEST-READY-AFTER $((SECONDS - t0))"
  wait_tick "$1" 3 "$pid" 120 || { echo "RINGVM-LAB-HOST-GUEST-TICKS none"; return 1; }
}

# pause_and_snapshot SOCK CONSOLE STATE MEM [--diff]: ctl pause, the last tick, ctl snapshot
# create (timed); KEY prefix SNAP or DIFF (with --diff).
pause_and_snapshot() {
  local s=$1 con=$2 st=$3 mem=$4 diff=${5:-} key=SNAP t0
  [[ -n $diff ]] && key=DIFF
  ctl "$s" "$key-PAUSE" pause
  sleep 0.5
  echo "RINGVM-LAB-HOST-$key-LAST-TICK $(last_tick_of "$con")"
  echo "RINGVM-LAB-HOST-$key-CONSOLE-BYTES $(stat -c %s "$con")"
  t0=$(now_ms)
  ctl "$s" "$key-CREATE" snapshot create --snapshot "$st" --mem "$mem" $diff
  echo "RINGVM-LAB-HOST-$key-CREATE-MS $(($(now_ms) - t0))"
  ls -ls "$st" "$mem" 2>&1
  echo "RINGVM-LAB-HOST-$key-MEM-BLOCKS $(stat -c %b "$mem" 2>/dev/null) $(stat -c %s "$mem" 2>/dev/null)"
  "$ringvm" snapshot info "$st" 2>&1 | sed "s/^/RINGVM-LAB-HOST-$key-INFO /"
}

# The sum over PIDs of a /proc/PID/smaps_rollup (Pss) or status (VmRSS) field, in kB.
sum_kb() {
  local field=$1 file=$2 total=0 p v
  shift 2
  for p in "$@"; do
    v=$(awk -v f="$field:" '$1 == f { print $2; exit }' "/proc/$p/$file" 2>/dev/null)
    total=$((total + ${v:-0}))
  done
  echo "$total"
}

run_main() {
  local tap=rvsnap0 ns=ringvm-snap-$$ sock=$PWD/api.sock rsock=$PWD/api2.sock
  local rconsole=$results/snap_main.restore.console
  rm -f "$rconsole"
  cleanup() { ip netns del "$ns" 2>/dev/null; }
  trap cleanup EXIT
  netns_up "$ns" "$tap" || { echo "RINGVM-LAB-HOST-SETUP netns-tap-failed"; return 1; }
  truncate -s 16M raw.img && qemu-img create -q -f qcow2 data.qcow2 16M ||
    { echo "RINGVM-LAB-HOST-SETUP disks-failed"; return 1; }
  echo "RINGVM-LAB-HOST-SETUP ok"
  boot_guest main "$console" "$sock" "$ns" -- --disk "path=$PWD/raw.img,id=raw0" \
    --disk "path=$PWD/data.qcow2,format=qcow2,id=qcow0" --net "tap=$tap,id=eth0" \
    --vsock "cid=3,socket=$PWD/v.sock" --rng
  local boot_pid=$pid boot_ms
  boot_ms=$(now_ms)
  # How long a booting ringvm takes to answer its API in this L1: the yardstick for RESTORE-API-MS.
  if wait_api "$sock" "$pid"; then
    echo "RINGVM-LAB-HOST-BOOT-API-MS $(($(now_ms) - boot_ms))"
  else
    echo "RINGVM-LAB-HOST-API-UP never"
  fi
  if ! guest_ready "$console"; then
    kill "$pid" 2>/dev/null
    stop_vmm "$pid" 10
    return
  fi
  # Before the snapshot (information: the same checks as after it).
  if ip netns exec "$ns" busybox ping -c 1 -W 5 172.16.1.2 >/dev/null 2>&1; then
    echo "RINGVM-LAB-HOST-PING-BEFORE ok"
  else
    echo "RINGVM-LAB-HOST-PING-BEFORE failed"
  fi
  echo "RINGVM-LAB-HOST-VSOCK-BEFORE $(vsock_cmd "$PWD/v.sock" hello)"
  wait_line "$console" 'RINGVM-LAB-SNAP-DISK-WRITE vdb' "$pid" 60
  wait_tick "$console" "$(($(last_tick_of "$console") + 2))" "$pid" 60
  echo "RINGVM-LAB-HOST-BOOT-PSS-KB $(sum_kb Pss smaps_rollup "$pid")"

  pause_and_snapshot "$sock" "$console" "$PWD/vm.snap" "$PWD/vm.mem"
  kill -9 "$boot_pid"
  wait "$boot_pid"
  echo "RINGVM-LAB-HOST-KILL9-STATUS $?"
  # ringvm's own files of the killed process are left behind (the API socket); the restore
  # replaces them.
  local t0=$SECONDS
  sleep "$gap_secs"
  echo "RINGVM-LAB-HOST-GAP-SECONDS $((SECONDS - t0))"

  : >"$rconsole"
  local cmd=("$ringvm" run --restore "$PWD/vm.snap" --restore-mem "$PWD/vm.mem" --api-sock "$rsock"
    --net-override "eth0=$tap" --console "file:$rconsole" --id snap-main-restored)
  { printf '+ ip netns exec %s' "$ns"; printf ' %q' "${cmd[@]}"; echo; }
  local start_ms api_ms='' tick_ms='' until=$((SECONDS + 180))
  start_ms=$(now_ms)
  ip netns exec "$ns" timeout -k 10 "$secs" "${cmd[@]}" </dev/null &
  pid=$!
  while ((SECONDS < until)) && kill -0 "$pid" 2>/dev/null; do
    if [[ -z $api_ms && -S $rsock ]] && curl --unix-socket "$rsock" -s -m 2 -o /dev/null http://localhost/; then
      api_ms=$(($(now_ms) - start_ms))
    fi
    if grep -aq 'RINGVM-LAB-SNAP-TICK [0-9]' "$rconsole"; then
      tick_ms=$(($(now_ms) - start_ms))
      break
    fi
    sleep 0.02
  done
  echo "RINGVM-LAB-HOST-RESTORE-MS ${tick_ms:-never}"
  echo "RINGVM-LAB-HOST-RESTORE-API-MS ${api_ms:-never}"
  if [[ -z $tick_ms ]]; then
    echo "RINGVM-LAB-HOST-RESTORE-TICKS none"
    kill "$pid" 2>/dev/null
    stop_vmm "$pid" 10
    echo "RINGVM-LAB-HOST-VMM-STATUS $vmm_status"
    return
  fi
  api_state "$rsock" STATE-RESTORED
  local first
  first=$(ticks_of "$rconsole" | head -n1)
  wait_tick "$rconsole" "$((${first:-0} + 5))" "$pid" 120
  echo "RINGVM-LAB-HOST-RESTORE-TICKS $(ticks_of "$rconsole" | head -n 8 | tr '\n' ' ')"
  local after_first=$SECONDS
  if ip netns exec "$ns" busybox ping -c 3 -W 5 172.16.1.2 >ping.out 2>&1; then
    echo "RINGVM-LAB-HOST-PING-AFTER ok"
  else
    echo "RINGVM-LAB-HOST-PING-AFTER failed"
  fi
  cat ping.out
  echo "RINGVM-LAB-HOST-PING-AFTER-SUMMARY $(grep 'packets transmitted' ping.out)"
  echo "RINGVM-LAB-HOST-VSOCK-AFTER $(vsock_cmd "$PWD/v.sock" hello)"
  echo "RINGVM-LAB-HOST-VSOCK-RESTORED $(vsock_cmd "$PWD/v.sock" restored)"
  wait_line "$rconsole" 'RINGVM-LAB-SNAP-POST-RESTORE done' "$pid" 90 ||
    echo "RINGVM-LAB-HOST-POST-RESTORE never"
  # The guest's watchdogs (soft lockup 8 s, RCU stall 5 s) get 12 s after the restore to speak up.
  while ((SECONDS < after_first + 12)) && kill -0 "$pid" 2>/dev/null; do sleep 0.5; done
  echo "RINGVM-LAB-HOST-POST-RESTORE-WAIT $((SECONDS - after_first))"
  echo "RINGVM-LAB-HOST-RESTORED-PSS-KB $(sum_kb Pss smaps_rollup "$(pgrep -P "$pid" | head -n1)")"
  echo "RINGVM-LAB-HOST-VSOCK-POWEROFF $(vsock_cmd "$PWD/v.sock" poweroff)"
  stop_vmm "$pid" 60
  echo "RINGVM-LAB-HOST-VMM-STATUS $vmm_status"

  # The disks after ringvm ended: qemu-img's verdict on the qcow2 one, and the pattern in both.
  local rc=0 want
  qemu-img check -f qcow2 data.qcow2 >qcheck.out 2>&1 || rc=$?
  cat qcheck.out
  echo "RINGVM-LAB-HOST-QCOW2-CHECK $rc $(tr '\n' ' ' <qcheck.out | head -c 300)"
  want=$(yes 'RINGVM-SNAP-PATTERN-0123456789abcdefghijklmnopqrstuvwxyz' | head -c 1048576 | md5sum | cut -d' ' -f1)
  echo "RINGVM-LAB-HOST-PATTERN-MD5 $want"
  echo "RINGVM-LAB-HOST-RAW-MD5 $(head -c 1048576 raw.img | md5sum | cut -d' ' -f1)"
  qemu-img convert -f qcow2 -O raw data.qcow2 data.raw 2>&1
  echo "RINGVM-LAB-HOST-QCOW2-MD5 $(head -c 1048576 data.raw | md5sum | cut -d' ' -f1)"
  rm -f vm.mem data.raw
}

run_clones() {
  local tap=rvsnc ns=ringvm-snapc-$$ sock=$PWD/api.sock k
  cleanup() { ip netns del "$ns" 2>/dev/null; }
  trap cleanup EXIT
  netns_up "$ns" rvsnap1 || { echo "RINGVM-LAB-HOST-SETUP netns-tap-failed"; return 1; }
  echo "RINGVM-LAB-HOST-SETUP ok"
  boot_guest clones "$console" "$sock" "$ns" -- --net "tap=rvsnap1,id=eth0" \
    --vsock "cid=3,socket=$PWD/v.sock" --rng
  local boot_pid=$pid
  wait_api "$sock" "$pid" || echo "RINGVM-LAB-HOST-API-UP never"
  if ! guest_ready "$console"; then
    kill "$pid" 2>/dev/null
    stop_vmm "$pid" 10
    return
  fi
  echo "RINGVM-LAB-HOST-ORIGIN-PSS-KB $(sum_kb Pss smaps_rollup "$pid")"
  echo "RINGVM-LAB-HOST-ORIGIN-RSS-KB $(sum_kb VmRSS status "$pid")"
  pause_and_snapshot "$sock" "$console" "$PWD/vm.snap" "$PWD/vm.mem"
  kill -9 "$boot_pid"
  wait "$boot_pid"
  echo "RINGVM-LAB-HOST-KILL9-STATUS $?"
  for k in 0 1 2 3; do
    ip netns exec "$ns" ip tuntap add dev "$tap$k" mode tap multi_queue &&
      ip netns exec "$ns" ip link set "$tap$k" up || echo "RINGVM-LAB-HOST-SETUP tap-$k-failed"
  done

  local cmd=("$ringvm" clone --snapshot "$PWD/vm.snap" --mem "$PWD/vm.mem" --count 4 --dir "$PWD/clones"
    --tap "eth0=$tap") rc=0 t0
  { printf '+ ip netns exec %s' "$ns"; printf ' %q' "${cmd[@]}"; echo; }
  t0=$(now_ms)
  ip netns exec "$ns" timeout 300 "${cmd[@]}" </dev/null >clone.out 2>clone.err || rc=$?
  echo "RINGVM-LAB-HOST-CLONE-MS $(($(now_ms) - t0))"
  cat clone.out clone.err
  echo "RINGVM-LAB-HOST-CLONE-STATUS $rc"
  local pids=() p
  for k in 0 1 2 3; do
    p=$(sed -n "s/^clone $k: pid \([0-9]*\),.*/\1/p" clone.out)
    echo "RINGVM-LAB-HOST-CLONE$k-PID ${p:-none}"
    echo "RINGVM-LAB-HOST-CLONE$k-MAC $(sed -n "s/^clone $k: .*, mac \([0-9a-f:]*\).*/\1/p" clone.out)"
    [[ -n $p ]] && pids+=("$p")
  done
  local until=$((SECONDS + 150)) cdir
  for k in 0 1 2 3; do
    cdir=$PWD/clones/clone$k
    ctl "$cdir/api.sock" "CLONE$k-INFO" info
    api "$cdir/api.sock" GET /vm/config
    echo "RINGVM-LAB-HOST-CLONE$k-CONFIG-MAC $(grep -o '"guest_mac" *: *"[^"]*"' <<<"$api_body" | sed 's/.*"\([^"]*\)"$/\1/' | tr '\n' ' ')"
  done
  # Every clone ticks and rebinds its NIC after noticing the restore.
  for k in 0 1 2 3; do
    cdir=$PWD/clones/clone$k
    local cp=${pids[$k]:-0}
    if wait_line "$cdir/console.log" 'RINGVM-LAB-SNAP-POST-RESTORE done' "$cp" $((until - SECONDS)); then
      echo "RINGVM-LAB-HOST-CLONE$k-POST-RESTORE done"
    else
      echo "RINGVM-LAB-HOST-CLONE$k-POST-RESTORE never"
    fi
  done
  for k in 0 1 2 3; do
    echo "RINGVM-LAB-HOST-CLONE$k-VSOCK $(vsock_cmd "$PWD/clones/clone$k/vsock.sock" hello)"
  done
  echo "RINGVM-LAB-HOST-CLONE-PSS $(sum_kb Pss smaps_rollup "${pids[@]}") kB for ${#pids[@]} clones"
  echo "RINGVM-LAB-HOST-CLONE-RSS $(sum_kb VmRSS status "${pids[@]}") kB for ${#pids[@]} clones"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do
    t0=$SECONDS
    while ((SECONDS < t0 + 30)) && kill -0 "$p" 2>/dev/null; do sleep 0.2; done
    kill -0 "$p" 2>/dev/null && { echo "RINGVM-LAB-HOST-CLONE-PID-$p still running: SIGKILL"; kill -9 "$p"; }
  done
  for k in 0 1 2 3; do
    cp "$PWD/clones/clone$k/console.log" "$results/snap_clones.clone$k.console" 2>/dev/null
    cp "$PWD/clones/clone$k/log" "$results/snap_clones.clone$k.log" 2>/dev/null
    echo "==== clone$k log"
    cat "$PWD/clones/clone$k/log" 2>/dev/null
  done
  rm -rf vm.mem clones
}

run_diff() {
  local sock=$PWD/api.sock rsock=$PWD/api2.sock rconsole=$results/snap_diff.restore.console
  rm -f "$rconsole"
  truncate -s 8M "$keep/disk.img" && printf 'RINGVM-SNAP-DIFF-DISK\n' | dd of="$keep/disk.img" conv=notrunc status=none
  boot_guest diff "$console" "$sock" "" -- --track-dirty-pages --disk "path=$keep/disk.img,id=d0" --rng
  wait_api "$sock" "$pid" || echo "RINGVM-LAB-HOST-API-UP never"
  if ! guest_ready "$console"; then
    kill "$pid" 2>/dev/null
    stop_vmm "$pid" 10
    return
  fi
  pause_and_snapshot "$sock" "$console" "$keep/full.snap" "$keep/full.mem"
  ctl "$sock" RESUME resume
  local l
  l=$(last_tick_of "$console")
  wait_tick "$console" "$((${l:-0} + 10))" "$pid" 120
  pause_and_snapshot "$sock" "$console" "$PWD/diff.snap" "$PWD/diff.mem" --diff
  kill -9 "$pid"
  wait "$pid"
  echo "RINGVM-LAB-HOST-KILL9-STATUS $?"
  cp --sparse=always "$keep/full.mem" merged.mem
  local rc=0
  "$ringvm" snapshot merge --diff diff.mem --into merged.mem >merge.out 2>&1 || rc=$?
  echo "RINGVM-LAB-HOST-MERGE $rc $(tr '\n' ' ' <merge.out)"

  : >"$rconsole"
  local cmd=("$ringvm" run --restore "$PWD/diff.snap" --restore-mem "$PWD/merged.mem" --api-sock "$rsock"
    --console "file:$rconsole" --id snap-diff-restored)
  { printf '+'; printf ' %q' "${cmd[@]}"; echo; }
  timeout -k 10 "$secs" "${cmd[@]}" </dev/null &
  pid=$!
  wait_api "$rsock" "$pid" || echo "RINGVM-LAB-HOST-RESTORE-API-UP never"
  api_state "$rsock" STATE-RESTORED
  if wait_line "$rconsole" 'RINGVM-LAB-SNAP-TICK [0-9]' "$pid" 120; then
    local first
    first=$(ticks_of "$rconsole" | head -n1)
    wait_tick "$rconsole" "$((${first:-0} + 5))" "$pid" 60
  fi
  echo "RINGVM-LAB-HOST-RESTORE-TICKS $(ticks_of "$rconsole" | head -n 8 | tr '\n' ' ')"
  kill "$pid" 2>/dev/null
  stop_vmm "$pid" 20
  echo "RINGVM-LAB-HOST-VMM-STATUS $vmm_status"
  rm -f merged.mem diff.mem
}

# bad_load KEY STATE MEM: the refused load, by curl (HTTP status, fault_message) then by ctl
# (status, stderr); then whether ringvm is still up and fresh.
bad_load() {
  local key=$1 st=$2 mem=$3
  api "$sock" PUT /snapshot/load \
    "{\"snapshot_path\":\"$st\",\"mem_backend\":{\"backend_type\":\"File\",\"backend_path\":\"$mem\"},\"resume_vm\":true}"
  echo "RINGVM-LAB-HOST-BAD-$key-HTTP $api_code"
  echo "RINGVM-LAB-HOST-BAD-$key-FAULT $(sed -n 's/.*"fault_message" *: *"\(.*\)".*/\1/p' <<<"$api_body")"
  ctl "$sock" "BAD-$key" snapshot load --snapshot "$st" --mem "$mem" --resume
  if kill -0 "$pid" 2>/dev/null; then echo "RINGVM-LAB-HOST-BAD-$key-ALIVE yes"; else echo "RINGVM-LAB-HOST-BAD-$key-ALIVE no"; fi
  api_state "$sock" "BAD-$key-STATE"
}

run_bad() {
  sock=$PWD/api.sock
  local st=$keep/full.snap mem=$keep/full.mem size
  if [[ ! -s $st || ! -s $mem ]]; then
    echo "RINGVM-LAB-HOST-SETUP no-snapshot (snap_diff did not leave its Full snapshot)"
    return 1
  fi
  size=$(stat -c %s "$st")
  # Corrupted: one byte in the middle of the payload flipped.
  cp "$st" corrupt.snap
  local off=$((size / 2)) b
  b=$(od -An -tu1 -j "$off" -N1 corrupt.snap | tr -d ' ')
  printf "\\$(printf %03o $((b ^ 255)))" | dd of=corrupt.snap bs=1 seek="$off" conv=notrunc status=none
  echo "RINGVM-LAB-HOST-CORRUPT-BYTE $off $b -> $((b ^ 255)) ($(cmp corrupt.snap "$st" | head -c 100))"
  head -c "$((size / 2))" "$st" >truncated.snap
  # The format version (u32 little-endian at offset 8) raised from 1 to 2.
  cp "$st" version.snap
  printf '\002' | dd of=version.snap bs=1 seek=8 conv=notrunc status=none
  echo "RINGVM-LAB-HOST-VERSION-BYTES $(od -An -tx1 -j 8 -N4 "$st") -> $(od -An -tx1 -j 8 -N4 version.snap)"
  truncate -s 256M small.mem
  echo "RINGVM-LAB-HOST-SETUP ok"

  local cmd=("$ringvm" run --api-sock "$sock" --console "file:$console" --id snap-bad)
  { printf '+'; printf ' %q' "${cmd[@]}"; echo; }
  timeout -k 10 "$secs" "${cmd[@]}" </dev/null &
  pid=$!
  wait_api "$sock" "$pid" || echo "RINGVM-LAB-HOST-API-UP never"
  api_state "$sock" STATE-BEFORE
  bad_load CORRUPT "$PWD/corrupt.snap" "$mem"
  bad_load TRUNCATED "$PWD/truncated.snap" "$mem"
  bad_load VERSION "$PWD/version.snap" "$mem"
  bad_load FOREIGN "$LAB_KERNEL" "$mem"
  bad_load MEMSIZE "$st" "$PWD/small.mem"
  # A disk changed since the snapshot: one byte written (its mtime moves); put back afterwards
  # with its old mtime (cp -p), which the good load below needs.
  cp -p "$keep/disk.img" disk.orig
  printf 'X' | dd of="$keep/disk.img" bs=1 seek=100 conv=notrunc status=none
  bad_load DISK "$st" "$mem"
  cp -p disk.orig "$keep/disk.img"

  ctl "$sock" GOOD-LOAD snapshot load --snapshot "$st" --mem "$mem" --resume
  api_state "$sock" STATE-GOOD
  if wait_line "$console" 'RINGVM-LAB-SNAP-TICK [0-9]' "$pid" 120; then
    local first
    first=$(ticks_of "$console" | head -n1)
    wait_tick "$console" "$((${first:-0} + 3))" "$pid" 60
  fi
  echo "RINGVM-LAB-HOST-GOOD-TICKS $(ticks_of "$console" | head -n 5 | tr '\n' ' ')"
  kill "$pid" 2>/dev/null
  stop_vmm "$pid" 20
  echo "RINGVM-LAB-HOST-VMM-STATUS $vmm_status"
}

if [[ ${1:-} == --initramfs ]]; then
  [[ $# -eq 2 ]] || { echo "usage: $0 --initramfs FILE" >&2; exit 2; }
  build_initramfs "$2"
  exit
fi

if [[ ${1:-} == --run ]]; then
  [[ $# -eq 4 ]] || { echo "usage: $0 --run RUN WORK RINGVM" >&2; exit 2; }
  run=$2 work=$3 ringvm=$4
  results=$LAB_RESULTS initrd=$LAB_RESULTS/snap-guest.cpio.gz secs=${RINGVM_LAB_RUN_TIMEOUT:-480}
  # Files one run leaves for a later one (snap_diff's Full snapshot for snap_bad).
  keep=$(dirname "$work")/keep
  mkdir -p "$keep"
  rm -rf "$work"  # a rerun starts clean
  mkdir -p "$work" && cd "$work" || exit 2
  console=$results/$run.console vmm_status=0
  : >"$console"
  case $run in
    snap_main) run_main ;;
    snap_clones) run_clones ;;
    snap_diff) run_diff ;;
    snap_bad) run_bad ;;
    *) echo "unknown run '$run'" >&2; exit 2 ;;
  esac
  echo "snap_lab: finished"
  exit 0
fi

[[ $# -eq 2 ]] || { echo "usage: $0 RESULTS RINGVM | --run RUN WORK RINGVM | --initramfs FILE" >&2; exit 2; }
[[ ${RINGVM_LAB:-} == 1 ]] || { echo "$0 runs inside the lab (tests/lab/lab_suite.sh)" >&2; exit 2; }
export LAB_RESULTS=$1
ringvm=$2
export LAB_KERNEL=${LAB_KERNEL:-/boot/vmlinuz-$RINGVM_LAB_KVER}
if [[ ! -s $LAB_RESULTS/snap-guest.cpio.gz ]]; then
  t0=$SECONDS
  build_initramfs "$LAB_RESULTS/snap-guest.cpio.gz" ||
    { echo "snap_lab: building the guest initramfs failed: no snapshot runs" >&2; exit 1; }
  echo "snap_lab: built the guest initramfs in L1 in $((SECONDS - t0))s"
fi
work=$(mktemp -d /tmp/snap-lab.XXXXXX)
# The run's own timeouts bound each ringvm (RINGVM_LAB_RUN_TIMEOUT); this bound covers the host
# side around them (the 30 s gap, the waits for ticks, four clones).
for run in snap_main snap_clones snap_diff snap_bad; do
  lab_run "$run" "$((${RINGVM_LAB_RUN_TIMEOUT:-480} + 300))" "$here/snap_lab.sh" --run "$run" "$work/$run" "$ringvm"
done
rm -rf "$work"
