#!/usr/bin/env python3
"""Launch overhead: from the start call to QMP negotiated, sandvm against raw QEMU.

Only the launch is timed (no guest boot), so many rounds fit in a short run and
the median is stable. Interleaved A B A B for --rounds rounds:
  A  sandvm: `sandvm create` (untimed), then `sandvm start --json`, whose
     qmp_ready_ms runs from the start call inside the runtime to QMP negotiated;
     the wall time of the whole `sandvm start` process is reported beside it.
     Then `sandvm stop --force`.
  B  raw: the argv `sandvm cmdline --json` renders, launched by this script with
     the QMP listener bound here and passed as fd 3, timed from just before the
     spawn to QMP negotiated; then SIGKILL.
Prints medians and the ratios A / B (the runtime's start, and the whole
`sandvm start` process against the raw launch) and writes target/bench/launch.json.

Usage: python3 bench/launch_bench.py [--rounds 20] [--config configs/qemu-x86_64.toml]
"""

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from boot_bench import ROOT, launch_raw, qmp_negotiate, sandvm, tcg_config  # noqa: E402


def run_sandvm(cfg: Path, state: Path, n: int) -> dict:
    vid = f"l{n}"
    base = [str(sandvm()), "--state-dir", str(state)]
    subprocess.run(base + ["create", "--config", str(cfg), "--id", vid], check=True, capture_output=True)
    t0 = time.perf_counter()
    out = subprocess.run(base + ["start", vid, "--json"], check=True, capture_output=True, text=True)
    wall_ms = (time.perf_counter() - t0) * 1e3
    subprocess.run(base + ["stop", vid, "--force"], check=True, capture_output=True)
    rep = json.loads(out.stdout)
    return {"spawn_ms": rep["spawn_ms"], "qmp_ready_ms": rep["qmp_ready_ms"], "cli_wall_ms": wall_ms}


def run_raw(cfg: Path, state: Path, n: int) -> dict:
    proc, d, t0, spawn_ms = launch_raw(cfg, state, f"r{n}")
    try:
        q = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        q.connect(str(d / "qmp.sock"))
        qmp_negotiate(q)
        qmp_ms = (time.perf_counter() - t0) * 1e3
        q.close()
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(d)
    return {"spawn_ms": spawn_ms, "qmp_ready_ms": qmp_ms}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--config", default=str(ROOT / "configs/qemu-x86_64.toml"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sv-launch-", dir="/tmp"))
    try:
        cfg = tcg_config(Path(args.config).resolve(), work / "bench.toml")
        a, b = [], []
        for i in range(args.rounds):
            a.append(run_sandvm(cfg, work / "a", i))
            b.append(run_raw(cfg, work / "b", i))
            print(f"round {i + 1}: sandvm {a[-1]['qmp_ready_ms']:.1f} ms "
                  f"(spawn {a[-1]['spawn_ms']:.1f}), raw {b[-1]['qmp_ready_ms']:.1f} ms "
                  f"(spawn {b[-1]['spawn_ms']:.1f})", file=sys.stderr)
        res = {"rounds": args.rounds, "config": args.config}
        for k in ("spawn_ms", "qmp_ready_ms"):
            ma = statistics.median(x[k] for x in a)
            mb = statistics.median(x[k] for x in b)
            res[k] = {"sandvm_median": round(ma, 1), "raw_median": round(mb, 1),
                      "ratio": round(ma / mb, 3)}
        wall = statistics.median(x["cli_wall_ms"] for x in a)
        raw = statistics.median(x["qmp_ready_ms"] for x in b)
        res["sandvm_cli_wall_ms_median"] = round(wall, 1)
        # The whole `sandvm start` process (exec to exit: config and state
        # loaded, QEMU spawned, QMP negotiated, state saved) against the raw
        # launch from spawn to QMP negotiated.
        res["whole_process"] = {"sandvm_median": round(wall, 1), "raw_median": round(raw, 1),
                                "ratio": round(wall / raw, 3)}
        res["samples"] = {"sandvm": a, "raw": b}
        out = ROOT / "target" / "bench"
        out.mkdir(parents=True, exist_ok=True)
        (out / "launch.json").write_text(json.dumps(res, indent=2) + "\n")
        print(json.dumps({k: v for k, v in res.items() if k != "samples"}))
    finally:
        # Stop any sandbox a failed round left (run_raw kills its own QEMU).
        st = work / "a"
        if st.exists():
            for d in st.iterdir():
                subprocess.run([str(sandvm()), "--state-dir", str(st), "stop", d.name, "--force"],
                               capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
