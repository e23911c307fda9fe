#!/usr/bin/env bash
# Host-side checks (CTest label `cli`) that `ringvm run` refuses bad input with a non-zero status
# and a clear message naming the offending thing, without crashing or hanging. None of these
# should start a guest, so they run on any host, with or without the lab.
#
#   cli_errors.sh RINGVM CASE
#
#   CASE  truncated_kernel | not_a_kernel | initrd_too_large | zero_memory | zero_cpus |
#         too_many_cpus | bad_virtio_notify | bad_halt_poll
set -uo pipefail
[[ $# -eq 2 ]] || { echo "usage: $0 RINGVM CASE" >&2; exit 2; }
ringvm=$1 case=$2
kernel=$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n1)
work=$(mktemp -d "${TMPDIR:-/tmp}/ringvm-cli.XXXXXX")
trap 'rm -rf "$work"' EXIT

[[ -x $ringvm ]] || { echo "FAIL: $ringvm is not built"; exit 1; }
if [[ -z $kernel ]]; then
  echo "SKIPPED: no /boot/vmlinuz-* (install linux-image-amd64)"
  exit 77
fi
# A small valid initrd so only the input under test is wrong.
printf 'initrd\n' | gzip >"$work/initrd.gz"

# Defaults are all valid; each case breaks exactly one thing. The status must be 1 (VMM error) or
# 2 (usage error): whether a value is refused while parsing or while building the VM is the CLI's
# choice; a signal, a hang, status 0 or any other status is a failure.
k=$kernel i=$work/initrd.gz cpus=1 memory=256M extra=()
case $case in
  truncated_kernel)
    head -c 65536 "$kernel" >"$work/truncated-bzImage"
    k=$work/truncated-bzImage want_text="truncated-bzImage"
    ;;
  not_a_kernel)
    head -c 1048576 /dev/urandom >"$work/random.bin"
    k=$work/random.bin want_text="random.bin"
    ;;
  initrd_too_large)
    truncate -s 512M "$work/huge-initrd"
    i=$work/huge-initrd memory=128M want_text="initrd"
    ;;
  zero_memory) memory=0 want_text="memory" ;;
  zero_cpus) cpus=0 want_text="cpus" ;;
  too_many_cpus) cpus=100000 want_text="cpu" ;;
  bad_virtio_notify) extra=(--virtio-notify port) want_text="virtio-notify" ;;
  bad_halt_poll) extra=(--halt-poll-us 5000000) want_text="halt-poll-us" ;;
  *) echo "unknown case '$case'" >&2; exit 2 ;;
esac

cmd=("$ringvm" run --kernel "$k" --initrd "$i" --cmdline "console=ttyS0 panic=-1" --cpus "$cpus"
  --memory "$memory" --console none --on-reboot exit "${extra[@]}")
printf '+'
printf ' %q' "${cmd[@]}"
echo
status=0
# Bounded: bad input must be refused before any guest runs. -k: SIGKILL if SIGTERM is ignored.
timeout -k 5 60 "${cmd[@]}" </dev/null >"$work/out" 2>&1 || status=$?
cat "$work/out"
echo "exit status: $status"

fail=0
# The input must be refused for what is wrong with it, not because `run` lacks the options.
help=$("$ringvm" run --help 2>&1 </dev/null)
for option in --kernel --initrd --cmdline --cpus --memory --console --on-reboot; do
  if ! grep -q -- "$option" <<<"$help"; then
    echo "FAIL: \`ringvm run --help\` does not offer $option: \`run\` does not implement its CLI contract"
    fail=1
  fi
done
if grep -qiE 'not expected|unknown option|not yet implemented|extraneous' "$work/out"; then
  echo "FAIL: ringvm rejected the command line itself, not the bad input"
  fail=1
fi
if ((status == 124 || status == 137)); then
  echo "FAIL: ringvm did not refuse the input within 60 s (it probably started the guest)"
  fail=1
elif ((status >= 128)); then
  echo "FAIL: ringvm died from signal $((status - 128)) instead of reporting an error"
  fail=1
elif ((status != 1 && status != 2)); then
  echo "FAIL: exit status $status; want 1 (VMM error) or 2 (usage error)"
  fail=1
fi
if ! grep -qi -- "$want_text" "$work/out"; then
  echo "FAIL: the error message does not name '$want_text'"
  fail=1
fi
if grep -qiE 'AddressSanitizer|runtime error:|terminate called|Segmentation fault|core dumped' "$work/out"; then
  echo "FAIL: ringvm crashed or hit undefined behaviour"
  fail=1
fi
((fail == 0)) && echo "$case: passed"
exit $fail
