#!/usr/bin/env python3
"""Container start to exit through containerd: `ctr run --rm IMG ID true`, per runtime.

A private containerd (as the tests start it, tests/src/containerd/: its own root,
state, sockets and namespace under /tmp, runc's state and cgroups apart from any
other; the system containerd is never used) runs the busybox test image
(scripts/build-oci-image.sh, imported with `ctr image import`). Each runtime
given runs `ctr run --rm --runtime NAME IMG bN true`, timed from the call until
`ctr` returns (create, start, exit, delete: what a user waits for). Rounds are
interleaved, and the order of the runtimes turns each round (A B, B A, ...), so
that drift on the noisy host falls on all alike. One untimed warm-up run per
runtime comes first.

Columns: runc (`io.containerd.runc.v2`, containerd's default) always, first, as
the baseline; another runtime is a column by its name, e.g.
  --runtime io.containerd.sandvm.v2=configs/sandvm-containerd.toml
(`NAME=CONFIG` passes `--runtime-config-path CONFIG`; the shim is found on
containerd's PATH, which starts with --path folders, default target/release).

After the rounds: no task, container, shim or mount is left (checked, and
reported as problems, not hidden). Prints medians and each runtime's ratio to
runc as JSON, and writes target/bench/ctr.json.

With sandvm's runtime (io.containerd.sandvm.v2) as a column, what a sandbox
costs beside the container is measured once, on a running `sleep`: the PSS of
the shim, of QEMU and of virtiofsd on the host, and the RSS of the agent in
the guest (read by a process of a container without a pid namespace of its
own, which sees the guest's processes). Under "sandvm_costs" in the JSON.

Usage: python3 bench/ctr_bench.py [--rounds 20] [--runtime NAME[=CONFIG]]... [--path DIR]...
"""

import argparse
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNC = "io.containerd.runc.v2"
SANDVM = "io.containerd.sandvm.v2"
IMAGE = "sandvm.test/busybox:latest"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DISABLED_PLUGINS = [
    "io.containerd.grpc.v1.cri",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.native",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.internal.v1.opt",
    "io.containerd.internal.v1.tracing",
    "io.containerd.tracing.processor.v1.otlp",
]


def need(binary: str) -> str:
    p = shutil.which(binary, path=SYSTEM_PATH)
    if p is None:
        sys.exit(f"{binary} is missing: run `make setup`")
    return p


