#!/usr/bin/env python3
"""Density: N small sandboxes started at once, sandvm against raw QEMU.

For each N (--n 8 16) and round, interleaved A B, then B A for the next:
  A  sandvm: N `sandvm create` at once (timed apart), then N `sandvm start` at
     once; timed from the first start call until every guest's console log
     (console.log in the sandbox folder, written by QEMU) holds the ready line.
  B  raw: the N argvs `sandvm cmdline --json` renders (fetched beforehand),
     launched back to back by this script, each with its monitor listeners bound
     here and passed as fds 3 (and 4), as sandvm does; timed from the first
     spawn until every guest is at the ready line.
A sandbox whose start fails or whose guest is not ready within --timeout is a
failure: counted and reported, never retried.

With every guest ready, memory per sandbox: the proportional and resident set
size (Pss/Rss in /proc/PID/smaps_rollup) of each QEMU, and what sandvm itself
keeps on the host beyond QEMU. Its CLI processes exit, so that is any process
left that is not QEMU (a `sandvm __supervise` per sandbox when the config needs
one: a shared filesystem, a TPM or guest_memory_dump_path; --supervised sets the
last) plus the sandbox folder. Processes are found by their command line naming
the state root, not by asking sandvm. Then everything is stopped (`sandvm stop
--force`; SIGKILL for raw) and checked gone: no process, socket or folder left.
A failure or Ctrl-C still kills every VM by pid (try/finally).
Prints a summary as JSON and writes target/bench/density.json (or --out).

Usage: python3 bench/density_bench.py [--n 8 16] [--memory 128] [--rounds 1] [--supervised]
                                          [--kernel-params "swiotlb=noforce"] [--timeout 600]
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from boot_bench import READY, sandvm
from stop_bench import pids_referring_to, reserve_fds, sockets_under, spawn_listening

ROOT = Path(__file__).resolve().parent.parent


def config(path: Path, memory: int, dump: Path | None, kernel_params: str) -> Path:
    guest = ROOT / "build" / "guest"
    text = f"""[hypervisor.qemu]
