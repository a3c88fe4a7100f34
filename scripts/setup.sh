#!/usr/bin/env bash
# Install every system dependency sandvm needs, idempotently.
# Runs as root, or through sudo when not root.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

BACKPORTS=/etc/apt/sources.list.d/bookworm-backports.sources
PKGS_BPO="qemu-system-x86 qemu-system-arm qemu-system-ppc qemu-system-s390x qemu-utils"
PKGS="libselinux1-dev libclang-dev clang pkg-config cpio e2fsprogs busybox-static swtpm swtpm-tools libseccomp-dev libcap-ng-dev cmake ovmf iproute2 python3-venv procps kmod"

need_apt=0
if [ ! -f "$BACKPORTS" ] && ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  echo "setup: adding bookworm-backports"
  $SUDO tee "$BACKPORTS" >/dev/null <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  need_apt=1
fi

qemu_major() {
  local bin=$1
  command -v "$bin" >/dev/null 2>&1 || { echo 0; return; }
  "$bin" --version | sed -n 's/^QEMU emulator version \([0-9]*\)\..*/\1/p'
}

missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
qemu_ok=1
for b in qemu-system-x86_64 qemu-system-aarch64 qemu-system-ppc64 qemu-system-s390x; do
  [ "$(qemu_major $b)" -ge 10 ] 2>/dev/null || qemu_ok=0
done

if [ -n "$missing" ] || [ "$qemu_ok" -eq 0 ]; then
  need_apt=1
fi

if [ "$need_apt" -eq 1 ]; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  if [ -n "$missing" ]; then
    echo "setup: installing$missing"
    $SUDO apt-get install -y -q --no-install-recommends $missing
  fi
  if [ "$qemu_ok" -eq 0 ]; then
    echo "setup: installing QEMU 10 from bookworm-backports"
    $SUDO apt-get install -y -q --no-install-recommends -t bookworm-backports $PKGS_BPO
  fi
fi

for b in qemu-system-x86_64 qemu-system-aarch64 qemu-system-ppc64 qemu-system-s390x; do
  v=$(qemu_major $b)
  if [ "${v:-0}" -lt 10 ]; then
    echo "setup: $b is missing or older than QEMU 10" >&2
    exit 1
  fi
done
echo "setup: system packages ready"

# virtiofsd and nydusd, built from crates.io once per machine into a cache, then
# linked into the project's tools/ folder (not under version control).
TOOLS_CACHE=${SANDVM_TOOLS_CACHE:-$HOME/.cache/sandvm-tools}
mkdir -p "$TOOLS_CACHE" tools/bin
if [ ! -x "$TOOLS_CACHE/bin/virtiofsd" ]; then
  echo "setup: building virtiofsd from crates.io (a few minutes, once)"
  cargo install --quiet --locked --root "$TOOLS_CACHE" virtiofsd
fi
if [ ! -x "$TOOLS_CACHE/bin/nydusd" ]; then
  echo "setup: building nydusd from crates.io (about 8 minutes on 2 cores, once)"
  cargo install --quiet --locked --root "$TOOLS_CACHE" nydus-rs --features virtiofs
fi
for b in virtiofsd nydusd; do
  ln -sfn "$TOOLS_CACHE/bin/$b" "tools/bin/$b"
done
echo "setup: tools ready in tools/bin (virtiofsd, nydusd)"

# cargo-fuzz for `make fuzz-build` (which `make test`, and so CI, runs) and
# `make fuzz`: a cargo subcommand, so it goes where cargo finds it (~/.cargo/bin).
CARGO_FUZZ_VERSION=0.13.2
if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  echo "setup: installing cargo-fuzz $CARGO_FUZZ_VERSION from crates.io (about 2 minutes, once)"
  cargo install --quiet --locked --force --version "$CARGO_FUZZ_VERSION" cargo-fuzz
fi
echo "setup: $(cargo fuzz --version) ready"
