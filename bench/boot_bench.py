#!/usr/bin/env python3
"""Launch overhead and cold boot: sandvm against raw QEMU with the same argv.

Interleaved A B A B for --rounds rounds, one VM at a time:
  A  sandvm: `sandvm run --json` (create, start, wait for the guest's ready line,
     stop) reports spawn, QMP-ready and guest-ready times from the start call.
  B  raw: the argv `sandvm cmdline --json` renders for the same config, launched by
     this script the same way (QMP listener bound here and passed as fd 3), timed
     from just before spawning to QMP negotiated, then to the ready line.
Prints medians and ratios (A / B) as JSON and writes target/bench/boot.json.

Usage: python3 bench/boot_bench.py [--rounds 5] [--config configs/qemu-x86_64.toml]
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

ROOT = Path(__file__).resolve().parent.parent
READY = b"SANDVM-GUEST-READY"


def sandvm() -> Path:
    p = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "sandvm"
    if not p.exists():
        sys.exit(f"{p} is missing: run `make build`")
    return p


def tcg_config(src: Path, out: Path) -> Path:
    """The config with absolute asset paths and accelerator = "tcg"."""
    text = src.read_text()
    lines = []
    for line in text.splitlines():
        key = line.split("=", 1)[0].strip()
        if key in ("kernel", "initrd", "image") and "=" in line:
            val = line.split("=", 1)[1].strip().strip('"')
            line = f'{key} = "{(src.parent / val).resolve()}"'
        if key == "accelerator":
            line = 'accelerator = "tcg"'
        lines.append(line)
    out.write_text("\n".join(lines) + "\n")
    return out


def run_sandvm(cfg: Path, state: Path) -> dict:
    out = subprocess.run(
        [str(sandvm()), "--state-dir", str(state), "run", "--config", str(cfg), "--json"],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout)


def qmp_negotiate(sock: socket.socket) -> None:
    f = sock.makefile("rwb", buffering=0)
    greeting = f.readline()
    assert b"QMP" in greeting, greeting
    sock.sendall(b'{"execute":"qmp_capabilities"}\n')
    while True:
        line = f.readline()
        if b'"return"' in line:
            return
        if not line:
            raise RuntimeError("QMP closed")


def rendered_argv(cfg: Path, state: Path, vid: str) -> list:
    """The argv `sandvm cmdline --json` renders for `cfg` as sandbox `vid` under `state`."""
    return json.loads(subprocess.run(
        [str(sandvm()), "--state-dir", str(state), "cmdline", "--config", str(cfg),
         "--id", vid, "--accel", "tcg", "--json"],
        check=True, capture_output=True, text=True).stdout)


def spawn_raw(argv: list, d: Path) -> tuple:
    """Spawn `argv` in the folder `d` with its QMP listener (fd 3) and events
    listener (fd 4) bound here and passed down, as sandvm does. Returns the
    process, the time just before the spawn and the spawn's own ms."""
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    listeners = []
    for name in ("qmp.sock", "events.sock"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(d / name))
        s.listen(8)
        listeners.append(s)
    t0 = time.perf_counter()
    with open(d / "qemu.log", "wb") as log:
        # The argv says fd=3 and fd=4: put the listeners there (moved out of the
        # way first; this script holds nothing else at 3 or 4).
        high = [os.dup(s.fileno()) for s in listeners]
        for fd, target in zip(high, (3, 4)):
            os.dup2(fd, target)
            os.close(fd)
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            pass_fds=(3, 4), start_new_session=True,
        )
        spawn_ms = (time.perf_counter() - t0) * 1e3
    for s in listeners:
        s.close()
    for fd in (3, 4):
        try:
            os.close(fd)
        except OSError:
            pass
    return proc, t0, spawn_ms


def launch_raw(cfg: Path, state: Path, vid: str) -> tuple:
    """The argv `sandvm cmdline --json` renders for `cfg`, spawned in state/vid
    (see `spawn_raw`). Returns the process, its folder, the time just before
    the spawn and the spawn's own ms."""
    argv = rendered_argv(cfg, state, vid)
    d = state / vid
    proc, t0, spawn_ms = spawn_raw(argv, d)
    return proc, d, t0, spawn_ms


