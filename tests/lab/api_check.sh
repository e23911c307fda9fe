#!/usr/bin/env bash
# Asserts one aspect of the lab session's control-plane runs (tests/lab/api_lab.sh) from their
# log, console and result, and prints them first.
#
#   api_check.sh RESULTS RUN ASPECT
#
#   api_main  flow          Firecracker's getting-started flow with curl on `ringvm run --api-sock`
#                           (no --kernel): GET / said "Not started"; PUT /serial, /machine-config,
#                           /boot-source, /drives/rootfs, /network-interfaces/eth0 and /actions
#                           InstanceStart each answered 204; GET /vm/config (200) lists the drive and
#                           the NIC; GET / then said "Running". The guest has 2 CPUs and 85-100 % of
#                           512 MiB, sees /dev/vda (16 MiB) with the host's tag in its first bytes,
#                           eth0 has the guest_mac and carrier, and the host pinged it from the
#                           tap's network namespace (3 of 3)
#   api_ctl   ctl           `ringvm run --kernel ... --api-sock` booted at once; `ringvm ctl info`
#                           printed "api-ctl: Running" (status 0) and `--json info` the JSON state;
#                           start (InstanceStart after boot) was refused with status 1 and a
#                           message; after ringvm ended, `ctl info` exited 6
#   both      pause         a 10 s pause (api_main: PATCH /vm with curl; api_ctl: `ringvm ctl
#                           pause`/`resume`, each status 0 and "paused"/"resumed"): the state read
#                           "Paused" while paused and "Running" after; pausing again was harmless
#                           (204 / status 0); the console did not grow from 0.5 s after the pause
#                           to its end and no tick came; after resuming the ticks went on (the next
#                           five are N+1..N+5) and the whole console's ticks are 1, 2, 3, ... with
#                           none missing or repeated
#             no_stall      the guest's watchdogs were below the pause (soft lockup 8 s, RCU stall
#                           5 s) and it kept CPU 1 busy, the host waited 8 s after the ticks
#                           resumed, and the console after the guest's API-READY has no "soft
#                           lockup", no RCU stall and no "watchdog: BUG". Sensitive: the same guest
#                           frozen 12 s with SIGSTOP (no KVM_KVMCLOCK_CTRL) reported "rcu_preempt
#                           self-detected stall" (and, booted with tsc=reliable, "soft lockup");
#                           with CPU 1 idle it reported nothing either way (2026-12-07)
#             ctrl_alt_del  SendCtrlAltDel (api_main: PUT /actions, 204; api_ctl: `ringvm ctl
#                           ctrl-alt-del`, status 0, "sent Ctrl+Alt+Del"): the guest had the AT
#                           keyboard ("input: AT Translated Set 2 keyboard", /proc/bus/input) and
#                           ctrl-alt-del=1, its kernel restarted ("reboot: Restarting system"),
#                           ringvm said "guest rebooted" and exited 3 within 60 s, and removed
#                           its socket
set -uo pipefail
[[ $# -eq 3 ]] || { echo "usage: $0 RESULTS RUN ASPECT" >&2; exit 2; }
export LAB_RESULTS=$1
run=$2 aspect=$3
source "$(dirname "$0")/lab_lib.sh"
lab_check_begin "$run"

m() { lab_marker "$run" "$1"; }
console() { tr -d '\r' <"$LAB_RESULTS/$run.console" 2>/dev/null; }
# The guest console from its API-READY line on (the watchdogs are lowered just before it).
after_ready() { console | sed -n '/RINGVM-LAB-API-READY/,$p'; }
# Every complete tick number in the console, in order.
all_ticks() { console | grep -ao 'RINGVM-LAB-API-TICK [0-9][0-9]* [0-9]' | awk '{ print $2 }'; }
# The ticks are 1, 2, ..., n, with n > $1.
ticks_consecutive() {
  all_ticks | awk -v min="$1" '$1 != NR { bad = 1 } END { exit (bad || NR <= min) }'
}
# "N+1 N+2 ... N+5" after N = $1 in the host's RESUME-TICKS line $2.
resumed_in_order() {
  local n=$1 want
  [[ $n =~ ^[0-9]+$ ]] || return 1
  want="$((n + 1)) $((n + 2)) $((n + 3)) $((n + 4)) $((n + 5))"
  [[ "$2 " == "$want "* ]]
}
# The guest kernel's lockup and stall reports in the console text on stdin (not the init's markers).
stall_lines() { grep -av 'RINGVM-LAB-' | grep -aiE 'soft lockup|rcu.*stall|self-detected stall|watchdog: BUG|hung_task'; }
expect "the run's host side completed (status 0); got $status" test "$status" = 0
expect "the run was started (the log has a command line)" test -s "$LAB_RESULTS/$run.log"

case $run in
  api_main) how=curl ;;
  api_ctl) how=ctl ;;
  *) echo "unknown run '$run'" >&2; exit 2 ;;
