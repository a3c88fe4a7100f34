#!/usr/bin/env python3
"""Hotplug latency: from the `sandvm` call until the guest sees the change.

Boots one sandbox (virtio-mem on, 1 + rounds max vCPUs: under TCG an
unplugged vCPU's thread context is not reused) and, for --rounds rounds, times
each operation. A watcher in the guest, started on the console just before the
call, prints a marker the moment the change is visible in the guest (a busybox
`usleep 1000` loop), so the time is call -> guest, not call -> return:

  vcpu-add      resize-vcpus 1 -> 2     /sys/devices/system/cpu/online shows 0-1
  vcpu-remove   resize-vcpus 2 -> 1     it shows 0
  mem-grow      resize-memory +256 MiB  MemTotal rises
  mem-shrink    back                    MemTotal falls
  blk-add       hotplug block IMG       /dev/vda exists
  blk-remove    unplug                  /dev/vda is gone

The call runs concurrently; the time the call itself takes to return (it
waits for QEMU's confirmation, e.g. virtio-mem's throttled size event) is
reported beside it. Prints medians as JSON and writes target/bench/hotplug.json.
Usage: python3 bench/hotplug_bench.py [--rounds 5]
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


def sandvm() -> str:
    p = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "sandvm"
    if not p.exists():
        sys.exit(f"{p} is missing: run `make build`")
    return str(p)


class Console:
    def __init__(self, path: Path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(str(path))
        self.buf = b""

    def send(self, line: str) -> None:
        self.s.sendall(line.encode() + b"\n")

    def expect(self, marker: bytes, timeout: float = 120.0) -> None:
        self.s.settimeout(timeout)
        while marker not in self.buf:
            chunk = self.s.recv(4096)
            if not chunk:
                raise RuntimeError("console closed")
            self.buf += chunk
        self.buf = self.buf[self.buf.index(marker) + len(marker):]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    g = ROOT / "build" / "guest"
    work = Path(tempfile.mkdtemp(prefix="sv-hp-", dir="/tmp"))
    state = work / "s"
    cfg = work / "hp.toml"
    cfg.write_text(
        f'[hypervisor.qemu]\nkernel = "{g / "vmlinuz"}"\ninitrd = "{g / "initramfs.cpio.gz"}"\n'
        f'default_vcpus = 1\ndefault_maxvcpus = {1 + args.rounds}\ndefault_memory = 512\ndefault_maxmemory = 1536\n'
        'enable_virtio_mem = true\nshared_fs = "none"\nblock_device_driver = "virtio-blk"\n'
        'block_device_aio = "threads"\naccelerator = "tcg"\n'
    )
    img = work / "disk.img"
    with open(img, "wb") as f:
        f.truncate(16 << 20)
    sv = [sandvm(), "--state-dir", str(state)]
    def run(*a: str) -> str:
        r = subprocess.run(sv + list(a), capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"sandvm {' '.join(a)} failed ({r.returncode}): {r.stderr.strip()}")
        return r.stdout

    try:
        run("create", "--config", str(cfg), "--id", "hp")
        run("start", "hp")
        con = Console(state / "hp" / "console.sock")
        log = state / "hp" / "console.log"
        t_end = time.time() + 180
        while READY not in (log.read_bytes() if log.exists() else b""):
            if time.time() > t_end:
                sys.exit("guest never ready")
            time.sleep(0.05)
        times = {k: [] for k in ("vcpu-add", "vcpu-remove", "mem-grow", "mem-shrink", "blk-add", "blk-remove")}
        returns = {k: [] for k in times}
        n = 0

        def timed(name: str, watch: str, *call: str) -> None:
            nonlocal n
            n += 1
            # The marker is computed by the guest, so the echo of the command never matches.
            con.send(f"while ! {watch}; do usleep 1000; done; echo W-$(({n}+1000))-")
            time.sleep(0.3)  # the watcher is running
            t0 = time.perf_counter()
            proc = subprocess.Popen(sv + list(call), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            con.expect(f"W-{n + 1000}-".encode())
            times[name].append((time.perf_counter() - t0) * 1e3)
            err = proc.communicate()[1]
            returns[name].append((time.perf_counter() - t0) * 1e3)
            if proc.returncode != 0:
                sys.exit(f"sandvm {' '.join(call)} failed: {err.strip()}")

        mem0 = "grep MemTotal /proc/meminfo | awk '{print $2}'"
        for r in range(args.rounds):
            timed("vcpu-add", "grep -qx 0-1 /sys/devices/system/cpu/online", "resize-vcpus", "hp", "2")
            timed("vcpu-remove", "grep -qx 0 /sys/devices/system/cpu/online", "resize-vcpus", "hp", "1")
            con.send(f"M0=$({mem0})")
            timed("mem-grow", f"[ $({mem0}) -gt $((M0 + 200000)) ]", "resize-memory", "hp", "768")
            timed("mem-shrink", f"[ $({mem0}) -lt $((M0 + 50000)) ]", "resize-memory", "hp", "512")
            timed("blk-add", "[ -b /dev/vda ]", "hotplug", "hp", "block", str(img), "--id", "d0")
            timed("blk-remove", "[ ! -b /dev/vda ]", "unplug", "hp", "d0")
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f} ms" for k, v in times.items()), file=sys.stderr)
        res = {
            "rounds": args.rounds,
            "guest_sees_median_ms": {k: round(statistics.median(v), 1) for k, v in times.items()},
            "call_returns_median_ms": {k: round(statistics.median(v), 1) for k, v in returns.items()},
        }
        out = ROOT / "target" / "bench"
        out.mkdir(parents=True, exist_ok=True)
        (out / "hotplug.json").write_text(json.dumps(res, indent=2) + "\n")
        print(json.dumps(res))
    finally:
        subprocess.run(sv + ["stop", "hp", "--force"], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
