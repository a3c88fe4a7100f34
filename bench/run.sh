#!/usr/bin/env bash
# make bench: side-by-side benchmarks. Results go to target/bench/ and are
# recorded by hand in docs/performance.md; bench/plot.py draws them all into
# docs/bench.png at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p target/bench

# QEMU's Python client and matplotlib (for the plot), from PyPI, in a private venv.
if [ ! -x bench/.venv/bin/python ] || ! bench/.venv/bin/python -c 'import qemu.qmp, matplotlib' 2>/dev/null; then
  python3 -m venv bench/.venv
  bench/.venv/bin/pip install -q -r bench/requirements.txt
fi

echo "== QMP throughput: qmp crate vs qemu.qmp"
bench/.venv/bin/python bench/qmp_bench.py

echo "== Launch overhead: start call to QMP negotiated, sandvm vs raw QEMU with the same argv"
python3 bench/launch_bench.py --rounds "${LAUNCH_ROUNDS:-20}"

echo "== Cold boot to guest shell: sandvm vs raw QEMU with the same argv"
python3 bench/boot_bench.py --rounds "${BOOT_ROUNDS:-5}"

echo "== Machines: q35 against microvm, time to guest shell"
python3 bench/boot_bench.py --rounds "${BOOT_ROUNDS:-5}" --config configs/qemu-x86_64.toml --vs configs/qemu-microvm.toml

echo "== VM templating: clone vs cold boot (time to shell, PSS of five)"
python3 bench/template_bench.py --rounds "${TEMPLATE_ROUNDS:-5}"

echo "== Snapshots: restore vs cold boot (time to shell), snapshot size vs guest memory"
python3 bench/snapshot_bench.py --rounds "${SNAPSHOT_ROUNDS:-5}"

echo "== Hotplug latency: from the call until the guest sees the change"
python3 bench/hotplug_bench.py --rounds "${HOTPLUG_ROUNDS:-5}"

echo "== Stop: graceful and forced, sandvm vs a plain script on raw QEMU"
python3 bench/stop_bench.py --rounds "${STOP_ROUNDS:-3}"

echo "== Density: N small sandboxes started at once, sandvm vs raw QEMU"
# shellcheck disable=SC2086 # DENSITY_N is a list of counts
python3 bench/density_bench.py --n ${DENSITY_N:-8 16} --memory "${DENSITY_MEMORY:-128}" --rounds "${DENSITY_ROUNDS:-1}"

echo "== Container start to exit: ctr run --rm IMG true through a private containerd, runc and sandvm"
python3 bench/ctr_bench.py --rounds "${CTR_ROUNDS:-20}" \
  --runtime "io.containerd.sandvm.v2=configs/sandvm-containerd.toml"

echo "== Fast starts: ctr run --rm IMG true cold, from a template and from the warm VM cache, against runc; PSS of N template pods against N cold pods"
python3 bench/start_bench.py --rounds "${START_ROUNDS:-5}" --pods "${START_PODS:-10}"

echo "== CRI: RunPodSandbox to the first ExecSync, cold against a template clone"
# Built by `make build` (the workspace, all targets); `cargo run -p sandvm-tests`
# would build it again with the package's own feature set.
"${CARGO_TARGET_DIR:-target}/release/examples/cri_bench" --rounds "${CRI_ROUNDS:-5}"

echo "== Plot: every result in target/bench/ -> docs/bench.png"
bench/.venv/bin/python bench/plot.py