path = "/usr/bin/qemu-system-x86_64"
kernel = "{(guest / 'vmlinuz').resolve()}"
initrd = "{(guest / 'initramfs.cpio.gz').resolve()}"
default_vcpus = 1
default_maxvcpus = 1
default_memory = {memory}
default_maxmemory = 1024
kernel_params = "{kernel_params}"
shared_fs = "none"
accelerator = "tcg"
"""
    if dump:
        text += f'guest_memory_dump_path = "{dump}"\n'
    path.write_text(text)
    return path


def smaps(pid: int) -> dict:
    out = {"pid": pid, "comm": "", "rss_kib": 0, "pss_kib": 0}
    try:
        out["comm"] = Path(f"/proc/{pid}/comm").read_text().strip()
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            k = line.split(":")[0]
            if k in ("Rss", "Pss"):
                out[f"{k.lower()}_kib"] = int(line.split()[1])
    except OSError:
        pass
    return out


def qemu_alive(d: Path) -> bool:
    """Whether the QEMU of folder `d` (its pidfile, written before QMP is up) still runs."""
    try:
        pid = int((d / "qemu.pid").read_text())
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def folder_size(d: Path) -> dict:
    """Apparent bytes and allocated bytes of the files in a sandbox folder, by name."""
    files = {}
    for p in d.rglob("*"):
        try:
            st = p.lstat()
        except OSError:
            continue
        files[str(p.relative_to(d))] = {"bytes": st.st_size, "disk": st.st_blocks * 512}
    return {"bytes": sum(f["bytes"] for f in files.values()),
            "disk_bytes": sum(f["disk"] for f in files.values()), "files": files}


class Ready:
    """Watches console logs for the ready line, reading each only from where it left off."""

    def __init__(self, dirs: dict[str, Path]):
        self.dirs, self.off, self.tail, self.at = dirs, {k: 0 for k in dirs}, {k: b"" for k in dirs}, {}

    def poll(self, t0: float) -> None:
        for k, d in self.dirs.items():
            if k in self.at:
                continue
            try:
                with open(d / "console.log", "rb") as f:
                    f.seek(self.off[k])
                    chunk = f.read()
            except OSError:
                continue
            self.off[k] += len(chunk)
            buf = self.tail[k] + chunk
            if READY in buf:
                self.at[k] = (time.perf_counter() - t0) * 1e3
            self.tail[k] = buf[-len(READY):]


def ms_stats(xs: list[float]) -> dict:
    return {"median": round(statistics.median(xs), 1), "max": round(max(xs), 1)} if xs else {}


class Density:
    def __init__(self, work: Path, cfg: Path, timeout: float):
        self.work, self.cfg, self.timeout = work, cfg, timeout
        self.exe = str(sandvm())
        self.raw: list[subprocess.Popen] = []
        self.roots: list[Path] = []

    def sv(self, root: Path, *args: str) -> list[str]:
        return [self.exe, "--state-dir", str(root), *args]

    def wait_all(self, ids: list[str], dirs: dict[str, Path], t0: float,
                 starts: dict | None) -> tuple[dict, dict, dict]:
        """Until every guest is ready or failed: (ready at, failed, start call returned at) by id."""
        ready, failed, returned = Ready(dirs), {}, {}
        end = time.monotonic() + self.timeout
        while len(ready.at) + len(failed) < len(ids):
            ready.poll(t0)
            for k, p in (starts or {}).items():
                if k in returned or p.poll() is None:
                    continue
                returned[k] = (time.perf_counter() - t0) * 1e3
                if p.returncode != 0:
                    failed[k] = f"start exited {p.returncode}: {p.stderr.read().strip()[-400:]}"
            for k in returned:
                if k not in failed and k not in ready.at and not qemu_alive(dirs[k]):
                    failed[k] = f"QEMU exited after the start: {(dirs[k] / 'qemu.log').read_text()[-400:]}"
            for k, p in ((k, p) for k, p in zip(ids, self.raw) if starts is None):
                if k not in failed and k not in ready.at and p.poll() is not None:
                    failed[k] = f"QEMU exited {p.returncode}: {(dirs[k] / 'qemu.log').read_text()[-400:]}"
            if time.monotonic() > end:
                for k in ids:
                    if k not in ready.at and k not in failed:
                        failed[k] = f"not ready within {self.timeout:.0f} s"
                break
            time.sleep(0.05)
        return ready.at, failed, returned

    def memory(self, root: Path, ready: dict) -> dict:
        """Per-process figures of everything naming the state root, split QEMU / the rest."""
        procs = [smaps(p) for p in pids_referring_to(root)]
        qemu = [p for p in procs if p["comm"].startswith("qemu-system")]
        rest = [p for p in procs if not p["comm"].startswith("qemu-system")]
        n = max(len(ready), 1)
        folders = {k: folder_size(root / k) for k in ready}
        return {
            "qemu_processes": len(qemu),
            "qemu_pss_kib_median": statistics.median(p["pss_kib"] for p in qemu) if qemu else 0,
            "qemu_rss_kib_median": statistics.median(p["rss_kib"] for p in qemu) if qemu else 0,
            "qemu_pss_mib_total": round(sum(p["pss_kib"] for p in qemu) / 1024, 1),
            "other_processes": [{k: p[k] for k in ("comm", "rss_kib", "pss_kib")} for p in rest],
            "other_pss_kib_per_sandbox": round(sum(p["pss_kib"] for p in rest) / n, 1),
            "other_rss_kib_per_sandbox": round(sum(p["rss_kib"] for p in rest) / n, 1),
            "folder_bytes_median": statistics.median(f["bytes"] for f in folders.values()) if folders else 0,
            "folder_disk_bytes_median": statistics.median(f["disk_bytes"] for f in folders.values()) if folders else 0,
            "folder_files": next(iter(folders.values()))["files"] if folders else {},
        }

    def check_gone(self, root: Path) -> list[str]:
        problems = []
        end = time.monotonic() + 2
        while (left := pids_referring_to(root)) and time.monotonic() < end:
            time.sleep(0.05)
        if left:
            problems.append(f"processes left: {[smaps(p)['comm'] + ':' + str(p) for p in left]}")
        if socks := sockets_under(root):
            problems.append(f"sockets left: {socks}")
        if root.exists() and (dirs := sorted(p.name for p in root.iterdir() if p.is_dir())):
            problems.append(f"sandbox folders left: {dirs}")
        return problems

    def run_sandvm(self, n: int, tag: str) -> dict:
        root = self.work / tag
        self.roots.append(root)
        ids = [f"{tag}-{i}" for i in range(n)]
        tc = time.perf_counter()
        creates = {k: subprocess.Popen(self.sv(root, "create", "--config", str(self.cfg), "--id", k),
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for k in ids}
        failed = {k: f"create exited {p.wait()}: {p.stderr.read().strip()[-400:]}"
                  for k, p in creates.items() if p.wait() != 0}
        create_ms = (time.perf_counter() - tc) * 1e3
        ok = [k for k in ids if k not in failed]
        t0 = time.perf_counter()
        starts = {k: subprocess.Popen(self.sv(root, "start", k), stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True) for k in ok}
        ready, fails, returned = self.wait_all(ok, {k: root / k for k in ok}, t0, starts)
        all_ms = (time.perf_counter() - t0) * 1e3
        failed.update(fails)
        for p in starts.values():
            p.wait()
        mem = self.memory(root, ready)
        stops = [subprocess.Popen(self.sv(root, "stop", k, "--force"), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL) for k in ids]
        for p in stops:
            p.wait()
        return {"n": n, "create_all_ms": round(create_ms, 1), "all_ready_ms": round(all_ms, 1),
                "ready": len(ready), "failures": len(failed), "failed": failed,
                "ready_ms": ms_stats(list(ready.values())), "memory": mem,
                "start_call_returned_ms": ms_stats(list(returned.values())),
                "left_after_stop": self.check_gone(root)}

    def run_raw(self, n: int, tag: str) -> dict:
        root = self.work / tag
        self.roots.append(root)
        ids = [f"{tag}-{i}" for i in range(n)]
        argvs = {}
        for k in ids:
            argvs[k] = json.loads(subprocess.run(
                self.sv(root, "cmdline", "--config", str(self.cfg), "--id", k, "--accel", "tcg", "--json"),
                check=True, capture_output=True, text=True).stdout)
            (root / k).mkdir(mode=0o700, parents=True)
        self.raw = []
        t0 = time.perf_counter()
        for k in ids:
            self.raw.append(spawn_listening(argvs[k], root / k))
        ready, failed, _ = self.wait_all(ids, {k: root / k for k in ids}, t0, None)
        all_ms = (time.perf_counter() - t0) * 1e3
        mem = self.memory(root, ready)
        for p in self.raw:
            p.kill()
        for p in self.raw:
            p.wait()
        self.raw = []
        for k in ids:
            shutil.rmtree(root / k)
        return {"n": n, "all_ready_ms": round(all_ms, 1), "ready": len(ready), "failures": len(failed),
                "failed": failed, "ready_ms": ms_stats(list(ready.values())), "memory": mem,
                "left_after_stop": self.check_gone(root)}

    def cleanup(self) -> list[int]:
        """Kill by pid whatever is left (Ctrl-C, a failure); returns what had to be killed."""
        for p in self.raw:
            p.kill()
            p.wait()
        for root in self.roots:
            for d in (root.iterdir() if root.exists() else []):
                subprocess.run(self.sv(root, "stop", d.name, "--force"), capture_output=True)
        left = pids_referring_to(self.work)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return left


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--memory", type=int, default=128,
                    help="MiB per guest")
    ap.add_argument("--kernel-params", default="", help="kernel_params of the config, e.g. swiotlb=noforce")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=600, help="seconds for all N guests to be ready")
    ap.add_argument("--out", help="file name in target/bench/ (default density.json, "
                                  "density-supervised.json with --supervised)")
    ap.add_argument("--supervised", action="store_true",
                    help="set guest_memory_dump_path, so that each sandbox has a `sandvm __supervise`")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally below
    reserve_fds()
    work = Path(tempfile.mkdtemp(prefix="sv-dens-", dir="/tmp"))
    cfg = config(work / "density.toml", args.memory, work / "dumps" if args.supervised else None,
                 args.kernel_params)
    b = Density(work, cfg, args.timeout)
    try:
        runs = []
        for r in range(args.rounds):
            for j, n in enumerate(args.n):
                # A B, then B A: the host's load drifts (other builds), so neither side always goes first.
                load = os.getloadavg()[0]
                first = "sandvm" if (r * len(args.n) + j) % 2 == 0 else "raw"
                if first == "sandvm":
                    a = b.run_sandvm(n, f"a{n}r{r}")
                    w = b.run_raw(n, f"b{n}r{r}")
                else:
                    w = b.run_raw(n, f"b{n}r{r}")
                    a = b.run_sandvm(n, f"a{n}r{r}")
                runs.append({"n": n, "round": r + 1, "first": first,
                             "load_at_start": round(load, 1), "sandvm": a, "raw": w})
                print(f"N={n} round {r + 1}: all ready sandvm {a['all_ready_ms']:.0f} ms "
                      f"({a['failures']} failed), raw {w['all_ready_ms']:.0f} ms ({w['failures']} failed)",
                      file=sys.stderr)
        summary = []
        for n in args.n:
            rs = [x for x in runs if x["n"] == n]
            ma = statistics.median(x["sandvm"]["all_ready_ms"] for x in rs)
            mr = statistics.median(x["raw"]["all_ready_ms"] for x in rs)
            last = rs[-1]["sandvm"]["memory"]
            summary.append({
                "n": n,
                "all_ready_ms": {"sandvm_median": round(ma, 1), "raw_median": round(mr, 1), "ratio": round(ma / mr, 3)},
                "failures": {"sandvm": sum(x["sandvm"]["failures"] for x in rs),
                             "raw": sum(x["raw"]["failures"] for x in rs)},
                "sandvm_host_overhead_per_sandbox": {
                    "processes_beyond_qemu": len(last["other_processes"]) / n,
                    "pss_kib": last["other_pss_kib_per_sandbox"], "rss_kib": last["other_rss_kib_per_sandbox"],
                    "folder_bytes": last["folder_bytes_median"],
                    "folder_bytes_beyond_raw": last["folder_bytes_median"] - rs[-1]["raw"]["memory"]["folder_bytes_median"],
                },
                "qemu_pss_mib_per_sandbox": {"sandvm": round(last["qemu_pss_kib_median"] / 1024, 1),
                                             "raw": round(rs[-1]["raw"]["memory"]["qemu_pss_kib_median"] / 1024, 1)},
            })
        res = {"memory_mib": args.memory, "rounds": args.rounds, "supervised": args.supervised,
               "kernel_params": args.kernel_params,
               "summary": summary, "runs": runs}
        for x in runs:
            for side in ("sandvm", "raw"):
                for k, why in x[side]["failed"].items():
                    print(f"density: FAILED N={x['n']} {side} {k}: {why}", file=sys.stderr)
        problems = [p for x in runs for side in ("sandvm", "raw") for p in x[side]["left_after_stop"]]
        res["left_after_stop"] = problems
        out = ROOT / "target" / "bench"
        out.mkdir(parents=True, exist_ok=True)
        name = args.out or ("density-supervised.json" if args.supervised else "density.json")
        (out / name).write_text(json.dumps(res, indent=2) + "\n")
        print(json.dumps({"memory_mib": args.memory, "summary": summary, "left_after_stop": problems}, indent=2))
        if problems:
            sys.exit("density: something was left after the stop: " + "; ".join(problems))
    finally:
        if left := b.cleanup():
            print(f"cleanup killed leftover pids {left}", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
