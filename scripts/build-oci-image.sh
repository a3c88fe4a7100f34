#!/usr/bin/env bash
# Build the container test image from Debian's busybox-static, as an OCI image
# layout archive that `ctr image import` takes (there is no registry here).
#
#   bash scripts/build-oci-image.sh          # what `make oci-image` runs
#   FORCE=1 bash scripts/build-oci-image.sh  # rebuild even when up to date
#
# Output, in build/oci/ (git-ignored):
#   busybox.oci.tar   an OCI image layout (oci-layout, index.json, blobs/sha256/...):
#                     one manifest for the host's architecture, its config (with
#                     rootfs.diff_ids), and one gzip'd tar layer holding
#                       /bin/busybox and a symlink per applet in /bin,
#                       /etc/passwd, /etc/group (root 0, user 1000, nobody 65534),
#                       /etc/os-release and /etc/sandvm-image (the marker that shows
#                       which root a process sees: "sandvm-test-image busybox"),
#                       /tmp (1777), /root, /home/user, /proc, /sys, /dev, /run
#                     index.json names it sandvm.test/busybox:latest
#                     (org.opencontainers.image.ref.name), so `ctr image import`
#                     gives it that name.
#   busybox.ref       the reference name, one line
#   busybox.stamp     what it was built from (the .deb's sha256 and this script's)
#
# Deterministic: the same busybox-static .deb and this script give the same bytes
# (sorted tar entries, fixed owners and mtimes, gzip without name or time). The
# .deb comes from `apt-get download` (cached in build/oci/cache), unpacked with
# dpkg-deb: no Docker, no registry. Idempotent, and safe to run from several test
# processes at once (a lock; the archive is renamed into place when complete).
#
# Environment:
#   FORCE=1       rebuild even when up to date
#   IMAGE_REF=... the reference name (default sandvm.test/busybox:latest)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$ROOT/build/oci
CACHE=$OUT/cache
ARCHIVE=$OUT/busybox.oci.tar
REF=${IMAGE_REF:-sandvm.test/busybox:latest}
EPOCH=0 # every mtime in the image; the image's "created" is the epoch too

log() { echo "build-oci-image: $*" >&2; }
die() { echo "build-oci-image: error: $*" >&2; exit 1; }

for t in dpkg-deb sha256sum tar gzip flock; do
  command -v "$t" >/dev/null || die "$t is missing: run \`make setup\`"
done

mkdir -p "$OUT" "$CACHE"
exec 9>"$OUT/.lock"
flock 9

# ------------------------------------------------------------------ the .deb
# Reuse a cached busybox-static .deb when it is the candidate version; else
# download it (apt-get download works as any user; as root it warns about the
# _apt sandbox, which does not matter for a download into our own folder).
deb_arch=$(dpkg --print-architecture)
version=$(dpkg-query -W -f='${Version}' busybox-static 2>/dev/null || true)
if [ -z "$version" ]; then
  version=$(apt-cache policy busybox-static | sed -n 's/^ *Candidate: //p')
fi
if [ -z "$version" ] || [ "$version" = "(none)" ]; then
  die "no busybox-static package known to apt: run \`make setup\`"
fi
deb=$(find "$CACHE" -maxdepth 1 -name "busybox-static_*_${deb_arch}.deb" -print 2>/dev/null |
  while read -r f; do
    [ "$(dpkg-deb -f "$f" Version)" = "$version" ] && echo "$f"
  done | head -1)
if [ -z "$deb" ]; then
  log "downloading busybox-static $version"
  rm -f "$CACHE"/busybox-static_*.deb
  (cd "$CACHE" && apt-get download -q "busybox-static=$version" 2>&1 |
    grep -v 'unsandboxed as root' >&2) || true
  deb=$(find "$CACHE" -maxdepth 1 -name "busybox-static_*_${deb_arch}.deb" -print | head -1)
  [ -n "$deb" ] || die "apt-get download busybox-static failed (is apt reachable? run \`make setup\`)"
fi

stamp="deb $(sha256sum "$deb" | cut -d' ' -f1)
script $(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1)
ref $REF"
if [ "${FORCE:-0}" != 1 ] && [ -s "$ARCHIVE" ] && [ "$(cat "$OUT/busybox.stamp" 2>/dev/null)" = "$stamp" ]; then
  log "up to date ($ARCHIVE, $REF); FORCE=1 to rebuild"
  exit 0
fi

case "$deb_arch" in
  amd64 | arm64 | s390x) oci_arch=$deb_arch ;;
  ppc64el) oci_arch=ppc64le ;;
  *) die "no OCI architecture name known for Debian's $deb_arch" ;;
esac

