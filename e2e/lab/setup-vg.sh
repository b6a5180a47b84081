#!/usr/bin/env bash
# setup-vg.sh — inside a lab guest (e2e/lab/kernel-lab.sh): give LVM a volume group on a loop
# device over a sparse file, with a thin pool in it. Idempotent: a second run finds what the
# first made and only fills in what is missing.
#
#   setup-vg.sh [VG]            (default VG: csivg)
#
# Environment:
#   LAB_VG_SIZE       size of the sparse backing file (default 8G: room for 1 GiB thick clones,
#                     which need the source, a COW snapshot of it and the copy at once)
#   LAB_THINPOOL      name of the thin pool (default pool0); empty: no thin pool
#   LAB_THINPOOL_SIZE size of the thin pool (default 2G; the rest of the VG stays free for
#                     thick LVs)
#   LAB_PV_METADATASIZE  LVM metadata area of the PV (default: LVM's, about 1 MiB: room for a
#                     few hundred LVs; more for benchmarks with many tagged volumes)
#   LAB_BACKING_DIR   where the backing file goes (default /run/lab-vg, a tmpfs of its own in the
#                     guest's RAM; it only costs memory for blocks actually written, and loop I/O
#                     on it is several times faster than on the 9p-shared working directory)
#
# Prints the VG name, the thin pool and the loop device on stdout.
set -euo pipefail

VG=${1:-csivg}
SIZE=${LAB_VG_SIZE:-8G}
POOL=${LAB_THINPOOL-pool0}
POOL_SIZE=${LAB_THINPOOL_SIZE:-2G}
DIR=${LAB_BACKING_DIR:-/run/lab-vg}
FILE=$DIR/$VG.img

say() { echo "setup-vg: $*" >&2; }

[ "$(id -u)" = 0 ] || { say "must run as root (inside the lab guest)"; exit 1; }
[[ $VG =~ ^[A-Za-z0-9_][A-Za-z0-9_.+-]*$ ]] || { say "bad VG name: $VG"; exit 2; }

mkdir -p "$DIR"
if [ "$DIR" = /run/lab-vg ] && ! mountpoint -q "$DIR"; then
  # A tmpfs of its own, sized for the sparse files so the guest's /run (or /tmp) limit does not
  # apply; memory is used only for blocks that are written.
  mount -t tmpfs -o size=16G,mode=0700 lab-vg "$DIR"
fi

# Backing file (sparse) and loop device.
[ -f "$FILE" ] || truncate -s "$SIZE" "$FILE"
LOOP=$(losetup -j "$FILE" | awk -F: 'NR==1{print $1}')
if [ -z "$LOOP" ]; then
  LOOP=$(losetup --find --show "$FILE")
  say "attached $FILE to $LOOP"
fi

# PV and VG. The VG is looked up by name first: after a re-attach the loop device can differ.
if ! vgs "$VG" >/dev/null 2>&1; then
  pvs "$LOOP" >/dev/null 2>&1 ||
    pvcreate -q ${LAB_PV_METADATASIZE:+--metadatasize "$LAB_PV_METADATASIZE"} "$LOOP" >/dev/null
  pvscan --cache "$LOOP" >/dev/null 2>&1 || true
  vgs "$VG" >/dev/null 2>&1 || vgcreate -q "$VG" "$LOOP" >/dev/null
  say "created VG $VG on $LOOP ($SIZE)"
fi
vgchange -q -ay "$VG" >/dev/null

# Thin pool.
if [ -n "$POOL" ] && ! lvs "$VG/$POOL" >/dev/null 2>&1; then
  # Zeroing of newly provisioned blocks stays on (LVM's default), as on a production pool: a
  # new volume must never show a deleted volume's data (or its filesystem signature).
  lvcreate -q --type thin-pool -L "$POOL_SIZE" -n "$POOL" "$VG" >/dev/null
  say "created thin pool $VG/$POOL ($POOL_SIZE)"
fi

echo "VG=$VG"
echo "THINPOOL=$POOL"
echo "LOOP=$LOOP"