class PrivateContainerd:
    """containerd with everything under one short folder in /tmp, as the tests run it."""

    def __init__(self, path_dirs: list[Path]):
        for b in ("containerd", "ctr", "runc", "containerd-shim-runc-v2"):
            need(b)
        self.dir = Path(f"/tmp/sctd-bench-{os.getpid()}")
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.ns = f"bench{os.getpid()}"
        self.used: list[str] = []  # container ids run, for their shim sockets
        self.address = self.dir / "c.sock"
        d = self.dir
        quoted = ", ".join(json.dumps(p) for p in DISABLED_PLUGINS)
        (d / "config.toml").write_text(
            f'version = 2\nroot = "{d}/root"\nstate = "{d}/state"\n'
            f"disabled_plugins = [{quoted}]\n"
            f'[grpc]\n  address = "{d}/c.sock"\n[ttrpc]\n  address = "{d}/t.sock"\n'
            f'[debug]\n  address = "{d}/d.sock"\n  level = "info"\n[metrics]\n  address = ""\n')
        env = dict(os.environ)
        env["PATH"] = ":".join([str(p) for p in path_dirs] + [SYSTEM_PATH])
        env["SANDVM_STATE_DIR"] = str(d / "sv")
        self.log = open(d / "containerd.log", "wb")
        self.proc = subprocess.Popen([need("containerd"), "--config", str(d / "config.toml")],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=env)
        booted = threading.Event()
        threading.Thread(target=self._copy_log, args=(booted,), daemon=True).start()
        if not booted.wait(60):
            self.close()
            sys.exit(f"containerd did not boot; see {d / 'containerd.log'}")

    def _copy_log(self, booted: threading.Event) -> None:
        for line in self.proc.stderr:
            self.log.write(line)
            self.log.flush()
            if b"containerd successfully booted" in line:
                booted.set()

    def ctr(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run([need("ctr"), "--address", str(self.address), "--namespace", self.ns, *args],
                           capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
        return r

    def ids(self, what: str) -> list[str]:
        return self.ctr(what, "list", "--quiet", check=False).stdout.split()

    def shim_pids(self) -> list[int]:
        key = f"{self.dir}/".encode()  # with the /: sctd-bench-1 never matches sctd-bench-10
        out = []
        for p in Path("/proc").iterdir():
            if p.name.isdigit() and int(p.name) not in (os.getpid(), self.proc.pid):
                try:
                    if key in (p / "cmdline").read_bytes():
                        out.append(int(p.name))
                except OSError:
                    pass
        return out

    def processes(self) -> list[tuple[int, str]]:
        """(pid, command name) of the processes mentioning the folder (shims, QEMU, daemons)."""
        out = []
        for pid in self.shim_pids():
            try:
                argv0 = (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            out.append((pid, os.path.basename(argv0.decode(errors="replace"))))
        return out

    def mounts(self) -> list[str]:
        key = f"{self.dir}/"
        return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
                if line.split()[4].startswith(key)]

    def leftovers(self) -> list[str]:
        problems = []
        if t := self.ids("tasks"):
            problems.append(f"tasks left: {t}")
        if c := self.ids("containers"):
            problems.append(f"containers left: {c}")
        if p := self.shim_pids():
            problems.append(f"processes left mentioning {self.dir}: {p}")
        if m := self.mounts():
            problems.append(f"mounts left: {m}")
        return problems

    def close(self) -> None:
        """Delete what is left, stop containerd, kill shims, unmount, remove the folder."""
        if self.proc.poll() is None:
            for t in self.ids("tasks"):
                self.ctr("tasks", "delete", "--force", t, check=False, timeout=60)
            for c in self.ids("containers"):
                self.ctr("containers", "delete", c, check=False, timeout=60)
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in self.shim_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for m in sorted(self.mounts(), key=len, reverse=True):
            subprocess.run(["umount", "-l", m], capture_output=True)
        # A shim listens on /run/containerd/s/<sha256 of "<address>/<namespace>/<id>">.
        for cid in self.used:
            sock = Path("/run/containerd/s") / hashlib.sha256(f"{self.address}/{self.ns}/{cid}".encode()).hexdigest()
            sock.unlink(missing_ok=True)
        shutil.rmtree(Path("/run/containerd/runc") / self.ns, ignore_errors=True)
        for cg in Path("/sys/fs/cgroup").glob(f"*/{self.ns}"):
            for sub in sorted(cg.glob("**/"), key=lambda p: len(str(p)), reverse=True):
                try:
                    sub.rmdir()
                except OSError:
                    pass
        self.log.close()
        if not self.mounts():
            shutil.rmtree(self.dir, ignore_errors=True)


def pss_kib(pid: int) -> int:
    """A process's proportional set size, KiB (0 when it is gone)."""
    try:
        for line in (Path("/proc") / str(pid) / "smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


# Run in the guest's pid namespace: the agent's RSS (its launchers carry __launch).
AGENT_RSS = ("for p in /proc/[0-9]*; do "
             "[ \"$(cat $p/comm 2>/dev/null)\" = sandvm-agent ] || continue; "
             "tr '\\0' ' ' < $p/cmdline | grep -q __launch && continue; "
             "awk '/^VmRSS:/ { print $2 }' $p/status; done")


def task_status(cd: PrivateContainerd, cid: str) -> str:
    """The status `ctr tasks list` shows for `cid` ("" when none)."""
    for line in cd.ctr("tasks", "list", check=False).stdout.splitlines():
        f = line.split()
        if f and f[0] == cid:
            return f[-1]
    return ""


def sandbox_costs(cd: PrivateContainerd, extra: list[str]) -> dict:
    """What a running sandvm sandbox costs beside its container (see the module doc)."""
    img = cd.dir / "imgroot"
    img.mkdir(exist_ok=True)
    cd.ctr("images", "mount", IMAGE, str(img))
    try:
        spec = json.loads(cd.ctr("oci", "spec").stdout)
        spec["root"] = {"path": str(img), "readonly": True}
        spec["process"]["args"] = ["sleep", "600"]
        spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"] if n["type"] != "pid"]
        f = cd.dir / "cost-spec.json"
        f.write_text(json.dumps(spec))
        cd.used.append("cost")
        cd.ctr("run", "--detach", "--runtime", SANDVM, *extra, "--config", str(f), "cost")
        try:
            time.sleep(2)  # let the shim's and the guest's first allocations settle
            kib: dict[str, int] = {}
            for pid, name in cd.processes():
                key = {"containerd-shim-sandvm-v2": "shim_pss_kib", "qemu-system-x86_64": "qemu_pss_kib",
                       "virtiofsd": "virtiofsd_pss_kib"}.get(name)
                if key:
                    kib[key] = kib.get(key, 0) + pss_kib(pid)
            rss = cd.ctr("tasks", "exec", "--exec-id", "rss", "cost", "sh", "-c", AGENT_RSS).stdout.split()
            kib["agent_rss_kib"] = int(rss[0]) if rss else 0
            return kib
        finally:
            cd.ctr("tasks", "kill", "-s", "KILL", "cost", check=False)
            for _ in range(300):
                if task_status(cd, "cost") in ("STOPPED", ""):
                    break
                time.sleep(0.2)
            cd.ctr("tasks", "delete", "cost", check=False)
            cd.ctr("containers", "delete", "cost", check=False)
            for _ in range(300):  # the shim exits and containerd cleans up after the delete
                if not cd.processes():
                    break
                time.sleep(0.2)
    finally:
        cd.ctr("images", "unmount", str(img), check=False)


def parse_runtime(spec: str) -> tuple[str, list[str]]:
    name, _, config = spec.partition("=")
    extra = ["--runtime-config-path", str(Path(config).resolve())] if config else []
    return name, extra


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--runtime", action="append", default=[],
                    help="another runtime as a column: NAME or NAME=CONFIG (runc is always the first)")
    ap.add_argument("--path", action="append", type=Path, default=None,
                    help="folders first on containerd's PATH, where it finds shims (default target/release)")
    args = ap.parse_args()
    runtimes = [(RUNC, [])] + [parse_runtime(s) for s in args.runtime if s != RUNC]
    path_dirs = args.path if args.path is not None else [ROOT / "target" / "release"]

    subprocess.run(["bash", str(ROOT / "scripts/build-oci-image.sh")], check=True)
    cd = PrivateContainerd([p.resolve() for p in path_dirs])
    n = 0
    try:
        cd.ctr("images", "import", str(ROOT / "build/oci/busybox.oci.tar"))

        def run(name: str, extra: list[str]) -> float:
            nonlocal n
            n += 1
            cd.used.append(f"b{n}")
            t0 = time.perf_counter()
            r = cd.ctr("run", "--rm", "--runtime", name, *extra, IMAGE, f"b{n}", "true")
            ms = (time.perf_counter() - t0) * 1e3
            if r.stdout.strip():
                raise RuntimeError(f"unexpected output from `true` under {name}: {r.stdout!r}")
            return ms

        for name, extra in runtimes:
            run(name, extra)  # warm-up: first shim start, page cache
        samples: dict[str, list[float]] = {name: [] for name, _ in runtimes}
        for i in range(args.rounds):
            k = i % len(runtimes)
            for name, extra in runtimes[k:] + runtimes[:k]:
                samples[name].append(run(name, extra))
            print(f"round {i + 1}: " + ", ".join(f"{nm.removeprefix('io.containerd.')} {samples[nm][-1]:.0f} ms"
                                                 for nm, _ in runtimes), file=sys.stderr)
        costs = {name: sandbox_costs(cd, extra) for name, extra in runtimes if name == SANDVM}
        problems = cd.leftovers()
    finally:
        cd.close()

    base = statistics.median(samples[RUNC])
    res = {
        "rounds": args.rounds,
        "image": IMAGE,
        "command": "ctr run --rm --runtime NAME IMAGE ID true",
        "runtimes": {
            name: {
                "median_ms": round(statistics.median(s), 1),
                "min_ms": round(min(s), 1),
                "max_ms": round(max(s), 1),
                "ratio_to_runc": round(statistics.median(s) / base, 3),
            }
            for name, s in samples.items()
        },
        "sandvm_costs": costs.get(SANDVM),
        "problems": problems,
        "samples": samples,
    }
    out = ROOT / "target" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "ctr.json").write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps({k: v for k, v in res.items() if k != "samples"}))
    if problems:
        sys.exit("ctr bench: left behind: " + "; ".join(problems))


if __name__ == "__main__":
    main()
