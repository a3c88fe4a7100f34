#!/usr/bin/env bash
# Build sandvm's no-initrd guest kernel from Debian's kernel source package
# (linux-source-6.1), once per machine (see docs/guest.md).
#
#   bash scripts/build-kernel.sh         # what `make guest` runs (through build-guest.sh)
#   FORCE=1 bash scripts/build-kernel.sh # rebuild even when the cache has it
#
# Debian's cloud kernel (build/guest/vmlinuz) builds virtio-pci, virtio-blk,
# libnvdimm, nd_pmem, nfit and virtio-console as modules, so it needs the
# initramfs to reach its root. This kernel has every driver those boots need
# built in and no module support at all, so QEMU boots it with the root image
# alone, as Kata does: the kernel mounts root= (/dev/pmem0p1 with DAX on an
# nvdimm, /dev/vda1 on a virtio-blk disk) and runs the image's /sbin/init.
#
# How: `make tinyconfig` (x86_64), guest/kernel.config merged on top with
# scripts/kconfig/merge_config.sh, `make olddefconfig`, then a check that every
# option the fragment sets to y is =y (the build fails naming any that is not),
# then `make bzImage`. Measured on the 2-core machine: 4 min 39 s with idle cores
# (bzImage in 254 s, 490 CPU-seconds); 701 s with two other builds sharing the
# cores. The build prints its CPU-seconds, which do not depend on the load, and
# what they come to on idle cores.
#
# Cache: $SANDVM_TOOLS_CACHE (default ~/.cache/sandvm-tools, like the crates.io
# tools of scripts/setup.sh) / kernel/<source version>-<hash>/, the hash taken
# over guest/kernel.config and BUILD_REV below; a second run, or another
# checkout on the same machine, copies it in at once. Outputs in build/guest/:
#   vmlinuz-noinitrd          the bzImage
#   vmlinuz-noinitrd.config   its full .config
#   vmlinuz-noinitrd.release  its release string (uname -r in the guest)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FRAGMENT=$ROOT/guest/kernel.config
OUT=$ROOT/build/guest
SRC_PKG=linux-source-6.1
TARBALL=/usr/src/$SRC_PKG.tar.xz
# Bump when the way the kernel is built changes (not the fragment: it is hashed).
BUILD_REV=1
CACHE_ROOT=${SANDVM_TOOLS_CACHE:-$HOME/.cache/sandvm-tools}/kernel

log() { echo "build-kernel: $*" >&2; }
die() { echo "build-kernel: error: $*" >&2; exit 1; }

# ---------------------------------------------------------------- prerequisites
for t in make gcc bc flex bison perl xz tar sha256sum flock; do
  command -v "$t" >/dev/null 2>&1 || die "missing tool '$t' (run 'make setup')"
done
[ -f /usr/include/libelf.h ] || die "missing libelf headers (libelf-dev; run 'make setup')"
[ -f "$FRAGMENT" ] || die "missing $FRAGMENT"
SRC_VER=$(dpkg-query -W -f='${Version}' "$SRC_PKG" 2>/dev/null || true)
[ -n "$SRC_VER" ] && [ -f "$TARBALL" ] || die "$SRC_PKG is not installed ($TARBALL missing; run 'make setup')"

HASH=$( { cat "$FRAGMENT"; echo "rev $BUILD_REV"; } | sha256sum | cut -c1-12)
KEY=$SRC_VER-$HASH
CACHED=$CACHE_ROOT/$KEY

# copy SRC to DST unless they are equal (a temp file and a rename: never half a file)
install_one() {
  cmp -s "$1" "$2" && return 0
  cp -f "$1" "$2.tmp.$$" && mv -f "$2.tmp.$$" "$2"
}

# install the cached kernel into build/guest/ (copies, so a cleaned cache leaves
# the checkout working)
install_out() {
  mkdir -p "$OUT"
  install_one "$CACHED/vmlinuz" "$OUT/vmlinuz-noinitrd" || die "cannot copy $CACHED/vmlinuz to $OUT"
  install_one "$CACHED/config" "$OUT/vmlinuz-noinitrd.config" || die "cannot copy $CACHED/config to $OUT"
  install_one "$CACHED/release" "$OUT/vmlinuz-noinitrd.release" || die "cannot copy $CACHED/release to $OUT"
  log "vmlinuz-noinitrd $(cat "$CACHED/release") ready ($(stat -c %s "$OUT/vmlinuz-noinitrd") bytes, cached in $CACHED)"
}

cached() { [ "${FORCE:-0}" != 1 ] && [ -s "$CACHED/vmlinuz" ] && [ -s "$CACHED/release" ]; }

