#!/usr/bin/env bash
# python-env.sh — the project's own Python virtualenv for the tests that run Helm's engine
# (tests/chart.rs, tests/k8s_e2e.rs through tests/chart/helm_sdk.py): creates it with
# `python3 -m venv` and installs tests/chart/requirements.txt into it (helm-python-sdk, a
# prebuilt wheel from PyPI). Nothing is installed into the system's Python. A second run is a
# no-op until requirements.txt changes.
#
#   e2e/python-env.sh          sets up e2e/out/venv
#   E2E_VENV=/some/dir e2e/python-env.sh
#
# Prints the venv's interpreter on the last line of stdout: the chart tests use it when
# HELM_SDK_PYTHON names it (e2e/test-all.sh does that), or by default when it is in
# e2e/out/venv. Needs python3 (3.10+) with the venv module (Debian: python3-venv, installed
# here through e2e/install-packages.sh when run as root) and network to PyPI the first time.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${E2E_VENV:-$ROOT/e2e/out/venv}
REQUIREMENTS=$ROOT/tests/chart/requirements.txt
PY=$VENV/bin/python
stamp=$VENV/.requirements.sha256
want=$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)

say() { echo "python-env.sh: $*" >&2; }

if [ -x "$PY" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  say "$VENV is up to date with tests/chart/requirements.txt"
  echo "$PY"
  exit 0
fi

command -v python3 >/dev/null ||
  { say "python3 not found: install Python 3.10+ (Debian: apt-get install python3 python3-venv)"; exit 1; }

# `python3 -m venv` needs ensurepip, which Debian ships separately in python3-venv.
if [ ! -x "$PY" ] && ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v dpkg >/dev/null; then
    "$ROOT/e2e/install-packages.sh" python
  else
    say "python3 has no venv module: apt-get install python3-venv (as root), then run this again"
    exit 1
  fi
fi

start=$SECONDS
if [ ! -x "$PY" ]; then
  say "creating $VENV"
  python3 -m venv "$VENV" || { rm -rf "$VENV"; say "python3 -m venv $VENV failed"; exit 1; }
fi
say "installing tests/chart/requirements.txt into $VENV"
"$PY" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
"$PY" -c 'import helm_python' ||
  { say "helm-python-sdk installed but cannot be imported with $PY"; exit 1; }
echo "$want" >"$stamp"
say "ready in $((SECONDS - start)) s"
echo "$PY"
