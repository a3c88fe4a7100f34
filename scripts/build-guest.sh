#!/usr/bin/env bash
# Build the sandvm test guest from Debian packages (see docs/guest.md).
#
#   bash scripts/build-guest.sh        # what `make guest` runs
#   FORCE=1 bash scripts/build-guest.sh   # rebuild even when up to date
#
# Outputs, all in build/guest/ (git-ignored):
#   vmlinuz              the Debian cloud kernel (linux-image-cloud-amd64)
#   kernel-version       its version string (uname -r of the guest)
#   initramfs.cpio.gz    busybox + modules + guest/init as /init
#   rootfs.ext4          plain ext4 root image (same init): nvdimm without DAX,
#                        virtio-blk, virtio-pmem
#   rootfs-dax.img       the same ext4 in Kata's nvdimm layout (MBR, NVDIMM PFN
#                        info block, second MBR, partition): on a QEMU nvdimm the
#                        guest sees an fsdax /dev/pmem0 whose /dev/pmem0p1 is the
#                        ext4, and `-o dax` works (root=/dev/pmem0p1)
#   boot-disk.img        a whole bootable disk holding the same guest, for a
#                        config with an image and no kernel (Nomad's image_path):
#                        syslinux's MBR, one FAT16 partition with SYSLINUX, the
#                        kernel, the initramfs and a syslinux.cfg (see below)
#   sandvm-agent         the guest agent (static, stripped), also installed as
#                        /sbin/sandvm-agent in the initramfs and the root images
#   vmlinuz-9p           the 9p guest: Debian's generic kernel (linux-image-amd64),
#   kernel-version-9p    which ships 9p, 9pnet and 9pnet_virtio as modules (the
#   initramfs-9p.cpio.gz cloud kernel has no 9p at all), its version, and an
#                        initramfs with the same busybox, init and agent and the
#                        same module list (9p's modules included); for containers
#                        of a VM cloned from a template, whose root is shared over
#                        virtio-9p (vhost-user cannot share a private map)
#   manifest             sizes and sha256 of the above, written last
#   vmlinuz-noinitrd     sandvm's own kernel with every driver built in, which
#                        boots rootfs-dax.img with no initrd (Kata's image-only
#                        boot); built by scripts/build-kernel.sh from Debian's
#                        linux-source-6.1 once per machine (4-6 minutes), cached
#                        in ~/.cache/sandvm-tools/kernel/ and copied here
#
# Environment:
#   FORCE=1          rebuild even when the outputs are newer than the inputs
#   KERNEL_PKG=...   kernel package to resolve (default linux-image-cloud-amd64);
#                    a meta package is followed to the versioned image package
#   NINEP_KERNEL_PKG=...  the 9p guest's kernel package, resolved the same way
#                    (default linux-image-amd64)
#   NINEP_GUEST=0    skip the 9p guest (its outputs are then neither built nor
#                    checked; old ones stay as they are)
#   ROOTFS_MIB=64    size of rootfs.ext4 in MiB (rounded up to a multiple of 2)
#   AGENT_BIN=path   install this agent binary instead of building it
#   NO_AGENT=1       build the guest without the agent
#   NOINITRD_KERNEL=0  skip the no-initrd kernel (what `make run` does)
#
# The agent is built first (cargo, static glibc: -C target-feature=+crt-static
# with an explicit --target, in the workspace's target dir); cargo itself is
# incremental, so this takes a second when nothing changed.
#
# Idempotent: when every output exists and is newer than this script, every
# file under guest/ and the agent binary, it exits at once. Every output is built in a temp dir and
# renamed into place, so an interrupted build never leaves a half-made asset.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GUEST_SRC=$ROOT/guest
OUT=$ROOT/build/guest
CACHE=$OUT/cache
KERNEL_PKG=${KERNEL_PKG:-linux-image-cloud-amd64}
NINEP_KERNEL_PKG=${NINEP_KERNEL_PKG:-linux-image-amd64}
NINEP_GUEST=${NINEP_GUEST:-1}
ROOTFS_MIB=${ROOTFS_MIB:-64}
OUTPUTS=(vmlinuz kernel-version initramfs.cpio.gz rootfs.ext4 rootfs-dax.img manifest)
AGENT_TARGET=x86_64-unknown-linux-gnu
OUTPUTS+=(boot-disk.img)
[ "$NINEP_GUEST" = 0 ] || OUTPUTS+=(vmlinuz-9p kernel-version-9p initramfs-9p.cpio.gz)

