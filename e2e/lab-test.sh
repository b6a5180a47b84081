#!/usr/bin/env bash
# lab-test.sh — the real-kernel tests, from this machine: builds the driver and the lab test
# binaries (e2e/harness/tests/lab_*.rs, each test #[ignore]d so that `cargo test` leaves them
# alone) with `cargo test --workspace --no-run`, lists their tests, installs csi-sanity, then
# boots ONE lab guest (e2e/lab/kernel-lab.sh: a stock Debian kernel under QEMU, with LVM, LIO,
# tgt and open-iscsi) that runs e2e/lab/guest-run.sh: the VG setup, each lab test in a process
# of its own under a time limit, then csi-sanity against the controller and node modes of the
# driver.
#
#   e2e/lab-test.sh
#
# Environment:
#   LAB_PROFILE      cargo profile of the binaries: dev (default: the build `cargo test` already
#                    made) or release
#   LAB_TEST_TIMEOUT seconds per lab test (default 900; the slowest took 366 s on a 2-core
#                    machine at load 12)
#   SANITY_TIMEOUT   seconds for csi-sanity (default 2400; 1122 s at load 12)
#   LAB_TIMEOUT      seconds for the whole guest, a backstop for a guest that hangs (default:
#                    derived, LAB_TEST_TIMEOUT per test + SANITY_TIMEOUT + 600 for boot, VG
#                    setup and teardown)
#   LAB_MEM, LAB_CPUS  guest memory in MiB (default 3072) and CPUs (default 2)
#   SANITY_FOCUS     passed to the guest (see guest-run.sh)
#   CSI_VG, CSI_THINPOOL  volume group and thin pool (default csivg, pool0)
#   LAB_SKIP_SANITY=1     do not build csi-sanity (the run then reports csi-sanity as failed)
#
# The lab tests get: CSI_BIN (the driver binary), CSI_VG, CSI_THINPOOL, CSI_LAB_OUT (a
# directory for their output, shared with this machine). Output: e2e/out/lab/ (logs, the
# csi-sanity JUnit report, the guest console log, summary.txt: kept, with the step it was in,
# when the guest is stopped by LAB_TIMEOUT). Exit status: non-zero if any step failed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" # kernel-lab shares the current directory with the guest, at the same path

PROFILE=${LAB_PROFILE:-dev}
# No --profile for dev: `cargo test` then reuses exactly what test-all.sh's `cargo test` built.
PROFILE_ARGS=()
[ "$PROFILE" = dev ] || PROFILE_ARGS=(--profile "$PROFILE")
OUT=$ROOT/e2e/out/lab
export CSI_VG=${CSI_VG:-csivg} CSI_THINPOOL=${CSI_THINPOOL:-pool0}
[ -d "$HOME/.cargo/bin" ] && PATH=$HOME/.cargo/bin:$PATH
command -v cargo >/dev/null || { echo "lab-test: cargo not found" >&2; exit 1; }
command -v python3 >/dev/null || { echo "lab-test: python3 not found (parses cargo's JSON)" >&2; exit 1; }

step() { printf '\n### lab-test: %s\n' "$*" >&2; }
T0=$SECONDS
rm -rf "$OUT" && mkdir -p "$OUT"

# Prints "KIND NAME EXECUTABLE" for each executable in cargo's JSON messages on stdin: the
# binaries ("bin": the driver, the lab programs) and the integration test binaries ("test").
executables() {
  python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    kind, test = m["target"]["kind"], m["profile"]["test"]
    if "bin" in kind and not test:
        print("bin", m["target"]["name"], m["executable"])
    elif "test" in kind:
        print("test", m["target"]["name"], m["executable"])
'
}

# One `cargo test --workspace --no-run` builds the driver and every test binary. After
# test-all.sh's `cargo test --workspace` it is a no-op; a separate `cargo build` would not be:
# with resolver 2, features that only dev-dependencies enable make `cargo build` compile many
# crates a second time.
step "build the driver and the test binaries (profile $PROFILE)"
t=$SECONDS
cargo test --workspace ${PROFILE_ARGS[@]+"${PROFILE_ARGS[@]}"} --no-run --message-format=json-render-diagnostics |
  executables >"$OUT/executables"
CSI_BIN=$(awk '$1 == "bin" && $2 == "lvm-iscsi-csi" {print $3}' "$OUT/executables" | tail -n 1)
if [ -z "$CSI_BIN" ] || [ ! -x "$CSI_BIN" ]; then
  echo "lab-test: cargo built no lvm-iscsi-csi binary" >&2
  exit 1
