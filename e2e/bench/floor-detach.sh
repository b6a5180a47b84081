#!/usr/bin/env bash
# floor-detach.sh — the raw-tool floor of a detach: by hand, the work the driver does for
# NodeUnpublishVolume + NodeUnstageVolume + ControllerUnpublishVolume: both unmounts, the
# disk's buffers flushed and the SCSI device deleted, logout and the node record deleted, then
# the ACL, LUN, portal, target and backstore removed from configfs (the LV stays, as after
# ControllerUnpublishVolume). Undoes floor-attach.sh; run by e2e/harness/src/bin/lab_bench.
#
# Environment (all required): NAME IQN PORTAL INITIATOR STAGING TARGET DISK (/dev/sdX)
set -euo pipefail

CFS=/sys/kernel/config/target
BS=$CFS/core/iblock_9/$NAME
TPG=$CFS/iscsi/$IQN/tpgt_1
ACL=$TPG/acls/$INITIATOR

umount "$TARGET" "$STAGING"
blockdev --flushbufs "$DISK"
printf 1 >"/sys/block/${DISK#/dev/}/device/delete"
node=(iscsiadm -m node -T "$IQN" -p "$PORTAL")
"${node[@]}" --logout >/dev/null
"${node[@]}" -o delete

printf 0 >"$TPG/enable"
rm "$ACL/lun_0/lun_0" "$TPG/lun/lun_0/$NAME"
rmdir "$ACL/lun_0" "$ACL" "$TPG/lun/lun_0" "$TPG/np/$PORTAL" "$TPG" "$CFS/iscsi/$IQN" "$BS"