log() { echo "build-guest: $*" >&2; }
die() { echo "build-guest: error: $*" >&2; exit 1; }
# run a long step, saying what it is and how long it took
timed() { # LABEL CMD...
  local label=$1 t0=$SECONDS; shift
  log "$label ..."
  "$@" || die "$label failed"
  log "$label: done in $((SECONDS - t0)) s"
}

# ---------------------------------------------------------------- no-initrd kernel
# Its own script and cache (keyed by the source version and guest/kernel.config):
# a second run, or another checkout on this machine, copies it in at once.
# `make run` skips it (NOINITRD_KERNEL=0): the default config boots the initramfs.
if [ "${NOINITRD_KERNEL:-1}" = 0 ]; then
  log "no-initrd kernel skipped (NOINITRD_KERNEL=0)"
else
  bash "$ROOT/scripts/build-kernel.sh" || die "the no-initrd kernel failed (scripts/build-kernel.sh)"
fi

# ---------------------------------------------------------------- agent
AGENT=""
if [ "${NO_AGENT:-0}" != 1 ]; then
  if [ -n "${AGENT_BIN:-}" ]; then
    AGENT=$AGENT_BIN
  else
    command -v cargo >/dev/null 2>&1 || die "cargo not found (run 'make setup'), or NO_AGENT=1"
    TARGET_DIR=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps 2>/dev/null \
      | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
    TARGET_DIR=${TARGET_DIR:-$ROOT/target}
    AGENT=$TARGET_DIR/$AGENT_TARGET/release/sandvm-agent
    # the explicit --target keeps build scripts and proc macros dynamic
    timed "building sandvm-agent (static, release; minutes when it changed)" \
      env RUSTFLAGS='-C target-feature=+crt-static' \
      cargo build --quiet --release --manifest-path "$ROOT/Cargo.toml" -p sandvm-agent --target "$AGENT_TARGET"
  fi
  [ -x "$AGENT" ] || die "no agent binary at $AGENT"
  OUTPUTS+=(sandvm-agent)
fi

# ---------------------------------------------------------------- up to date?
up_to_date() {
  [ "${FORCE:-0}" = 1 ] && return 1
  local o newest_in
  # newest input: this script and everything under guest/ but the kernel's
  # config fragment (build-kernel.sh's own input)
  newest_in=$(find "$ROOT/scripts/build-guest.sh" "$GUEST_SRC" ${AGENT:+"$AGENT"} -type f ! -name kernel.config -printf '%T@\n' | sort -n | tail -1)
  for o in "${OUTPUTS[@]}"; do
    [ -s "$OUT/$o" ] || return 1
    # strictly newer than the newest input
    awk -v a="$(stat -c %.9Y "$OUT/$o")" -v b="$newest_in" 'BEGIN{exit !(a>b)}' || return 1
  done
  return 0
}

if up_to_date; then
  # drop leftovers of a killed build, unless a build is running right now
  if compgen -G "$OUT/.tmp.*" >/dev/null; then
    ( flock -n 9 && rm -rf "$OUT"/.tmp.* ) 9>"$OUT/.lock" || true
  fi
  log "up to date ($OUT); FORCE=1 to rebuild"
  exit 0
fi

# ---------------------------------------------------------------- tools
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
for t in apt-get apt-cache dpkg-deb depmod cpio gzip mkfs.ext4 flock awk find; do
  command -v "$t" >/dev/null 2>&1 || die "missing tool '$t' (run 'make setup')"
done
# the whole-disk image (boot-disk.img): syslinux, dosfstools, mtools
for t in syslinux mkfs.vfat mcopy; do
  command -v "$t" >/dev/null 2>&1 || die "missing tool '$t' (run 'make setup')"
done
SYSLINUX_MBR=/usr/lib/syslinux/mbr/mbr.bin
[ -f "$SYSLINUX_MBR" ] || die "missing $SYSLINUX_MBR (syslinux-common; run 'make setup')"
[ -f "$GUEST_SRC/init" ] || die "missing $GUEST_SRC/init"
[ -f "$GUEST_SRC/modules" ] || die "missing $GUEST_SRC/modules"

