#!/usr/bin/env python3
"""Snapshots: a restore against a cold boot of the same config, side by side.

1. Time to a guest shell, interleaved restore / cold for --rounds rounds:
     restore  `sandvm restore SNAP` of a snapshot saved from an idle guest at
              its shell, then the first shell round trip on the console;
     cold     `sandvm create` + `start`, the guest's ready line, then the same
              round trip.
2. Size: the snapshot's migration stream against the guest's memory, for an
   idle guest and for one with --dirty MiB of random data in its tmpfs; and
   how long each save took.
Prints medians and ratios as JSON and writes target/bench/snapshot.json.

Usage: python3 bench/snapshot_bench.py [--rounds 5] [--memory 256] [--dirty 64] [--sandvm PATH]
"""

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from template_bench import ROOT, Sandvm, config, default_sandvm, shell_round_trip, start


def console(sv: Sandvm, sid: str, cmd: str, expect: str) -> None:
    sv("console", sid, "--send", cmd, "--expect", expect, "--timeout", "120")


def save(sv: Sandvm, cfg: Path, sid: str, snap: Path, dirty: int) -> dict:
    start(sv, cfg, sid, False)
    if dirty:
        console(sv, sid, f"dd if=/dev/urandom of=/tmp/fill bs=1M count={dirty} 2>/dev/null; echo D-$((1+1))",
                "D-2")
    return json.loads(sv("save", sid, str(snap), "--stop", "--json"))


def restore(sv: Sandvm, snap: Path, sid: str) -> float:
    t0 = time.monotonic()
    sv("restore", str(snap), "--id", sid)
    shell_round_trip(sv.state / sid / "console.sock")
    return (time.monotonic() - t0) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--memory", type=int, default=256)
    ap.add_argument("--dirty", type=int, default=64)
    ap.add_argument("--sandvm", type=Path, default=default_sandvm())
    a = ap.parse_args()
    if not a.sandvm.exists():
        sys.exit(f"{a.sandvm} is missing: run `make build`")
    work = Path(tempfile.mkdtemp(prefix="svb-snap-", dir="/tmp"))
    sv = Sandvm(a.sandvm, work / "st")
    try:
        cfg = config(work / "c.toml", a.memory, None)
        idle = save(sv, cfg, "idle", work / "snap-idle", 0)
        dirty = save(sv, cfg, "dirty", work / "snap-dirty", a.dirty)
        restore_ms, cold_ms = [], []
        for r in range(a.rounds):
            restore_ms.append(restore(sv, work / "snap-idle", f"r{r}"))
            sv("stop", f"r{r}", "--force")
            cold_ms.append(start(sv, cfg, f"b{r}", False))
            sv("stop", f"b{r}", "--force")
        mib = 1 << 20
        res = {
            "rounds": a.rounds,
            "memory_mib": a.memory,
            "restore_shell_ms_median": round(statistics.median(restore_ms), 1),
            "cold_shell_ms_median": round(statistics.median(cold_ms), 1),
            "cold_over_restore": round(statistics.median(cold_ms) / statistics.median(restore_ms), 1),
            "restore_shell_ms": [round(x) for x in restore_ms],
            "cold_shell_ms": [round(x) for x in cold_ms],
            "idle_snapshot_mib": round(idle["state_bytes"] / mib, 1),
            "idle_snapshot_over_memory": round(idle["state_bytes"] / mib / a.memory, 3),
            "idle_save_ms": round(idle["ms"]),
            "dirty_mib": a.dirty,
            "dirty_snapshot_mib": round(dirty["state_bytes"] / mib, 1),
            "dirty_snapshot_over_memory": round(dirty["state_bytes"] / mib / a.memory, 3),
            "dirty_save_ms": round(dirty["ms"]),
        }
        print(json.dumps(res, indent=2))
        out = ROOT / "target" / "bench"
        out.mkdir(parents=True, exist_ok=True)
        (out / "snapshot.json").write_text(json.dumps(res, indent=2) + "\n")
    finally:
        for sid in (sv.state.iterdir() if sv.state.exists() else []):
            subprocess.run([str(a.sandvm), "--state-dir", str(sv.state), "stop", sid.name, "--force"],
                           capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
