#!/usr/bin/env bash
# make fuzz: run every cargo-fuzz target for FUZZ_SECONDS (default 60) each.
# cargo-fuzz needs nightly features; RUSTC_BOOTSTRAP lets the stable toolchain
# here provide them.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
SECONDS_EACH=${FUZZ_SECONDS:-60}
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
for t in $(cargo fuzz list); do
  echo "== fuzz $t for ${SECONDS_EACH}s"
  RUSTC_BOOTSTRAP=1 cargo fuzz run "$t" -- -max_total_time="$SECONDS_EACH"
done
