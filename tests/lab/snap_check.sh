#!/usr/bin/env bash
# Asserts one aspect of the lab session's snapshot runs (tests/lab/snap_lab.sh) from their log,
# consoles and result, and prints them first.
#
#   snap_check.sh RESULTS RUN ASPECT
#
#   snap_main    continues     paused, `ctl snapshot create` (status 0), ringvm killed with SIGKILL,
#                              30 s, `ringvm run --restore --net-override` in a new process: GET /
#                              says Running; the ticks of the boot console followed by the restored
#                              one's are 1, 2, 3, ... with none missing or repeated, the first tick
#                              after the restore is the last before it + 1, and 5 more followed.
#                              Prints RESTORE-MS (launch to first tick) and RESTORE-API-MS
#                ping          the host pinged the guest through the tap after the restore (3 of 3)
#                vsock         a new host-to-guest vsock connection after the restore was answered
#                              ("hello tick N", N past the snapshot's last tick)
#                disk          the guest wrote 1 MiB of a pattern to the raw and the qcow2 disk with
#                              fsync before the snapshot; after the restore it re-read both (page
#                              cache dropped, O_DIRECT) and found the pattern; after ringvm ended,
#                              qemu-img check passed on the qcow2 disk and both disks hold the pattern
#                no_stall      the guest's watchdogs were lowered (soft lockup 8 s, RCU stall 5 s),
#                              CPU 1 kept busy, the host waited 12 s after the first restored tick,
#                              and the restored console has no soft lockup / RCU stall report
#   snap_clones  running       `ringvm clone --count 4 --tap eth0=PREFIX` exited 0 and printed 4
#                              clones; each clone's `ctl info` says Running and its console has
#                              ticks after the restore and a vsock answer
#                distinct_random  the vmgenid driver is bound in the guest; each clone noticed the
#                              restore and printed 8 random bytes read after it: all 4 differ, and
#                              so do the random bytes of each clone's first tick begun after that
#                              (the literal first tick after the restore may have read its bytes
#                              before the snapshot was taken: it is printed, not asserted).
#                              Prints the clones' summed Pss (CLONE-PSS) and Rss
#                distinct_mac  GET /vm/config of the 4 clones shows 4 distinct guest_mac, each the
#                              one `ringvm clone` printed and none the original's; in each guest,
#                              after rebinding virtio-net, eth0's address is that clone's MAC
#   snap_diff    smaller       under --track-dirty-pages: Full snapshot, resume, >= 10 ticks, pause,
#                              Diff snapshot (both status 0); the diff memory file holds at most
#                              1/4 of the full one's blocks; `ringvm snapshot merge` exited 0
#                continues     restored from the diff's state file and the merged memory: GET /
#                              says Running, the first tick is the diff's last + 1, 5 more followed
#   snap_bad     refusals      corrupted, truncated, version-raised and foreign state files, a memory
#                              file of the wrong size and a changed disk: PUT /snapshot/load answers
#                              400 with a fault_message and `ctl snapshot load` exits 1, ringvm stays
#                              up and GET / still says "Not started" after each
#                good_load     after them the good snapshot loads (`ctl snapshot load --resume`,
#                              status 0), GET / says Running and the guest ticks
set -uo pipefail
[[ $# -eq 3 ]] || { echo "usage: $0 RESULTS RUN ASPECT" >&2; exit 2; }
export LAB_RESULTS=$1
run=$2 aspect=$3
source "$(dirname "$0")/lab_lib.sh"
lab_check_begin "$run"
for f in "$LAB_RESULTS/$run".restore.console "$LAB_RESULTS/$run".clone*.console; do
  [[ -e $f ]] || continue
  echo "==== $(basename "$f")"
  cat "$f"
done
echo "===="

m() { lab_marker "$run" "$1"; }
con() { tr -d '\r' <"$LAB_RESULTS/$run.console" 2>/dev/null; }
rcon() { tr -d '\r' <"$LAB_RESULTS/$run.restore.console" 2>/dev/null; }
ccon() { tr -d '\r' <"$LAB_RESULTS/$run.clone$1.console" 2>/dev/null; }
# The value of the first "RINGVM-LAB-KEY value" line on stdin.
marker_in() { sed -n "s/^.*RINGVM-LAB-$1 //p" | head -n1; }
# Tick numbers of the complete tick lines on stdin, in order.
ticks_in() { grep -ao 'RINGVM-LAB-SNAP-TICK [0-9][0-9]* [0-9.]* [0-9a-f]*$' | awk '{ print $2 }'; }
# The tick stream on stdin is 1, 2, ..., n with n > $1.
consecutive() { ticks_in | awk -v min="$1" '$1 != NR { bad = 1 } END { exit (bad || NR <= min) }'; }
# The tick stream on stdin is m, m+1, ..., with more than $1 ticks.
consecutive_from() { ticks_in | awk -v min="$1" 'NR == 1 { s = $1 } $1 != s + NR - 1 { bad = 1 } END { exit (bad || NR <= min) }'; }
stall_lines() { grep -av 'RINGVM-LAB-' | grep -aiE 'soft lockup|rcu.*stall|self-detected stall|watchdog: BUG|hung_task'; }
num() { [[ $1 =~ ^[0-9]+$ ]]; }
expect "the run's host side completed (status 0); got $status" test "$status" = 0
expect "the run was started (the log has a command line)" test -s "$LAB_RESULTS/$run.log"

# The snapshot taken in snap_main/snap_clones/snap_diff: pause and create both status 0.
expect_snapshot() {
  local key=${1:-SNAP}
  expect "ctl pause: status 0, 'paused'; got '$(m HOST-CTL-$key-PAUSE)'" same "$(m HOST-CTL-$key-PAUSE)" "0 paused"
  expect "ctl snapshot create${2:+ --diff}: status 0; got '$(m HOST-CTL-$key-CREATE)' / '$(m HOST-CTL-$key-CREATE-STDERR)'" \
    eval '[[ $(m HOST-CTL-$key-CREATE) == "0 "* ]]'
  echo "info: snapshot create took $(m HOST-$key-CREATE-MS) ms; memory file blocks, bytes: $(m HOST-$key-MEM-BLOCKS)"
}

case $run:$aspect in
  snap_main:continues)
    expect_snapshot
    expect "ringvm was killed with SIGKILL after the snapshot (status 137); got '$(m HOST-KILL9-STATUS)'" \
      same "$(m HOST-KILL9-STATUS)" 137
    gap=$(m HOST-GAP-SECONDS)
    expect "30 s passed between the snapshot and the restore: '$gap' s" eval 'num "$gap" && ((gap >= 30))'
    expect "GET / of the restored ringvm: Running; got '$(m HOST-STATE-RESTORED)'" same "$(m HOST-STATE-RESTORED)" Running
    last=$(m HOST-SNAP-LAST-TICK)
    first=$({ con; rcon; } | ticks_in | awk -v l="$last" '$1 > l' | head -n1)
    expect "the first tick after the restore is the last before it + 1: last $last, first after '${first:-none}' (restored console starts: '$(rcon | ticks_in | head -n 3 | tr '\n' ' ')')" \
      eval 'num "$last" && ((last >= 3)) && same "$first" "$((last + 1))"'
    expect "the restored console's own ticks go on one by one, 5 or more: '$(m HOST-RESTORE-TICKS)'" \
      eval 'rcon | consecutive_from 5'
    expect "boot console then restored console: ticks 1, 2, ..., $({ con; rcon; } | ticks_in | tail -n1), none missing or repeated" \
      eval '{ con; rcon; } | consecutive "$((last + 5))"'
    rms=$(m HOST-RESTORE-MS)
    expect "restore timed: launch of ringvm run --restore to the first tick: '$rms' ms (API up after $(m HOST-RESTORE-API-MS) ms; a booting ringvm's API was up after $(m HOST-BOOT-API-MS) ms)" \
      num "$rms"
    ;;
  snap_main:ping)
    expect "before the snapshot the host pinged the guest: '$(m HOST-PING-BEFORE)'" same "$(m HOST-PING-BEFORE)" ok
    expect "after the restore the host pinged the guest through the tap (--net-override): '$(m HOST-PING-AFTER-SUMMARY)'" \
      eval 'same "$(m HOST-PING-AFTER)" ok && grep -q "3 packets received" <<<"$(m HOST-PING-AFTER-SUMMARY)"'
    ;;
  snap_main:vsock)
    expect "before the snapshot the guest answered over vsock: '$(m HOST-VSOCK-BEFORE)'" \
      eval '[[ $(m HOST-VSOCK-BEFORE) == "OK "*" hello tick "* ]]'
    last=$(m HOST-SNAP-LAST-TICK)
    ans=$(m HOST-VSOCK-AFTER)
    t=$(sed -n 's/.*hello tick \([0-9]*\).*/\1/p' <<<"$ans")
    expect "after the restore a new vsock connection was answered, at a tick past the snapshot's $last: '$ans'" \
      eval '[[ $ans == "OK "*" hello tick "* ]] && num "$t" && num "$last" && ((t > last))'
    ;;
  snap_main:disk)
    want=$(m HOST-PATTERN-MD5)
    expect "the guest wrote the pattern to both disks (dd status 0): vda '$(con | marker_in 'SNAP-DISK-WRITE vda')', vdb '$(con | marker_in 'SNAP-DISK-WRITE vdb')'" \
      eval 'same "$(con | marker_in "SNAP-DISK-WRITE vda")" 0 && same "$(con | marker_in "SNAP-DISK-WRITE vdb")" 0'
    expect "the guest's pattern is the host's: '$(con | marker_in SNAP-PATTERN-MD5)' vs '$want'" \
      same "$(con | marker_in SNAP-PATTERN-MD5)" "$want"
    expect "after the restore the guest re-read the raw disk's pattern: '$(rcon | marker_in 'SNAP-DISK vda')'" \
      eval '[[ $(rcon | marker_in "SNAP-DISK vda") == "OK $want" ]]'
    expect "after the restore the guest re-read the qcow2 disk's pattern: '$(rcon | marker_in 'SNAP-DISK vdb')'" \
      eval '[[ $(rcon | marker_in "SNAP-DISK vdb") == "OK $want" ]]'
    expect "the restored ringvm ended (the guest powered off over vsock: 0); got '$(m HOST-VMM-STATUS)'" \
      same "$(m HOST-VMM-STATUS)" 0
    expect "qemu-img check on the qcow2 disk after ringvm ended: status 0; got '$(m HOST-QCOW2-CHECK)'" \
      eval '[[ $(m HOST-QCOW2-CHECK) == "0 "* ]]'
    expect "the raw disk holds the pattern: '$(m HOST-RAW-MD5)'" same "$(m HOST-RAW-MD5)" "$want"
    expect "the qcow2 disk holds the pattern: '$(m HOST-QCOW2-MD5)'" same "$(m HOST-QCOW2-MD5)" "$want"
    ;;
  snap_main:no_stall)
    expect "the guest's soft-lockup threshold was lowered (watchdog_thresh 4: 8 s): '$(con | marker_in SNAP-WATCHDOG-THRESH)'" \
      same "$(con | marker_in SNAP-WATCHDOG-THRESH)" 4
    expect "the guest's RCU stall timeout was lowered (5 s): '$(con | marker_in SNAP-RCU-STALL-TIMEOUT)'" \
      same "$(con | marker_in SNAP-RCU-STALL-TIMEOUT)" 5
    expect "the guest kept CPU 1 busy: '$(con | marker_in SNAP-BUSY-CPU)'" eval '[[ $(con | marker_in SNAP-BUSY-CPU) == "1 "* ]]'
    w=$(m HOST-POST-RESTORE-WAIT)
    expect "the host gave the restored guest 12 s: '$w' s" eval 'num "$w" && ((w >= 12))'
    expect "the restored console has ticks and no soft lockup / RCU stall: '$(rcon | stall_lines | head -n 3 | tr '\n' ' ')'" \
      eval '[[ -n $(rcon | ticks_in) && -z $(rcon | stall_lines) ]]'
    ;;
  snap_clones:running)
    expect_snapshot
    expect "ringvm clone exited 0; got '$(m HOST-CLONE-STATUS)'" same "$(m HOST-CLONE-STATUS)" 0
    echo "info: ringvm clone took $(m HOST-CLONE-MS) ms for 4 clones"
    for k in 0 1 2 3; do
      expect "clone $k: ringvm clone printed its pid: '$(m HOST-CLONE$k-PID)'" num "$(m HOST-CLONE$k-PID)"
      expect "clone $k: ctl info says Running: '$(m HOST-CTL-CLONE$k-INFO)'" \
        eval '[[ $(m HOST-CTL-CLONE$k-INFO) == "0 "*": Running ("* ]]'
      expect "clone $k: ticks after the restore, one by one: '$(ccon $k | ticks_in | head -n 5 | tr '\n' ' ')'" \
        eval 'ccon $k | consecutive_from 3'
      expect "clone $k: answered over vsock: '$(m HOST-CLONE$k-VSOCK)'" \
        eval '[[ $(m HOST-CLONE$k-VSOCK) == "OK "*" hello tick "* ]]'
    done
    ;;
  snap_clones:distinct_random)
    expect "the guest's vmgenid driver is bound: '$(con | marker_in SNAP-VMGENID-DRIVER)'" \
      eval '[[ $(con | marker_in SNAP-VMGENID-DRIVER) == *:* ]]'
    restored=() firsts=()
    for k in 0 1 2 3; do
      r=$(ccon $k | marker_in SNAP-RESTORED)
      read -r _ how hex <<<"$r"
      expect "clone $k noticed the new VM generation (uevent or crng reseed): '$r'" \
        eval '[[ $how == uevent || $how == crng-reseed ]] && [[ $hex =~ ^[0-9a-f]{16}$ ]]'
      restored+=("${hex:-none$k}")
      # The first tick begun after the guest noticed the restore (the literal first tick after the
      # restore may have read its bytes before the snapshot: the snapshot can land mid-tick).
      f=$(ccon $k | sed -n '/RINGVM-LAB-SNAP-RESTORED/,$p' | grep -ao 'RINGVM-LAB-SNAP-TICK [0-9][0-9]* [0-9.]* [0-9a-f]*$' |
        head -n1 | awk '{ print $4 }')
      firsts+=("${f:-none$k}")
      f0=$(ccon $k | grep -ao 'RINGVM-LAB-SNAP-TICK [0-9][0-9]* [0-9.]* [0-9a-f]*$' | head -n1 | awk '{ print $2, $4 }')
      echo "info: clone $k: the first tick line after the restore: '$f0' (its bytes may predate the snapshot)"
    done
    expect "the random bytes read after the restore differ in every clone: ${restored[*]}" \
      eval '[[ $(printf "%s\n" "${restored[@]}" | sort -u | wc -l) == 4 ]]'
    expect "the random bytes of each clone's first tick begun after it noticed the restore differ: ${firsts[*]}" \
      eval '[[ $(printf "%s\n" "${firsts[@]}" | sort -u | wc -l) == 4 ]]'
    echo "info: Pss of the 4 clones: $(m HOST-CLONE-PSS); Rss: $(m HOST-CLONE-RSS); the original VM: Pss $(m HOST-ORIGIN-PSS-KB) kB, Rss $(m HOST-ORIGIN-RSS-KB) kB"
    expect "the clones' summed Pss was measured: '$(m HOST-CLONE-PSS)'" eval '[[ $(m HOST-CLONE-PSS) =~ ^[1-9][0-9]*\ kB\ for\ 4\ clones ]]'
    ;;
  snap_clones:distinct_mac)
    orig=$(con | marker_in SNAP-ETH0-MAC)
    macs=()
    for k in 0 1 2 3; do
      printed=$(m HOST-CLONE$k-MAC) cfg=$(m HOST-CLONE$k-CONFIG-MAC)
      cfg=${cfg% }
      expect "clone $k: GET /vm/config's guest_mac is the MAC ringvm clone printed: '$cfg' vs '$printed'" \
        eval '[[ $cfg =~ ^[0-9a-f:]{17}$ ]] && same "$cfg" "$printed"'
      expect "clone $k: not the original's MAC ($orig)" eval '[[ $cfg != "$orig" ]]'
      after=$(ccon $k | marker_in SNAP-MAC-AFTER-REBIND)
      expect "clone $k: in the guest after rebinding virtio-net, eth0 is '$after' (before: '$(ccon $k | marker_in SNAP-MAC-BEFORE-REBIND)'), the clone's '$cfg'" \
        same "$after" "$cfg"
      macs+=("${cfg:-none$k}")
    done
    expect "the 4 clones' MACs differ: ${macs[*]}" eval '[[ $(printf "%s\n" "${macs[@]}" | sort -u | wc -l) == 4 ]]'
    ;;
  snap_diff:smaller)
    expect_snapshot SNAP
    expect "ctl resume after the Full snapshot: status 0; got '$(m HOST-CTL-RESUME)'" same "$(m HOST-CTL-RESUME)" "0 resumed"
    expect_snapshot DIFF diff
    s=$(m HOST-SNAP-LAST-TICK) d=$(m HOST-DIFF-LAST-TICK)
    expect "the guest ticked 10 times or more between the two: $s -> $d" eval 'num "$s" && num "$d" && ((d >= s + 10))'
    expect "the Diff snapshot is a Diff: '$(m HOST-DIFF-INFO)'" eval '[[ $(m HOST-DIFF-INFO) == "Diff snapshot"* ]]'
    read -r fb fs <<<"$(m HOST-SNAP-MEM-BLOCKS)"
    read -r db ds <<<"$(m HOST-DIFF-MEM-BLOCKS)"
    expect "the diff memory file has far fewer data blocks than the full one (<= 1/4): diff $db, full $fb (512-byte blocks; sizes $ds, $fs)" \
      eval 'num "$fb" && num "$db" && ((fb > 0 && db * 4 <= fb))'
    expect "ringvm snapshot merge --diff --into a copy of the full one: status 0; got '$(m HOST-MERGE)'" \
      eval '[[ $(m HOST-MERGE) == "0 "* ]]'
    ;;
  snap_diff:continues)
    expect "GET / of the ringvm restored from the diff + merged memory: Running; got '$(m HOST-STATE-RESTORED)'" \
      same "$(m HOST-STATE-RESTORED)" Running
    last=$(m HOST-DIFF-LAST-TICK)
    first=$({ con; rcon; } | ticks_in | awk -v l="$last" '$1 > l' | head -n1)
    expect "the first tick after the restore is the diff's last + 1: last $last, first after '${first:-none}'" \
      eval 'num "$last" && same "$first" "$((last + 1))"'
    expect "the restored console's ticks go on one by one, 5 or more: '$(m HOST-RESTORE-TICKS)'" \
      eval 'rcon | consecutive_from 5'
    ;;
  snap_bad:refusals)
    expect "GET / of the fresh ringvm: 'Not started'; got '$(m HOST-STATE-BEFORE)'" same "$(m HOST-STATE-BEFORE)" "Not started"
    for k in CORRUPT TRUNCATED VERSION FOREIGN MEMSIZE DISK; do
      expect "$k: PUT /snapshot/load answered 400; got '$(m HOST-BAD-$k-HTTP)'" same "$(m HOST-BAD-$k-HTTP)" 400
      expect "$k: with a fault_message: '$(m HOST-BAD-$k-FAULT)'" eval '[[ -n $(m HOST-BAD-$k-FAULT) ]]'
      expect "$k: ctl snapshot load exited 1 with the reason on stderr: '$(m HOST-CTL-BAD-$k)' / '$(m HOST-CTL-BAD-$k-STDERR)'" \
        eval '[[ $(m HOST-CTL-BAD-$k) == 1* && -n $(m HOST-CTL-BAD-$k-STDERR) ]]'
      expect "$k: ringvm stayed up: '$(m HOST-BAD-$k-ALIVE)'" same "$(m HOST-BAD-$k-ALIVE)" yes
      expect "$k: GET / still says 'Not started': '$(m HOST-BAD-$k-STATE)'" same "$(m HOST-BAD-$k-STATE)" "Not started"
    done
    expect "VERSION: the refusal names the version: '$(m HOST-BAD-VERSION-FAULT)'" eval '[[ $(m HOST-BAD-VERSION-FAULT) == *version* ]]'
    expect "FOREIGN: the refusal says it is not a snapshot: '$(m HOST-BAD-FOREIGN-FAULT)'" \
      eval '[[ $(m HOST-BAD-FOREIGN-FAULT) == *"not a ringvm snapshot"* ]]'
    ;;
  snap_bad:good_load)
    expect "ctl snapshot load --resume of the good snapshot after the refusals: status 0; got '$(m HOST-CTL-GOOD-LOAD)' / '$(m HOST-CTL-GOOD-LOAD-STDERR)'" \
      eval '[[ $(m HOST-CTL-GOOD-LOAD) == "0 "* ]]'
    expect "GET / after it: Running; got '$(m HOST-STATE-GOOD)'" same "$(m HOST-STATE-GOOD)" Running
    expect "the loaded guest ticks, one by one: '$(m HOST-GOOD-TICKS)'" eval 'con | consecutive_from 3'
    ;;
  *)
    echo "unknown run/aspect '$run/$aspect'" >&2
    exit 2
    ;;
esac
lab_check_end "$run/$aspect"
