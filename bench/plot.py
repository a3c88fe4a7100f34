#!/usr/bin/env python3
"""One figure of every benchmark's medians: docs/bench.png.

Reads each JSON that the benchmarks wrote into target/bench/ and draws one
panel per measure: sandvm (or the thing under test) beside its baseline, with
the ratio over each pair. A JSON this script does not know is listed and
skipped; a missing one is simply not drawn.

Usage: bench/.venv/bin/python bench/plot.py [--dir target/bench] [--out docs/bench.png]
"""

import argparse
import json
import math
import sys
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
A_COLOR, B_COLOR = "#3b6fb6", "#b0b0b0"


def panel(title, unit, groups, a_name, b_name, ratio_fmt="{:.2f}×", note=None, lower_is_better=True,
          value_fmt="{:,.0f}"):
    """groups: [(label, a, b)]; b may be None (no baseline for that group)."""
    return {"title": title, "unit": unit, "groups": groups, "a": a_name, "b": b_name,
            "ratio_fmt": ratio_fmt, "note": note, "lower": lower_is_better, "value_fmt": value_fmt}


def from_boot(d):
    q, g = d["qmp_ready_ms"], d["guest_ready_ms"]
    return [panel("Launch: start call to QMP ready", "ms", [("QMP ready", q["sandvm_median"], q["raw_median"])],
                  "sandvm", "raw QEMU", note=f"{d['rounds']} rounds"),
            panel("Cold boot: start call to guest ready", "ms",
                  [("guest ready", g["sandvm_median"], g["raw_median"])],
                  "sandvm", "raw QEMU", note=f"{d['rounds']} rounds")]


def from_launch(d):
    q = d["qmp_ready_ms"]
    return [panel("Launch: start call to QMP ready", "ms", [("QMP ready", q["sandvm_median"], q["raw_median"])],
                  "sandvm", "raw QEMU", note=f"{d['rounds']} launch-only rounds")]


def machine(cfg: str) -> str:
    return {"qemu-x86_64": "q35", "qemu-microvm": "microvm"}.get(Path(cfg).stem, Path(cfg).stem)


def from_machines(d):
    g = d["guest_ready_ms"]
    return [panel("q35 vs microvm, time to guest ready", "ms",
                  [("guest ready", g["b_median"], g["a_median"])],
                  machine(d["b"]), machine(d["a"]),
                  note=f"{d['rounds']} rounds")]


def from_template(d):
    return [
        panel("Templating: time to shell", "ms",
              [("time to shell", d["clone_shell_ms_median"], d["cold_shell_ms_median"])],
              "clone", "cold boot", note=f"{d['rounds']} rounds"),
        panel("Templating: PSS of five QEMUs", "MiB",
              [("PSS of 5", d["pss_5_clones_mib"], d["pss_5_cold_mib"])], "clones", "cold boots"),
    ]


def from_hotplug(d):
    s, r = d["guest_sees_median_ms"], d["call_returns_median_ms"]
    return [panel("Hotplug: call to guest sees it (no baseline)", "ms",
                  [(k, s[k], r[k]) for k in s], "guest sees it", "call returns",
                  ratio_fmt=None, note=f"{d['rounds']} rounds")]


def from_qmp(d):
    m = d["medians"]
    return [panel("QMP throughput (higher is better)", "ops/s",
                  [("sequential", m["ours_seq"]["ops_per_sec"], m["py_seq"]["ops_per_sec"]),
                   ("16 concurrent", m["ours_c16"]["ops_per_sec"], m["py_c16"]["ops_per_sec"]),
                   ("vs QEMU ceiling", m["ours_c16"]["ops_per_sec"], m["qemu_ceiling"]["ops_per_sec"])],
                  "qmp crate", "qemu.qmp / ceiling", note=f"{d['rounds']} rounds", lower_is_better=False)]


def from_stop(d):
    g, f = d["graceful_stop_ms"], d["force_stop_ms"]
    fb = g["fell_back_to_kill"]
    return [panel("Graceful stop: powerdown to reaped, folder gone", "ms",
                  [("graceful stop", g["sandvm_median"], g["raw_median"])], "sandvm", "raw QEMU + script",
                  note=f"{d['rounds']} rounds; fell back to a kill: sandvm {fb['sandvm']}, raw {fb['raw']}"),
            panel("Forced stop: SIGKILL to reaped, folder gone", "ms",
                  [("forced stop", f["sandvm_median"], f["raw_median"])], "sandvm", "raw QEMU + script",
                  note=f"{d['rounds']} rounds")]


def from_density(d):
    groups, fails = [], []
    for s in d["summary"]:
        groups.append((f"N={s['n']}", s["all_ready_ms"]["sandvm_median"] / 1e3, s["all_ready_ms"]["raw_median"] / 1e3))
        fails.append(f"N={s['n']}: {s['failures']['sandvm']}/{s['failures']['raw']}")
    o = d["summary"][-1]["sandvm_host_overhead_per_sandbox"]
    procs = o["processes_beyond_qemu"]
    held = f"{procs:g} process ({o['pss_kib'] / 1024:.1f} MiB PSS)" if procs else "no process"
    note = (f"{d['memory_mib']} MiB guests; failures sandvm/raw {', '.join(fails)}; "
            f"sandvm keeps beyond QEMU, per sandbox: {held}, {o['folder_bytes'] / 1024:.1f} KiB folder")
    return [panel("Density: N started at once, until all ready", "s", groups,
                  "sandvm", "raw QEMU", note=note, value_fmt="{:.1f}")]


