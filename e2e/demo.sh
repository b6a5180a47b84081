#!/usr/bin/env bash
# demo.sh — the whole flow in one command, no cluster needed: on a Debian machine, as root,
# installs the packages it needs, builds the driver and the demo program
# (e2e/harness/src/bin/lab_demo), boots ONE kernel-lab guest (e2e/lab/kernel-lab.sh: a stock Debian
# kernel under QEMU with LVM, LIO and open-iscsi), makes a volume group on a loop device there,
# starts the real controller and node binaries and walks through the life of a
# PersistentVolumeClaim the way Kubernetes drives it, one line per step. The last line is
# PASS or FAIL, and the exit status follows it.
#
#   e2e/demo.sh
#
# Environment:
#   DEMO_PROFILE   cargo profile: dev (default; what `cargo test` already built) or release
#   DEMO_TIMEOUT   seconds for the guest (default 600)
#   CSI_VG, CSI_THINPOOL  volume group and thin pool in the guest (default csivg, pool0)
# Needs: cargo (Rust >= 1.88, from rustup). Output: e2e/out/demo/ (driver logs, console log).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" # kernel-lab shares the current directory with the guest, at the same path
export CSI_VG=${CSI_VG:-csivg} CSI_THINPOOL=${CSI_THINPOOL:-pool0}
OUT=$ROOT/e2e/out/demo

# --- inside the guest -----------------------------------------------------------------------
if [ "${1:-}" = --in-guest ]; then
  exec 2>&1 # one stream: the host shows stdout and stderr through separate pipes
  mkdir -p "$OUT"
  echo "lab guest: Linux $(uname -r), $(nproc) CPUs, $(awk '/MemTotal/{print int($2/1024)}' /proc/meminfo) MiB"
  if ! vg=$(LAB_THINPOOL=$CSI_THINPOOL "$ROOT/e2e/lab/setup-vg.sh" "$CSI_VG" 2>"$OUT/setup-vg.log"); then
    cat "$OUT/setup-vg.log"
    echo "FAIL: could not set up the volume group"
    exit 1
  fi
  loop=$(sed -n 's/^LOOP=//p' <<<"$vg")
  echo "storage: VG $CSI_VG with thin pool $CSI_THINPOOL on $loop (a sparse file in guest RAM)"
  echo
  exec timeout -k 10 300 "$DEMO_BIN"
fi

# --- on this machine ------------------------------------------------------------------------
T0=$SECONDS
say() { printf 'demo: %s\n' "$*"; }
[ "$(id -u)" = 0 ] || { say "must run as root (QEMU, apt); FAIL"; exit 1; }
[ -d "$HOME/.cargo/bin" ] && PATH=$HOME/.cargo/bin:$PATH
if ! command -v cargo >/dev/null; then
  say "cargo not found: install Rust >= 1.88 with rustup (https://rustup.rs), then run again; FAIL"
  exit 1
fi
rm -rf "$OUT" && mkdir -p "$OUT"

"$ROOT/e2e/install-packages.sh" build lab

PROFILE=${DEMO_PROFILE:-dev}
say "building the driver and the demo program (cargo, profile $PROFILE)"
t=$SECONDS
# The build `cargo test --workspace` makes (it builds every binary of the workspace, the demo
# included): after test-all.sh's `cargo test` this is a no-op. A `cargo build` of the two
# binaries would compile many crates a second time (without the dev-dependencies' features).
PROFILE_ARGS=()
[ "$PROFILE" = dev ] || PROFILE_ARGS=(--profile "$PROFILE")
if ! cargo test --workspace ${PROFILE_ARGS[@]+"${PROFILE_ARGS[@]}"} --no-run \
  --message-format=json-render-diagnostics >"$OUT/cargo.json"; then
  say "the build failed; FAIL"
  exit 1
fi
exe() { grep -o "\"executable\":\"[^\"]*/$1\"" "$OUT/cargo.json" | tail -n 1 | cut -d'"' -f4; }
CSI_BIN=$(exe lvm-iscsi-csi)
DEMO_BIN=$(exe lab_demo)
if [ ! -x "$CSI_BIN" ] || [ ! -x "$DEMO_BIN" ]; then
  say "cargo reported no driver or demo binary (see $OUT/cargo.json); FAIL"
  exit 1
fi
BUILD_S=$((SECONDS - t))

say "booting the kernel lab (QEMU, a few seconds to a minute) and running the demo in it"
echo
t=$SECONDS
rc=0
"$ROOT/e2e/lab/kernel-lab.sh" -m 2048 -c 2 -t "${DEMO_TIMEOUT:-600}" -l "$OUT/console.log" \
  -e CSI_BIN="$CSI_BIN" -e DEMO_BIN="$DEMO_BIN" -e CSI_VG -e CSI_THINPOOL -e CSI_LAB_OUT="$OUT" \
  -e NO_COLOR=1 -- e2e/demo.sh --in-guest || rc=$?
GUEST_S=$((SECONDS - t))

echo
case $rc in
  0) verdict=PASS ;;
  124) verdict="FAIL (the guest timed out; console log: e2e/out/demo/console.log)" ;;
  125) verdict="FAIL (the guest did not start the demo; console log: e2e/out/demo/console.log)" ;;
  *) verdict="FAIL (exit $rc; driver logs: e2e/out/demo/)" ;;
esac
say "$verdict — build ${BUILD_S} s, lab guest ${GUEST_S} s, total $((SECONDS - T0)) s"
exit "$rc"