mkdir -p "$OUT" "$CACHE"
# One build at a time (tests may run `make guest` in parallel).
exec 9>"$OUT/.lock"
flock 9
if up_to_date; then log "up to date (built by a concurrent run)"; exit 0; fi

# leftovers of a killed build (we hold the lock, so none is in use)
rm -rf "$OUT"/.tmp.*
TMP=$(mktemp -d "$OUT/.tmp.XXXXXX")
chmod 0755 "$TMP"  # let apt's _apt user write downloads into it
trap 'rm -rf "$TMP"' EXIT

# ---------------------------------------------------------------- packages
apt_lists_empty() {
  ! ls /var/lib/apt/lists/ 2>/dev/null | grep -q '_Packages'
}
if apt_lists_empty; then
  log "apt lists are empty: apt-get update"
  $SUDO apt-get update -q >&2
fi

# download PKG into CACHE (if not there yet) and print the .deb path
fetch_deb() {
  local pkg=$1 ver deb
  ver=$(apt-cache policy "$pkg" | awk '/Candidate:/{print $2}')
  [ -n "$ver" ] && [ "$ver" != "(none)" ] || die "package $pkg has no install candidate (apt-get update?)"
  # apt-get download names files pkg_ver_arch.deb with ':' escaped as %3a
  deb=$(ls "$CACHE/${pkg}_${ver//:/%3a}_"*.deb 2>/dev/null | head -1 || true)
  if [ -z "$deb" ]; then
    log "downloading $pkg $ver"
    # _apt cannot write into a root-owned dir; download in a world-writable scratch dir
    local dl
    dl=$(mktemp -d "$TMP/dl.XXXXXX")
    chmod 0777 "$dl"
    (cd "$dl" && apt-get download -q "$pkg=$ver" >&2) || die "apt-get download $pkg=$ver failed"
    mv "$dl"/*.deb "$CACHE/"
    deb=$(ls "$CACHE/${pkg}_${ver//:/%3a}_"*.deb | head -1)
  fi
  echo "$deb"
}

# resolve_kernel PKG: sets kpkg (the versioned image package) and kdeb (its
# .deb), following a meta package (linux-image-cloud-amd64) to its Depends.
resolve_kernel() {
  local meta_deb
  meta_deb=$(fetch_deb "$1")
  kpkg=$1
  if ! dpkg-deb -c "$meta_deb" | grep -q '/boot/vmlinuz-'; then
    kpkg=$(dpkg-deb -f "$meta_deb" Depends | tr ',' '\n' | sed 's/[( ].*//;s/^ *//' | grep -E '^linux-image-[0-9]' | head -1 || true)
    [ -n "$kpkg" ] || die "$1: no linux-image-<version> in Depends"
    kdeb=$(fetch_deb "$kpkg")
  else
    kdeb=$meta_deb
  fi
}
resolve_kernel "$KERNEL_PKG"
bbdeb=$(fetch_deb busybox-static)
log "kernel package: $(basename "$kdeb")"
log "busybox package: $(basename "$bbdeb")"

# ---------------------------------------------------------------- extract
BX=$TMP/busybox
t0=$SECONDS
dpkg-deb -x "$bbdeb" "$BX"
BUSYBOX=$BX/bin/busybox
[ -x "$BUSYBOX" ] || die "no bin/busybox in $(basename "$bbdeb")"

# unpack_kernel DEB DIR: unpacks a kernel image package; sets KX, KVER, KMOD, KCONFIG
unpack_kernel() {
  KX=$2
  dpkg-deb -x "$1" "$KX"
  KVER=$(ls "$KX/lib/modules" | head -1)
  [ -n "$KVER" ] && [ -f "$KX/boot/vmlinuz-$KVER" ] || die "no vmlinuz/modules in $(basename "$1")"
  KMOD=$KX/lib/modules/$KVER
  KCONFIG=$KX/boot/config-$KVER
  # The package ships no modules.dep (its postinst runs depmod): make one.
  if [ ! -f "$KMOD/modules.dep" ]; then
    depmod -b "$KX" "$KVER"
  fi
}
unpack_kernel "$kdeb" "$TMP/kernel"
log "packages unpacked in $((SECONDS - t0)) s"

