#!/usr/bin/env bash
# test-all.sh — every test this project has that runs without a Kubernetes cluster:
#   1. `cargo test`: unit tests, server-level integration tests and the proto contract test
#      (the real-kernel tests in tests/lab_*.rs are #[ignore]d there);
#   2. e2e/lab-test.sh: the real-kernel lab (LVM, LIO/tgt, open-iscsi in a QEMU guest) and
#      csi-sanity;
#   3. e2e/demo.sh: the README's demo, the life of a PVC in a guest of its own (it reuses the
#      binaries step 1 built).
# Each runs even if an earlier one fails; the exit status is non-zero if any failed.
# Needs root for the lab (QEMU, apt for the lab's packages). TEST_ALL_SKIP_LAB=1 runs step 1 only.
# Before step 1, e2e/python-env.sh sets up the project's virtualenv (e2e/out/venv) with
# helm-python-sdk for the chart tests, unless HELM_SDK_PYTHON already names an interpreter.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
[ -d "$HOME/.cargo/bin" ] && PATH=$HOME/.cargo/bin:$PATH
[ -d /usr/local/go/bin ] && PATH=$PATH:/usr/local/go/bin # the contract test finds the spec with go

fail=0 summary=()
run() { # NAME COMMAND...
  local name=$1 start=$SECONDS rc=0
  shift
  printf '\n##### test-all: %s\n' "$name"
  "$@" || rc=$?
  if [ $rc = 0 ]; then
    summary+=("PASS  $name ($((SECONDS - start)) s)")
  else
    summary+=("FAIL  $name (exit $rc, $((SECONDS - start)) s)")
    fail=1
  fi
}

if [ -z "${HELM_SDK_PYTHON:-}" ]; then
  run "e2e/python-env.sh" "$ROOT/e2e/python-env.sh"
  export HELM_SDK_PYTHON=${E2E_VENV:-$ROOT/e2e/out/venv}/bin/python
fi
run "cargo test" cargo test
if [ "${TEST_ALL_SKIP_LAB:-0}" = 1 ]; then
  summary+=("SKIP  e2e/lab-test.sh, e2e/demo.sh (TEST_ALL_SKIP_LAB=1)")
else
  run "e2e/lab-test.sh" "$ROOT/e2e/lab-test.sh"
  run "e2e/demo.sh" "$ROOT/e2e/demo.sh"
fi

printf '\n##### test-all summary\n'
printf '  %s\n' "${summary[@]}"
exit $fail
