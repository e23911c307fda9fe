#!/usr/bin/env bash
# Asserts one aspect of the lab session's vsock run (tests/lab/vsock_lab.sh) from its log, console
# and result, and prints them first.
#
#   vsock_check.sh RESULTS RUN ASPECT
#
#   vsock_main  poweroff       ringvm exited 0 after the guest's init ran to the end; /dev/vsock
#                              exists in the guest
#               guest_to_host  the guest's 192 KiB to host port 5001 came back through the host's
#                              echo server on SOCK_5001 intact (same md5 and size)
#               host_to_guest  "CONNECT 5000" on SOCK got "OK <port>", and 192 KiB sent to the
#                              guest's echo server came back intact
set -uo pipefail
[[ $# -eq 3 ]] || { echo "usage: $0 RESULTS RUN ASPECT" >&2; exit 2; }
export LAB_RESULTS=$1
run=$2 aspect=$3
source "$(dirname "$0")/lab_lib.sh"
lab_check_begin "$run"

m() { lab_marker "$run" "$1"; }
# "md5 bytes" sent and echoed: equal, a real md5, and not empty.
echo_ok() { [[ $1 =~ ^[0-9a-f]{32}\ 196608$ && $1 == "$2" ]]; }
expect "the run's host side completed (status 0); got $status" test "$status" = 0

case $run:$aspect in
  vsock_main:poweroff)
    expect "ringvm exited 0 (guest powered off); got '$(m HOST-VMM-STATUS)'" same "$(m HOST-VMM-STATUS)" 0
    expect "the guest's init ran to the end" same "$(m VSOCK-MARKER)" done
    expect "no module failed to load" eval '! lab_console "$run" | grep -q RINGVM-LAB-VSOCK-INSMOD-FAILED'
    expect "the guest has /dev/vsock: '$(m VSOCK-DEVICE)'" same "$(m VSOCK-DEVICE)" ok
    expect "the host told the guest it was done: '$(m VSOCK-HOST-DONE)'" same "$(m VSOCK-HOST-DONE)" yes
    ;;
  vsock_main:guest_to_host)
    expect "the guest's socat to host port 5001 exited 0: '$(m VSOCK-G2H-STATUS)'" same "$(m VSOCK-G2H-STATUS)" 0
    expect "guest to host echo: sent '$(m VSOCK-G2H-SENT)', got back '$(m VSOCK-G2H-ECHO)'" \
      echo_ok "$(m VSOCK-G2H-SENT)" "$(m VSOCK-G2H-ECHO)"
    ;;
  vsock_main:host_to_guest)
    expect "CONNECT 5000 was answered 'OK <port>': '$(m HOST-VSOCK-H2G-OK)'" \
      eval '[[ "$(m HOST-VSOCK-H2G-OK)" =~ ^OK\ [0-9]+$ ]]'
    expect "host to guest echo: sent '$(m HOST-VSOCK-H2G-SENT)', got back '$(m HOST-VSOCK-H2G-ECHO)'" \
      echo_ok "$(m HOST-VSOCK-H2G-SENT)" "$(m HOST-VSOCK-H2G-ECHO)"
    ;;
  *)
    echo "unknown run/aspect '$run/$aspect'" >&2
    exit 2
    ;;
esac
lab_check_end "$run/$aspect"
