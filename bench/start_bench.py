#!/usr/bin/env python3
"""Fast container starts: `ctr run --rm IMG ID true` cold, from a VM template and
from the warm VM cache, against runc; then the PSS of N template pods against N
cold pods.

One private containerd (bench/ctr_bench.py's PrivateContainerd: its own root,
state, sockets and namespace under /tmp, SANDVM_STATE_DIR=<its folder>/sv; the
system containerd is never used) runs the busybox test image. Columns (--columns,
default all four):
  runc      `io.containerd.runc.v2`, the baseline;
  cold      `io.containerd.sandvm.v2` with configs/sandvm-containerd.toml
            (virtio-fs, the guest booted for each container);
  template  the same runtime with configs/sandvm-containerd-template.toml (9p guest):
            the template is made first with `sandvm --state-dir <shim's state
            root> template create --config <copy>`, the copy's template_path
            pointed at /dev/shm/svb-start-<pid>/template; each VM is a clone;
  cache     the cold config with `[factory] vm_cache_number = N` (--cache-number,
            default 1) and vm_cache_endpoint in containerd's folder, with
            `sandvm-vmcache --config <that copy> --state-dir <same state root>`
            running: each VM is one the cache booted and paused beforehand.
Every config is a copy in containerd's folder, its relative paths made absolute
and `accelerator = "tcg"` (--accelerator; "auto" trusts a probe that runs under
this host's nested KVM, where the stock guest kernel stops).

Method: one untimed warm-up run per column, then --rounds rounds, the columns
interleaved and their order turned each round (A B C D, B C D A, ...). Each run
is timed from the call until `ctr run --rm` returns (create, start, exit,
delete). The cache refills in the background right after a VM is taken (a cold
boot): before every run, of any column, the script waits until the cache holds
N ready VMs again (its JSON-line status op, `{"op":"status"}` on the endpoint),
so no refill runs during a timed run and the wait is never timed.

Each run's slice of containerd's log is checked: a template run must log
`origin=template` (not the `booting cold` fallback), a cache run `took a VM
from the cache` and `origin=cache`; anything else is a problem, reported in the
JSON, not hidden. The same slice says where a sandvm run's time went, from the
shim's own log timestamps: shim started to its VM ready ("sandbox running"),
the container created in the guest, `true` started to its exit, delete to the
shim's exit; what is left of the total is containerd and ctr (phases_median_ms).

PSS (--pods N, default 10; 0 skips): N long-running containers (`ctr run -d IMG
pN sleep 3600`) with the template config, started one after another; then the
PSS (/proc/PID/smaps_rollup) of every process of containerd's folder (QEMU,
shims, supervisors), by process name; then the same N with the cold config
(which also runs a virtiofsd per pod). Ratio template / cold, total and QEMU.

After the rounds: the cache server gets SIGTERM and must exit 0; no task,
container, shim, QEMU, sandbox or mount may be left (checked, as ctr_bench does).
Prints medians, ratios and per-round values as JSON; writes target/bench/start.json.

Usage: python3 bench/start_bench.py [--rounds 5] [--columns runc,cold,template,cache]
       [--pods 10] [--bin-dir target/release] [--cache-number 1] [--keep-logs]
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
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ctr_bench import IMAGE, RUNC, SANDVM, PrivateContainerd, pss_kib, task_status  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ["runc", "cold", "template", "cache"]
SHIPPED = {"cold": ROOT / "configs/sandvm-containerd.toml",
           "template": ROOT / "configs/sandvm-containerd-template.toml"}
SHIPPED_TEMPLATE_PATH = 'template_path = "/dev/shm/sandvm-containerd-template"'
FILL_TIMEOUT = 300  # s: a cold boot under TCG on a busy 2-core host
ORIGIN = re.compile(r'origin\W{1,5}(cold|template|cache)\b')  # origin=x, origin="x", "origin":"x"


def local_config(src: Path, out: Path, accelerator: str) -> Path:
    """The shipped config with absolute paths ("../" is the repository) and `accelerator`."""
    text = src.read_text().replace('"../', f'"{ROOT}/')
    if 'accelerator = "auto"' not in text:
        sys.exit(f'{src} does not say accelerator = "auto"')
    out.write_text(text.replace('accelerator = "auto"', f'accelerator = "{accelerator}"'))
    return out


class Sandvm:
    """`sandvm --state-dir <the shim's state root> ...`."""

    def __init__(self, exe: Path, state: Path):
        self.exe, self.state = exe, state

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run([str(self.exe), "--state-dir", str(self.state), *args],
                           capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600)
        if check and r.returncode != 0:
            raise RuntimeError(f"sandvm {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
        return r

    def list(self) -> list[dict]:
        r = self("list", "--json", check=False)
        try:
            return json.loads(r.stdout) if r.returncode == 0 else []
        except ValueError:
            return []


class VmCache:
    """A `sandvm-vmcache` server for one config, its log in containerd's folder."""

    def __init__(self, exe: Path, config: Path, state: Path, endpoint: Path, number: int, log: Path):
        self.endpoint, self.number, self.log_path = endpoint, number, log
        self.log = open(log, "wb")
        self.proc = subprocess.Popen([str(exe), "--config", str(config), "--state-dir", str(state)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.log)

    def status(self) -> dict | None:
        """The server's answer to `{"op":"status"}` (None while it does not listen)."""
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(10)
                s.connect(str(self.endpoint))
                s.sendall(b'{"op":"status"}\n')
                buf = b""
                while not buf.endswith(b"\n"):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    buf += chunk
            return json.loads(buf).get("status")
        except (OSError, ValueError):
            return None

    def wait_full(self) -> float:
        """Waits until the cache holds `number` ready VMs; the wait, ms."""
        t0 = time.perf_counter()
        end = time.monotonic() + FILL_TIMEOUT
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sandvm-vmcache exited ({self.proc.returncode}):\n{self.tail()}")
            st = self.status()
            if st and len(st.get("ready", [])) >= self.number:
                return (time.perf_counter() - t0) * 1e3
            time.sleep(0.1)
        raise RuntimeError(f"the VM cache did not fill in {FILL_TIMEOUT} s: {self.status()}\n{self.tail()}")

    def tail(self, n: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def stop(self) -> int | None:
        """SIGTERM, then its exit status (None: it had to be killed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.log.close()
                return None
        self.log.close()
        return self.proc.returncode


def log_size(cd: PrivateContainerd) -> int:
    try:
        return (cd.dir / "containerd.log").stat().st_size
    except OSError:
        return 0


def log_slice(cd: PrivateContainerd, start: int, end: int | None) -> str:
    with open(cd.dir / "containerd.log", "rb") as f:
        f.seek(start)
        data = f.read() if end is None else f.read(end - start)
    return data.decode(errors="replace")


def check_origin(column: str, text: str) -> tuple[str, str | None]:
    """(the origin the shim logged, a problem or None) of one sandvm run's log slice."""
    found = ORIGIN.findall(text)
    origin = found[-1] if found else "?"
    want = {"cold": "cold", "template": "template", "cache": "cache"}[column]
    problem = None
    if origin != want:
        why = [line.strip()[:400] for line in text.splitlines()
               if "booting cold" in line or "no VM from the cache" in line or "booting one" in line]
        problem = f"{column} run: the shim logged origin {origin!r}, not {want!r}" + (f": {why}" if why else "")
    elif column == "cache" and "took a VM from the cache" not in text:
        problem = "cache run: no 'took a VM from the cache' line"
    elif column == "template" and "booting cold" in text:
        problem = "template run: a 'booting cold' line beside origin=template"
    return origin, problem


STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z\s+[A-Z]+\s+(.*)$")
MARKS = [("shim started", "shim"), ("sandbox running", "vm"), ("container created", "created"),
         ("process exited", "exited"), ("shim exits", "end")]


def phases(text: str) -> dict[str, float]:
    """Where one sandvm run's time went, ms, from the shim's own log timestamps: shim start to
    its VM ready (`vm`), the container made in the guest (`create`), `true` started to its exit
    reported (`run`), delete to the shim's exit (`teardown`)."""
    t: dict[str, float] = {}
    for line in text.splitlines():
        m = STAMP.match(line)
        if not m:
            continue
        for needle, key in MARKS:
            if m.group(2).startswith(needle) and key not in t:
                t[key] = datetime.fromisoformat(m.group(1)).timestamp() * 1e3
    out = {}
    for name, a, b in (("vm", "shim", "vm"), ("create", "vm", "created"), ("run", "created", "exited"),
                       ("teardown", "exited", "end"), ("in_shim", "shim", "end")):
        if a in t and b in t:
            out[name] = round(t[b] - t[a], 1)
    return out


def stop_container(cd: PrivateContainerd, cid: str) -> None:
    cd.ctr("tasks", "kill", "-s", "KILL", cid, check=False)
    for _ in range(600):
        if task_status(cd, cid) in ("STOPPED", ""):
            break
        time.sleep(0.2)
    cd.ctr("tasks", "delete", cid, check=False, timeout=120)
    cd.ctr("containers", "delete", cid, check=False, timeout=60)


def pods_pss(cd: PrivateContainerd, runtime_args: list[str], tag: str, n: int, column: str,
             problems: list[str]) -> dict:
    """N `sleep` containers of one config, one after another; PSS by process name."""
    ids = [f"{tag}{i}" for i in range(n)]
    origins: dict[str, int] = {}
    t0 = time.perf_counter()
    try:
        for cid in ids:
            cd.used.append(cid)
            at = log_size(cd)
            cd.ctr("run", "--detach", *runtime_args, IMAGE, cid, "sleep", "3600")
            for _ in range(300):
                if task_status(cd, cid) == "RUNNING":
                    break
                time.sleep(0.2)
            else:
                raise RuntimeError(f"{cid} never ran: {task_status(cd, cid)!r}")
            time.sleep(0.5)
            origin, problem = check_origin(column, log_slice(cd, at, None))
            origins[origin] = origins.get(origin, 0) + 1
            if problem:
                problems.append(f"PSS {cid}: {problem}")
        start_s = (time.perf_counter() - t0)
        time.sleep(3)  # the last guest's and shim's first allocations settle
        kib: dict[str, int] = {}
        count: dict[str, int] = {}
        for pid, name in cd.processes():
            kib[name] = kib.get(name, 0) + pss_kib(pid)
            count[name] = count.get(name, 0) + 1
    finally:
        for cid in ids:
            if cid in cd.ids("containers"):
                stop_container(cd, cid)
        for _ in range(600):  # shims exit, VMs end
            if not cd.processes():
                break
            time.sleep(0.2)
    return {"pods": n, "start_all_s": round(start_s, 1), "origins": origins,
            "total_mib": round(sum(kib.values()) / 1024, 1),
            "qemu_mib": round(kib.get("qemu-system-x86_64", 0) / 1024, 1),
            "by_process_mib": {k: round(v / 1024, 1) for k, v in sorted(kib.items())},
            "processes": count}


def median_phases(runs: list[dict]) -> dict | None:
    keys = sorted({k for r in runs for k, v in r.items() if v is not None})
    return {k: round(statistics.median(r[k] for r in runs if r.get(k) is not None), 1) for k in keys} or None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--columns", default=",".join(COLUMNS),
                    help=f"comma-separated subset of {','.join(COLUMNS)} (runc is the baseline)")
    ap.add_argument("--pods", type=int, default=10, help="pods per config for the PSS phase (0: skip it)")
    ap.add_argument("--bin-dir", type=Path, default=ROOT / "target" / "release",
                    help="sandvm, sandvm-vmcache and containerd-shim-sandvm-v2 (default target/release)")
    ap.add_argument("--cache-number", type=int, default=1, help="vm_cache_number of the cache column")
    ap.add_argument("--accelerator", default="tcg", choices=["tcg", "auto", "kvm"])
    ap.add_argument("--keep-logs", action="store_true",
                    help="copy containerd's and the cache's logs to target/bench/start-*.log")
    a = ap.parse_args()
    columns = [c for c in a.columns.split(",") if c]
    if bad := [c for c in columns if c not in COLUMNS]:
        sys.exit(f"unknown columns {bad}: pick from {COLUMNS}")
    bins = a.bin_dir.resolve()
    for b in ("sandvm", "sandvm-vmcache", "containerd-shim-sandvm-v2"):
        if not (bins / b).exists():
            sys.exit(f"{bins / b} is missing: run `make build`")
    guest = ROOT / "build" / "guest"
    need_9p = "template" in columns or a.pods > 0
    for f in ["vmlinuz", "initramfs.cpio.gz"] + (["vmlinuz-9p", "initramfs-9p.cpio.gz"] if need_9p else []):
        if not (guest / f).exists():
            sys.exit(f"{guest / f} is missing: run `make guest`")

    subprocess.run(["bash", str(ROOT / "scripts/build-oci-image.sh")], check=True)
    tmp = Path(f"/dev/shm/svb-start-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    template_dir = tmp / "template"
    cd = PrivateContainerd([bins])
    sv = Sandvm(bins / "sandvm", cd.dir / "sv")
    cache: VmCache | None = None
    problems: list[str] = []
    res: dict = {}
    made_template = False
    try:
        cd.ctr("images", "import", str(ROOT / "build/oci/busybox.oci.tar"))
        cfg = {"cold": local_config(SHIPPED["cold"], cd.dir / "cold.toml", a.accelerator)}
        t = local_config(SHIPPED["template"], cd.dir / "template.toml", a.accelerator)
        text = t.read_text()
        if SHIPPED_TEMPLATE_PATH not in text:
            sys.exit(f"{SHIPPED['template']} lacks {SHIPPED_TEMPLATE_PATH}")
        t.write_text(text.replace(SHIPPED_TEMPLATE_PATH, f'template_path = "{template_dir}"'))
        cfg["template"] = t
        endpoint = cd.dir / "vmc.sock"
        text = cfg["cold"].read_text()
        if "[factory]\n" not in text:
            sys.exit(f"{SHIPPED['cold']} has no [factory] table")
        cfg["cache"] = cd.dir / "cache.toml"
        cfg["cache"].write_text(text.replace(
            "[factory]\n", f'[factory]\nvm_cache_number = {a.cache_number}\nvm_cache_endpoint = "{endpoint}"\n'))
        runtime_args = {"runc": ["--runtime", RUNC]}
        for c in ("cold", "template", "cache"):
            runtime_args[c] = ["--runtime", SANDVM, "--runtime-config-path", str(cfg[c])]

        if need_9p:
            t0 = time.perf_counter()
            sv("template", "create", "--config", str(cfg["template"]))
            made_template = True
            res["template_create_ms"] = round((time.perf_counter() - t0) * 1e3, 1)
            print(f"template made in {res['template_create_ms']:.0f} ms", file=sys.stderr)
        refill_ms: list[float] = []
        if "cache" in columns:
            cache = VmCache(bins / "sandvm-vmcache", cfg["cache"], sv.state, endpoint, a.cache_number,
                            cd.dir / "vmcache.log")
            res["cache_first_fill_ms"] = round(cache.wait_full(), 1)
            listed = [r for r in sv.list() if r.get("origin") == "cache"]
            if len(listed) < a.cache_number:
                problems.append(f"the cache is full by its status op, but `sandvm list` shows {listed}")
            print(f"cache filled in {res['cache_first_fill_ms']:.0f} ms", file=sys.stderr)

        n = 0
        phase_ms: dict[str, list[dict]] = {}
        origins: dict[str, dict[str, int]] = {c: {} for c in columns if c != "runc"}

        def run(column: str) -> float:
            nonlocal n
            if cache is not None:
                refill_ms.append(cache.wait_full())  # untimed: no refill during any timed run
            n += 1
            cid = f"s{n}"
            cd.used.append(cid)
            at = log_size(cd)
            t0 = time.perf_counter()
            r = cd.ctr("run", "--rm", *runtime_args[column], IMAGE, cid, "true")
            ms = (time.perf_counter() - t0) * 1e3
            if r.stdout.strip():
                raise RuntimeError(f"unexpected output from `true` under {column}: {r.stdout!r}")
            if column != "runc":
                time.sleep(0.2)  # containerd relays the shim's last lines
                text = log_slice(cd, at, None)
                ph = phases(text)
                ph["outside_shim"] = round(ms - ph["in_shim"], 1) if "in_shim" in ph else None
                phase_ms.setdefault(column, []).append(ph)
                origin, problem = check_origin(column, text)
                origins[column][origin] = origins[column].get(origin, 0) + 1
                if problem:
                    problems.append(f"{cid}: {problem}")
                    print(f"problem: {cid}: {problem}", file=sys.stderr)
            return ms

        for c in columns:
            run(c)  # warm-up: first shim start, page cache (a wrong origin is a problem here too)
        refill_ms.clear()
        origins = {c: {} for c in origins}
        phase_ms.clear()
        samples: dict[str, list[float]] = {c: [] for c in columns}
        for i in range(a.rounds):
            k = i % len(columns)
            for c in columns[k:] + columns[:k]:
                samples[c].append(run(c))
            print(f"round {i + 1}: " + ", ".join(f"{c} {samples[c][-1]:.0f} ms" for c in columns), file=sys.stderr)

        if cache is not None:
            rc = cache.stop()
            res["cache_server_exit"] = rc
            if rc != 0:
                problems.append(f"sandvm-vmcache did not exit 0 on SIGTERM ({rc}):\n{cache.tail()}")
            if cache.endpoint.exists():
                problems.append(f"the cache's endpoint {cache.endpoint} is left")
            for _ in range(300):
                if not cd.processes():
                    break
                time.sleep(0.2)

        if a.pods > 0:
            res["pss"] = {"template": pods_pss(cd, runtime_args["template"], "pt", a.pods, "template", problems),
                          "cold": pods_pss(cd, runtime_args["cold"], "pc", a.pods, "cold", problems)}
            p = res["pss"]
            p["template_over_cold"] = round(p["template"]["total_mib"] / p["cold"]["total_mib"], 3)
            p["qemu_template_over_cold"] = round(p["template"]["qemu_mib"] / p["cold"]["qemu_mib"], 3)
            print(f"PSS of {a.pods}: template {p['template']['total_mib']} MiB, cold {p['cold']['total_mib']} MiB",
                  file=sys.stderr)

        if made_template:
            sv("template", "delete", "--config", str(cfg["template"]), check=False)
        problems += cd.leftovers()
        left = [r for r in sv.list() if r.get("id")]
        if left:
            problems.append(f"sandboxes left in the shim's state root: {left}")
    finally:
        if cache is not None and cache.proc.poll() is None:
            cache.stop()
        if a.keep_logs:
            (ROOT / "target" / "bench").mkdir(parents=True, exist_ok=True)
            for f in ("containerd.log", "vmcache.log"):
                if (cd.dir / f).exists():
                    shutil.copy(cd.dir / f, ROOT / "target" / "bench" / f"start-{f}")
        cd.close()
        shutil.rmtree(tmp, ignore_errors=True)

    med = {c: statistics.median(s) for c, s in samples.items() if s}
    res = {
        "rounds": a.rounds,
        "image": IMAGE,
        "command": "ctr run --rm --runtime NAME [--runtime-config-path CONFIG] IMAGE ID true",
        "accelerator": a.accelerator,
        "cache_number": a.cache_number,
        "columns": {
            c: {
                "median_ms": round(med[c], 1),
                "min_ms": round(min(s), 1),
                "max_ms": round(max(s), 1),
                "ratio_to_runc": round(med[c] / med["runc"], 3) if "runc" in med else None,
                "ratio_to_cold": round(med[c] / med["cold"], 3) if "cold" in med else None,
                "origins": origins.get(c),
                "phases_median_ms": median_phases(phase_ms.get(c, [])),
            }
            for c, s in samples.items() if s
        },
        "template_over_cold": round(med["template"] / med["cold"], 3) if {"template", "cold"} <= med.keys() else None,
        "cache_over_cold": round(med["cache"] / med["cold"], 3) if {"cache", "cold"} <= med.keys() else None,
        "cache_refill_wait_ms": [round(x) for x in refill_ms],
        **res,
        "problems": problems,
        "samples": {c: [round(x, 1) for x in s] for c, s in samples.items()},
        "phase_samples": phase_ms,
    }
    out = ROOT / "target" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "start.json").write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    if problems:
        sys.exit("start bench: problems: " + "; ".join(problems))


if __name__ == "__main__":
    # SIGTERM unwinds like ^C, so the finally blocks stop containerd, the
    # cache server and every pod
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    main()
