#!/usr/bin/env python3
"""Stop: sandvm against raw QEMU with the same argv, graceful and forced.

Each round boots one VM at a time to the guest's ready line (the graceful stop
needs the guest's acpid), then times its stop, interleaved A B, B A, A B...:
  A  sandvm: `sandvm stop ID` (ACPI powerdown; the config's 5 s grace before
     SIGTERM) or `sandvm stop ID --force` (SIGKILL), timed from the call until
     it returns;
  B  raw: the argv `sandvm cmdline --json` renders for the same config, launched
     by this script (QMP listener bound here and passed as fd 3, as sandvm does) and
     stopped by it: connect to QMP, `system_powerdown`, waitpid (graceful; the
     same grace, then SIGKILL) or SIGKILL + waitpid (forced), then removing
     its folder.
After every stop: QEMU is gone (no /proc entry: reaped), the sandbox folder is
gone, and no process or listening socket refers to it. A stop that fell back
from the powerdown to a kill is counted, not hidden.
Prints medians and ratios (A / B) as JSON and writes target/bench/stop.json.

Usage: python3 bench/stop_bench.py [--rounds 3] [--config configs/qemu-x86_64.toml]
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from boot_bench import READY, qmp_negotiate, sandvm, tcg_config

ROOT = Path(__file__).resolve().parent.parent
GRACE_S = 5  # graceful_shutdown_timeout's default, which `sandvm stop` uses


def reserve_fds() -> None:
    """Keep fds 3 and 4 on /dev/null, so no listener lands there; spawn_listening borrows them."""
    for fd in (3, 4):
        try:
            os.fstat(fd)
            sys.exit(f"fd {fd} is already open: run this script from a plain shell")
        except OSError:
            pass
        null = os.open(os.devnull, os.O_RDONLY)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)


def spawn_listening(argv: list[str], d: Path) -> subprocess.Popen:
    """Spawn QEMU as sandvm does: each `-chardev socket,id=NAME,fd=N,server=on` of the argv
    gets a listener bound here at d/NAME.sock as its fd N (3: qmp, 4: events); stdout and
    stderr to d/qemu.log. Then /dev/null goes back on those fds."""
    fds = {}
    for a in argv:
        if a.startswith("socket,id=") and (m := re.search(r"\bfd=(\d+)", a)):
            name = a.split(",")[1].split("=", 1)[1]
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(str(d / f"{name}.sock"))
            s.listen(8)
            fds[int(m.group(1))] = s
    try:
        for fd, s in fds.items():
            os.dup2(s.fileno(), fd)
        with open(d / "qemu.log", "wb") as f:
            return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=f,
                                    pass_fds=tuple(fds), start_new_session=True)
    finally:
        for fd, s in fds.items():
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, fd)
            os.close(null)
            s.close()


def wait_ready(d: Path, timeout: float = 300) -> None:
    """Poll the console log QEMU writes (tests/src/lib.rs `wait_ready` does the same)."""
    log = d / "console.log"
    end = time.monotonic() + timeout
    while READY not in (log.read_bytes() if log.exists() else b""):
        if time.monotonic() > end:
            raise RuntimeError(f"guest in {d} never printed its ready line")
        time.sleep(0.05)


def pids_referring_to(path: Path) -> list[int]:
    """Live processes whose command line names `path` (QEMU, daemons, a supervisor)."""
    key = str(path).encode()
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == os.getpid():
            continue
        try:
            if key in (p / "cmdline").read_bytes():
                stat = (p / "stat").read_text()
                if stat[stat.rfind(")") + 2] != "Z":
                    out.append(int(p.name))
        except OSError:
            pass
    return out


def sockets_under(path: Path) -> list[str]:
    """Bound unix sockets whose path is under `path` (from /proc/net/unix)."""
    key = str(path) + "/"
    return [line.split()[-1] for line in Path("/proc/net/unix").read_text().splitlines()[1:]
            if line.split()[-1].startswith(key)]


def reaped(pid: int, wait: float = 2.0) -> bool:
    """No /proc entry for `pid` (not even a zombie), allowing its parent a moment to reap."""
    end = time.monotonic() + wait
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True


def verify(pid: int, d: Path) -> list[str]:
    problems = []
    if not reaped(pid):
        problems.append(f"QEMU pid {pid} still has a /proc entry")
    if d.exists():
        problems.append(f"{d} still exists")
    if left := pids_referring_to(d):
        problems.append(f"processes left referring to {d}: {left}")
    if left := sockets_under(d):
        problems.append(f"sockets left under {d}: {left}")
    return problems


class Bench:
    def __init__(self, cfg: Path, work: Path):
        self.cfg, self.work = cfg, work
        self.sv = [str(sandvm()), "--state-dir", str(work / "a")]
        self.raw: dict[str, subprocess.Popen] = {}
        self.n = 0

    def run(self, *args: str) -> str:
        r = subprocess.run(self.sv + list(args), capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"sandvm {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
        return r.stdout

    def sandvm_round(self, force: bool) -> dict:
        self.n += 1
        sid = f"s{self.n}"
        self.run("create", "--config", str(self.cfg), "--id", sid)
        self.run("start", sid)
        d = self.work / "a" / sid
        wait_ready(d)
        pid = json.loads(self.run("status", sid, "--json"))["pid"]
        t0 = time.perf_counter()
        self.run("stop", sid, *(["--force"] if force else []))
        ms = (time.perf_counter() - t0) * 1e3
        return {"ms": ms, "fell_back": not force and ms >= GRACE_S * 1e3, "problems": verify(pid, d)}

    def raw_round(self, force: bool) -> dict:
        self.n += 1
        vid = f"r{self.n}"
        state = self.work / "b"
        argv = json.loads(subprocess.run(
            [str(sandvm()), "--state-dir", str(state), "cmdline", "--config", str(self.cfg),
             "--id", vid, "--accel", "tcg", "--json"], check=True, capture_output=True, text=True).stdout)
        d = state / vid
        d.mkdir(mode=0o700, parents=True)
        proc = spawn_listening(argv, d)
        self.raw[vid] = proc
        wait_ready(d)
        fell_back = False
        t0 = time.perf_counter()
        if force:
            proc.kill()
            proc.wait()
        else:
            q = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            q.connect(str(d / "qmp.sock"))
            qmp_negotiate(q)
            q.sendall(b'{"execute":"system_powerdown"}\n')
            f = q.makefile("rb", buffering=0)
            while b'"return"' not in (line := f.readline()):
                if not line:
                    break
            try:
                proc.wait(timeout=GRACE_S)
            except subprocess.TimeoutExpired:
                fell_back = True
                proc.kill()
                proc.wait()
            q.close()
        shutil.rmtree(d)
        ms = (time.perf_counter() - t0) * 1e3
        del self.raw[vid]
        return {"ms": ms, "fell_back": fell_back, "problems": verify(proc.pid, d)}

    def cleanup(self) -> list[int]:
        """Kill by pid whatever is left (Ctrl-C, a failure); returns what had to be killed."""
        for proc in self.raw.values():
            proc.kill()
            proc.wait()
        st = self.work / "a"
        for d in (st.iterdir() if st.exists() else []):
            subprocess.run(self.sv + ["stop", d.name, "--force"], capture_output=True)
        left = pids_referring_to(self.work)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return left


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--config", default=str(ROOT / "configs/qemu-x86_64.toml"))
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally below
    reserve_fds()
    work = Path(tempfile.mkdtemp(prefix="sv-stop-", dir="/tmp"))
    b = Bench(tcg_config(Path(args.config).resolve(), work / "bench.toml"), work)
    try:
        runs = {k: [] for k in ("sandvm_graceful", "raw_graceful", "sandvm_force", "raw_force")}
        load = os.getloadavg()[0]
        for i in range(args.rounds):
            for force, mode in ((False, "graceful"), (True, "force")):
                # A B, then B A: neither side always goes first on a host whose load drifts.
                if i % 2 == 0:
                    runs[f"sandvm_{mode}"].append(b.sandvm_round(force))
                    runs[f"raw_{mode}"].append(b.raw_round(force))
                else:
                    runs[f"raw_{mode}"].append(b.raw_round(force))
                    runs[f"sandvm_{mode}"].append(b.sandvm_round(force))
                print(f"round {i + 1} {mode}: sandvm {runs[f'sandvm_{mode}'][-1]['ms']:.1f} ms, "
                      f"raw {runs[f'raw_{mode}'][-1]['ms']:.1f} ms", file=sys.stderr)
        res = {"rounds": args.rounds, "config": os.path.relpath(args.config, ROOT), "grace_s": GRACE_S,
               "load_at_start": round(load, 1)}
        for mode in ("graceful", "force"):
            a, r = runs[f"sandvm_{mode}"], runs[f"raw_{mode}"]
            ma = statistics.median(x["ms"] for x in a)
            mr = statistics.median(x["ms"] for x in r)
            res[f"{mode}_stop_ms"] = {
                "sandvm_median": round(ma, 1), "raw_median": round(mr, 1), "ratio": round(ma / mr, 3),
                "sandvm": [round(x["ms"], 1) for x in a], "raw": [round(x["ms"], 1) for x in r],
                "fell_back_to_kill": {"sandvm": sum(x["fell_back"] for x in a),
                                      "raw": sum(x["fell_back"] for x in r)},
            }
        res["problems"] = [p for v in runs.values() for x in v for p in x["problems"]]
        out = ROOT / "target" / "bench"
        out.mkdir(parents=True, exist_ok=True)
        (out / "stop.json").write_text(json.dumps(res, indent=2) + "\n")
        print(json.dumps(res))
        if res["problems"]:
            sys.exit("stop left something behind: " + "; ".join(res["problems"]))
    finally:
        if left := b.cleanup():
            print(f"cleanup killed leftover pids {left}", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
