#!/usr/bin/env python3
"""Summarises one L1 trace of bench/net/sched_trace.sh (or, with --ping TAP, a ping's): per frame, where a guest-to-host frame
waited (kick until the device thread runs, the tap writev, writev return until the completion
interrupt, interrupt until the vCPU enters the guest), and per thread how long it ran and how long
it was runnable but not running."""
import collections
import re
import sys

LINE = re.compile(r'^\s*(.+?)-(\d+)\s+\[(\d+)\]\s+\S+\s+([\d.]+): (\w+)(?:: |\(| )(.*)$')
SWITCH = re.compile(r'prev_comm=(.+?) prev_pid=(\d+) prev_prio=\d+ prev_state=(\S+) ==> '
                    r'next_comm=(.+?) next_pid=(\d+)')
WAKEUP = re.compile(r'comm=(.+?) pid=(\d+) prio=\d+ target_cpu=(\d+)')
DEVICE = ('net-q', 'qemu-system')  # ringvm's net workers, QEMU's main loop
VCPU = ('vcpu', 'CPU ')


def percentiles(xs):
    if not xs:
        return '-'
    xs = sorted(xs)
    pick = lambda q: 1e6 * xs[min(len(xs) - 1, int(len(xs) * q))]
    return f'n={len(xs):5d}  mean {1e6 * sum(xs) / len(xs):6.0f} us  median {pick(.5):6.0f}  p90 {pick(.9):6.0f}'


def main(path):
    events = []
    for line in open(path, errors='replace'):
        m = None if line.startswith('#') else LINE.match(line)
        if m:
            events.append((float(m.group(4)), m.group(1), int(m.group(3)), m.group(5), m.group(6)))
    if not events:
        print('  no events')
        return
    steps = collections.defaultdict(list)
    writev_at = writev_end = kick_at = irq_at = None
    running = {}  # cpu -> (pid, since)
    ran = collections.Counter()
    waited = collections.Counter()
    state = {}  # pid -> since when runnable and not running
    names = {}
    for t, who, cpu, ev, rest in events:
        if ev == 'sys_writev' and who.startswith(DEVICE):
            if rest.startswith('->'):
                if writev_at is not None:
                    steps['the tap writev itself'].append(t - writev_at)
                writev_end, writev_at = t, None
            else:
                writev_at = t
        elif ev == 'kvm_msi_set_irq' and who.startswith(DEVICE):
            if writev_end is not None:
                steps['writev returned -> interrupt raised'].append(t - writev_end)
            dst = re.search(r'dst (\d+)', rest)
            writev_end, irq_at = None, (t, dst.group(1) if dst else None)
        elif ev == 'kvm_pio' or (ev == 'kvm_exit' and 'reason npf' in rest):  # PIO or MMIO doorbells
            kick_at = t
        elif ev == 'kvm_entry' and irq_at is not None and rest.startswith(f'vcpu {irq_at[1]},'):
            # (APIC ids are vCPU indices in both VMMs)
            steps['interrupt raised -> its vCPU enters the guest'].append(t - irq_at[0])
            irq_at = None
        elif ev == 'sched_switch':
            s = SWITCH.search(rest)
            if not s:
                continue
            prev, nxt = int(s.group(2)), int(s.group(5))
            names[prev], names[nxt] = s.group(1), s.group(4)
            if cpu in running:
                ran[running[cpu][0]] += t - running[cpu][1]
            running[cpu] = (nxt, t)
            if prev and s.group(3).startswith('R'):
                state[prev] = t  # preempted: still runnable
            if nxt in state:
                waited[nxt] += t - state.pop(nxt)
            if kick_at is not None and s.group(4).startswith(DEVICE):
                steps['kick -> the device thread runs'].append(t - kick_at)
                kick_at = None
        elif ev == 'sched_wakeup':
            s = WAKEUP.search(rest)
            if s:
                names[int(s.group(2))] = s.group(1)
                state[int(s.group(2))] = t
    span = events[-1][0] - events[0][0]
    print(f'  {span * 1000:.0f} ms traced; per frame:')
    for step in ('kick -> the device thread runs', 'the tap writev itself', 'writev returned -> interrupt raised',
                 'interrupt raised -> its vCPU enters the guest'):
        print(f'    {step:44s} {percentiles(steps[step])}')
    print('  per thread: ran / runnable but waiting (ms)')
    by_name = collections.defaultdict(lambda: [0.0, 0.0])
    for pid, v in ran.items():
        by_name['idle' if pid == 0 else re.sub(r'-?\d+$', '', names.get(pid, str(pid)))][0] += v
    for pid, v in waited.items():
        by_name[re.sub(r'-?\d+$', '', names.get(pid, str(pid)))][1] += v
    for name, (r, w) in sorted(by_name.items(), key=lambda kv: -kv[1][0]):
        if r + w > 0.005:
            print(f'    {name:20s} {r * 1000:8.1f} {w * 1000:8.1f}')


def ping(tap, path):
    """Round trips as the tap sees them: each echo request L1 sends into the tap (98 bytes on the
    wire) until the next reply comes out of it (84 bytes of IP), without L1's ping process."""
    out, back = [], []
    for line in open(path, errors='replace'):
        m = None if line.startswith('#') else LINE.match(line)
        if not m or f'dev={tap} ' not in m.group(6) + ' ':
            continue
        if m.group(5) == 'net_dev_xmit' and 'len=98' in m.group(6):
            out.append(float(m.group(4)))
        elif m.group(5) == 'netif_receive_skb' and 'len=84' in m.group(6):
            back.append(float(m.group(4)))
    rtts = [next(b for b in back if b > t) - t for t in out if any(b > t for b in back)]
    print(f'  tap to tap (echo in, reply out): {percentiles(rtts)}')


if __name__ == '__main__':
    if sys.argv[1:2] == ['--ping']:
        ping(sys.argv[2], sys.argv[3])
    else:
        for p in sys.argv[1:]:
            main(p)
