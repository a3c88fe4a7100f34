#!/usr/bin/env python3
"""VM templating: clones against cold boots of the same config, side by side.

1. Time to a guest shell, interleaved clone / raw clone / cold for --rounds
   rounds, one VM at a time:
     clone  `sandvm create` + `start` from the template, then the first shell
            round trip on the console (`echo $((40+2))`);
     raw    the clone's own argv (read from a sandvm clone's state.json, paths
            moved to a fresh folder) launched by this script with its QMP and
            events listeners on fds 3 and 4, then `migrate-incoming` from the
            same state file over a raw QMP socket, `cont`, and the same round
            trip: the physical limit of a clone;
     cold   `sandvm create` + `start` of the same config without the template,
            the guest's ready line, then the same round trip.
   Timed from just before `create` (or the spawn) to the shell's answer.
2. Memory: five clones at once, then five cold boots at once, each guest at its
   shell; the sum of the proportional set size (PSS, /proc/PID/smaps_rollup)
   of the five QEMU processes.
Prints medians, sums and ratios as JSON and writes target/bench/template.json.

Usage: python3 bench/template_bench.py [--rounds 5] [--memory 256] [--sandvm PATH]
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from boot_bench import qmp_negotiate, spawn_raw  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
READY = b"SANDVM-GUEST-READY"


def default_sandvm() -> Path:
    return Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "sandvm"


def config(path: Path, memory: int, template: Path | None) -> Path:
    guest = ROOT / "build" / "guest"
    text = f"""[hypervisor.qemu]
path = "/usr/bin/qemu-system-x86_64"
kernel = "{guest / 'vmlinuz'}"
initrd = "{guest / 'initramfs.cpio.gz'}"
default_vcpus = 1
default_maxvcpus = 2
default_memory = {memory}
default_maxmemory = 2048
shared_fs = "none"
accelerator = "tcg"
"""
    if template:
        text += f'[factory]\nenable_template = true\ntemplate_path = "{template}"\n'
    path.write_text(text)
    return path


class Sandvm:
    def __init__(self, exe: Path, state: Path):
        self.exe, self.state = exe, state

    def __call__(self, *args: str) -> str:
        out = subprocess.run([str(self.exe), "--state-dir", str(self.state), *args],
                             capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"sandvm {' '.join(args)} failed: {out.stderr}")
        return out.stdout

    def pid(self, sid: str) -> int:
        return json.loads(self("status", sid, "--json"))["pid"]


def wait_ready(sock: Path, log: Path, timeout: float = 120) -> None:
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(sock))
    s.settimeout(timeout)
    seen = log.read_bytes() if log.exists() else b""
    while READY not in seen:
        chunk = s.recv(65536)
        if not chunk:
            raise RuntimeError("console closed")
        seen += chunk
    s.close()


def shell_round_trip(sock: Path, timeout: float = 60) -> None:
    """Send `echo $((40+2))-M` until the shell answers `42-M` (the answer, not the echo)."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(sock))
    end = time.monotonic() + timeout
    buf = b""
    while time.monotonic() < end:
        s.sendall(b"echo $((40+2))-M\n")
        s.settimeout(2)
        try:
            while b"42-M" not in buf:
                chunk = s.recv(65536)
                if not chunk:
                    raise RuntimeError("console closed")
                buf += chunk
            s.close()
            return
        except socket.timeout:
            continue
    raise RuntimeError("no shell")


def start(sv: Sandvm, cfg: Path, sid: str, clone: bool) -> float:
    t0 = time.monotonic()
    sv("create", "--config", str(cfg), "--id", sid)
    sv("start", sid)
    d = sv.state / sid
    if not clone:
        wait_ready(d / "console.sock", d / "console.log")
    shell_round_trip(d / "console.sock")
    return (time.monotonic() - t0) * 1e3


def qmp_call(f, cmd: str, args: dict | None = None) -> None:
    """Send one command on a negotiated raw QMP socket file; wait for its return."""
    msg = {"execute": cmd}
    if args is not None:
        msg["arguments"] = args
    f.write((json.dumps(msg) + "\n").encode())
    while True:
        line = f.readline()
        if not line:
            raise RuntimeError(f"QMP closed during {cmd}")
        reply = json.loads(line)
        if "return" in reply:
            return
        if "error" in reply:
            raise RuntimeError(f"{cmd}: {reply['error']}")