# ---------------------------------------------------------------- modules
# name normalisation: '-' and '_' are the same in module names
norm() { echo "${1//-/_}"; }
visit() {       # depth-first: dependencies, then the module itself
  local n=$1 d dn
  [ -n "${SEEN[$n]:-}" ] && return 0
  SEEN[$n]=1
  for d in ${DEPS[$n]}; do
    dn=${d##*/}; dn=${dn%%.ko*}; dn=${dn//-/_}
    visit "$dn"
  done
  ORDER+=("$n")
}
# resolve_modules FLAVOR ("cloud" | "9p"): reads KMOD's modules.dep and
# modules.builtin and guest/modules; sets ORDER, BUILTIN_LIST, MISSING_LIST
# (and DEP_PATH for stage_modules). A line tagged "9p" is wanted only by the
# 9p guest: the cloud kernel has no 9p, so missing there it is no warning.
resolve_modules() {
  local flavor=$1 line p n name tag
  declare -gA DEP_PATH=() DEPS=() BUILTIN=() SEEN=()
  ORDER=()        # module names in load order (dependencies first)
  BUILTIN_LIST=() # requested but built into the kernel
  MISSING_LIST=() # requested but neither built in nor shipped
  # thousands of lines (the generic kernel): expansions only, no subshells
  while IFS= read -r line; do
    p=${line%%:*}
    n=${p##*/}; n=${n%%.ko*}; n=${n//-/_}
    DEP_PATH[$n]=$p
    DEPS[$n]=${line#*:}
  done < "$KMOD/modules.dep"
  while IFS= read -r p; do
    n=${p##*/}; n=${n%%.ko*}; BUILTIN[${n//-/_}]=1
  done < "$KMOD/modules.builtin"
  while read -r name tag _; do
    case $name in ''|'#'*) continue ;; esac
    n=$(norm "$name")
    if [ -n "${BUILTIN[$n]:-}" ]; then
      BUILTIN_LIST+=("$n")
    elif [ -n "${DEP_PATH[$n]:-}" ]; then
      visit "$n"
    elif [ "$tag" = 9p ] && [ "$flavor" != 9p ]; then
      continue
    else
      MISSING_LIST+=("$n")
      log "warning: module $n is neither built in nor shipped by $kpkg"
    fi
  done < "$GUEST_SRC/modules"
}
resolve_modules cloud

# Stage the module tree: the chosen .ko files (decompressed) + a load-order list.
stage_modules() { # $1 = root dir of a guest file system
  local dst=$1/lib/modules/$KVER n p f
  mkdir -p "$dst"
  : > "$dst/sandvm.modules"
  for n in "${ORDER[@]}"; do
    p=${DEP_PATH[$n]}
    f=$dst/${p%.xz}; f=${f%.zst}; f=${f%.gz}
    mkdir -p "$(dirname "$f")"
    case $p in
      *.ko.xz) xz -dc "$KMOD/$p" > "$f" ;;
      *.ko.zst) zstd -qdc "$KMOD/$p" > "$f" ;;
      *.ko.gz) gzip -dc "$KMOD/$p" > "$f" ;;
      *) cp "$KMOD/$p" "$f" ;;
    esac
    echo "$n ${f#"$dst"/}" >> "$dst/sandvm.modules"
  done
  cp "$KMOD/modules.builtin" "$KMOD/modules.order" "$dst/"
  [ -f "$KMOD/modules.builtin.modinfo" ] && cp "$KMOD/modules.builtin.modinfo" "$dst/"
  # a modules.dep for just these modules, so `modprobe` works by hand in the guest
  depmod -b "$1" "$KVER" 2>/dev/null || true
}

# ---------------------------------------------------------------- guest tree
# Common tree for initramfs and root image: busybox, applet links, init, modules.
make_tree() { # $1 = dir, $2 = "initramfs" | "rootfs"
  local d=$1 a
  mkdir -p "$d"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,run,tmp,etc,root,newroot,mnt,lib/modules}
  chmod 1777 "$d/tmp"
  chmod 0700 "$d/root"
  install -m 0755 "$BUSYBOX" "$d/bin/busybox"
  # applet links where busybox wants them; 'init' and 'linuxrc' are ours, not busybox's
  "$BUSYBOX" --list-full | while IFS= read -r a; do
    case $a in sbin/init|linuxrc|bin/busybox) continue ;; esac
    [ -e "$d/$a" ] || ln -s /bin/busybox "$d/$a"
  done
  install -m 0755 "$GUEST_SRC/init" "$d/init"
  install -m 0755 "$GUEST_SRC/init" "$d/sbin/init"
  [ -f "$GUEST_SRC/hotplug" ] && install -m 0755 "$GUEST_SRC/hotplug" "$d/sbin/sandvm-hotplug"
  [ -n "$AGENT" ] && install -m 0755 "$TMP/sandvm-agent" "$d/sbin/sandvm-agent"
  stage_modules "$d"
  printf 'root:x:0:0:root:/root:/bin/sh\n' > "$d/etc/passwd"
  printf 'root:x:0:\ntty:x:5:\n' > "$d/etc/group"
  echo sandvm > "$d/etc/hostname"
  echo "$KVER" > "$d/etc/sandvm-kernel-version"
  if [ "$2" = rootfs ]; then
    printf 'sandvm root image, kernel %s\n' "$KVER" > "$d/etc/sandvm-rootfs"
  fi
}

