#!/usr/bin/env python3
"""QMP throughput: sandvm's qmp crate vs qemu.qmp (PyPI), side by side.

Starts one QEMU (-M none) with a QMP server socket, then runs, interleaved
for several rounds against that same socket:
  A  our example `qmp-bench` sequentially and with --concurrency 16
  B  qemu.qmp sequentially and concurrently (asyncio.gather, 16 workers)
  C  a raw blocking Unix socket, one command at a time, no framework: the
     ceiling of a sequential client (QEMU reads its monitor one byte per
     recvmsg, so this is as fast as one-at-a-time round trips go)
  D  a raw socket that writes all commands at once: QEMU's own ceiling
Each run opens its own connection. Prints medians and ratios as JSON and
writes target/bench/qmp.json.

Usage: bench/.venv/bin/python bench/qmp_bench.py [--rounds 5] [--count 20000]
           [--py-count 5000] [--binary QMP_BENCH] [--baseline OTHER_QMP_BENCH]
Set up the venv with:  python3 -m venv bench/.venv &&
                       bench/.venv/bin/pip install -r bench/requirements.txt
"""

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONCURRENCY = 16


def build_example() -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    subprocess.run(
        ["cargo", "build", "--release", "-q", "-p", "qmp", "--example", "qmp-bench"],
        cwd=ROOT,
        check=True,
    )
    return target / "release" / "examples" / "qmp-bench"