def raw_clone(argv: list, d: Path, template: Path) -> float:
    """The clone's argv launched raw, its state migrated in by hand, to the shell."""
    proc, t0, _ = spawn_raw(argv, d)
    try:
        q = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        q.connect(str(d / "qmp.sock"))
        qmp_negotiate(q)
        f = q.makefile("rwb", buffering=0)
        qmp_call(f, "migrate-set-capabilities", {"capabilities": [
            {"capability": "x-ignore-shared", "state": True},
            {"capability": "events", "state": True}]})
        qmp_call(f, "migrate-incoming", {"uri": f"exec:cat '{template / 'state'}'"})
        while True:
            line = f.readline()
            if not line:
                raise RuntimeError("QMP closed during the migration")
            ev = json.loads(line)
            status = ev.get("data", {}).get("status")
            if ev.get("event") == "MIGRATION" and status in ("completed", "failed"):
                if status != "completed":
                    raise RuntimeError("raw clone: migration failed")
                break
        qmp_call(f, "cont")
        shell_round_trip(d / "console.sock")
        ms = (time.perf_counter() - t0) * 1e3
        q.close()
        return ms
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(d, ignore_errors=True)


def clone_argv(sv: Sandvm, cfg: Path, work: Path) -> tuple:
    """A sandvm clone's argv, with its sandbox folder as a placeholder."""
    start(sv, cfg, "argv", True)
    st = json.loads((sv.state / "argv" / "state.json").read_text())
    sv("stop", "argv", "--force")
    return st["argv"], str(sv.state / "argv")


def pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def five(sv: Sandvm, cfg: Path, tag: str, clone: bool) -> int:
    ids = [f"{tag}{i}" for i in range(5)]
    for sid in ids:
        start(sv, cfg, sid, clone)
    total = sum(pss_kib(sv.pid(sid)) for sid in ids)
    for sid in ids:
        sv("stop", sid, "--force")
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--memory", type=int, default=256)
    ap.add_argument("--sandvm", type=Path, default=default_sandvm())
    a = ap.parse_args()
    if not a.sandvm.exists():
        sys.exit(f"{a.sandvm} is missing: run `make build`")
    work = Path(tempfile.mkdtemp(prefix="svb-tmpl-", dir="/tmp"))
    tp = Path(f"/dev/shm/svb-template-{os.getpid()}")
    sv = Sandvm(a.sandvm, work / "st")
    try:
        tcfg = config(work / "clone.toml", a.memory, tp)
        ccfg = config(work / "cold.toml", a.memory, None)
        t0 = time.monotonic()
        sv("template", "create", "--config", str(tcfg))
        create_ms = (time.monotonic() - t0) * 1e3
        argv, placeholder = clone_argv(sv, tcfg, work)
        clone_ms, raw_ms, cold_ms = [], [], []
        for r in range(a.rounds):
            clone_ms.append(start(sv, tcfg, f"c{r}", True))
            sv("stop", f"c{r}", "--force")
            d = work / f"raw{r}"
            raw_ms.append(raw_clone([x.replace(placeholder, str(d)) for x in argv], d, tp))
            cold_ms.append(start(sv, ccfg, f"b{r}", False))
            sv("stop", f"b{r}", "--force")
        clones_pss = five(sv, tcfg, "pc", True)
        cold_pss = five(sv, ccfg, "pb", False)
        sv("template", "delete", "--config", str(tcfg))
        res = {
            "rounds": a.rounds,
            "memory_mib": a.memory,
            "template_create_ms": round(create_ms, 1),
            "clone_shell_ms_median": round(statistics.median(clone_ms), 1),
            "cold_shell_ms_median": round(statistics.median(cold_ms), 1),
            "cold_over_clone": round(statistics.median(cold_ms) / statistics.median(clone_ms), 1),
            "raw_clone_shell_ms_median": round(statistics.median(raw_ms), 1),
            "clone_over_raw_clone": round(statistics.median(clone_ms) / statistics.median(raw_ms), 3),
            "raw_clone_shell_ms": [round(x) for x in raw_ms],
            "clone_shell_ms": [round(x) for x in clone_ms],
            "cold_shell_ms": [round(x) for x in cold_ms],
            "pss_5_clones_mib": round(clones_pss / 1024, 1),
            "pss_5_cold_mib": round(cold_pss / 1024, 1),
            "clones_over_cold_pss": round(clones_pss / cold_pss, 3),
        }
        print(json.dumps(res, indent=2))
        out = ROOT / "target" / "bench"
        out.mkdir(parents=True, exist_ok=True)
        (out / "template.json").write_text(json.dumps(res, indent=2) + "\n")
    finally:
        for sid in (sv.state.iterdir() if sv.state.exists() else []):
            subprocess.run([str(a.sandvm), "--state-dir", str(sv.state), "stop", sid.name, "--force"],
                           capture_output=True)
        shutil.rmtree(tp, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
