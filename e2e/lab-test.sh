#!/usr/bin/env bash
# lab-test.sh — the real-kernel tests, from this machine: builds the driver and the lab test
# binaries (tests/lab_*.rs, each test #[ignore]d so that a plain `cargo test` leaves them
# alone), installs csi-sanity, then boots ONE lab guest (e2e/lab/kernel-lab.sh: a stock Debian
# kernel under QEMU, with LVM, LIO, tgt and open-iscsi) that runs e2e/lab/guest-run.sh: the
# VG setup, each lab test binary with --ignored --test-threads=1, then csi-sanity against the
# controller and node modes of the driver.
#
#   e2e/lab-test.sh
#
# Environment:
#   LAB_PROFILE      cargo profile of the binaries: dev (default; shares the build with
#                    `cargo test`) or release
#   LAB_TIMEOUT      seconds for the whole guest run (default 2400)
#   LAB_MEM, LAB_CPUS  guest memory in MiB (default 3072) and CPUs (default 2)
#   LAB_TEST_TIMEOUT, SANITY_TIMEOUT, SANITY_FOCUS  passed to the guest (see guest-run.sh)
#   CSI_VG, CSI_THINPOOL  volume group and thin pool (default csivg, pool0)
#   LAB_SKIP_SANITY=1     do not build csi-sanity (the run then reports csi-sanity as failed)
#
# The lab tests get: CSI_BIN (the driver binary), CSI_VG, CSI_THINPOOL, CSI_LAB_OUT (a
# directory for their output, shared with this machine). Output: e2e/out/lab/ (logs, the
# csi-sanity JUnit report, the guest console log, summary.txt). Exit status: non-zero if any
# step failed.
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

# Prints "NAME EXECUTABLE" for each compiler artifact in cargo's JSON messages on stdin that is
# a target of kind $1 and whose name matches the regex $2.
artifacts() {
  python3 -c '
import json, re, sys
kind, pattern = sys.argv[1], re.compile(sys.argv[2])
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    t = m.get("target") or {}
    if m.get("reason") == "compiler-artifact" and m.get("executable") \
            and kind in t.get("kind", []) and pattern.fullmatch(t.get("name", "")):
        print(t["name"], m["executable"])
' "$1" "$2"
}

step "build the driver (profile $PROFILE)"
t=$SECONDS
CSI_BIN=$(cargo build ${PROFILE_ARGS[@]+"${PROFILE_ARGS[@]}"} --bins --message-format=json-render-diagnostics |
  artifacts bin 'lvm-iscsi-csi' | awk '{print $2}' | tail -n 1)
[ -x "$CSI_BIN" ] || { echo "lab-test: cargo build produced no lvm-iscsi-csi binary" >&2; exit 1; }
echo "driver: $CSI_BIN ($((SECONDS - t)) s)" >&2
BUILD_S=$((SECONDS - t))

step "build the lab test binaries"
t=$SECONDS
LIST=$OUT/tests.list
: >"$LIST"
lab_tests=()
for f in tests/lab_*.rs; do
  [ -e "$f" ] || continue
  n=${f#tests/}
  lab_tests+=(--test "${n%.rs}")
done
if [ ${#lab_tests[@]} -eq 0 ]; then
  echo "no tests/lab_*.rs yet: the guest runs the VG setup and csi-sanity only" >&2
else
  cargo test ${PROFILE_ARGS[@]+"${PROFILE_ARGS[@]}"} --no-run --message-format=json-render-diagnostics "${lab_tests[@]}" |
    artifacts test 'lab_.*' >"$LIST"
  echo "$(wc -l <"$LIST") lab test binaries ($((SECONDS - t)) s):" >&2
  sed 's/^/  /' "$LIST" >&2
  [ "$(wc -l <"$LIST")" -eq $((${#lab_tests[@]} / 2)) ] ||
    { echo "lab-test: expected ${#lab_tests[@]} / 2 test binaries from cargo" >&2; exit 1; }
fi
TESTBUILD_S=$((SECONDS - t))

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
"$ROOT/e2e/lab/kernel-lab.sh" -m "${LAB_MEM:-3072}" -c "${LAB_CPUS:-2}" -t "${LAB_TIMEOUT:-2400}" \
  -l "$OUT/console.log" \
  -e CSI_BIN="$CSI_BIN" -e CSI_VG -e CSI_THINPOOL -e CSI_LAB_OUT="$OUT" \
  -e CSI_SANITY="$CSI_SANITY" -e LAB_TEST_LIST="$LIST" \
  -e LAB_TEST_TIMEOUT="${LAB_TEST_TIMEOUT:-900}" -e SANITY_TIMEOUT="${SANITY_TIMEOUT:-1500}" \
  -e SANITY_FOCUS="${SANITY_FOCUS:-}" -e RUST_BACKTRACE=1 \
  -- e2e/lab/guest-run.sh || rc=$?
GUEST_S=$((SECONDS - t))

case $rc in
  0) verdict=passed ;;
  124) verdict="FAILED: the guest timed out (LAB_TIMEOUT=${LAB_TIMEOUT:-2400}); console log: e2e/out/lab/console.log" ;;
  125) verdict="FAILED: the guest did not run the tests; console log: e2e/out/lab/console.log" ;;
  *) verdict="FAILED (exit $rc); logs: e2e/out/lab/" ;;
esac
printf '\nlab-test: %s; build %ss, test build %ss, csi-sanity build %ss, guest %ss, total %ss\n' \
  "$verdict" "$BUILD_S" "$TESTBUILD_S" "$SANITY_BUILD_S" "$GUEST_S" $((SECONDS - T0)) >&2
exit "$rc"
