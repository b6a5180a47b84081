#!/usr/bin/env bash
# iscsiadm-race.sh — shows, in a lab guest, that concurrent iscsiadm calls on DIFFERENT targets
# fail: each `iscsiadm -m node -T X ...` walks every record under /etc/iscsi/nodes and stumbles
# on records other calls are creating or deleting ("encountered iSCSI database failure",
# exit 6), and a --login that "fails" that way may still have logged in. Eight loops, each
# on its own LIO target, run new/update/login/logout/delete: freely, with every call
# serialised by flock, with only the record edits (new, update, delete) serialised, and with
# the edits and the logout serialised (the login free, as the node plugin does); prints the
# failures of each round and how many failed logins left a session anyway.
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

loop() { # I LOCKED: ROUNDS x (new, update, login, logout, delete) on target I; LOCKED lists
  # the operations run under the lock (first words: -I, -o, --login, --logout)
  local node=(iscsiadm -m node -T "$(iqn "$1")" -p 127.0.0.1:3260) op rc err
  local ops=("-I default -o new" "-o update -n node.startup -v manual" "--login" "--logout" "-o delete")
  for _ in $(seq 1 "$ROUNDS"); do
    for op in "${ops[@]}"; do
      # shellcheck disable=SC2086 # op is a list of arguments
      case " $2 " in
        *" ${op%% *} "*) err=$(flock /run/lock/iscsiadm-race.lock "${node[@]}" $op 2>&1 >/dev/null) ;;
        *) err=$("${node[@]}" $op 2>&1 >/dev/null) ;;
      esac
      rc=$?
      [ $rc = 0 ] || echo "exit $rc on $op: ${err//$'\n'/ }"
      if [ $rc != 0 ] && [ "$op" = --login ] && grep -qx "$(iqn "$1")" /sys/class/iscsi_session/*/targetname 2>/dev/null; then
        echo "session up after the failed login"
      fi
    done
  done
}

for locked in "" "-I -o --login --logout" "-I -o" "-I -o --logout"; do
  start=$(date +%s%N)
  for i in $(seq 1 "$N"); do loop "$i" "$locked" & done >/tmp/iscsiadm-race.out
  wait
  ms=$((($(date +%s%N) - start) / 1000000))
  label="under flock: ${locked:-nothing}"
  echo "$label: $(grep -c '^exit' /tmp/iscsiadm-race.out) of $((N * ROUNDS * 5)) iscsiadm calls failed ($(grep -c '^session up' /tmp/iscsiadm-race.out) failed logins left a session), $ms ms"
  cut -c1-160 /tmp/iscsiadm-race.out | grep '^exit' | sed 's/: .*//' | sort | uniq -c | sort -rn | head -n 6
  iscsiadm -m node --logoutall=all >/dev/null 2>&1
  iscsiadm -m node -o delete >/dev/null 2>&1
done