def from_start(d):
    c = d["columns"]
    cold = c["cold"]["median_ms"]
    groups = [(label, c[k]["median_ms"], cold) for k, label in
              (("template", "template"), ("cache", "warm cache"), ("runc", "runc")) if k in c]
    out = [panel("Fast starts: ctr run --rm IMG true", "ms", groups, "template / cache / runc", "sandvm cold",
                 note=f"{d['rounds']} rounds, interleaved; problems: {len(d.get('problems', []))}")]
    p = d.get("pss")
    if p:
        t, k = p["template"], p["cold"]
        out.append(panel(f"Fast starts: PSS of {t['pods']} pods", "MiB",
                         [("all processes", t["total_mib"], k["total_mib"]),
                          ("QEMU", t["qemu_mib"], k["qemu_mib"])],
                         "template pods", "cold pods", note="QEMU, shims, daemons of the pods"))
    return out


def from_cri(d):
    h = d["handlers"]
    return [panel("CRI: RunPodSandbox to first ExecSync", "ms",
                  [("to first ExecSync", h["sandvm-template"]["median_ms"], h["sandvm"]["median_ms"]),
                   ("RunPodSandbox", h["sandvm-template"]["run_pod_sandbox_median_ms"],
                    h["sandvm"]["run_pod_sandbox_median_ms"])],
                  "template clone", "cold boot", note=f"{d['rounds']} rounds, host-network pods")]


READERS = {"launch": from_launch, "boot": from_boot, "machines": from_machines, "template": from_template,
           "hotplug": from_hotplug, "qmp": from_qmp, "stop": from_stop, "density": from_density,
           "start": from_start, "cri": from_cri}


def draw(ax, p) -> None:
    labels = [g[0] for g in p["groups"]]
    x = range(len(labels))
    w = 0.38
    a = [g[1] for g in p["groups"]]
    b = [g[2] if g[2] is not None else 0 for g in p["groups"]]
    ba = ax.bar([i - w / 2 for i in x], a, w, label=p["a"], color=A_COLOR)
    bb = ax.bar([i + w / 2 for i in x], b, w, label=p["b"], color=B_COLOR)
    top = max(a + b) or 1
    small = 6 if len(labels) > 3 else 7
    for bars in (ba, bb):
        for r in bars:
            h = r.get_height()
            ax.text(r.get_x() + r.get_width() / 2, h + top * 0.01, p["value_fmt"].format(h),
                    ha="center", va="bottom", fontsize=small)
    if p["ratio_fmt"]:
        for i, (_, va, vb) in enumerate(p["groups"]):
            if vb:
                ax.text(i, top * 1.12, p["ratio_fmt"].format(va / vb),
                        ha="center", va="bottom", fontsize=10, fontweight="bold")
    ax.set_ylim(0, top * 1.45)
    ax.set_xticks(list(x), labels, fontsize=8, rotation=0 if len(labels) < 4 else 20)
    ax.set_ylabel(p["unit"], fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title(p["title"], fontsize=9)
    ax.legend(fontsize=7, loc="upper left", frameon=False, ncol=2)
    ratio = None if not p["ratio_fmt"] else \
        f"ratio = {p['a']} / {p['b']}, {'lower' if p['lower'] else 'higher'} is better"
    foot = "; ".join(s for s in (p["note"], ratio) if s)
    t = ax.text(0.0, -0.16 if len(labels) < 4 else -0.3, textwrap.fill(foot, 62),
                transform=ax.transAxes, fontsize=6.5, va="top")
    t.set_in_layout(False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", type=Path, default=ROOT / "target" / "bench")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "bench.png")
    args = ap.parse_args()
    panels = []
    for f in sorted(args.dir.glob("*.json")):
        reader = READERS.get(f.stem)
        if reader is None:
            print(f"plot: skipping {f.name} (no panel for it)", file=sys.stderr)
            continue
        try:
            panels += reader(json.loads(f.read_text()))
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
            print(f"plot: skipping {f.name}: {e!r}", file=sys.stderr)
    # The launch-only benchmark has many more rounds than the boot runs: keep its panel.
    launch = [p for p in panels if p["title"].startswith("Launch")]
    if len(launch) > 1:
        panels = [p for p in panels if not p["title"].startswith("Launch") or "launch-only" in (p["note"] or "")]
    if not panels:
        sys.exit(f"plot: no benchmark results in {args.dir}")
    order = ["Launch", "Cold boot", "Graceful stop", "Forced stop", "Density", "q35",
             "Templating: time", "Templating: PSS", "Fast starts: ctr", "Fast starts: PSS", "CRI",
             "QMP", "Hotplug"]
    panels.sort(key=lambda p: next((i for i, k in enumerate(order) if p["title"].startswith(k)), len(order)))
    cols = 3
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(14, 3.5 * rows), squeeze=False)
    for ax, p in zip(axes.flat, panels):
        draw(ax, p)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle("sandvm benchmarks: medians, side by side with the baseline (TCG, 2-core shared host)", fontsize=11)
    fig.subplots_adjust(left=0.06, right=0.98, top=1 - 0.85 / (3.5 * rows), bottom=0.9 / (3.5 * rows),
                        wspace=0.3, hspace=0.62)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"plot: {len(panels)} panels -> {args.out}")


if __name__ == "__main__":
    main()