log "kernel $KVER: ${#ORDER[@]} modules to load, ${#BUILTIN_LIST[@]} requested ones built in"
if [ -n "$AGENT" ]; then
  strip -s -o "$TMP/sandvm-agent" "$AGENT" 2>/dev/null || cp "$AGENT" "$TMP/sandvm-agent"
  log "agent: $(stat -c %s "$TMP/sandvm-agent") bytes (stripped) from $AGENT"
fi

# initramfs
IR=$TMP/initramfs
make_tree "$IR" initramfs
t0=$SECONDS
(cd "$IR" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 --reproducible) \
  | gzip -9n > "$TMP/initramfs.cpio.gz"
log "initramfs: $(stat -c %s "$TMP/initramfs.cpio.gz") bytes in $((SECONDS - t0)) s"

# root image (size a multiple of 2 MiB: QEMU nvdimm/DAX alignment)
RF=$TMP/rootfs
make_tree "$RF" rootfs
mib=$(( (ROOTFS_MIB + 1) / 2 * 2 ))
mkfs.ext4 -q -F -b 4096 -L sandvm-root -E root_owner=0:0 -d "$RF" "$TMP/rootfs.ext4" "${mib}M" >&2 \
  || die "mkfs.ext4 -d failed"
[ $(( $(stat -c %s "$TMP/rootfs.ext4") % (2 * 1024 * 1024) )) -eq 0 ] || die "rootfs.ext4 size not 2 MiB aligned"

