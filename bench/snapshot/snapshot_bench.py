#!/usr/bin/env python3
"""The snapshot benchmark's driver inside L1 (bench/snapshot/snapshot_bench.sh runs it in the lab).

Side by side, ringvm and QEMU, one 256 MiB 2-vCPU Debian guest each (bench/snapshot/snap_bench_init.sh
ticks every ~20 ms on the serial console):
  create   ringvm pause + `snapshot create` (Full, then Diff after DIFF_SECS of running with
           --track-dirty-pages) against QEMU `stop` + `migrate "exec:cat > FILE"`: times, file sizes
  restore  interleaved: `ringvm run --restore` against `qemu ... -incoming "exec:cat FILE"`; exec to
           the first kvm_entry (tracefs in L1, trace_clock mono), exec to QMP `running` (QEMU) and
           exec to the guest's first tick in the new console; ringvm's own metrics (start.build_us,
           start.first_entry_us)
  clones   one `ringvm run --restore` vs `ringvm clone --count N`, Rss/Pss after SETTLE seconds
  tiny     tests/guests/counter_pvh.elf with 256 MiB: snapshot once, restore TINY_RUNS times
Writes DIR/results.json and prints a report (also DIR/report.txt).
"""
import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time

TRACE = "/sys/kernel/tracing"
MIB = 1024 * 1024


def log(*a):
    print("snapshot_bench:", *a, file=sys.stderr, flush=True)


def now():
    return time.monotonic()


# ---------------------------------------------------------------------------------------------
# tracefs: exec of a process and its first kvm_entry, on CLOCK_MONOTONIC (comparable to now()).

def tw(name, value):
    with open(f"{TRACE}/{name}", "w") as f:
        f.write(value)


class Tracer:
    def __init__(self):
        self.ok = False
        try:
            if not os.path.isdir(f"{TRACE}/events/kvm"):
                subprocess.run(["mount", "-t", "tracefs", "tracefs", TRACE], check=False)
            tw("tracing_on", "0")
            tw("trace_clock", "mono")
            tw("buffer_size_kb", "8192")
            tw("options/overwrite", "0")  # keep the oldest events: the first entry is what counts
            tw("options/record-tgid", "1")
            tw("events/sched/sched_process_exec/enable", "1")
            tw("events/kvm/kvm_entry/enable", "1")
            self.ok = True
        except OSError as e:
            log(f"tracefs unavailable ({e}); exec-to-entry times will be missing")

    def start(self):
        if self.ok:
            tw("trace", "")
            tw("tracing_on", "1")

    def stop(self):
        if self.ok:
            tw("tracing_on", "0")

    LINE = re.compile(r"^\s*.*?-(\d+)\s+\(\s*(\d+|-+)\)\s+\[\d+\]\s+\S+\s+(\d+\.\d+):\s+(\w+):(.*)$")

    def times(self, pid):
        """(exec, first kvm_entry) monotonic timestamps of process pid, None where not seen."""
        if not self.ok:
            return None, None
        t_exec = t_entry = None
        with open(f"{TRACE}/trace", errors="replace") as f:
            for line in f:
                m = self.LINE.match(line)
                if not m:
                    continue
                _tid, tgid, ts, ev, rest = m.groups()
                if ev == "sched_process_exec" and t_exec is None and re.search(rf"\bpid={pid}\b", rest):
                    t_exec = float(ts)
                elif ev == "kvm_entry" and tgid == str(pid) and t_entry is None:
                    t_entry = float(ts)
                    break
        return t_exec, t_entry

    def close(self):
        if self.ok:
            try:
                tw("tracing_on", "0")
                tw("events/sched/sched_process_exec/enable", "0")
                tw("events/kvm/kvm_entry/enable", "0")
                tw("trace_clock", "local")
                tw("trace", "")
            except OSError:
                pass


# ---------------------------------------------------------------------------------------------
# Small clients: QMP, ringvm ctl, console files, /proc.