esac

case $run:$aspect in
  api_main:flow)
    expect "GET / before configuration: 'Not started'; got '$(m HOST-STATE-BEFORE)'" \
      same "$(m HOST-STATE-BEFORE)" "Not started"
    for k in SERIAL MACHINE-CONFIG BOOT-SOURCE DRIVE NET START; do
      expect "PUT ($k) answered 204; got '$(m HOST-$k)'" same "$(m HOST-$k)" 204
    done
    cfg=$(m HOST-VM-CONFIG)
    expect "GET /vm/config answered 200 with the drive, the NIC, 2 vCPUs and 512 MiB" eval \
      '[[ $cfg == "200 "* && $cfg == *"\"drive_id\":\"rootfs\""* && $cfg == *"\"host_dev_name\":\"rvapi0\""* &&
         $cfg == *"\"vcpu_count\":2"* && $cfg == *"\"mem_size_mib\":512"* ]]'
    expect "GET / after InstanceStart: 'Running'; got '$(m HOST-STATE-STARTED)'" \
      same "$(m HOST-STATE-STARTED)" Running
    expect "GET / once the guest ran: 'Running'; got '$(m HOST-STATE-RUNNING)'" \
      same "$(m HOST-STATE-RUNNING)" Running
    expect "the guest's init ran and loaded its modules" eval \
      'same "$(m API-MARKER)" ok && ! lab_console "$run" | grep -q RINGVM-LAB-API-INSMOD-FAILED'
    expect "the guest has 2 CPUs (vcpu_count 2): '$(m API-NPROC)'" same "$(m API-NPROC)" 2
    mem=$(m API-MEMTOTAL-KB)
    expect "the guest's MemTotal is 85-100 % of 512 MiB (mem_size_mib): '$mem' kB" \
      eval '[[ $mem =~ ^[0-9]+$ ]] && ((mem * 100 >= 85 * 524288 && mem <= 524288))'
    expect "the guest sees /dev/vda of 16 MiB (32768 sectors): '$(m API-VDA-SECTORS)'" \
      same "$(m API-VDA-SECTORS)" 32768
    expect "the guest read the host's tag from /dev/vda: host '$(m HOST-DISK-TAG)', guest '$(m API-VDA-TAG)'" \
      eval '[[ $(m HOST-DISK-TAG) == RINGVMAPIDISK-* && $(m API-VDA-TAG) == "$(m HOST-DISK-TAG)"* ]]'
    expect "eth0 has the guest_mac 06:00:ac:10:00:02: '$(m API-ETH0-MAC)'" same "$(m API-ETH0-MAC)" 06:00:ac:10:00:02
    expect "eth0 has carrier: '$(m API-ETH0-CARRIER)'" same "$(m API-ETH0-CARRIER)" 1
    expect "the host pinged the guest from the tap's namespace: '$(m HOST-PING-GUEST-SUMMARY)'" \
      eval 'same "$(m HOST-PING-GUEST)" ok && grep -q "3 packets received" <<<"$(m HOST-PING-GUEST-SUMMARY)"'
    ;;
  api_ctl:ctl)
    expect "ctl info: status 0, 'api-ctl: Running (ringvm ...)'; got '$(m HOST-CTL-INFO)'" \
      eval '[[ $(m HOST-CTL-INFO) == "0 api-ctl: Running (ringvm "* ]]'
    expect "ctl --json info: status 0 and the JSON state Running; got '$(m HOST-CTL-INFO-JSON)'" \
      eval '[[ $(m HOST-CTL-INFO-JSON) == "0 {"*"\"state\":\"Running\""* ]]'
    expect "ctl start after boot: refused with status 1; got '$(m HOST-CTL-START)'" \
      eval '[[ $(m HOST-CTL-START) == 1* ]]'
    expect "ctl start: its stderr names the refusal; got '$(m HOST-CTL-START-STDERR)'" \
      eval '[[ $(m HOST-CTL-START-STDERR) == "ringvm ctl: start: "*"(HTTP 400)" ]]'
    expect "ctl info after ringvm ended: status 6 (nothing answers); got '$(m HOST-CTL-INFO-AFTER)' / '$(m HOST-CTL-INFO-AFTER-STDERR)'" \
      eval '[[ $(m HOST-CTL-INFO-AFTER) == 6* && -n $(m HOST-CTL-INFO-AFTER-STDERR) ]]'
    ;;
  api_*:pause)
    expect "the pause was made with $how: '$(m HOST-PAUSE-HOW)'" same "$(m HOST-PAUSE-HOW)" "$how"
    if [[ $how == curl ]]; then
      expect "PATCH /vm Paused: 204; got '$(m HOST-PAUSE)'" same "$(m HOST-PAUSE)" 204
      expect "GET / while paused: 'Paused'; got '$(m HOST-STATE-PAUSED)'" same "$(m HOST-STATE-PAUSED)" Paused
      expect "PATCH /vm Paused again, while paused: 204 (harmless); got '$(m HOST-PAUSE-AGAIN)'" \
        same "$(m HOST-PAUSE-AGAIN)" 204
      expect "PATCH /vm Resumed: 204; got '$(m HOST-RESUME)'" same "$(m HOST-RESUME)" 204
      expect "GET / after resuming: 'Running'; got '$(m HOST-STATE-RESUMED)'" same "$(m HOST-STATE-RESUMED)" Running
    else
      expect "ctl pause: status 0, 'paused'; got '$(m HOST-CTL-PAUSE)'" same "$(m HOST-CTL-PAUSE)" "0 paused"
      expect "ctl info while paused: 'api-ctl: Paused'; got '$(m HOST-CTL-INFO-PAUSED)'" \
        eval '[[ $(m HOST-CTL-INFO-PAUSED) == "0 api-ctl: Paused ("* ]]'
      expect "ctl pause again, while paused: status 0 (harmless); got '$(m HOST-CTL-PAUSE-AGAIN)'" \
        same "$(m HOST-CTL-PAUSE-AGAIN)" "0 paused"
      expect "ctl resume: status 0, 'resumed'; got '$(m HOST-CTL-RESUME)'" same "$(m HOST-CTL-RESUME)" "0 resumed"
      expect "ctl info after resuming: 'api-ctl: Running'; got '$(m HOST-CTL-INFO-RESUMED)'" \
        eval '[[ $(m HOST-CTL-INFO-RESUMED) == "0 api-ctl: Running ("* ]]'
    fi
    read -r secs_paused <<<"$(m HOST-PAUSE-SECONDS)"
    expect "the pause lasted at least 10 s: '$secs_paused' s" eval '[[ $secs_paused =~ ^[0-9]+$ ]] && ((secs_paused >= 10))'
    read -r s0 sa sb <<<"$(m HOST-PAUSE-SIZES)"
    expect "the console did not grow while paused (bytes 0.5 s in: '$sa', at the end: '$sb'; right after the pause answered: '$s0')" \
      eval '[[ $sa =~ ^[0-9]+$ ]] && same "$sa" "$sb"'
    read -r ta tb <<<"$(m HOST-PAUSE-TICKS)"
    expect "no tick while paused (last tick 0.5 s in: '$ta', at the end: '$tb')" \
      eval '[[ $ta =~ ^[0-9]+$ ]] && ((ta >= 3)) && same "$ta" "$tb"'
    expect "after resuming the ticks went on: $tb then '$(m HOST-RESUME-TICKS)'" \
      resumed_in_order "$tb" "$(m HOST-RESUME-TICKS)"
    expect "the console's ticks are 1, 2, ..., $(all_ticks | tail -n1): none missing or repeated, past the pause" \
      ticks_consecutive "$((tb + 5))"
    # What the guest's clock did over the pause (information: kvmclock runs on while paused).
    up_before=$(console | sed -n "s/.*RINGVM-LAB-API-TICK $tb \([0-9.]*\).*/\1/p" | head -n1)
    up_after=$(console | sed -n "s/.*RINGVM-LAB-API-TICK $((tb + 1)) \([0-9.]*\).*/\1/p" | head -n1)
    echo "info: guest uptime at tick $tb: ${up_before:-?} s, at tick $((tb + 1)): ${up_after:-?} s"
    ;;
  api_*:no_stall)
    expect "the guest's soft-lockup threshold was below the pause (watchdog_thresh 4: 8 s): '$(m API-WATCHDOG-THRESH)'" \
      same "$(m API-WATCHDOG-THRESH)" 4
    expect "the guest's RCU stall timeout was below the pause (5 s): '$(m API-RCU-STALL-TIMEOUT)'" \
      same "$(m API-RCU-STALL-TIMEOUT)" 5
    expect "the guest kept CPU 1 busy (an idle CPU never reports a pause): '$(m API-BUSY-CPU)'" \
      eval '[[ $(m API-BUSY-CPU) == "1 "* ]]'
    read -r secs_paused <<<"$(m HOST-PAUSE-SECONDS)"
    expect "the pause lasted at least 10 s: '$secs_paused' s" eval '[[ $secs_paused =~ ^[0-9]+$ ]] && ((secs_paused >= 10))'
    wait_after=$(m HOST-POST-RESUME-WAIT)
    expect "the host gave the guest 8 s after the ticks resumed: '$wait_after' s" \
      eval '[[ $wait_after =~ ^[0-9]+$ ]] && ((wait_after >= 8))'
    expect "the guest's console after the pause has no soft lockup and no RCU stall: '$(after_ready | stall_lines | head -n 3 | tr '\n' ' ')'" \
      eval '[[ -n $(after_ready) && -z $(after_ready | stall_lines) ]]'
    before=$(console | sed '/RINGVM-LAB-API-READY/,$d' | stall_lines | head -n 3)
    if [[ -n $before ]]; then
      echo "NOTE: the guest reported a stall before its watchdogs were lowered (during boot: the lab's failure 5?):"
      echo "$before"
    fi
    ;;
  api_*:ctrl_alt_del)
    expect "the guest's kernel found the AT keyboard (dmesg 'input: AT Translated Set 2 keyboard')" \
      eval 'console | grep -aq "input: AT Translated Set 2 keyboard"'
    expect "/proc/bus/input/devices lists it: '$(m API-KEYBOARD)'" same "$(m API-KEYBOARD)" yes
    expect "the guest's init set ctrl-alt-del to 1 (the kernel reboots at once): '$(m API-CAD)'" same "$(m API-CAD)" 1
    if [[ $how == curl ]]; then
      expect "PUT /actions SendCtrlAltDel: 204; got '$(m HOST-CAD)'" same "$(m HOST-CAD)" 204
    else
      expect "ctl ctrl-alt-del: status 0, 'sent Ctrl+Alt+Del'; got '$(m HOST-CTL-CAD)'" \
        same "$(m HOST-CTL-CAD)" "0 sent Ctrl+Alt+Del"
    fi
    expect "the guest's kernel restarted ('reboot: Restarting system')" \
      eval 'console | grep -aq "reboot: Restarting system"'
    expect "ringvm said the guest rebooted" eval 'grep -aq "ringvm: guest rebooted" "$LAB_RESULTS/$run.log"'
    expect "ringvm exited 3 (guest rebooted); got '$(m HOST-VMM-STATUS)'" same "$(m HOST-VMM-STATUS)" 3
    cad=$(m HOST-CAD-SECONDS)
    expect "ringvm ended within 60 s of Ctrl+Alt+Del: '$cad' s" eval '[[ $cad =~ ^[0-9]+$ ]] && ((cad <= 60))'
    expect "ringvm removed its API socket: '$(m HOST-SOCK-AFTER)'" same "$(m HOST-SOCK-AFTER)" gone
    ;;
  *)
    echo "unknown run/aspect '$run/$aspect'" >&2
    exit 2
    ;;
esac
lab_check_end "$run/$aspect"