# DAX image, Kata's layout (absolute offsets in the file):
#   0      MBR #1: partition 1 = [3 MiB, 3 MiB + fs)   (for loop-mounting on a host)
#   4 KiB  struct nd_pfn_sb (NVDIMM_PFN_INFO)
#   2 MiB  MBR #2: partition 1 = [1 MiB, 1 MiB + fs) relative to 2 MiB
#   3 MiB  the ext4 image; the file is padded to a multiple of 2 MiB
# A QEMU nvdimm has no namespace labels, so Linux sees a raw namespace, which
# has no struct pages and refuses fs DAX ("DAX unsupported by block device").
# The PFN info block at 4 KiB makes it an fsdax namespace: /dev/pmem0 starts at
# dataoff (2 MiB), so it begins with MBR #2 and /dev/pmem0p1 is the ext4. In
# PFN_MODE_RAM the memmap lives in guest RAM, so nothing is ever written to the
# (read-only) backing file. Same values as Kata's nsdax tool: mode RAM, align
# 2 MiB, dataoff 2 MiB, version 1.2, zero uuids (a labelless namespace).
MiB=$((1024 * 1024))
le() { # VALUE BYTES -> printf format of little-endian octal escapes
  local v=$1 n=$2 i out=""
  for ((i = 0; i < n; i++)); do out+=$(printf '\\%03o' $(((v >> (8 * i)) & 255))); done
  printf '%s' "$out"
}
make_pfn_sb() { # $1 = output file (4096 bytes)
  local f=$1 lo=0 hi=0 w
  {
    printf 'NVDIMM_PFN_INFO\0'            # signature[16]
    head -c 32 /dev/zero                   # uuid[16], parent_uuid[16] (0 = labelless namespace)
    printf "$(le 0 4)$(le 1 2)$(le 2 2)"   # flags, version_major 1, version_minor 2
    printf "$(le $((2 * MiB)) 8)$(le 0 8)" # dataoff, npfns (kernel computes)
    printf "$(le 1 4)$(le 0 4)$(le 0 4)"   # mode PFN_MODE_RAM, start_pad, end_trunc
    printf "$(le $((2 * MiB)) 4)"          # align
    head -c $((4096 - 76)) /dev/zero       # padding + checksum (filled below)
  } > "$f"
  # fletcher64 over all 1024 little-endian u32 words, the checksum field as zero
  for w in $({ head -c 4088 "$f"; head -c 8 /dev/zero; } | od -An -v -tu4); do
    lo=$(((lo + w) & 0xffffffff)); hi=$((hi + lo))
  done
  w=$(((hi << 32) | lo))
  printf "$(le $w 8)" | dd of="$f" bs=1 seek=4088 conv=notrunc status=none
}
write_mbr() { # FILE OFFSET START_LBA SECTORS: one Linux partition, LBA only
  {
    head -c 440 /dev/zero
    printf "$(le $((0x53564d44)) 4)\\0\\0"              # disk signature "DMVS", reserved
    printf '\0\376\377\377\203\376\377\377'              # not bootable, CHS n/a, type 0x83, CHS n/a
    printf "$(le "$3" 4)$(le "$4" 4)"                    # first LBA, sector count
    head -c 48 /dev/zero                                 # partitions 2-4
    printf '\125\252'                                    # 0x55 0xAA
  } | dd of="$1" bs=512 seek=$(($2 / 512)) conv=notrunc status=none
}
fs_bytes=$(stat -c %s "$TMP/rootfs.ext4")
dax_size=$(( (3 * MiB + fs_bytes + 2 * MiB - 1) / (2 * MiB) * (2 * MiB) ))
truncate -s "$dax_size" "$TMP/rootfs-dax.img"
write_mbr "$TMP/rootfs-dax.img" 0 $((3 * MiB / 512)) $((fs_bytes / 512))
make_pfn_sb "$TMP/pfn_sb"
dd if="$TMP/pfn_sb" of="$TMP/rootfs-dax.img" bs=4096 seek=1 conv=notrunc status=none
write_mbr "$TMP/rootfs-dax.img" $((2 * MiB)) $((1 * MiB / 512)) $((fs_bytes / 512))
dd if="$TMP/rootfs.ext4" of="$TMP/rootfs-dax.img" bs=1M seek=3 conv=notrunc,sparse status=none

cp "$KX/boot/vmlinuz-$KVER" "$TMP/vmlinuz"
echo "$KVER" > "$TMP/kernel-version"