if cached; then install_out; exit 0; fi

mkdir -p "$CACHE_ROOT"
# One build per machine at a time (two checkouts may run `make guest` at once).
exec 9>"$CACHE_ROOT/.lock"
flock 9
if cached; then install_out; exit 0; fi
FORCE=0

rm -rf "$CACHE_ROOT"/.tmp.* # leftovers of a killed build (we hold the lock)
TMP=$(mktemp -d "$CACHE_ROOT/.tmp.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
T0=$SECONDS
log "building the no-initrd guest kernel from $SRC_PKG $SRC_VER into $CACHED"
log "(once per machine; about 12 minutes measured on 2 cores that other builds shared, less on idle ones)"

# ---------------------------------------------------------------- source
t0=$SECONDS
# Documentation is not needed, but for Documentation/Kconfig (Kconfig sources it).
tar -xJf "$TARBALL" -C "$TMP" --exclude="$SRC_PKG/Documentation/*/*" \
  || die "tar -xJf $TARBALL failed"
SRC=$TMP/$SRC_PKG
[ -f "$SRC/Makefile" ] || die "no $SRC_PKG/Makefile in $TARBALL"
log "source unpacked in $((SECONDS - t0)) s"

# ---------------------------------------------------------------- config
KMAKE=(make -C "$SRC" -s ARCH=x86_64)
"${KMAKE[@]}" tinyconfig >"$TMP/config.log" 2>&1 || die "make tinyconfig failed: $(tail -5 "$TMP/config.log")"
(cd "$SRC" && scripts/kconfig/merge_config.sh -m .config "$FRAGMENT") >>"$TMP/config.log" 2>&1 \
  || die "merge_config.sh failed: $(tail -5 "$TMP/config.log")"
"${KMAKE[@]}" olddefconfig >>"$TMP/config.log" 2>&1 || die "make olddefconfig failed: $(tail -5 "$TMP/config.log")"
missing=() # wanted y, not =y
unwanted=() # wanted off ("# CONFIG_X is not set"), but set
while IFS= read -r line; do
  grep -qx "$line" "$SRC/.config" || missing+=("${line%=y}")
done < <(grep -E '^CONFIG_[A-Za-z0-9_]+=y$' "$FRAGMENT")
while IFS= read -r o; do
  if grep -qE "^$o=" "$SRC/.config"; then unwanted+=("$o"); fi
done < <(sed -n 's/^# \(CONFIG_[A-Za-z0-9_]*\) is not set$/\1/p' "$FRAGMENT")
for o in "${missing[@]}"; do
  log "  $o: wanted y, got $(grep -E "^$o=|^# $o is not set" "$SRC/.config" || echo 'nothing (unknown, or a dependency is off)')"
done
for o in "${unwanted[@]}"; do
  log "  $o: wanted off, got $(grep -E "^$o=" "$SRC/.config") (something selects it)"
done
if [ $((${#missing[@]} + ${#unwanted[@]})) -gt 0 ]; then
  die "guest/kernel.config not honoured after olddefconfig: ${missing[*]} ${unwanted[*]}"
fi
log "config: $(grep -c '=y$' "$SRC/.config") options =y; every option of guest/kernel.config as asked"

# ---------------------------------------------------------------- build
t0=$SECONDS
jobs=$(nproc 2>/dev/null || echo 2)
log "make -j$jobs bzImage ..."
TIMEFORMAT='%U %S' # the CPU time, which does not depend on how busy the cores are
if ! { time "${KMAKE[@]}" -j"$jobs" bzImage >"$TMP/build.log" 2>&1; } 2>"$TMP/cpu"; then
  die "make bzImage failed: $(tail -20 "$TMP/build.log")"
fi
cpu=$(awk '{printf "%d", $1 + $2}' "$TMP/cpu")
log "bzImage built in $((SECONDS - t0)) s ($cpu CPU-seconds: about $((cpu / jobs / 60 + 1)) minutes on $jobs idle cores)"

mkdir -p "$TMP/out"
cp "$SRC/arch/x86/boot/bzImage" "$TMP/out/vmlinuz"
cp "$SRC/.config" "$TMP/out/config"
"${KMAKE[@]}" kernelrelease > "$TMP/out/release"
echo "$((SECONDS - T0)) s wall, $cpu CPU-seconds for make" > "$TMP/out/build-time"
rm -rf "$CACHED"
mv "$TMP/out" "$CACHED"
log "built in $((SECONDS - T0)) s (kernel $(cat "$CACHED/release"))"
install_out