class Qmp:
    def __init__(self, path, timeout=2.0):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(path)
        self.buf = b""
        self._read()  # greeting
        self.cmd("qmp_capabilities")

    def _read(self):
        while b"\n" not in self.buf:
            d = self.s.recv(65536)
            if not d:
                raise ConnectionError("QMP closed")
            self.buf += d
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def cmd(self, name, **args):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.s.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            r = self._read()
            if "return" in r:
                return r["return"]
            if "error" in r:
                raise RuntimeError(f"QMP {name}: {r['error']}")
            # events: skip

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def api(sock, method, path, body=None, timeout=300, check=True):
    """One request to ringvm's API socket (what `ringvm ctl` sends, without its process start):
    (status, body text, seconds from connect to the whole answer)."""
    data = b"" if body is None else json.dumps(body).encode()
    t0 = now()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(sock)
    s.sendall(f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n"
              f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n"
              .encode() + data)
    buf = b""
    while True:
        if b"\r\n\r\n" in buf:
            head, rest = buf.split(b"\r\n\r\n", 1)
            m = re.search(rb"(?i)content-length:\s*(\d+)", head)
            if m and len(rest) >= int(m.group(1)):
                break
        d = s.recv(65536)
        if not d:
            break
        buf += d
    dt = now() - t0
    s.close()
    head, _, rest = buf.partition(b"\r\n\r\n")
    status = int(head.split()[1]) if head else 0
    if check and not 200 <= status < 300:
        raise RuntimeError(f"API {method} {path}: HTTP {status}: {rest.decode(errors='replace')}")
    return status, rest.decode(errors="replace"), dt


def rv_pause(sock):
    return api(sock, "PATCH", "/vm", {"state": "Paused"})[2]


def rv_resume(sock):
    return api(sock, "PATCH", "/vm", {"state": "Resumed"})[2]


def rv_create(sock, snap, mem, diff=False):
    return api(sock, "PUT", "/snapshot/create", {"snapshot_type": "Diff" if diff else "Full",
                                                   "snapshot_path": snap, "mem_file_path": mem})[2]


def rv_start_metrics(sock):
    return json.loads(api(sock, "GET", "/metrics", timeout=30)[1]).get("start", {})


class Console:
    """Reads a console file incrementally; finds tick lines."""
    TICK = re.compile(rb"SNAPB-TICK (\d+) ([\d.]+)")

    def __init__(self, path):
        self.path, self.f, self.data = path, None, b""

    def poll(self):
        if self.f is None:
            try:
                self.f = open(self.path, "rb")
            except FileNotFoundError:
                return
        d = self.f.read()
        if d:
            self.data += d

    def ticks(self):
        return [(int(a), float(b)) for a, b in self.TICK.findall(self.data)]

    def lines(self):
        return self.data.split(b"\n")

    def close(self):
        if self.f:
            self.f.close()


def proc_kb(pid, field, name="smaps_rollup"):
    try:
        with open(f"/proc/{pid}/{name}") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def file_sizes(path):
    st = os.stat(path)
    return {"bytes": st.st_size, "allocated": st.st_blocks * 512}


def stop_proc(p, grace=15):
    if p.poll() is not None:
        return p.returncode
    p.send_signal(signal.SIGTERM)
    try:
        return p.wait(grace)
    except subprocess.TimeoutExpired:
        p.kill()
        return p.wait()


def stop_pid(pid, grace=15):
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = now() + grace
    while now() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt_ms(x):
    """seconds -> "12.3" (milliseconds)"""
    return "-" if x is None else f"{x * 1000:.1f}"


def fmt_v(x):
    """milliseconds -> 12.3"""
    return "-" if x is None else f"{x:.1f}"


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def fmt_r(x):
    return "-" if x is None else f"{x:.3f}"


# ---------------------------------------------------------------------------------------------

