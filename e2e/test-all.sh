#!/usr/bin/env bash
# test-all.sh — every test this project has that runs without a Kubernetes cluster:
#   1. `cargo test --workspace --no-fail-fast`: unit tests, server-level integration tests,
#      the chart and proto contract tests, the lab harness's own tests (the real-kernel tests
#      in e2e/harness/tests/lab_*.rs are #[ignore]d there); every test binary runs even when
#      one fails, and a table of what ran (tests passed, failed, ignored per binary) follows;
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

# cargo test, then one line per test binary from its output: a failing binary does not hide
# the others, and one that crashed before its summary line is named.
# shellcheck disable=SC2317 # called through run()
cargo_test() {
  local log=$ROOT/e2e/out/cargo-test.log rc=0
  mkdir -p "$ROOT/e2e/out"
  cargo test --workspace --no-fail-fast 2>&1 | tee "$log" || rc=$?
  printf '\n##### test-all: cargo test, per test binary (log: e2e/out/cargo-test.log)\n'
  awk '
    function flush() { if (name != "") { printf "  %-6s %-56s %s\n", "NO RESULT", name, "(crashed or killed?)"; bad++ } name = "" }
    /^ *Running / {
      flush(); bin = $NF; gsub(/[()]/, "", bin); sub(/.*\//, "", bin); sub(/-[0-9a-f]+$/, "", bin)
      name = bin " (" (($2 == "unittests") ? $3 : $2) ")"; bins++
    }
    /^ *Doc-tests / { flush(); name = "doc-tests " $2; bins++ }
    /^test result: / {
      gsub(/;/, ""); st = ($3 == "ok.") ? "ok" : "FAILED"
      printf "  %-6s %-56s %4d passed %3d failed %3d ignored\n", st, name, $4, $6, $8
      p += $4; f += $6; i += $8; if (st != "ok") bad++; name = ""
    }
    END { flush(); printf "  %d test binaries: %d passed, %d failed, %d ignored; %d binaries not ok\n", bins, p, f, i, bad }
  ' "$log"
  return "$rc"
}

run "cargo test" cargo_test
if [ "${TEST_ALL_SKIP_LAB:-0}" = 1 ]; then
  summary+=("SKIP  e2e/lab-test.sh, e2e/demo.sh (TEST_ALL_SKIP_LAB=1)")
else
  run "e2e/lab-test.sh" "$ROOT/e2e/lab-test.sh"
  run "e2e/demo.sh" "$ROOT/e2e/demo.sh"
fi

printf '\n##### test-all summary\n'
printf '  %s\n' "${summary[@]}"
exit $fail
