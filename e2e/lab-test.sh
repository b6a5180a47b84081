#!/usr/bin/env bash
# lab-test.sh — the real-kernel tests, from this machine: builds the driver and the lab test
# binaries (tests/lab_*.rs, each test #[ignore]d so that a plain `cargo test` leaves them
# alone) with `cargo test --no-run`, installs csi-sanity, then boots ONE lab guest (e2e/lab/kernel-lab.sh: a stock Debian
# kernel under QEMU, with LVM, LIO, tgt and open-iscsi) that runs e2e/lab/guest-run.sh: the
# VG setup, each lab test binary with --ignored --test-threads=1, then csi-sanity against the
# controller and node modes of the driver.
#
#   e2e/lab-test.sh
#
# Environment:
#   LAB_PROFILE      cargo profile of the binaries: dev (default: the build `cargo test` already
#                    made) or release
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

# Prints "KIND NAME EXECUTABLE" for each executable in cargo's JSON messages on stdin: the
# driver binary ("bin") and the integration test binaries ("test").
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

# One `cargo test --no-run` builds the driver and every test binary. After test-all.sh's
# `cargo test` it is a no-op; a separate `cargo build` would not be: with resolver 2, features
# that only dev-dependencies enable make `cargo build` compile many crates a second time.
step "build the driver and the test binaries (profile $PROFILE)"
t=$SECONDS
cargo test ${PROFILE_ARGS[@]+"${PROFILE_ARGS[@]}"} --no-run --message-format=json-render-diagnostics |
  executables >"$OUT/executables"
CSI_BIN=$(awk '$1 == "bin" && $2 == "lvm-iscsi-csi" {print $3}' "$OUT/executables" | tail -n 1)
if [ -z "$CSI_BIN" ] || [ ! -x "$CSI_BIN" ]; then
  echo "lab-test: cargo built no lvm-iscsi-csi binary" >&2
  exit 1
fi
LIST=$OUT/tests.list
# lab_harness (the lab's self-check) first, then the others by name.
awk '$1 == "test" && $2 == "lab_harness" {print $2, $3}' "$OUT/executables" >"$LIST"
awk '$1 == "test" && $2 ~ /^lab_/ && $2 != "lab_harness" {print $2, $3}' "$OUT/executables" | sort >>"$LIST"
BUILD_S=$((SECONDS - t))
echo "driver: $CSI_BIN" >&2
n_src=$(find tests -maxdepth 1 -name 'lab_*.rs' 2>/dev/null | wc -l)
if [ "$n_src" -eq 0 ]; then
  echo "no tests/lab_*.rs yet: the guest runs the VG setup and csi-sanity only" >&2
else
  echo "lab test binaries:" >&2
  sed 's/^/  /' "$LIST" >&2
  [ "$(wc -l <"$LIST")" -ge "$n_src" ] ||
    { echo "lab-test: $n_src tests/lab_*.rs but $(wc -l <"$LIST") lab test binaries from cargo" >&2; exit 1; }
fi
echo "build: ${BUILD_S} s" >&2

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
printf '\nlab-test: %s; build %ss, csi-sanity %ss, guest %ss, total %ss\n' \
  "$verdict" "$BUILD_S" "$SANITY_BUILD_S" "$GUEST_S" $((SECONDS - T0)) >&2
exit "$rc"
