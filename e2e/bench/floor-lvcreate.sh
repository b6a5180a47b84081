#!/usr/bin/env bash
# floor-lvcreate.sh — the raw-tool floor of N CreateVolume calls: N thin LVs made by hand, one
# lvcreate after the other (LVM serialises them on the volume group's lock anyway).
#
#   floor-lvcreate.sh VG POOL SIZE PREFIX N     creates VG/PREFIX1 ... VG/PREFIXN
set -euo pipefail
vg=$1 pool=$2 size=$3 prefix=$4 n=$5
for i in $(seq 1 "$n"); do
  lvcreate -q -y -V "$size" -T "$vg/$pool" -n "$prefix$i" >/dev/null
done