class Bench:
    def __init__(self, a):
        self.a = a
        self.w = a.work
        os.makedirs(self.w, exist_ok=True)
        self.res = {"config": vars(a).copy()}
        self.tracer = Tracer()
        self.cmdline = "console=ttyS0 quiet panic=-1"
        self.procs = []

    # The VMM commands -------------------------------------------------------------------------
    def qemu_cmd(self, console, qmp, incoming=None):
        a = self.a
        accel = ["-enable-kvm", "-cpu", "host"] if a.qemu_accel == "kvm" else ["-accel", a.qemu_accel, "-cpu", "max"]
        cmd = ["qemu-system-x86_64"] + accel + ["-M", a.qemu_machine, "-smp", "2", "-m", "256M",
               "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
               "-chardev", f"file,id=con0,path={console}", "-serial", "chardev:con0",
               "-kernel", a.kernel, "-initrd", a.initrd, "-append", self.cmdline,
               "-qmp", f"unix:{qmp},server=on,wait=off"]
        if incoming:
            cmd += ["-incoming", f"exec:cat {incoming}"]
        return cmd

    def ringvm_boot_cmd(self, console, sock):
        a = self.a
        return [a.ringvm, "run", "--kernel", a.kernel, "--initrd", a.initrd, "--cmdline", self.cmdline,
                "--cpus", "2", "--memory", "256M", "--console", f"file:{console}", "--api-sock", sock,
                "--track-dirty-pages"]

    def spawn(self, cmd, logname):
        logf = open(os.path.join(self.w, logname), "wb")
        logf.write(("+ " + " ".join(cmd) + "\n").encode())
        logf.flush()
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def wait_ticks(self, con, procs, n=1, timeout=600, after=0):
        """Until con shows n ticks numbered above `after`; returns the time, or None."""
        deadline = now() + timeout
        while now() < deadline:
            con.poll()
            if len([t for t in con.ticks() if t[0] > after]) >= n:
                return now()
            if any(p.poll() is not None for p in procs):
                return None
            time.sleep(0.002)
        return None

    # 1. boot both, snapshot both ----------------------------------------------------------------
    def originals(self):
        w = self.w
        r = self.res.setdefault("create", {})
        self.rv_sock = f"{w}/rv-orig.sock"
        rv_con, q_con = Console(f"{w}/rv-orig.console"), Console(f"{w}/q-orig.console")
        t0 = now()
        rv = self.spawn(self.ringvm_boot_cmd(rv_con.path, self.rv_sock), "rv-orig.log")
        q = self.spawn(self.qemu_cmd(q_con.path, f"{w}/q-orig.qmp"), "q-orig.log")
        # Both boot at once (L1 has 2 vCPUs; only the boot waits on that).
        trv = self.wait_ticks(rv_con, [rv], timeout=self.a.boot_timeout)
        tq = self.wait_ticks(q_con, [q], timeout=max(60, self.a.boot_timeout - (now() - t0)))
        r["boot_to_first_tick_s"] = {"ringvm": trv and trv - t0, "qemu": tq and tq - t0}
        log(f"booted: ringvm {r['boot_to_first_tick_s']['ringvm']}, qemu {r['boot_to_first_tick_s']['qemu']}")
        if trv is None or tq is None:
            raise RuntimeError(f"a guest did not boot to its ticks (ringvm {trv}, qemu {tq}); logs in {w}")
        for c in (rv_con, q_con):
            for line in c.lines():
                if line.startswith(b"SNAPB-NPROC") or line.startswith(b"SNAPB-MEMTOTAL"):
                    r.setdefault("guest", {}).setdefault(c.path.rsplit("/", 1)[1], []).append(line.decode())
        time.sleep(self.a.run_secs)
        r["booted_rss_kb"] = {"ringvm": proc_kb(rv.pid, "Rss"), "qemu": proc_kb(q.pid, "Rss")}
        r["booted_pss_kb"] = {"ringvm": proc_kb(rv.pid, "Pss"), "qemu": proc_kb(q.pid, "Pss")}
        qmp = Qmp(f"{w}/q-orig.qmp", timeout=60)

        # ringvm: pause + Full snapshot; QEMU: stop + migrate to a file. Interleaved, CREATE_RUNS
        # times, each VM running 0.5 s in between (QEMU migrates a VM once per stop).
        full, mig, mig_total, pause, stop = [], [], [], [], []
        for i in range(self.a.create_runs):
            order = ["ringvm", "qemu"] if i % 2 == 0 else ["qemu", "ringvm"]
            for who in order:
                if who == "ringvm":
                    if i:
                        rv_resume(self.rv_sock)
                        time.sleep(0.5)
                    pause.append(rv_pause(self.rv_sock))
                    full.append(rv_create(self.rv_sock, f"{w}/rv.snap", f"{w}/rv.mem"))
                else:
                    if i:
                        qmp.cmd("cont")
                        time.sleep(0.5)
                    t = now()
                    qmp.cmd("stop")
                    stop.append(now() - t)
                    t = now()
                    qmp.cmd("migrate", uri=f"exec:cat > {w}/q.mig")
                    while True:
                        st = qmp.cmd("query-migrate")
                        if st.get("status") in ("completed", "failed", "cancelled"):
                            break
                        time.sleep(0.005)
                    dt = now() - t
                    if st.get("status") != "completed":
                        raise RuntimeError(f"QEMU migration {st}")
                    mig.append(dt)
                    mig_total.append(st.get("total-time", 0) / 1000.0)
        time.sleep(0.5)  # ringvm's console writes behind the guest
        rv_con.poll()
        q_con.poll()
        self.rv_last_tick = rv_con.ticks()[-1][0]
        self.q_last_tick = q_con.ticks()[-1][0]
        r["ringvm_pause_s"] = pause
        r["qemu_stop_s"] = stop
        r["ringvm_full_create_s"] = full
        r["qemu_migrate_s"] = mig
        r["qemu_migrate_total_time_s"] = mig_total
        r["ringvm_full_sizes"] = {"state": file_sizes(f"{w}/rv.snap"), "mem": file_sizes(f"{w}/rv.mem")}
        r["qemu_sizes"] = file_sizes(f"{w}/q.mig")
        r["last_tick_before_snapshot"] = {"ringvm": self.rv_last_tick, "qemu": self.q_last_tick}
        qmp.cmd("quit")
        qmp.close()
        q.wait(30)

        # Diff: run DIFF_SECS, pause, Diff snapshot.
        rv_resume(self.rv_sock)
        time.sleep(self.a.diff_secs)
        rv_pause(self.rv_sock)
        dt = rv_create(self.rv_sock, f"{w}/rv-diff.snap", f"{w}/rv-diff.mem", diff=True)
        r["ringvm_diff_create_s"] = dt
        r["ringvm_diff_sizes"] = {"state": file_sizes(f"{w}/rv-diff.snap"), "mem": file_sizes(f"{w}/rv-diff.mem")}
        r["diff_after_s"] = self.a.diff_secs
        # A second Diff right away (nothing ran): the floor.
        dt = rv_create(self.rv_sock, f"{w}/rv-diff0.snap", f"{w}/rv-diff0.mem", diff=True)
        r["ringvm_diff0_create_s"] = dt
        r["ringvm_diff0_sizes"] = {"state": file_sizes(f"{w}/rv-diff0.snap"), "mem": file_sizes(f"{w}/rv-diff0.mem")}
        for f in ("rv-diff.mem", "rv-diff0.mem"):
            os.unlink(f"{w}/{f}")
        stop_proc(rv)
        rv_con.close()
        q_con.close()

    # 2. restores ------------------------------------------------------------------------------
    def restore_one(self, who, i):
        w = self.w
        con = Console(f"{w}/{who}-restore{i}.console")
        out = {"who": who, "run": i}
        if who == "ringvm":
            sock = f"{w}/rv-restore{i}.sock"
            cmd = [self.a.ringvm, "run", "--restore", f"{w}/rv.snap", "--restore-mem", f"{w}/rv.mem",
                   "--api-sock", sock, "--console", f"file:{con.path}"]
            after = self.rv_last_tick
        else:
            qmp_path = f"{w}/q-restore{i}.qmp"
            cmd = self.qemu_cmd(con.path, qmp_path, incoming=f"{w}/q.mig")
            after = self.q_last_tick
        self.tracer.start()
        t_launch = now()
        p = self.spawn(cmd, f"{who}-restore{i}.log")
        qmp, t_running, t_loaded = None, None, None
        deadline = t_launch + self.a.restore_timeout
        t_tick = None
        while now() < deadline and p.poll() is None:
            con.poll()
            if con.ticks():
                t_tick = now()
                break
            if who == "qemu" and t_running is None:
                try:
                    if qmp is None and os.path.exists(qmp_path):
                        qmp = Qmp(qmp_path, timeout=5)
                    if qmp is not None:
                        status = qmp.cmd("query-status").get("status")
                        if status == "running":
                            t_running = now()
                        elif status == "paused" and t_loaded is None:
                            # The source was stopped before it migrated, so the destination keeps
                            # that run state after loading (QEMU's global state): resume it, as
                            # `ringvm run --restore` resumes at once.
                            t_loaded = now()
                            qmp.cmd("cont")
                except (OSError, ConnectionError, RuntimeError, ValueError):
                    if qmp is not None:
                        qmp.close()
                    qmp = None
            time.sleep(0.002)
        self.tracer.stop()
        if who == "qemu" and t_running is None and t_tick is not None:
            # Already running when the tick showed: ask once more (an upper bound then).
            try:
                if qmp is None:
                    qmp = Qmp(qmp_path, timeout=5)
                if qmp.cmd("query-status").get("status") == "running":
                    t_running = now()
            except (OSError, ConnectionError, RuntimeError, ValueError):
                pass
        t_exec, t_entry = self.tracer.times(p.pid)
        base = t_exec if t_exec is not None else t_launch
        out["launch_to_exec_ms"] = None if t_exec is None else (t_exec - t_launch) * 1000
        out["exec_to_entry_ms"] = None if t_entry is None else (t_entry - base) * 1000
        out["exec_to_tick_ms"] = None if t_tick is None else (t_tick - base) * 1000
        out["exec_to_running_ms"] = None if t_running is None else (t_running - base) * 1000
        out["exec_to_loaded_ms"] = None if t_loaded is None else (t_loaded - base) * 1000
        ticks = con.ticks()
        out["first_tick"] = ticks[0][0] if ticks else None
        out["tick_continues"] = bool(ticks) and ticks[0][0] == after + 1
        if who == "ringvm" and p.poll() is None:
            try:
                st = rv_start_metrics(sock)
                out["metrics"] = st
                if st.get("first_entry_us", -1) >= 0 and out["exec_to_entry_ms"] is not None:
                    out["exec_to_build_ms"] = out["exec_to_entry_ms"] - st["first_entry_us"] / 1000
            except (OSError, RuntimeError, ValueError) as e:
                out["metrics_error"] = str(e)
        out["rss_kb_at_tick"] = proc_kb(p.pid, "Rss")
        if qmp is not None:
            qmp.close()
        out["status"] = stop_proc(p)
        con.close()
        if t_tick is None:
            out["error"] = f"no tick within {self.a.restore_timeout} s (exit {p.returncode}); log {who}-restore{i}.log"
        log(f"restore {who} #{i}: exec->entry {out['exec_to_entry_ms']} ms, ->tick {out['exec_to_tick_ms']} ms, "
            f"->running {out['exec_to_running_ms']}, metrics {out.get('metrics')}, first tick {out['first_tick']} "
            f"(last before {after})")
        return out

    def restores(self):
        runs = []
        for i in range(1, self.a.restores + 1):
            order = ["ringvm", "qemu"] if i % 2 == 1 else ["qemu", "ringvm"]
            for who in order:
                runs.append(self.restore_one(who, i))
        self.res["restore"] = runs

    # 3. clones --------------------------------------------------------------------------------
    def clones(self):
        w, a = self.w, self.a
        r = self.res.setdefault("clones", {})
        con = Console(f"{w}/rv-single.console")
        sock = f"{w}/rv-single.sock"
        p = self.spawn([a.ringvm, "run", "--restore", f"{w}/rv.snap", "--restore-mem", f"{w}/rv.mem",
                        "--api-sock", sock, "--console", f"file:{con.path}"], "rv-single.log")
        self.wait_ticks(con, [p], timeout=120)
        time.sleep(a.settle)
        con.poll()
        r["single"] = {"rss_kb": proc_kb(p.pid, "Rss"), "pss_kb": proc_kb(p.pid, "Pss"),
                       "rss_anon_kb": proc_kb(p.pid, "RssAnon", "status"),
                       "rss_file_kb": proc_kb(p.pid, "RssFile", "status"),
                       "rss_shmem_kb": proc_kb(p.pid, "RssShmem", "status"),
                       "ticks": len(con.ticks())}
        stop_proc(p)
        con.close()

        t = now()
        cp = subprocess.run([a.ringvm, "clone", "--snapshot", f"{w}/rv.snap", "--mem", f"{w}/rv.mem",
                             "--count", str(a.clones), "--dir", f"{w}/clones", "--json"],
                            capture_output=True, text=True, timeout=300)
        r["clone_cmd_s"] = now() - t
        if cp.returncode != 0:
            r["error"] = f"ringvm clone: status {cp.returncode}: {cp.stderr.strip()}"
            log(r["error"])
            return
        clones = json.loads(cp.stdout)
        pids = [c["pid"] for c in clones]
        time.sleep(a.settle)
        per = []
        for c in clones:
            cc = Console(f"{c['dir']}/console.log")
            cc.poll()
            ticks = cc.ticks()
            cc.close()
            per.append({"pid": c["pid"], "pss_kb": proc_kb(c["pid"], "Pss"), "rss_kb": proc_kb(c["pid"], "Rss"),
                        "rss_anon_kb": proc_kb(c["pid"], "RssAnon", "status"),
                        "ticks": len(ticks), "first_tick": ticks[0][0] if ticks else None})
        r["per_clone"] = per
        r["sum_pss_kb"] = sum(x["pss_kb"] or 0 for x in per)
        r["sum_rss_kb"] = sum(x["rss_kb"] or 0 for x in per)
        r["alive"] = sum(1 for x in per if x["pss_kb"] is not None)
        r["ticking"] = sum(1 for x in per if x["ticks"] > 0)
        for pid in pids:
            stop_pid(pid)

    # 4. the tiny guest ------------------------------------------------------------------------
    def tiny(self):
        w, a = self.w, self.a
        r = self.res.setdefault("tiny", {})
        con_path, sock = f"{w}/tiny-orig.console", f"{w}/tiny-orig.sock"
        p = self.spawn([a.ringvm, "run", "--force", "--kernel", a.counter, "--entry", "pvh", "--memory", "256M",
                        "--api-sock", sock, "--console", f"file:{con_path}"], "tiny-orig.log")
        deadline = now() + 120
        while now() < deadline and p.poll() is None:
            if os.path.exists(con_path) and os.path.getsize(con_path) >= 27:  # three counter lines
                break
            time.sleep(0.01)
        rv_pause(sock)
        r["create_s"] = rv_create(sock, f"{w}/tiny.snap", f"{w}/tiny.mem")
        r["sizes"] = {"state": file_sizes(f"{w}/tiny.snap"), "mem": file_sizes(f"{w}/tiny.mem")}
        with open(con_path, "rb") as f:
            r["last_before"] = f.read().split()[-1].decode()
        stop_proc(p)
        runs = []
        for i in range(1, a.tiny_runs + 1):
            con_path, sock = f"{w}/tiny-restore{i}.console", f"{w}/tiny-restore{i}.sock"
            self.tracer.start()
            t_launch = now()
            p = self.spawn([a.ringvm, "run", "--restore", f"{w}/tiny.snap", "--restore-mem", f"{w}/tiny.mem",
                            "--api-sock", sock, "--console", f"file:{con_path}"], f"tiny-restore{i}.log")
            t_line = None
            deadline = now() + 60
            while now() < deadline and p.poll() is None:
                if os.path.exists(con_path) and os.path.getsize(con_path) >= 9:
                    t_line = now()
                    break
                time.sleep(0.002)
            self.tracer.stop()
            t_exec, t_entry = self.tracer.times(p.pid)
            base = t_exec if t_exec is not None else t_launch
            out = {"run": i, "exec_to_entry_ms": None if t_entry is None else (t_entry - base) * 1000,
                   "exec_to_line_ms": None if t_line is None else (t_line - base) * 1000}
            try:
                out["metrics"] = rv_start_metrics(sock)
            except (OSError, RuntimeError, ValueError) as e:
                out["metrics_error"] = str(e)
            stop_proc(p)
            try:
                with open(con_path, "rb") as f:
                    out["first_line"] = f.read().split(b"\n")[0].decode(errors="replace")
            except OSError:
                out["first_line"] = None
            runs.append(out)
            log(f"tiny restore #{i}: {out}")
        r["runs"] = runs

    def run(self):
        steps = self.a.steps.split(",")
        try:
            if "create" in steps or "restore" in steps or "clones" in steps:
                self.originals()
            if "restore" in steps:
                self.restores()
            if "clones" in steps:
                self.clones()
            if "tiny" in steps:
                self.tiny()
        except Exception as e:  # noqa: BLE001 - report what we have
            self.res["error"] = f"{type(e).__name__}: {e}"
            log(self.res["error"])
        finally:
            for p in self.procs:
                if p.poll() is None:
                    stop_proc(p, 5)
            self.tracer.close()
            with open(f"{self.w}/results.json", "w") as f:
                json.dump(self.res, f, indent=1)