fi
BINS=$OUT/binaries.list
# lab_harness (the lab's self-check) first, then the others by name.
awk '$1 == "test" && $2 == "lab_harness" {print $2, $3}' "$OUT/executables" >"$BINS"
awk '$1 == "test" && $2 ~ /^lab_/ && $2 != "lab_harness" {print $2, $3}' "$OUT/executables" | sort >>"$BINS"
BUILD_S=$((SECONDS - t))
echo "driver: $CSI_BIN" >&2
n_src=$(find e2e/harness/tests -maxdepth 1 -name 'lab_*.rs' 2>/dev/null | wc -l)
[ "$(wc -l <"$BINS")" -ge "$n_src" ] ||
  { echo "lab-test: $n_src e2e/harness/tests/lab_*.rs but $(wc -l <"$BINS") lab test binaries from cargo" >&2; exit 1; }

# The tests, "BINARY TEST EXECUTABLE" per line, in each binary's order: the guest runs each
# in a process of its own (listing runs nothing, so it works here).
LIST=$OUT/tests.list
: >"$LIST"
while read -r name exe; do
  tests=$("$exe" --list --ignored --format terse </dev/null | sed -n 's/: test$//p') ||
    { echo "lab-test: $exe --list failed" >&2; exit 1; }
  [ -n "$tests" ] || { echo "lab-test: $name has no #[ignore]d test" >&2; exit 1; }
  while read -r test; do printf '%s %s %s\n' "$name" "$test" "$exe"; done <<<"$tests" >>"$LIST"
done <"$BINS"
N_TESTS=$(grep -c . "$LIST" || true)
if [ "$N_TESTS" -eq 0 ]; then
  echo "no e2e/harness/tests/lab_*.rs: the guest runs the VG setup and csi-sanity only" >&2
else
  echo "$N_TESTS lab tests in $(wc -l <"$BINS") binaries:" >&2
  awk '{print "  " $1 "::" $2}' "$LIST" >&2
fi
echo "build: ${BUILD_S} s" >&2

# Each test and csi-sanity has its own limit; the guest's is their sum plus boot, VG setup
# and teardown, a backstop for a guest that hangs.
TEST_LIMIT=${LAB_TEST_TIMEOUT:-900} SANITY_LIMIT=${SANITY_TIMEOUT:-2400}
GUEST_LIMIT=${LAB_TIMEOUT:-$((N_TESTS * TEST_LIMIT + SANITY_LIMIT + 600))}

CSI_SANITY=""
if [ "${LAB_SKIP_SANITY:-0}" != 1 ]; then
  step "csi-sanity"
  t=$SECONDS
  CSI_SANITY=$("$ROOT/e2e/tools.sh" | tail -n 1)/csi-sanity
  SANITY_BUILD_S=$((SECONDS - t))
else
  SANITY_BUILD_S=0
fi

step "boot the lab guest"
t=$SECONDS
rc=0
echo "limits: ${TEST_LIMIT} s per test, csi-sanity ${SANITY_LIMIT} s, the guest ${GUEST_LIMIT} s" >&2
"$ROOT/e2e/lab/kernel-lab.sh" -m "${LAB_MEM:-3072}" -c "${LAB_CPUS:-2}" -t "$GUEST_LIMIT" \
  -l "$OUT/console.log" \
  -e CSI_BIN="$CSI_BIN" -e CSI_VG -e CSI_THINPOOL -e CSI_LAB_OUT="$OUT" \
  -e CSI_SANITY="$CSI_SANITY" -e LAB_TEST_LIST="$LIST" \
  -e LAB_TEST_TIMEOUT="$TEST_LIMIT" -e SANITY_TIMEOUT="$SANITY_LIMIT" \
  -e SANITY_FOCUS="${SANITY_FOCUS:-}" -e RUST_BACKTRACE=1 \
  -- e2e/lab/guest-run.sh || rc=$?
GUEST_S=$((SECONDS - t))

CONSOLE=${OUT#"$ROOT"/}/console.log
case $rc in
  0) verdict=passed ;;
  124) verdict="FAILED: the guest timed out after ${GUEST_LIMIT} s; results so far: ${OUT#"$ROOT"/}/summary.txt; console log: $CONSOLE" ;;
  125) verdict="FAILED: the guest did not run the tests; console log: $CONSOLE" ;;
  *) verdict="FAILED (exit $rc); logs: ${OUT#"$ROOT"/}/" ;;
esac
# A guest stopped from outside printed no summary: show what it had written so far.
if [ "$rc" = 124 ] || [ "$rc" = 125 ]; then
  if [ -f "$OUT/summary.txt" ]; then
    echo "lab: the guest was stopped ($verdict)" >>"$OUT/summary.txt"
    cat "$OUT/summary.txt" >&2
  else
    echo "lab: no results: the guest was stopped before the first step ($verdict)" >"$OUT/summary.txt"
  fi
fi
printf '\nlab-test: %s; build %ss, csi-sanity %ss, guest %ss, total %ss\n' \
  "$verdict" "$BUILD_S" "$SANITY_BUILD_S" "$GUEST_S" $((SECONDS - T0)) >&2
exit "$rc"