# ---------------------------------------------------------------- whole bootable disk
# boot-disk.img, for a config with `image` and no `kernel`: the firmware
# (SeaBIOS) runs syslinux's MBR, which runs the active partition's boot sector
# (SYSLINUX on FAT16), which loads the same kernel and initramfs with the test
# guest's console arguments. No loop mount: mkfs.vfat and mcopy work on the
# partition image, `syslinux --offset` installs into the disk image itself.
#   0      MBR: syslinux mbr.bin, partition 1 active, type 0x0e (FAT16 LBA)
#   1 MiB  the FAT16 file system: ldlinux.sys, ldlinux.c32, syslinux.cfg,
#          vmlinuz, initrd.gz
BOOT_APPEND="console=hvc0 quiet panic=1 tsc=reliable no_timer_check rcupdate.rcu_expedited=1 i8042.direct=1 i8042.dumbkbd=1 i8042.nopnp=1 i8042.noaux=1 noreplace-smp reboot=k cryptomgr.notests net.ifnames=0"
write_boot_mbr() { # FILE START_LBA SECTORS: syslinux's MBR code, one active FAT16 LBA partition
  dd if="$SYSLINUX_MBR" of="$1" bs=440 count=1 conv=notrunc status=none
  {
    printf "$(le $((0x53564d42)) 4)\\0\\0"              # disk signature "BMVS", reserved
    printf '\200\376\377\377\016\376\377\377'              # active, CHS n/a, type 0x0e, CHS n/a
    printf "$(le "$2" 4)$(le "$3" 4)"                    # first LBA, sector count
    head -c 48 /dev/zero                                 # partitions 2-4
    printf '\125\252'                                    # 0x55 0xAA
  } | dd of="$1" bs=1 seek=440 conv=notrunc status=none
}
make_boot_disk() { # KERNEL INITRD OUTPUT
  local part=$TMP/boot-part.img mib t0=$SECONDS
  mib=$(( ($(stat -c %s "$1") + $(stat -c %s "$2")) / MiB + 8 ))
  [ "$mib" -ge 32 ] || mib=32
  printf 'DEFAULT sandvm\nPROMPT 0\nTIMEOUT 0\nLABEL sandvm\n  LINUX /vmlinuz\n  INITRD /initrd.gz\n  APPEND %s\n' \
    "$BOOT_APPEND" > "$TMP/syslinux.cfg"
  mkfs.vfat -F 16 -n SANDVMBOOT -C "$part" $((mib * 1024)) >/dev/null || die "mkfs.vfat failed"
  mcopy -i "$part" "$1" ::/vmlinuz || die "mcopy vmlinuz failed"
  mcopy -i "$part" "$2" ::/initrd.gz || die "mcopy initrd failed"
  mcopy -i "$part" "$TMP/syslinux.cfg" ::/syslinux.cfg || die "mcopy syslinux.cfg failed"
  truncate -s $(( (mib + 1) * MiB )) "$3"
  dd if="$part" of="$3" bs=1M seek=1 conv=notrunc,sparse status=none
  rm -f "$part"
  syslinux --offset "$MiB" --install "$3" || die "syslinux --install failed"
  write_boot_mbr "$3" $((MiB / 512)) $((mib * MiB / 512))
  log "boot-disk.img: $(stat -c %s "$3") bytes in $((SECONDS - t0)) s"
}
make_boot_disk "$TMP/vmlinuz" "$TMP/initramfs.cpio.gz" "$TMP/boot-disk.img"
cp "$KCONFIG" "$TMP/kernel-config"
printf '%s\n' "${ORDER[@]}" > "$TMP/modules-loaded"
printf '%s\n' "${BUILTIN_LIST[@]}" > "$TMP/modules-builtin"
# the cloud guest's facts, for the manifest and the summary
C_KPKG=$kpkg C_KDEB=$kdeb C_KVER=$KVER
C_ORDER=("${ORDER[@]}") C_BUILTIN=("${BUILTIN_LIST[@]}") C_MISSING=("${MISSING_LIST[@]}")

# ---------------------------------------------------------------- 9p guest
# Debian's generic kernel and an initramfs of the same tree (busybox, init,
# agent), with the generic kernel's modules. Same module list, so its init
# loads 9p, 9pnet and 9pnet_virtio too.
NINEP_FILES=()
if [ "$NINEP_GUEST" != 0 ]; then
  t9=$SECONDS
  resolve_kernel "$NINEP_KERNEL_PKG"
  log "9p guest kernel package: $(basename "$kdeb")"
  t0=$SECONDS
  rm -rf "$TMP/kernel" "$IR" "$RF"  # the cloud trees are done with
  unpack_kernel "$kdeb" "$TMP/kernel-9p"
  log "9p kernel $KVER unpacked in $((SECONDS - t0)) s"
  t0=$SECONDS
  resolve_modules 9p
  log "9p kernel: ${#ORDER[@]} modules resolved in $((SECONDS - t0)) s"
  for m in 9p 9pnet 9pnet_virtio; do
    [ -n "${SEEN[$m]:-}" ] || printf '%s\n' "${BUILTIN_LIST[@]}" | grep -qx "$m" \
      || die "$kpkg has no $m module (and guest/modules must list it)"
  done
  t0=$SECONDS
  make_tree "$TMP/initramfs-9p" initramfs
  (cd "$TMP/initramfs-9p" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 --reproducible) \
    | gzip -9n > "$TMP/initramfs-9p.cpio.gz"
  log "initramfs-9p: $(stat -c %s "$TMP/initramfs-9p.cpio.gz") bytes in $((SECONDS - t0)) s"
  cp "$KX/boot/vmlinuz-$KVER" "$TMP/vmlinuz-9p"
  echo "$KVER" > "$TMP/kernel-version-9p"
  cp "$KCONFIG" "$TMP/kernel-config-9p"
  printf '%s\n' "${ORDER[@]}" > "$TMP/modules-loaded-9p"
  rm -rf "$TMP/kernel-9p" "$TMP/initramfs-9p"
  NINEP_FILES=(kernel-config-9p modules-loaded-9p vmlinuz-9p kernel-version-9p initramfs-9p.cpio.gz)
  NINEP_KDEB=$kdeb NINEP_KVER=$KVER NINEP_ORDER=("${ORDER[@]}")
  log "9p guest: kernel $KVER, ${#ORDER[@]} modules, initramfs-9p $(stat -c %s "$TMP/initramfs-9p.cpio.gz") bytes, in $((SECONDS - t9)) s"
  kpkg=$C_KPKG kdeb=$C_KDEB KVER=$C_KVER
  ORDER=("${C_ORDER[@]}") BUILTIN_LIST=("${C_BUILTIN[@]}") MISSING_LIST=("${C_MISSING[@]}")