# ---------------------------------------------------------------------------------------------
# The report (also runnable alone: snapshot_bench.py --report results.json).

def report(res):
    out = []
    p = out.append
    if "error" in res:
        p(f"!! the run stopped early: {res['error']}")
    c = res.get("create")
    if c:
        p("== 1. snapshot create (256 MiB, 2 vCPUs, Debian kernel + busybox initramfs; files on L1's tmpfs)")
        b = c.get("boot_to_first_tick_s", {})
        p(f"booted side by side to the first tick: ringvm {b.get('ringvm', 0):.1f} s, QEMU {b.get('qemu', 0):.1f} s;"
          f" Rss after booting: ringvm {c['booted_rss_kb']['ringvm']} kB, QEMU {c['booted_rss_kb']['qemu']} kB")
        full = c.get("ringvm_full_create_s", [])
        mig = c.get("qemu_migrate_s", [])
        fs, qs = c.get("ringvm_full_sizes"), c.get("qemu_sizes")
        p(f"{'what':<34} {'time ms (each)':<30} {'median ms':>10} {'file MiB':>9} {'on disk MiB':>12}")
        def row(name, ts, size, alloc):
            p(f"{name:<34} {' '.join(fmt_ms(t) for t in ts):<30} {fmt_ms(med(ts)):>10} {size / MIB:>9.1f} {alloc / MIB:>12.1f}")
        if fs:
            row("ringvm Full (state + mem)", full, fs["state"]["bytes"] + fs["mem"]["bytes"],
                fs["state"]["allocated"] + fs["mem"]["allocated"])
        if "ringvm_diff_sizes" in c:
            ds = c["ringvm_diff_sizes"]
            row(f"ringvm Diff after {c['diff_after_s']} s running", [c["ringvm_diff_create_s"]],
                ds["state"]["bytes"] + ds["mem"]["bytes"], ds["state"]["allocated"] + ds["mem"]["allocated"])
            d0 = c["ringvm_diff0_sizes"]
            row("ringvm Diff right after a Diff", [c["ringvm_diff0_create_s"]],
                d0["state"]["bytes"] + d0["mem"]["bytes"], d0["state"]["allocated"] + d0["mem"]["allocated"])
        if qs:
            row("QEMU stop + migrate exec:cat>FILE", mig, qs["bytes"], qs["allocated"])
            p(f"  (QEMU's own total-time: {' '.join(fmt_ms(t) for t in c.get('qemu_migrate_total_time_s', []))} ms)")
        if c.get("ringvm_pause_s") and c.get("qemu_stop_s"):
            p(f"  pause (PATCH /vm Paused) {' '.join(fmt_ms(t) for t in c['ringvm_pause_s'])} ms; QEMU stop "
              f"{' '.join(fmt_ms(t) for t in c['qemu_stop_s'])} ms (ringvm's times are its API requests, "
              f"without a `ringvm ctl` process)")
        if fs:
            p(f"  ringvm state file {fs['state']['bytes']} bytes; memory file {fs['mem']['bytes'] / MIB:.0f} MiB sparse, "
              f"{fs['mem']['allocated'] / MIB:.1f} MiB allocated (zero pages are holes)")
        if full and mig and qs and fs:
            alloc = fs["state"]["allocated"] + fs["mem"]["allocated"]
            p(f"ratios ringvm/QEMU: Full create time {fmt_r(ratio(med(full), med(mig)))}, "
              f"Diff create time {fmt_r(ratio(c.get('ringvm_diff_create_s'), med(mig)))}; "
              f"Full size on disk {fmt_r(ratio(alloc, qs['allocated']))}, "
              f"Diff size on disk {fmt_r(ratio(c['ringvm_diff_sizes']['mem']['allocated'] + c['ringvm_diff_sizes']['state']['allocated'], qs['allocated'])) if 'ringvm_diff_sizes' in c else '-'}")
    rs = res.get("restore")
    if rs:
        p("")
        p("== 2. restore latency (ms from exec; entry = first kvm_entry of the process in tracefs; tick = the guest's "
          "first console tick seen; loaded = QMP query-status left inmigrate (paused; then `cont`))")
        p(f"{'vmm':<7} {'run':>3} {'->entry':>9} {'->loaded':>10} {'->tick':>9} {'build_us':>9} {'first_entry_us':>15} "
          f"{'exec->build':>12} {'tick#':>7} {'cont':>5}")
        for x in rs:
            m = x.get("metrics") or {}
            p(f"{x['who']:<7} {x['run']:>3} {fmt_v(x['exec_to_entry_ms']):>9} "
              f"{fmt_v(x.get('exec_to_loaded_ms') if x.get('exec_to_loaded_ms') is not None else x['exec_to_running_ms']):>10} "
              f"{fmt_v(x['exec_to_tick_ms']):>9} {m.get('build_us', '-'):>9} "
              f"{m.get('first_entry_us', '-'):>15} "
              f"{fmt_v(x.get('exec_to_build_ms')):>12} {x['first_tick'] or '-':>7} "
              f"{'yes' if x['tick_continues'] else 'NO':>5}" + (f"  {x['error']}" if x.get("error") else ""))
        def m_of(who, key):
            return med([x.get(key) for x in rs if x["who"] == who])
        re_ = m_of("ringvm", "exec_to_entry_ms")
        qe = m_of("qemu", "exec_to_entry_ms")
        rt = m_of("ringvm", "exec_to_tick_ms")
        qt = m_of("qemu", "exec_to_tick_ms")
        qr = m_of("qemu", "exec_to_running_ms")
        ql = m_of("qemu", "exec_to_loaded_ms")
        fe = med([(x.get("metrics") or {}).get("first_entry_us") for x in rs if x["who"] == "ringvm"])
        bu = med([(x.get("metrics") or {}).get("build_us") for x in rs if x["who"] == "ringvm"])
        p(f"medians: ringvm exec->entry {fmt_v(re_)} ms (build_us {bu}, first_entry_us {fe}), "
          f"exec->tick {fmt_v(rt)} ms; QEMU exec->entry {fmt_v(qe)} ms, "
          f"exec->loaded {fmt_v(ql)} ms, exec->running (after cont) {fmt_v(qr)} ms, exec->tick {fmt_v(qt)} ms")
        p(f"ratios ringvm/QEMU (goal <= 0.1): to first vCPU entry {fmt_r(ratio(re_, qe))}; "
          f"to the guest's tick {fmt_r(ratio(rt, qt))}; ringvm's first entry vs QEMU's loaded {fmt_r(ratio(re_, ql))}")
    cl = res.get("clones")
    if cl:
        p("")
        p("== 3. clone density (Rss/Pss from /proc/PID/smaps_rollup after the same settling time)")
        s = cl.get("single", {})
        p(f"one restored VM: Rss {s.get('rss_kb')} kB (anon {s.get('rss_anon_kb')}, file {s.get('rss_file_kb')}, "
          f"shmem {s.get('rss_shmem_kb')}), Pss {s.get('pss_kb')} kB, {s.get('ticks')} ticks")
        if "error" in cl:
            p(f"clones: {cl['error']}")
        elif "per_clone" in cl:
            for x in cl["per_clone"]:
                p(f"  clone pid {x['pid']}: Pss {x['pss_kb']} kB, Rss {x['rss_kb']} kB (anon {x['rss_anon_kb']}), "
                  f"{x['ticks']} ticks from #{x['first_tick']}")
            n = len(cl["per_clone"])
            p(f"{n} clones (ringvm clone took {cl['clone_cmd_s']:.2f} s; {cl['alive']} alive, {cl['ticking']} ticking): "
              f"sum Pss {cl['sum_pss_kb']} kB, sum Rss {cl['sum_rss_kb']} kB")
            booted = (res.get("create") or {}).get("booted_rss_kb", {}).get("ringvm")
            p(f"ratio sum Pss of {n} / Rss of one restored (goal <= 1.5): {fmt_r(ratio(cl['sum_pss_kb'], s.get('rss_kb')))}; "
              f"/ Pss of one restored: {fmt_r(ratio(cl['sum_pss_kb'], s.get('pss_kb')))}; "
              f"/ Rss of the booted original: {fmt_r(ratio(cl['sum_pss_kb'], booted))}")
    t = res.get("tiny")
    if t and t.get("runs"):
        p("")
        p(f"== 4. tiny guest restore (counter_pvh.elf, 256 MiB memory file with "
          f"{t['sizes']['mem']['allocated'] / 1024:.0f} KiB allocated; snapshot create {fmt_ms(t['create_s'])} ms)")
        runs = t["runs"]
        fe = [(x.get("metrics") or {}).get("first_entry_us") for x in runs]
        bu = [(x.get("metrics") or {}).get("build_us") for x in runs]
        ee = [x["exec_to_entry_ms"] for x in runs]
        el = [x["exec_to_line_ms"] for x in runs]
        p("first_entry_us: " + " ".join(str(x) for x in fe))
        p("build_us:       " + " ".join(str(x) for x in bu))
        p("exec->entry ms: " + " ".join(fmt_v(x) for x in ee))
        p("exec->line ms:  " + " ".join(fmt_v(x) for x in el))
        ok_lines = sum(1 for x in runs if x.get("first_line"))
        mfe = med(fe)
        p(f"medians ({len(runs)} restores, {ok_lines} printed): first_entry_us {mfe} "
          f"(goal <= 5000: {'met' if mfe is not None and mfe <= 5000 else 'NOT met'}), build_us {med(bu)}, "
          f"exec->first entry {fmt_v(med(ee))} ms, exec->next counter line "
          f"{fmt_v(med(el))} ms; counter before {t.get('last_before')}, first lines after: "
          f"{sorted(set(x.get('first_line') or '-' for x in runs))[:4]}")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", help="working directory (L1's tmpfs)")
    ap.add_argument("--ringvm")
    ap.add_argument("--kernel")
    ap.add_argument("--initrd")
    ap.add_argument("--counter")
    ap.add_argument("--restores", type=int, default=5)
    ap.add_argument("--create-runs", type=int, default=3)
    ap.add_argument("--tiny-runs", type=int, default=20)
    ap.add_argument("--clones", type=int, default=8)
    ap.add_argument("--settle", type=float, default=10)
    ap.add_argument("--run-secs", type=float, default=3, help="ticking before the first snapshot")
    ap.add_argument("--diff-secs", type=float, default=5)
    ap.add_argument("--boot-timeout", type=float, default=420)
    ap.add_argument("--restore-timeout", type=float, default=180)
    ap.add_argument("--qemu-machine", default="microvm")
    ap.add_argument("--qemu-accel", default="kvm")
    ap.add_argument("--steps", default="create,restore,clones,tiny")
    ap.add_argument("--report", help="print the report of a results.json and exit")
    a = ap.parse_args()
    if a.report:
        with open(a.report) as f:
            print(report(json.load(f)))
        return 0
    b = Bench(a)
    b.run()
    text = report(b.res)
    with open(f"{a.work}/report.txt", "w") as f:
        f.write(text + "\n")
    print(text)
    return 1 if "error" in b.res else 0


if __name__ == "__main__":
    sys.exit(main())
