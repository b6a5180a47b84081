#!/usr/bin/env bash
# guest-run.sh — the real-kernel test run, inside one lab guest (started by e2e/lab-test.sh
# through e2e/lab/kernel-lab.sh, in the repository root):
#   1. volume group(s) on a loop device, with a thin pool (e2e/lab/setup-vg.sh);
#   2. each lab test (e2e/harness/tests/lab_*.rs, built on the host) in a process of its own,
#      `BINARY --ignored --exact TEST`, under a time limit, one progress line per test;
#   3. csi-sanity against the driver: controller (LIO) and node (open-iscsi) on unix sockets.
# Every step runs even when an earlier one failed. $CSI_LAB_OUT/summary.txt is rewritten after
# every step (so a guest stopped from outside leaves the results so far, and the step it was
# in), printed at the end, and the exit status is non-zero if any step failed.
#
# Environment (set by e2e/lab-test.sh):
#   CSI_BIN          the driver binary
#   CSI_VG           volume group for the tests (default csivg)
#   CSI_THINPOOL     thin pool in it (default pool0)
#   CSI_LAB_OUT      output directory (logs, JUnit report, summary); shared with the host
#   CSI_SANITY       the csi-sanity binary (empty: csi-sanity is not run, and that is a failure)
#   LAB_TEST_LIST    file listing the lab tests, "BINARY TEST PATH" per line (may be empty)
#   LAB_TEST_TIMEOUT seconds per lab test (default 900)
#   SANITY_TIMEOUT   seconds for csi-sanity (default 2400)
#   SANITY_FOCUS     optional ginkgo focus regex (to run part of csi-sanity by hand)
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export CSI_VG=${CSI_VG:-csivg}
export CSI_THINPOOL=${CSI_THINPOOL:-pool0}
export CSI_BIN=${CSI_BIN:-}
export CSI_LAB_OUT=${CSI_LAB_OUT:-$ROOT/e2e/out/lab}
CSI_SANITY=${CSI_SANITY:-}
LAB_TEST_LIST=${LAB_TEST_LIST:-}
LAB_TEST_TIMEOUT=${LAB_TEST_TIMEOUT:-900}
SANITY_TIMEOUT=${SANITY_TIMEOUT:-2400}
SKIPS_FILE=$ROOT/e2e/sanity-skips.txt
OUT=$CSI_LAB_OUT
mkdir -p "$OUT"
export NO_COLOR=1 # plain logs in the files we keep

RESULTS=() FAILED=0 T0=$SECONDS
say() { printf '\n=== %s\n' "$*"; }
# The summary so far; the last line is the verdict, or the step under way while one runs.
write_summary() { # LAST_LINE
  {
    echo "lab summary (logs in ${OUT#"$ROOT"/}):"
    printf '  %s\n' ${RESULTS[@]+"${RESULTS[@]}"}
    echo "$1"
  } >"$OUT/summary.txt.new" && mv "$OUT/summary.txt.new" "$OUT/summary.txt"
}
running() { write_summary "lab: INCOMPLETE: the run got as far as $* (begun $((SECONDS - T0)) s into it)"; }
record() { # STATUS NAME SECONDS [NOTE]
  RESULTS+=("$(printf '%-5s %-72s %5ss %s' "$1" "$2" "$3" "${4:-}")")
  [ "$1" != FAIL ] || FAILED=1
  running "the next step"
}

say "guest: $(uname -r), $(nproc) CPUs, $(awk '/MemTotal/{print int($2/1024)}' /proc/meminfo) MiB"

# --- 1. volume groups -----------------------------------------------------------------------
setup_vg() {
  local start=$SECONDS
  running "setup-vg${1:+ ($1)}"
  if LAB_THINPOOL=$CSI_THINPOOL "$ROOT/e2e/lab/setup-vg.sh" "$CSI_VG" >"$OUT/setup-vg.log" 2>&1; then
    record PASS "setup-vg $CSI_VG/$CSI_THINPOOL${1:+ ($1)}" $((SECONDS - start))
  else
    cat "$OUT/setup-vg.log"
    record FAIL "setup-vg $CSI_VG/$CSI_THINPOOL${1:+ ($1)}" $((SECONDS - start)) "see setup-vg.log"
    return 1
  fi
}
say "setting up volume group $CSI_VG with thin pool $CSI_THINPOOL"
setup_vg || true

