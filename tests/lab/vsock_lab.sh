#!/usr/bin/env bash
# The lab's vsock check (issue 6), run inside L1 by tests/lab/lab_suite.sh: one L2 boot of Debian's
# stock kernel with vmw_vsock_virtio_transport and the guest init tests/lab/vsock_init.sh, on
# `ringvm run --vsock cid=3,socket=SOCK`. Host and guest each echo what the other sends:
#   guest to host: the guest connects to host port 5001, which ringvm forwards to the Unix socket
#                  SOCK_5001, where a socat echo server answers;
#   host to guest: the host connects to SOCK, says "CONNECT 5000", expects "OK <port>", sends
#                  192 KiB of random bytes and reads them back from the guest's echo server.
# Leaves RESULTS/vsock_main.{log,console,result}, asserted by tests/lab/vsock_check.sh.
#
#   vsock_lab.sh --initramfs FILE        builds the guest's initramfs (on the host)
#   vsock_lab.sh RESULTS RINGVM          the run (inside L1)
#   vsock_lab.sh --run WORK RINGVM       the run itself (what lab_run bounds and logs)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lab_lib.sh"
payload_bytes=196608

build_initramfs() {
  local socat
  socat=$(command -v socat) || { echo "vsock_lab: socat not found: install socat (scripts/setup.sh)" >&2; return 1; }
  "$here/mkinitramfs.sh" --output "$1" --init "$here/vsock_init.sh" --module virtio_pci \
    --module vmw_vsock_virtio_transport --binary "$socat"
}

# Host to guest through ringvm's Unix socket: the CONNECT handshake, then the payload out and its
# echo back, concurrently (neither side may wait for the other to drain).
host_to_guest() {
  local sock=$1
  head -c "$payload_bytes" /dev/urandom >h2g
  echo "RINGVM-LAB-HOST-VSOCK-H2G-SENT $(md5sum <h2g | cut -d' ' -f1) $(wc -c <h2g)"
  # The client runs with the connection on its stdin and stdout; bash reads the OK line byte by
  # byte, so `read` consumes nothing of the echo that follows.
  cat >h2g.sh <<SH
printf 'CONNECT 5000\\n'
IFS= read -r ok
echo "\$ok" >h2g.ok
(cat h2g; exec sleep 30) &
head -c $payload_bytes >h2g.echo
kill \$! 2>/dev/null
SH
  timeout 120 socat UNIX-CONNECT:"$sock" EXEC:"bash h2g.sh" 2>h2g.err
  echo "RINGVM-LAB-HOST-VSOCK-H2G-STATUS $?"
  echo "RINGVM-LAB-HOST-VSOCK-H2G-OK $(tr -d '\r' <h2g.ok 2>/dev/null)"
  echo "RINGVM-LAB-HOST-VSOCK-H2G-ECHO $(md5sum <h2g.echo | cut -d' ' -f1) $(wc -c <h2g.echo)"
  head -c 300 h2g.err
  # Tell the guest we are done (its listener on port 5002 writes what it gets to a file).
  printf 'CONNECT 5002\ndone\n' | timeout 30 socat -t 5 - UNIX-CONNECT:"$sock" >/dev/null 2>&1
}

run() {
  local sock=$PWD/v.sock pid status=0
  console=$results/vsock_main.console
  : >"$console"
  # The host's echo server for guest connections to port 5001.
  timeout "$secs" socat UNIX-LISTEN:"${sock}_5001",fork EXEC:cat 2>echo.err &
  local echo_pid=$!
  local cmd=("$ringvm" run --kernel "$LAB_KERNEL" --initrd "$initrd" --cpus 2 --memory 512M
    --console "file:$console" --vsock "cid=3,socket=$sock" --stats --cmdline "console=ttyS0 panic=-1")
  { printf '+'; printf ' %q' "${cmd[@]}"; echo; }
  local start=$SECONDS deadline=$((SECONDS + secs))
  timeout -k 10 "$secs" "${cmd[@]}" </dev/null &
  pid=$!
  if lab_wait_marker "$console" 'RINGVM-LAB-VSOCK-LISTENING' "$pid" "$deadline"; then
    host_to_guest "$sock"
  else
    echo "RINGVM-LAB-HOST-VSOCK-GUEST-LISTENING never (ringvm ended or ${secs}s passed)"
  fi
  wait "$pid" || status=$?
  kill "$echo_pid" 2>/dev/null
  wait "$echo_pid" 2>/dev/null
  echo "RINGVM-LAB-HOST-VMM-STATUS $status"
  echo "RINGVM-LAB-HOST-VMM-SECONDS $((SECONDS - start))"
}

if [[ ${1:-} == --initramfs ]]; then
  [[ $# -eq 2 ]] || { echo "usage: $0 --initramfs FILE" >&2; exit 2; }
  build_initramfs "$2"
  exit
fi

if [[ ${1:-} == --run ]]; then
  [[ $# -eq 3 ]] || { echo "usage: $0 --run WORK RINGVM" >&2; exit 2; }
  work=$2 ringvm=$3
  results=$LAB_RESULTS initrd=$LAB_RESULTS/vsock-guest.cpio.gz secs=${RINGVM_LAB_RUN_TIMEOUT:-480}
  rm -rf "$work"  # a rerun starts clean (FIFOs, pid files)
  mkdir -p "$work" && cd "$work" || exit 2
  run
  echo "vsock_lab: finished"
  exit 0
fi

[[ $# -eq 2 ]] || { echo "usage: $0 RESULTS RINGVM | --run WORK RINGVM | --initramfs FILE" >&2; exit 2; }
[[ ${RINGVM_LAB:-} == 1 ]] || { echo "$0 runs inside the lab (tests/lab/lab_suite.sh)" >&2; exit 2; }
export LAB_RESULTS=$1
ringvm=$2
export LAB_KERNEL=${LAB_KERNEL:-/boot/vmlinuz-$RINGVM_LAB_KVER}
if [[ ! -s $LAB_RESULTS/vsock-guest.cpio.gz ]] && ! build_initramfs "$LAB_RESULTS/vsock-guest.cpio.gz"; then
  echo "vsock_lab: building the guest initramfs failed: no vsock run" >&2
  exit 1
fi
work=$(mktemp -d /tmp/vsock-lab.XXXXXX)
lab_run vsock_main "$((${RINGVM_LAB_RUN_TIMEOUT:-480} + 60))" "$here/vsock_lab.sh" --run "$work/vsock_main" "$ringvm"
rm -rf "$work"
