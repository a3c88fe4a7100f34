#!/usr/bin/env bash
# The cargo-fuzz targets in fuzz/ (a standalone workspace, target dir fuzz/target).
#
#   scripts/fuzz.sh build   build every target (make fuzz-build; make test runs it, so CI does)
#   scripts/fuzz.sh         seed the corpora, then run every target for FUZZ_SECONDS
#                           (default 60) each (make fuzz); stops at the first crash
#
# cargo-fuzz needs nightly features (-Zsanitizer, sancov passes); RUSTC_BOOTSTRAP=1
# lets the machine's stable toolchain provide them. Build and run use the same
# flags (cargo-fuzz's defaults: release, debug assertions, AddressSanitizer), so
# `make fuzz` after `make test` starts at once. FUZZ_TARGETS narrows the run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/fuzz"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: cargo-fuzz is missing; run \`make setup\`" >&2
  exit 1
fi

if [ "${1:-run}" = build ]; then
  start=$(date +%s)
  cargo fuzz build
  echo "fuzz: built $(cargo fuzz list | tr '\n' ' ')in $(($(date +%s) - start)) s"
  exit 0
fi

# Seeds: every bad config (testdata/bad/, one per kind of bad value), the good
# configs we ship, and Kata's own file; for QMP, one line of each kind.
seed=corpus/config_load
mkdir -p "$seed" corpus/qmp_parse
cp "$root"/crates/runtime/src/config/testdata/bad/*.toml "$seed"/
cp "$root"/crates/runtime/src/config/testdata/kata-configuration-qemu.toml "$seed"/
for f in "$root"/configs/*.toml; do cp "$f" "$seed/good-$(basename "$f")"; done
printf '%s' '{"QMP": {"version": {"qemu": {"micro": 2, "minor": 0, "major": 10}, "package": ""}, "capabilities": ["oob"]}}' >corpus/qmp_parse/greeting
printf '%s' '{"return": {}, "id": 1}' >corpus/qmp_parse/return
printf '%s' '{"error": {"class": "GenericError", "desc": "x"}, "id": 2}' >corpus/qmp_parse/error
printf '%s' '{"event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}, "timestamp": {"seconds": 1, "microseconds": 2}}' >corpus/qmp_parse/event

SECONDS_EACH=${FUZZ_SECONDS:-60}
for t in ${FUZZ_TARGETS:-$(cargo fuzz list)}; do
  echo "== fuzz $t for ${SECONDS_EACH}s (crashes land in fuzz/artifacts/$t/)"
  cargo fuzz run "$t" -- -max_total_time="$SECONDS_EACH"
done