tmp=$(mktemp -d "$OUT/.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# ------------------------------------------------------------------ the root
log "building $REF from $(basename "$deb")"
dpkg-deb -x "$deb" "$tmp/deb"
rootfs=$tmp/rootfs
mkdir -p "$rootfs"/{bin,etc,dev,proc,sys,run,root,home/user,tmp}
install -m 0755 "$tmp/deb/bin/busybox" "$rootfs/bin/busybox"
# One symlink per applet, all in /bin (the default PATH of ctr's spec includes it).
for applet in $("$rootfs/bin/busybox" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$rootfs/bin/$applet"
done
chmod 1777 "$rootfs/tmp"
chmod 0700 "$rootfs/root"
cat >"$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
user:x:1000:1000:user:/home/user:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$rootfs/etc/group" <<'EOF'
root:x:0:
user:x:1000:
nogroup:x:65534:
EOF
cat >"$rootfs/etc/os-release" <<EOF
PRETTY_NAME="sandvm test image (busybox $version)"
NAME="sandvm-test-image"
ID=sandvm-test-image
VERSION_ID="1"
EOF
echo "sandvm-test-image busybox" >"$rootfs/etc/sandvm-image"
chmod 0644 "$rootfs"/etc/*

# ------------------------------------------------------------------ the layer
# A reproducible tar: sorted names, numeric owners (root, and user for its home),
# fixed mtimes, no atime/ctime (pax headers without them), then gzip -n.
layer_tar=$tmp/layer.tar
tar --create --file "$layer_tar" --directory "$rootfs" \
  --sort=name --format=posix \
  --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
  --mtime="@$EPOCH" --owner=0 --group=0 --numeric-owner \
  bin dev etc home proc root run sys tmp
# /home/user belongs to user (1000): rebuild its entry with that owner.
tar --delete --file "$layer_tar" home/user 2>/dev/null || true
tar --append --file "$layer_tar" --directory "$rootfs" --no-recursion \
  --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
  --mtime="@$EPOCH" --owner=1000 --group=1000 --numeric-owner home/user
diff_id=sha256:$(sha256sum "$layer_tar" | cut -d' ' -f1)

blobs=$tmp/layout/blobs/sha256
mkdir -p "$blobs"
gzip -n -9 -c "$layer_tar" >"$tmp/layer.tar.gz"
layer_digest=$(sha256sum "$tmp/layer.tar.gz" | cut -d' ' -f1)
layer_size=$(stat -c %s "$tmp/layer.tar.gz")
mv "$tmp/layer.tar.gz" "$blobs/$layer_digest"

# put_blob FILE: move FILE into blobs/ under its digest; prints "DIGEST SIZE".
put_blob() {
  local d s
  d=$(sha256sum "$1" | cut -d' ' -f1)
  s=$(stat -c %s "$1")
  mv "$1" "$blobs/$d"
  echo "$d $s"
}

# ------------------------------------------------------------------ config, manifest, index
printf '%s' \
  '{"architecture":"'"$oci_arch"'","os":"linux","created":"1970-01-01T00:00:00Z",' \
  '"config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],' \
  '"Cmd":["/bin/sh"],"WorkingDir":"/","Labels":{"org.opencontainers.image.title":"sandvm test image"}},' \
  '"rootfs":{"type":"layers","diff_ids":["'"$diff_id"'"]},' \
  '"history":[{"created":"1970-01-01T00:00:00Z","created_by":"scripts/build-oci-image.sh from busybox-static '"$version"'"}]}' \
  >"$tmp/config.json"
read -r config_digest config_size < <(put_blob "$tmp/config.json")

printf '%s' \
  '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",' \
  '"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:'"$config_digest"'","size":'"$config_size"'},' \
  '"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:'"$layer_digest"'","size":'"$layer_size"'}]}' \
  >"$tmp/manifest.json"
read -r manifest_digest manifest_size < <(put_blob "$tmp/manifest.json")

printf '%s' '{"imageLayoutVersion":"1.0.0"}' >"$tmp/layout/oci-layout"
printf '%s' \
  '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[' \
  '{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:'"$manifest_digest"'","size":'"$manifest_size"',' \
  '"platform":{"architecture":"'"$oci_arch"'","os":"linux"},' \
  '"annotations":{"org.opencontainers.image.ref.name":"'"$REF"'"}}]}' \
  >"$tmp/layout/index.json"

tar --create --file "$tmp/busybox.oci.tar" --directory "$tmp/layout" \
  --sort=name --format=posix \
  --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
  --mtime="@$EPOCH" --owner=0 --group=0 --numeric-owner \
  oci-layout index.json blobs

mv "$tmp/busybox.oci.tar" "$ARCHIVE"
echo "$REF" >"$OUT/busybox.ref"
echo "$stamp" >"$OUT/busybox.stamp"
log "built $ARCHIVE ($(stat -c %s "$ARCHIVE") bytes, manifest sha256:$manifest_digest)"
