#!/usr/bin/env bash
# tools.sh — install the pinned test tools the e2e scripts use into a project-local bin dir.
#
#   e2e/tools.sh            installs csi-sanity into e2e/out/bin (skipped if already the pinned version)
#   E2E_BIN=/some/dir e2e/tools.sh
#
# Prints the bin dir on the last line of stdout, so callers can do BIN=$(e2e/tools.sh | tail -n1).
# csi-sanity comes from the Go module proxy (go install), so it needs Go (>= 1.22) on PATH or
# in /usr/local/go/bin.
set -euo pipefail

# Newest v5 tag on the Go module proxy when pinned (go list -m -versions github.com/kubernetes-csi/csi-test/v5).
CSI_TEST_VERSION=${CSI_TEST_VERSION:-v5.6.0}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${E2E_BIN:-$ROOT/e2e/out/bin}
mkdir -p "$BIN"

command -v go >/dev/null 2>&1 || PATH=$PATH:/usr/local/go/bin
command -v go >/dev/null 2>&1 || { echo "tools.sh: go not found (install Go, or put it in /usr/local/go/bin)" >&2; exit 1; }

stamp="$BIN/.csi-sanity.version"
if [ -x "$BIN/csi-sanity" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$CSI_TEST_VERSION" ]; then
  echo "tools.sh: csi-sanity $CSI_TEST_VERSION already in $BIN" >&2
else
  echo "tools.sh: go install csi-sanity@$CSI_TEST_VERSION into $BIN" >&2
  start=$SECONDS
  # CGO off: a static binary that runs in the lab guest and anywhere else without surprises.
  GOBIN=$BIN CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
    go install "github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@$CSI_TEST_VERSION"
  echo "$CSI_TEST_VERSION" > "$stamp"
  echo "tools.sh: csi-sanity built in $((SECONDS - start)) s" >&2
fi
echo "$BIN"
