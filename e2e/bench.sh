#!/usr/bin/env bash
# bench.sh — the benchmark, in one command: builds the driver and the benchmark program
# (e2e/harness/src/bin/lab_bench) with the release profile, boots ONE kernel-lab guest and measures,
# side by side with the same work done by hand with the raw tools (e2e/bench/floor-*.sh):
#   1. attach (Create + ControllerPublish + NodeStage + NodePublish) vs the raw-tool floor
#   2. 50 concurrent CreateVolume calls vs 50 serial lvcreate
#   3. controller start-up with 500 published volumes after a "reboot" (Probe ready, exports
#      back in configfs)
#   4. resident memory of controller and node, idle and after 100 volume lives
#   5. detach (NodeUnpublish + NodeUnstage + ControllerUnpublish) vs the raw-tool floor
# and prints a markdown table; results in e2e/out/bench/results.{md,json}, explained in
# docs/benchmarks.md. About 7 minutes in the guest on an idle 2-core machine (twice that when
# the cores are shared). Not a test: it fails only when something breaks, not when a goal is
# missed.
#
#   e2e/bench.sh
#
# Environment:
#   BENCH_RUNS (5), BENCH_CONCURRENT (50), BENCH_RESTORE (500), BENCH_LIVES (100),
#   BENCH_PARALLEL (8)   sizes of the phases (see e2e/harness/src/bin/lab_bench)
#   BENCH_PROFILE        cargo profile (default release)
#   BENCH_TIMEOUT        seconds for the guest (default 2400)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" # kernel-lab shares the current directory with the guest, at the same path
export CSI_VG=${CSI_VG:-csivg} CSI_THINPOOL=${CSI_THINPOOL:-pool0}
OUT=$ROOT/e2e/out/bench

# --- inside the guest -----------------------------------------------------------------------
if [ "${1:-}" = --in-guest ]; then
  exec 2>&1 # one stream: the host shows stdout and stderr through separate pipes
  mkdir -p "$OUT"
  echo "lab guest: Linux $(uname -r), $(nproc) CPUs, $(awk '/MemTotal/{print int($2/1024)}' /proc/meminfo) MiB"
  # A larger LVM metadata area: 500 tagged LVs do not fit comfortably in the default 1 MiB.
  if ! LAB_THINPOOL=$CSI_THINPOOL LAB_PV_METADATASIZE=16m "$ROOT/e2e/lab/setup-vg.sh" "$CSI_VG" \
    >"$OUT/setup-vg.log" 2>&1; then
    cat "$OUT/setup-vg.log"
    exit 1
  fi
  exec "$BENCH_BIN"
fi

# --- on this machine ------------------------------------------------------------------------
T0=$SECONDS
say() { printf 'bench: %s\n' "$*"; }
[ "$(id -u)" = 0 ] || { say "must run as root (QEMU, apt)"; exit 1; }
[ -d "$HOME/.cargo/bin" ] && PATH=$HOME/.cargo/bin:$PATH
command -v cargo >/dev/null ||
  { say "cargo not found: install Rust >= 1.88 with rustup (https://rustup.rs)"; exit 1; }
rm -rf "$OUT" && mkdir -p "$OUT"

"$ROOT/e2e/install-packages.sh" build lab

PROFILE=${BENCH_PROFILE:-release}
say "building the driver and the benchmark program (cargo, profile $PROFILE)"
t=$SECONDS
cargo build --workspace --profile "$PROFILE" --bin lvm-iscsi-csi --bin lab_bench \
  --message-format=json-render-diagnostics >"$OUT/cargo.json"
exe() { grep -o "\"executable\":\"[^\"]*/$1\"" "$OUT/cargo.json" | tail -n 1 | cut -d'"' -f4; }
CSI_BIN=$(exe lvm-iscsi-csi)
BENCH_BIN=$(exe lab_bench)
if [ ! -x "$CSI_BIN" ] || [ ! -x "$BENCH_BIN" ]; then
  say "cargo reported no driver or benchmark binary (see $OUT/cargo.json)"
  exit 1
fi
say "build: $((SECONDS - t)) s"

say "booting the kernel lab (4 GiB, 2 CPUs) and running the benchmark in it"
t=$SECONDS
rc=0
"$ROOT/e2e/lab/kernel-lab.sh" -m 4096 -c 2 -t "${BENCH_TIMEOUT:-2400}" -l "$OUT/console.log" \
  -e CSI_BIN="$CSI_BIN" -e BENCH_BIN="$BENCH_BIN" -e CSI_VG -e CSI_THINPOOL \
  -e CSI_LAB_OUT="$OUT" -e BENCH_FLOOR_DIR="$ROOT/e2e/bench" \
  -e BENCH_RUNS -e BENCH_CONCURRENT -e BENCH_RESTORE -e BENCH_LIVES -e BENCH_PARALLEL \
  -e NO_COLOR=1 -- e2e/bench.sh --in-guest || rc=$?
say "lab guest: $((SECONDS - t)) s, total $((SECONDS - T0)) s; results: e2e/out/bench/results.md, results.json"
[ $rc = 0 ] || say "FAILED (exit $rc); logs in e2e/out/bench/"
exit "$rc"
