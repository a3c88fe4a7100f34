#!/usr/bin/env bash
# Install the system dependencies sandvm needs, idempotently: each step checks
# first and does nothing when its tool is already there.
# Runs as root, or through sudo when not root.
#
#   bash scripts/setup.sh [PART...]      (default: all)
#
# Parts (each names a set of steps; steps run once, in a fixed order):
#   base   what `make run` needs: the apt packages that build sandvm and the
#          test guest, QEMU 10 for x86_64 (bookworm-backports), virtiofsd
#   fuzz   what `make fuzz-build` needs: base's apt packages and cargo-fuzz
#   all    everything `make test` and `make bench` need: base, plus QEMU for
#          aarch64/ppc64le/s390x, swtpm, OVMF, containerd, runc and the CNI
#          plugins (Debian), nydusd, vhost-device-vsock, cargo-fuzz
#   or single steps: apt-base apt-extra virtiofsd nydusd vhost-device-vsock cargo-fuzz
#
# From nothing on the 2-core machine (apt measured in a fresh bookworm; the
# crates.io builds with other builds sharing the cores, so "about"; a second run
# of any step takes well under a second):
#   apt-base              about 1 minute (50 s; QEMU x86_64 is the bulk)
#   apt-extra             about 1.5 minutes (75 s: other QEMUs, swtpm, OVMF, containerd)
#   virtiofsd             about 2 minutes (113 s; 5.5 minutes on busy cores)
#   nydusd                about 8-10 minutes
#   vhost-device-vsock    about 3 minutes
#   cargo-fuzz            about 1.5 minutes
#
# Never starts, stops or reconfigures a system service: Debian's containerd
# package may enable (and, under systemd, start) the system containerd; tests
# start their own private one and never use /run/containerd/containerd.sock.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# ------------------------------------------------------------------ which steps
STEPS=(apt-base apt-extra virtiofsd nydusd vhost-device-vsock cargo-fuzz)
declare -A WANT=()
want() { for s in "$@"; do WANT[$s]=1; done; }
[ $# -eq 0 ] && set -- all
for part in "$@"; do
  case "$part" in
    base) want apt-base ;;
    fuzz) want apt-base cargo-fuzz ;;
    all) want "${STEPS[@]}" ;;
    apt-base | apt-extra | virtiofsd | nydusd | vhost-device-vsock | cargo-fuzz) want "$part" ;;
    vsock) want vhost-device-vsock ;;
    *)
      echo "setup: unknown part '$part' (base, fuzz, all, or a step: ${STEPS[*]})" >&2
      exit 2
      ;;
  esac
done
wanted() { [ -n "${WANT[$1]:-}" ]; }

# step_start NAME WHAT ESTIMATE / step_done NAME: say what a long step does,
# roughly how long it takes, and how long it took.
step_start() {
  STEP_T0=$(date +%s)
  echo "setup: $2 ($3)"
}
step_done() { echo "setup: $1 done in $(($(date +%s) - STEP_T0)) s"; }

# ------------------------------------------------------------------ apt
BACKPORTS=/etc/apt/sources.list.d/bookworm-backports.sources
# apt-base: build tools (libclang and clang for -sys crates' bindgen, pkg-config), build the
# guest (cpio, e2fsprogs, busybox, kmod; its whole bootable disk: syslinux and its
# MBR in syslinux-common, dosfstools, mtools), build virtiofsd (libseccomp, libcap-ng).
PKGS_BASE="libclang-dev clang pkg-config cpio e2fsprogs busybox-static kmod procps libseccomp-dev libcap-ng-dev"
PKGS_BASE="$PKGS_BASE syslinux syslinux-common dosfstools mtools"
QEMU_BASE="qemu-system-x86 qemu-utils"
QEMU_BASE_BINS="qemu-system-x86_64"
# apt-extra: the tests' TPM, UEFI, tap and netns tools, nydusd's build (cmake), the
# bench venv; containerd, runc and the CNI plugins for the container tests; gcc and
# static libc for the UDP forward test's echo server; the no-initrd guest kernel
# that `make guest` builds (Debian's kernel source and what building it takes;
# `make run` skips that kernel).
PKGS_EXTRA="swtpm swtpm-tools cmake ovmf iproute2 python3-venv containerd runc containernetworking-plugins protobuf-compiler
  gcc libc6-dev linux-source-6.1 make bc flex bison libelf-dev xz-utils"
QEMU_EXTRA="qemu-system-arm qemu-system-ppc qemu-system-s390x"
QEMU_EXTRA_BINS="qemu-system-aarch64 qemu-system-ppc64 qemu-system-s390x"

qemu_major() {
  local bin=$1
  command -v "$bin" >/dev/null 2>&1 || { echo 0; return; }
  "$bin" --version | sed -n 's/^QEMU emulator version \([0-9]*\)\..*/\1/p'
}

