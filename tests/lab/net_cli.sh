#!/usr/bin/env bash
# Host-side checks (CTest label `cli`) that `ringvm run --net` refuses bad input with status 1 or
# 2 and a message naming the offending thing and the fix, without crashing, hanging or leaving a
# tap behind. No guest starts, so they run on any host, with or without the lab.
#
#   net_cli.sh RINGVM CASE
#
#   tap_unprivileged  --net tap=NAME for a tap that does not exist, as a user without
#                     CAP_NET_ADMIN (root drops to nobody, keeping the kvm group so /dev/kvm
#                     still opens): names the tap and says how to create it or pass an fd
#   missing_fd        --net fd=99 (not open): names fd=99
#   bad_mac           --net tap=...,mac=52:54:00:zz:00:01: names the mac
set -uo pipefail
[[ $# -eq 2 ]] || { echo "usage: $0 RINGVM CASE" >&2; exit 2; }
ringvm=$1 case=$2
kernel=$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n1)
work=$(mktemp -d "${TMPDIR:-/tmp}/ringvm-netcli.XXXXXX")
trap 'rm -rf "$work"' EXIT
skip() { echo "SKIPPED: $*"; exit 77; }

[[ -x $ringvm ]] || { echo "FAIL: $ringvm is not built"; exit 1; }
[[ -n $kernel ]] || skip "no /boot/vmlinuz-* (install linux-image-amd64)"
printf 'initrd\n' | gzip >"$work/initrd.gz"
chmod 755 "$work" && chmod 644 "$work/initrd.gz"
tap=rvnp$$
tap=${tap:0:15}

as=()
want=()
case $case in
  tap_unprivileged)
    [[ -c /dev/net/tun ]] || skip "no /dev/net/tun"
    if [[ $(id -u) == 0 ]]; then
      kvm_gid=$(stat -c %g /dev/kvm 2>/dev/null) || skip "no /dev/kvm: ringvm stops there first"
      as=(setpriv --reuid=nobody --regid=nogroup "--groups=$kvm_gid" --inh-caps=-all --bounding-set=-all)
      [[ -r $kernel ]] || skip "$kernel is not readable by nobody"
    fi
    # Unprivileged, ringvm must reach the tap: /dev/kvm has to open for this user.
    "${as[@]}" test -r /dev/kvm -a -w /dev/kvm || skip "/dev/kvm is not usable by the unprivileged user"
    net=tap=$tap want=("$tap" "ip tuntap add" "fd=")
    ;;
  missing_fd) net=fd=99 want=("fd=99") ;;
  bad_mac) net=tap=$tap,mac=52:54:00:zz:00:01 want=("mac=52:54:00:zz:00:01") ;;
  *) echo "unknown case '$case'" >&2; exit 2 ;;
esac

cmd=("${as[@]}" "$ringvm" run --kernel "$kernel" --initrd "$work/initrd.gz" --cmdline "console=ttyS0 panic=-1"
  --cpus 1 --memory 256M --console none --on-reboot exit --net "$net")
printf '+'
printf ' %q' "${cmd[@]}"
echo
status=0
# Bounded: bad input must be refused before any guest runs; descriptor 99 is surely closed.
timeout -k 5 60 "${cmd[@]}" </dev/null >"$work/out" 2>&1 99>&- || status=$?
cat "$work/out"
echo "exit status: $status"

fail=0
failed() { echo "FAIL: $*"; fail=1; }
# grep reads all of the help (not -q): stopping at the first match would leave ringvm writing into a
# closed pipe, and under pipefail its SIGPIPE would fail the check now and then.
"$ringvm" run --help 2>&1 </dev/null | grep -- --net >/dev/null || failed "\`ringvm run --help\` does not offer --net"
if ((status == 124 || status == 137)); then
  failed "ringvm did not refuse the input within 60 s (it probably started the guest)"
elif ((status >= 128)); then
  failed "ringvm died from signal $((status - 128)) instead of reporting an error"
elif ((status != 1 && status != 2)); then
  failed "exit status $status; want 1 (VMM error) or 2 (usage error)"
fi
for w in "${want[@]}"; do
  grep -qiF -- "$w" "$work/out" || failed "the error message does not say '$w'"
done
grep -qiE 'AddressSanitizer|runtime error:|terminate called|Segmentation fault|core dumped' "$work/out" &&
  failed "ringvm crashed or hit undefined behaviour"
grep -qiE 'cannot open /dev/kvm' "$work/out" && failed "ringvm stopped at /dev/kvm, before the --net input"
if [[ -e /sys/class/net/$tap ]]; then
  failed "tap $tap exists after the refused run"
  ip link del "$tap" 2>/dev/null
fi
((fail == 0)) && echo "$case: passed"
exit $fail