def run_raw(cfg: Path, state: Path, n: int) -> dict:
    proc, d, t0, spawn_ms = launch_raw(cfg, state, f"raw{n}")
    q = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    q.connect(str(d / "qmp.sock"))
    qmp_negotiate(q)
    qmp_ms = (time.perf_counter() - t0) * 1e3
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(str(d / "console.sock"))
    buf = (d / "console.log").read_bytes() if (d / "console.log").exists() else b""
    while READY not in buf:
        chunk = c.recv(4096)
        if not chunk:
            raise RuntimeError("console closed before the ready line")
        buf += chunk
    ready_ms = (time.perf_counter() - t0) * 1e3
    c.close()
    q.close()
    proc.kill()
    proc.wait()
    shutil.rmtree(d)
    return {"spawn_ms": spawn_ms, "qmp_ready_ms": qmp_ms, "guest_ready_ms": ready_ms}


def compare(args) -> None:
    """Time to guest shell for two configs, interleaved (e.g. q35 against microvm)."""
    work = Path(tempfile.mkdtemp(prefix="sv-bench-", dir="/tmp"))
    try:
        ca = tcg_config(Path(args.config).resolve(), work / "a.toml")
        cb = tcg_config(Path(args.vs).resolve(), work / "b.toml")
        a, b = [], []
        for i in range(args.rounds):
            a.append(run_sandvm(ca, work / "sa"))
            b.append(run_sandvm(cb, work / "sb"))
            print(f"round {i + 1}: {Path(args.config).name} {a[-1]['guest_ready_ms']:.0f} ms, "
                  f"{Path(args.vs).name} {b[-1]['guest_ready_ms']:.0f} ms", file=sys.stderr)
        ma = statistics.median(x["guest_ready_ms"] for x in a)
        mb = statistics.median(x["guest_ready_ms"] for x in b)
        res = {"rounds": args.rounds, "a": args.config, "b": args.vs,
               "guest_ready_ms": {"a_median": round(ma, 1), "b_median": round(mb, 1), "ratio_b_over_a": round(mb / ma, 3)}}
        out = ROOT / "target" / "bench"
        out.mkdir(parents=True, exist_ok=True)
        (out / "machines.json").write_text(json.dumps(res, indent=2) + "\n")
        print(json.dumps(res))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--config", default=str(ROOT / "configs/qemu-x86_64.toml"))
    ap.add_argument("--vs", help="a second config: compare two machines (sandvm against sandvm) instead of sandvm against raw QEMU")
    args = ap.parse_args()
    if args.vs:
        return compare(args)
    work = Path(tempfile.mkdtemp(prefix="sv-bench-", dir="/tmp"))
    try:
        cfg = tcg_config(Path(args.config).resolve(), work / "bench.toml")
        a, b = [], []
        for i in range(args.rounds):
            a.append(run_sandvm(cfg, work / "a"))
            b.append(run_raw(cfg, work / "b", i))
            print(f"round {i + 1}: sandvm {a[-1]['qmp_ready_ms']:.1f}/{a[-1]['guest_ready_ms']:.1f} ms, "
                  f"raw {b[-1]['qmp_ready_ms']:.1f}/{b[-1]['guest_ready_ms']:.1f} ms (QMP/guest)", file=sys.stderr)
        res = {"rounds": args.rounds, "config": args.config}
        for k in ("qmp_ready_ms", "guest_ready_ms"):
            ma = statistics.median(x[k] for x in a)
            mb = statistics.median(x[k] for x in b)
            res[k] = {"sandvm_median": round(ma, 1), "raw_median": round(mb, 1), "ratio": round(ma / mb, 3)}
        res["stop_ms_sandvm_median"] = round(statistics.median(x["stop_ms"] for x in a), 1)
        out = ROOT / "target" / "bench"
        out.mkdir(parents=True, exist_ok=True)
        (out / "boot.json").write_text(json.dumps(res, indent=2) + "\n")
        print(json.dumps(res))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