fi

# manifest last: it is the proof that a full build finished
{
  echo "kernel-package $(basename "$kdeb")"
  echo "busybox-package $(basename "$bbdeb")"
  echo "kernel-version $KVER"
  if [ ${#NINEP_FILES[@]} -gt 0 ]; then
    echo "kernel-package-9p $(basename "$NINEP_KDEB")"
    echo "kernel-version-9p $NINEP_KVER"
  fi
  for f in vmlinuz initramfs.cpio.gz rootfs.ext4 rootfs-dax.img boot-disk.img ${AGENT:+sandvm-agent} \
      ${NINEP_FILES[@]:+vmlinuz-9p initramfs-9p.cpio.gz}; do
    echo "$f $(stat -c %s "$TMP/$f") $(sha256sum "$TMP/$f" | cut -d' ' -f1)"
  done
} > "$TMP/manifest"

# ---------------------------------------------------------------- install (atomic renames)
for f in kernel-config modules-loaded modules-builtin vmlinuz kernel-version initramfs.cpio.gz rootfs.ext4 rootfs-dax.img boot-disk.img ${AGENT:+sandvm-agent} ${NINEP_FILES[@]:+"${NINEP_FILES[@]}"} manifest; do
  mv -f "$TMP/$f" "$OUT/$f"
done

# ---------------------------------------------------------------- summary
echo "sandvm guest built in $OUT:"
for f in vmlinuz initramfs.cpio.gz rootfs.ext4 rootfs-dax.img; do
  printf '  %-18s %9s bytes\n' "$f" "$(stat -c %s "$OUT/$f")"
done
echo "  kernel-version     $KVER ($kpkg)"
if [ -n "$AGENT" ]; then echo "  agent              /sbin/sandvm-agent ($(stat -c %s "$OUT/sandvm-agent") bytes)"; else echo "  agent              none (NO_AGENT=1)"; fi
echo "  modules loaded     ${#ORDER[@]}: ${ORDER[*]}"
echo "  built in           ${BUILTIN_LIST[*]:-none}"
[ ${#MISSING_LIST[@]} -gt 0 ] && echo "  not available      ${MISSING_LIST[*]}"
echo "  initrd boot:   -kernel vmlinuz -initrd initramfs.cpio.gz -append 'console=hvc0'"
echo "  nvdimm root:   same + nvdimm backed by rootfs-dax.img ($(stat -c %s "$OUT/rootfs-dax.img") bytes) and"
echo "                 -append 'root=/dev/pmem0p1 rootflags=dax,data=ordered,errors=remount-ro ro rootfstype=ext4'"
echo "                 (or rootfs.ext4, $(stat -c %s "$OUT/rootfs.ext4") bytes, with root=/dev/pmem0: no DAX)"
if [ -s "$OUT/vmlinuz-noinitrd.release" ]; then
  echo "  no initrd:     -kernel vmlinuz-noinitrd ($(cat "$OUT/vmlinuz-noinitrd.release")) and the root image alone, with the"
  echo "                 same root= (nvdimm) or root=/dev/vda1 ro (rootfs-dax.img on a virtio-blk disk)"
fi
if [ ${#NINEP_FILES[@]} -gt 0 ]; then
  echo "  9p guest:      -kernel vmlinuz-9p ($NINEP_KVER) -initrd initramfs-9p.cpio.gz"
  echo "                 ($(stat -c %s "$OUT/initramfs-9p.cpio.gz") bytes), ${#NINEP_ORDER[@]} modules: ${NINEP_ORDER[*]}"
fi
echo "  whole disk:    boot-disk.img ($(stat -c %s "$OUT/boot-disk.img") bytes) as a virtio-blk disk with bootindex=0,"
echo "                 no -kernel: SeaBIOS -> syslinux -> the same kernel and initramfs"
exit 0