apt_step() {
  local pkgs="" qemu_pkgs="" qemu_bins="" missing="" qemu_missing=0 p b
  if wanted apt-base; then pkgs="$pkgs $PKGS_BASE"; qemu_pkgs="$qemu_pkgs $QEMU_BASE"; qemu_bins="$qemu_bins $QEMU_BASE_BINS"; fi
  if wanted apt-extra; then pkgs="$pkgs $PKGS_EXTRA"; qemu_pkgs="$qemu_pkgs $QEMU_EXTRA"; qemu_bins="$qemu_bins $QEMU_EXTRA_BINS"; fi
  [ -n "$pkgs$qemu_pkgs" ] || return 0

  for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
  done
  for b in $qemu_bins; do
    [ "$(qemu_major "$b")" -ge 10 ] 2>/dev/null || qemu_missing=1
  done
  if [ -z "$missing" ] && [ "$qemu_missing" -eq 0 ]; then
    echo "setup: system packages ready"
    return 0
  fi

  local what="installing with apt:${missing:- (nothing new)}"
  if [ "$qemu_missing" -eq 1 ]; then what="$what; QEMU 10 from bookworm-backports:$qemu_pkgs"; fi
  step_start apt "$what" "about 1 minute for the base, 1.5 more for the rest, from nothing"
  if [ "$qemu_missing" -eq 1 ] && [ ! -f "$BACKPORTS" ] &&
    ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "setup: adding bookworm-backports"
    $SUDO tee "$BACKPORTS" >/dev/null <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  fi
  export DEBIAN_FRONTEND=noninteractive
  # A fresh machine's package lists may be old or missing: update before installing.
  $SUDO apt-get update -q
  # shellcheck disable=SC2086 # word lists of package names
  if [ -n "$missing" ]; then
    $SUDO apt-get install -y -q --no-install-recommends $missing
  fi
  # shellcheck disable=SC2086 # word lists of package names
  if [ "$qemu_missing" -eq 1 ]; then
    $SUDO apt-get install -y -q --no-install-recommends -t bookworm-backports $qemu_pkgs
  fi
  local v
  for b in $qemu_bins; do
    v=$(qemu_major "$b")
    if [ "${v:-0}" -lt 10 ]; then
      echo "setup: $b is missing or older than QEMU 10" >&2
      exit 1
    fi
  done
  step_done apt
  echo "setup: system packages ready"
}

# ------------------------------------------------------------------ crates.io tools
# virtiofsd, nydusd and vhost-device-vsock, built from crates.io once per machine
# into a cache, then linked into the project's tools/ folder (not under version
# control). vhost-device-vsock needs no system library beyond libc.
TOOLS_CACHE=${SANDVM_TOOLS_CACHE:-$HOME/.cache/sandvm-tools}
VHOST_DEVICE_VSOCK_VERSION=0.3.0

# tool BIN ESTIMATE CARGO-INSTALL-ARGS...: build BIN into the cache unless it is
# there, then link it into tools/bin.
tool() {
  local bin=$1 estimate=$2
  shift 2
  mkdir -p "$TOOLS_CACHE" tools/bin
  if [ ! -x "$TOOLS_CACHE/bin/$bin" ]; then
    step_start "$bin" "building $bin from crates.io into $TOOLS_CACHE (once per machine)" "$estimate on 2 cores"
    cargo install --quiet --locked --root "$TOOLS_CACHE" "$@"
    step_done "$bin"
  fi
  ln -sfn "$TOOLS_CACHE/bin/$bin" "tools/bin/$bin"
  echo "setup: tools/bin/$bin ready"
}

# cargo-fuzz for `make fuzz-build` (which `make test`, and so CI, runs) and
# `make fuzz`: a cargo subcommand, so it goes where cargo finds it (~/.cargo/bin).
CARGO_FUZZ_VERSION=0.13.2
cargo_fuzz_step() {
  if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
    step_start cargo-fuzz "installing cargo-fuzz $CARGO_FUZZ_VERSION from crates.io (once)" "about 1.5 minutes"
    cargo install --quiet --locked --force --version "$CARGO_FUZZ_VERSION" cargo-fuzz
    step_done cargo-fuzz
  fi
  echo "setup: $(cargo fuzz --version) ready"
}

# ------------------------------------------------------------------ run
T0=$(date +%s)
apt_step
if wanted virtiofsd; then tool virtiofsd "about 2 minutes" virtiofsd; fi
if wanted nydusd; then tool nydusd "about 8-10 minutes" nydus-rs --features virtiofs; fi
if wanted vhost-device-vsock; then
  tool vhost-device-vsock "about 3 minutes" --version "$VHOST_DEVICE_VSOCK_VERSION" vhost-device-vsock
fi
if wanted cargo-fuzz; then cargo_fuzz_step; fi
if wanted apt-extra; then
  # Tests run their own containerd (tests/src/containerd/); say so when the
  # package left a system one running, and leave it alone.
  if [ -S /run/containerd/containerd.sock ]; then
    echo "setup: note: a system containerd listens on /run/containerd/containerd.sock; tests never use it"
  fi
fi
echo "setup: ready ($*) in $(($(date +%s) - T0)) s"