# --- 2. lab tests ---------------------------------------------------------------------------
# One process per test: each has its own time limit, a hung test is named, and the tests
# after it still run.
run_lab_tests() {
  local total i=0 passed=0 failed=0 bin test exe start rc note part
  total=$(grep -c . "$LAB_TEST_LIST")
  say "$total lab tests, at most ${LAB_TEST_TIMEOUT} s each"
  rm -f "$OUT"/lab_*.log
  # stdin from the list file for the loop only: the tests read /dev/null.
  while read -r bin test exe; do
    [ -n "$test" ] || continue
    i=$((i + 1))
    printf '[%2d/%d] %-72s ' "$i" "$total" "$bin::$test"
    running "$bin::$test (test $i of $total)"
    start=$SECONDS
    part=$OUT/.test-output
    rc=0
    timeout -k 10 "$LAB_TEST_TIMEOUT" "$exe" --ignored --exact "$test" --test-threads=1 \
      </dev/null >"$part" 2>&1 || rc=$?
    { printf '\n##### %s (exit %s, %s s)\n' "$test" "$rc" $((SECONDS - start)); cat "$part"; } >>"$OUT/$bin.log"
    if [ "$rc" = 0 ] && grep -q '^test result: ok. 1 passed' "$part"; then
      passed=$((passed + 1))
      echo "ok ($((SECONDS - start)) s)"
      record PASS "$bin::$test" $((SECONDS - start))
    else
      failed=$((failed + 1))
      note="exit $rc"
      [ "$rc" != 124 ] || note="timed out after ${LAB_TEST_TIMEOUT} s"
      [ "$rc" != 0 ] || note="did not run (filtered out?)"
      echo "FAILED: $note ($((SECONDS - start)) s)"
      tail -n 60 "$part" | sed 's/^/    | /'
      record FAIL "$bin::$test" $((SECONDS - start)) "$note; see $bin.log"
    fi
  done <"$LAB_TEST_LIST"
  rm -f "$part"
  RESULTS+=("$(printf 'lab tests: %d passed, %d failed, of %d' "$passed" "$failed" "$total")")
}
if [ -z "$LAB_TEST_LIST" ] || [ ! -s "$LAB_TEST_LIST" ]; then
  say "no lab tests (no e2e/harness/tests/lab_*.rs)"
  record SKIP "lab tests" 0 "no e2e/harness/tests/lab_*.rs"
else
  run_lab_tests
fi

# --- 3. csi-sanity --------------------------------------------------------------------------
CTL_SOCK=/tmp/csi-ctl.sock NODE_SOCK=/tmp/csi-node.sock
PIDS=()

stop_drivers() {
  local p
  for p in ${PIDS[@]+"${PIDS[@]}"}; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 20); do
    local alive=0
    for p in ${PIDS[@]+"${PIDS[@]}"}; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 1 ] || break
    sleep 0.5
  done
  for p in ${PIDS[@]+"${PIDS[@]}"}; do kill -KILL "$p" 2>/dev/null || true; done
  PIDS=()
}

wait_socket() { # SOCK PID LOG: up to 60 s for the socket; fails early if the process died
  for _ in $(seq 120); do
    [ -S "$1" ] && return 0
    kill -0 "$2" 2>/dev/null || { echo "driver exited before creating $1; last lines of $3:"; tail -n 30 "$3"; return 1; }
    sleep 0.5
  done
  echo "no socket $1 after 60 s; last lines of $3:"
  tail -n 30 "$3"
  return 1
}

# The skip list: one regex per line, each with a "# reason". Prints one regex per line.
read_skips() {
  local line re reason bad=0
  while IFS= read -r line || [ -n "$line" ]; do
    case $line in '' | '#'*) continue ;; esac
    re=${line%%' #'*}
    re=${re%"${re##*[![:space:]]}"}
    reason=${line#*' #'}
    if [ "$re" = "$line" ] || [ -z "${reason//[[:space:]]/}" ]; then
      echo "sanity-skips.txt: no '# reason' on: $line" >&2
      bad=1
      continue
    fi
    printf '%s\n' "$re"
  done <"$SKIPS_FILE"
  return $bad
}