def start_qemu(tmp: Path):
    sock = tmp / "qmp.sock"
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        sys.exit("qemu-system-x86_64 not found: run `make setup`")
    proc = subprocess.Popen(
        [qemu, "-M", "none", "-nodefaults", "-nographic", "-display", "none",
         "-qmp", f"unix:{sock},server=on,wait=off"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            sys.exit("QEMU did not create its QMP socket")
        time.sleep(0.02)
    return proc, sock


def run_ours(binary: Path, sock: Path, count: int, concurrency: int) -> dict:
    out = subprocess.run(
        [str(binary), "--socket", str(sock), "--count", str(count),
         "--concurrency", str(concurrency)],
        check=True, capture_output=True, text=True, timeout=600,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


async def _py(sock: Path, count: int, concurrency: int) -> dict:
    from qemu.qmp import QMPClient

    client = QMPClient("bench")
    await client.connect(str(sock))
    try:
        for _ in range(100):
            await client.execute("query-status")
        lat = []
        remaining = count

        async def worker():
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                t = time.perf_counter()
                await client.execute("query-status")
                lat.append((time.perf_counter() - t) * 1e6)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    finally:
        await client.disconnect()
    lat.sort()
    return {
        "ops_per_sec": count / elapsed,
        "p50_us": lat[len(lat) // 2],
        "p99_us": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
        "count": count,
        "concurrency": concurrency,
    }


def run_py(sock: Path, count: int, concurrency: int) -> dict:
    return asyncio.run(_py(sock, count, concurrency))


def run_ceiling(sock: Path, count: int) -> dict:
    """QEMU's own limit: a raw socket writes every command at once (from a
    thread) while the main thread reads the replies. No client library."""
    import socket
    import threading

    s = socket.socket(socket.AF_UNIX)
    s.connect(str(sock))
    f = s.makefile("rb")
    f.readline()
    s.sendall(b'{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}\n')
    f.readline()

    def writer():
        for i in range(count):
            s.sendall(b'{"execute":"query-status","id":%d}\n' % i)

    start = time.perf_counter()
    t = threading.Thread(target=writer)
    t.start()
    for _ in range(count):
        if not f.readline():
            raise RuntimeError("QEMU closed the connection")
    elapsed = time.perf_counter() - start
    t.join()
    f.close()
    s.close()
    return {"ops_per_sec": count / elapsed, "p50_us": 0, "p99_us": 0,
            "count": count, "concurrency": count}


def run_raw_seq(sock: Path, count: int) -> dict:
    """A plain blocking socket, one command at a time: write, read the reply
    line, repeat. No client library, no event loop."""
    import socket

    s = socket.socket(socket.AF_UNIX)
    s.connect(str(sock))
    f = s.makefile("rb")
    f.readline()
    s.sendall(b'{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}\n')
    f.readline()
    cmds = [b'{"execute":"query-status","id":%d}\n' % i for i in range(count + 100)]
    for c in cmds[:100]:
        s.sendall(c)
        f.readline()
    lat = []
    start = time.perf_counter()
    for c in cmds[100:]:
        t = time.perf_counter()
        s.sendall(c)
        if not f.readline():
            raise RuntimeError("QEMU closed the connection")
        lat.append((time.perf_counter() - t) * 1e6)
    elapsed = time.perf_counter() - start
    f.close()
    s.close()
    lat.sort()
    return {"ops_per_sec": count / elapsed, "p50_us": lat[len(lat) // 2],
            "p99_us": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
            "count": count, "concurrency": 1}


def median(runs: list, key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--count", type=int, default=20000)
    ap.add_argument("--py-count", type=int, default=5000)
    ap.add_argument("--binary", help="a prebuilt qmp-bench (default: build it)")
    ap.add_argument("--baseline", help="another qmp-bench (e.g. built from an older "
                    "commit) run in the same rounds, as base_seq and base_c16")
    args = ap.parse_args()

    binary = Path(args.binary) if args.binary else build_example()
    runs = {"ours_seq": [], "ours_c16": [], "py_seq": [], "py_c16": [],
            "raw_seq": [], "qemu_ceiling": []}
    if args.baseline:
        runs.update({"base_seq": [], "base_c16": []})
    with tempfile.TemporaryDirectory(prefix="qmpb", dir="/tmp") as tmp:
        proc, sock = start_qemu(Path(tmp))
        try:
            for _ in range(args.rounds):
                runs["ours_seq"].append(run_ours(binary, sock, args.count, 1))
                runs["py_seq"].append(run_py(sock, args.py_count, 1))
                runs["ours_c16"].append(run_ours(binary, sock, args.count, CONCURRENCY))
                runs["py_c16"].append(run_py(sock, args.py_count, CONCURRENCY))
                runs["raw_seq"].append(run_raw_seq(sock, args.count))
                if args.baseline:
                    base = Path(args.baseline)
                    runs["base_seq"].append(run_ours(base, sock, args.count, 1))
                    runs["base_c16"].append(run_ours(base, sock, args.count, CONCURRENCY))
                runs["qemu_ceiling"].append(run_ceiling(sock, args.count))
        finally:
            proc.kill()
            proc.wait()

    summary = {
        name: {
            "ops_per_sec": round(median(r, "ops_per_sec")),
            "p50_us": median(r, "p50_us"),
            "p99_us": median(r, "p99_us"),
        }
        for name, r in runs.items()
    }
    ops = {k: v["ops_per_sec"] for k, v in summary.items()}
    ratios = {}
    if args.baseline:
        ratios = {
            "base_seq_vs_raw_seq": round(ops["base_seq"] / ops["raw_seq"], 2),
            "base_c16_vs_raw_seq": round(ops["base_c16"] / ops["raw_seq"], 2),
            "ours_seq_vs_base_seq": round(ops["ours_seq"] / ops["base_seq"], 2),
            "ours_c16_vs_base_c16": round(ops["ours_c16"] / ops["base_c16"], 2),
        }
    result = {
        "rounds": args.rounds,
        "medians": summary,
        "ratios": {
            "ours_seq_vs_raw_seq": round(ops["ours_seq"] / ops["raw_seq"], 2),
            "ours_c16_vs_raw_seq": round(ops["ours_c16"] / ops["raw_seq"], 2),
            "ours_seq_vs_py_seq": round(ops["ours_seq"] / ops["py_seq"], 2),
            "ours_c16_vs_ours_seq": round(ops["ours_c16"] / ops["ours_seq"], 2),
            "ours_c16_vs_py_c16": round(ops["ours_c16"] / ops["py_c16"], 2),
            "ours_c16_vs_qemu_ceiling": round(ops["ours_c16"] / ops["qemu_ceiling"], 2),
            "qemu_ceiling_vs_ours_seq": round(ops["qemu_ceiling"] / ops["ours_seq"], 2),
            **ratios,
        },
        "targets": {"ours_seq_vs_raw_seq": 0.9, "ours_c16_vs_raw_seq": 1.0,
                    "ours_seq_vs_py_seq": 2.0},
        "runs": runs,
    }
    out_dir = ROOT / "target" / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "qmp.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("medians", "ratios")}))
    load = os.getloadavg()
    print(f"load average during the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
