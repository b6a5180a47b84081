#!/usr/bin/env bash
# iscsiadm-race.sh — shows, in a lab guest, that concurrent iscsiadm calls on DIFFERENT targets
# fail: each `iscsiadm -m node -T X ...` walks every record under /etc/iscsi/nodes and stumbles
# on records other calls are creating or deleting ("encountered iSCSI database failure",
# exit 6), and a --login that "fails" that way may still have logged in. Eight loops, each
# on its own LIO target, run new/update/login/logout/delete, first freely, then serialised
# with flock; prints the failures of each round.
#
#   e2e/lab/kernel-lab.sh -- e2e/bench/iscsiadm-race.sh
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
"$ROOT/e2e/lab/setup-vg.sh" csivg >/dev/null 2>&1 || { echo "no VG" >&2; exit 1; }
INIT=$(sed -n 's/^InitiatorName=//p' /etc/iscsi/initiatorname.iscsi)
CFS=/sys/kernel/config/target
N=8 ROUNDS=6
iqn() { echo "iqn.2003-01.org.example.race:r$1"; }

for i in $(seq 1 "$N"); do
  lvcreate -q -y -V 8m -T csivg/pool0 -n "race$i" >/dev/null
  bs=$CFS/core/iblock_7/race$i tpg=$CFS/iscsi/$(iqn "$i")/tpgt_1
  mkdir -p "$bs" "$tpg/lun/lun_0" "$tpg/np/127.0.0.1:3260" "$tpg/acls/$INIT/lun_0"
  printf %s "udev_path=/dev/csivg/race$i" >"$bs/control"
  printf 1 >"$bs/enable"
  ln -s "$bs" "$tpg/lun/lun_0/race$i"
  ln -s "$tpg/lun/lun_0" "$tpg/acls/$INIT/lun_0/lun_0"
  printf 0 >"$tpg/attrib/authentication"
  printf 1 >"$tpg/enable"
done

loop() { # I LOCKED: ROUNDS x (new, update, login, logout, delete) on target I
  local node=(iscsiadm -m node -T "$(iqn "$1")" -p 127.0.0.1:3260) op rc err
  local ops=("-I default -o new" "-o update -n node.startup -v manual" "--login" "--logout" "-o delete")
  for _ in $(seq 1 "$ROUNDS"); do
    for op in "${ops[@]}"; do
      # shellcheck disable=SC2086 # op is a list of arguments
      if [ "$2" = 1 ]; then
        err=$(flock /run/lock/iscsiadm-race.lock "${node[@]}" $op 2>&1 >/dev/null)
      else
        err=$("${node[@]}" $op 2>&1 >/dev/null)
      fi
      rc=$?
      [ $rc = 0 ] || echo "exit $rc on $op: ${err//$'\n'/ }"
    done
  done
}

for locked in 0 1; do
  start=$(date +%s%N)
  for i in $(seq 1 "$N"); do loop "$i" "$locked" & done >/tmp/iscsiadm-race.out
  wait
  ms=$((($(date +%s%N) - start) / 1000000))
  label=concurrent
  [ "$locked" = 0 ] || label="serialised (flock)"
  echo "$label: $(grep -c '^exit' /tmp/iscsiadm-race.out) of $((N * ROUNDS * 5)) iscsiadm calls failed, $ms ms"
  cut -c1-160 /tmp/iscsiadm-race.out | sort | uniq -c | sort -rn | head -n 4
  iscsiadm -m node --logoutall=all >/dev/null 2>&1
  iscsiadm -m node -o delete >/dev/null 2>&1
done