run_sanity() {
  local start=$SECONDS iqn key secrets skips=() re rc
  if [ -z "$CSI_SANITY" ] || [ ! -x "$CSI_SANITY" ]; then
    record FAIL csi-sanity 0 "csi-sanity binary missing (${CSI_SANITY:-unset})"
    return
  fi
  if [ -z "$CSI_BIN" ] || [ ! -x "$CSI_BIN" ]; then
    record FAIL csi-sanity 0 "driver binary missing (${CSI_BIN:-unset})"
    return
  fi
  if [ -f "$SKIPS_FILE" ]; then
    local list
    if ! list=$(read_skips); then
      record FAIL csi-sanity 0 "e2e/sanity-skips.txt: every skip needs a '# reason'"
      return
    fi
    while IFS= read -r re; do [ -z "$re" ] || skips+=("--ginkgo.skip=$re"); done <<<"$list"
  fi

  # Leftovers from the lab tests must not hold the portal or the VG.
  if pgrep -x tgtd >/dev/null; then
    echo "warning: a tgtd is still running (left by a lab test); stopping it: LIO needs port 3260"
    pkill -x tgtd
    sleep 1
  fi
  setup_vg "again, before csi-sanity" || { record FAIL csi-sanity 0 "no VG"; return; }

  iqn=$(sed -n 's/^InitiatorName=//p' /etc/iscsi/initiatorname.iscsi | head -n 1)
  [ -n "$iqn" ] || { record FAIL csi-sanity 0 "no InitiatorName in /etc/iscsi/initiatorname.iscsi"; return; }
  key=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
  secrets=/tmp/csi-sanity-secrets.yaml # guest tmpfs: the key never lands in the repository
  (
    umask 077
    for s in CreateVolumeSecret DeleteVolumeSecret ControllerPublishVolumeSecret \
      ControllerUnpublishVolumeSecret ControllerValidateVolumeCapabilitiesSecret \
      NodeStageVolumeSecret NodePublishVolumeSecret CreateSnapshotSecret DeleteSnapshotSecret \
      ControllerExpandVolumeSecret ControllerModifyVolumeSecret ListSnapshotsSecret GetSnapshotSecret; do
      printf '%s:\n  chapKey: "%s"\n' "$s" "$key"
    done >"$secrets"
  )

  rm -f "$CTL_SOCK" "$NODE_SOCK"
  echo "controller: $CSI_BIN controller ... (log: controller.log)"
  "$CSI_BIN" controller --endpoint "unix://$CTL_SOCK" --standalone --target-backend lio \
    --portal 127.0.0.1:3260 --default-volume-group "$CSI_VG" >"$OUT/controller.log" 2>&1 </dev/null &
  PIDS+=($!)
  local ctl=$!
  echo "node: $CSI_BIN node ... --node-id $iqn (log: node.log)"
  "$CSI_BIN" node --endpoint "unix://$NODE_SOCK" --standalone --iscsiadm-mode direct \
    --node-id "$iqn" >"$OUT/node.log" 2>&1 </dev/null &
  PIDS+=($!)
  local node=$!
  if ! wait_socket "$CTL_SOCK" "$ctl" "$OUT/controller.log" || ! wait_socket "$NODE_SOCK" "$node" "$OUT/node.log"; then
    stop_drivers
    record FAIL csi-sanity $((SECONDS - start)) "the driver did not start; see controller.log, node.log"
    return
  fi

  echo "csi-sanity: ${#skips[@]} skip pattern(s) from e2e/sanity-skips.txt (log: csi-sanity.log)"
  local focus=()
  [ -z "${SANITY_FOCUS:-}" ] || focus=("--ginkgo.focus=$SANITY_FOCUS")
  # The expansion specs grow the 64 MiB test volume to 128 MiB (their default, +1 GiB,
  # costs guest RAM and minutes of mkfs under emulation for nothing more).
  timeout -k 10 "$SANITY_TIMEOUT" "$CSI_SANITY" \
    --csi.endpoint "$NODE_SOCK" --csi.controllerendpoint "$CTL_SOCK" \
    --csi.stagingdir /tmp/csi-staging --csi.mountdir /tmp/csi-mount \
    --csi.testvolumesize 67108864 --csi.testvolumeexpandsize 134217728 --csi.secrets "$secrets" \
    --ginkgo.junit-report "$OUT/csi-sanity.junit.xml" --ginkgo.no-color \
    ${skips[@]+"${skips[@]}"} ${focus[@]+"${focus[@]}"} </dev/null 2>&1 | tee "$OUT/csi-sanity.log"
  rc=${PIPESTATUS[0]}
  stop_drivers
  rm -f "$secrets"
  local counts
  counts=$(grep -Eo 'Ran [0-9]+ of [0-9]+ Specs.*|[0-9]+ Passed \| [0-9]+ Failed.*' "$OUT/csi-sanity.log" | tr '\n' ' ')
  if [ "$rc" = 0 ]; then
    record PASS csi-sanity $((SECONDS - start)) "$counts"
  elif [ "$rc" = 124 ]; then
    record FAIL csi-sanity $((SECONDS - start)) "timed out after ${SANITY_TIMEOUT}s; see csi-sanity.log"
  else
    record FAIL csi-sanity $((SECONDS - start)) "exit $rc; $counts; see csi-sanity.log, csi-sanity.junit.xml"
  fi
}
say "csi-sanity"
running csi-sanity
run_sanity

# --- what the kernel and the tools were left with, for whoever reads a failure --------------
{
  echo "## lvs"; lvs -a -o lv_name,vg_name,lv_attr,lv_size,pool_lv,lv_tags 2>&1
  echo "## LIO targets"; find /sys/kernel/config/target/iscsi -maxdepth 6 2>&1 | head -n 200
  echo "## iscsiadm -m session"; iscsiadm -m session 2>&1
  echo "## iscsiadm -m node"; iscsiadm -m node 2>&1
  echo "## mounts"; grep -E 'csi|/dev/(sd|mapper|dm-)' /proc/self/mountinfo
  echo "## block devices"; lsblk 2>&1
} >"$OUT/state.txt" 2>&1
dmesg >"$OUT/dmesg.log" 2>&1

if [ $FAILED = 0 ]; then write_summary "lab: all passed"; else write_summary "lab: FAILED"; fi
echo
cat "$OUT/summary.txt"
exit $FAILED
