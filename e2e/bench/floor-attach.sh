#!/usr/bin/env bash
# floor-attach.sh — the raw-tool floor of an attach: by hand, the work the driver does for
# CreateVolume + ControllerPublishVolume + NodeStageVolume + NodePublishVolume, and nothing
# more: a thin LV, an LIO export written straight into configfs (backstore, target, LUN,
# portal, an ACL with mutual CHAP), an open-iscsi node record with CHAP and a login, the
# disk found through sysfs, mkfs.ext4 (the driver's options), the staging mount and the
# pod's bind mount. Few processes: one mkdir for every directory, builtins for every write.
# Run by e2e/harness/src/bin/lab_bench inside the lab guest; prints the device on stdout.
#
# Environment (all required): VG POOL NAME SIZE (lvcreate -V) IQN PORTAL INITIATOR
#   CHAP_USER CHAP_PASS CHAP_USER_IN CHAP_PASS_IN STAGING TARGET
set -euo pipefail

CFS=/sys/kernel/config/target
BS=$CFS/core/iblock_9/$NAME # an HBA of the floor's own, apart from the driver's
TPG=$CFS/iscsi/$IQN/tpgt_1
ACL=$TPG/acls/$INITIATOR
DEV=/dev/$VG/$NAME

lvcreate -q -y -V "$SIZE" -T "$VG/$POOL" -n "$NAME" >/dev/null

mkdir -p "$BS" "$TPG/lun/lun_0" "$TPG/np/$PORTAL" "$ACL/lun_0"
printf %s "udev_path=$DEV" >"$BS/control"
printf %s "$DEV" >"$BS/udev_path"
printf 1 >"$BS/enable"
printf 0 >"$TPG/attrib/generate_node_acls"
printf 1 >"$TPG/attrib/authentication"
printf %s "$CHAP_USER" >"$ACL/auth/userid"
printf %s "$CHAP_PASS" >"$ACL/auth/password"
printf %s "$CHAP_USER_IN" >"$ACL/auth/userid_mutual"
printf %s "$CHAP_PASS_IN" >"$ACL/auth/password_mutual"
ln -s "$BS" "$TPG/lun/lun_0/$NAME"
ln -s "$TPG/lun/lun_0" "$ACL/lun_0/lun_0"
printf 1 >"$TPG/enable"

node=(iscsiadm -m node -T "$IQN" -p "$PORTAL")
"${node[@]}" -I default -o new >/dev/null
"${node[@]}" -o update -n node.startup -v manual -n node.session.auth.authmethod -v CHAP \
  -n node.session.auth.username -v "$CHAP_USER" -n node.session.auth.password -v "$CHAP_PASS" \
  -n node.session.auth.username_in -v "$CHAP_USER_IN" -n node.session.auth.password_in -v "$CHAP_PASS_IN"
"${node[@]}" --login >/dev/null

# The disk of LUN 0: session -> SCSI target -> H:C:T:0 -> block (devtmpfs makes /dev/sdX).
disk=""
for _ in $(seq 600); do
  for s in /sys/class/iscsi_session/session*; do
    [ "$(<"$s/targetname")" = "$IQN" ] || continue
    for b in "$s"/device/target*/*:0/block/*; do [ -e "$b" ] && disk=/dev/${b##*/}; done
  done
  [ -n "$disk" ] && [ -b "$disk" ] && break
  sleep 0.05
done
[ -n "$disk" ] || { echo "floor-attach: no disk for $IQN after 30 s" >&2; exit 1; }

mkfs.ext4 -q -m 0 -E lazy_itable_init=1,nodiscard "$disk"
mkdir -p "$STAGING" "$TARGET"
mount "$disk" "$STAGING"
mount --bind "$STAGING" "$TARGET"
echo "$disk"
