#!/bin/sh
# /init of the lab's vsock test guest (L2), driven by tests/lab/vsock_lab.sh. Loads the modules in
# /modules/order (virtio_pci, vmw_vsock_virtio_transport), then:
#   - listens on vsock port 5000 with an echo server (socat ... EXEC:cat) for the host to use;
#   - guest to host: sends 192 KiB of random bytes to the host's echo server on port 5001 (the
#     host side is the Unix socket PATH_5001) and prints the md5 of what it sent and got back;
#   - says VSOCK-LISTENING, then waits (bounded) until the host connects to port 5002 to say it is
#     done, and powers off.
# Markers are "RINGVM-LAB-VSOCK-<KEY> <value>" lines that tests/lab/vsock_check.sh asserts.
export PATH=/bin:/usr/bin
. /lib/lab-guest.sh
lab_load_modules RINGVM-LAB-VSOCK
if [ -e /dev/vsock ]; then echo "RINGVM-LAB-VSOCK-DEVICE ok"; else echo "RINGVM-LAB-VSOCK-DEVICE missing"; fi

socat VSOCK-LISTEN:5000,reuseaddr,fork EXEC:cat >/tmp/echo.log 2>&1 &
socat -u VSOCK-LISTEN:5002,reuseaddr OPEN:/tmp/done,creat >/tmp/done.log 2>&1 &

head -c 196608 /dev/urandom >/tmp/g2h
echo "RINGVM-LAB-VSOCK-G2H-SENT $(md5sum </tmp/g2h | cut -d' ' -f1) $(wc -c </tmp/g2h)"
# -t: after our side ends, wait this long for the echo to finish; timeout bounds the whole call.
timeout 120 socat -t 60 - VSOCK-CONNECT:2:5001 </tmp/g2h >/tmp/g2h.echo 2>/tmp/g2h.err
echo "RINGVM-LAB-VSOCK-G2H-STATUS $?"
echo "RINGVM-LAB-VSOCK-G2H-ECHO $(md5sum </tmp/g2h.echo | cut -d' ' -f1) $(wc -c </tmp/g2h.echo)"
head -c 300 /tmp/g2h.err

echo "RINGVM-LAB-VSOCK-LISTENING 5000"
i=0
while [ ! -e /tmp/done ] && [ $i -lt 600 ]; do
  sleep 0.5
  i=$((i + 1))
done
if [ -e /tmp/done ]; then echo "RINGVM-LAB-VSOCK-HOST-DONE yes"; else echo "RINGVM-LAB-VSOCK-HOST-DONE timeout"; fi
head -c 300 /tmp/echo.log
echo "RINGVM-LAB-VSOCK-MARKER done"
poweroff -f
