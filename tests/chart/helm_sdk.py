#!/usr/bin/env python3
"""Helm's own engine (Helm v4's Go SDK through the helm-python-sdk package), no helm binary.

Used by the chart tests (tests/chart.rs) and the Kubernetes scenarios (e2e/k8s), and handy
by hand:

    python3 tests/chart/helm_sdk.py render deploy/helm/lvm-iscsi-csi [-f values.yaml ...]
        lint --strict, then the manifest a client-side dry-run install renders
    python3 tests/chart/helm_sdk.py batch deploy/helm/lvm-iscsi-csi < cases.json
        for tests: stdin is [{"name", "values_files": [...], "values": {...}}, ...]
        (inline values merged last); stdout is one JSON
        array with, per case, the lint report, the manifest split into documents
        (each parsed to JSON by Helm's YAML parser), the NOTES, or the error
    python3 tests/chart/helm_sdk.py install|upgrade|uninstall ... (real cluster, KUBECONFIG)

Run it with the project's virtualenv, which e2e/python-env.sh makes (e2e/out/venv/bin/python
tests/chart/helm_sdk.py ...), or install the dependency yourself:
pip install -r tests/chart/requirements.txt
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

try:
    import helm_python as helm
except ImportError as exc:  # the Rust test prints this line as the reason it failed
    sys.stderr.write(
        f"cannot import helm_python ({exc}) with {sys.executable}: run e2e/python-env.sh "
        "(the project's virtualenv e2e/out/venv) and use e2e/out/venv/bin/python, or "
        "`pip install -r tests/chart/requirements.txt`\n"
    )
    sys.exit(3)

# The Kubernetes version lint and render assume (the chart's kubeVersion must accept it).
KUBE_VERSION = "v1.32.0"
RELEASE = "csi"
NAMESPACE = "lvm-iscsi-csi"
# helm's own manifest splitter: a line holding only `---` separates documents.
DOC_SEPARATOR = re.compile(r"^---[ \t]*$", re.MULTILINE)


def load_values(files: list[str]) -> dict[str, Any]:
    """Merges values files left to right, like `helm -f a -f b` (maps merge, the rest wins)."""
    merged: dict[str, Any] = {}
    for path in files:
        with open(path, encoding="utf-8") as f:
            merge(merged, helm.values_from_yaml(f.read()))
    return merged


def merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value


def lint(chart: str, values: dict[str, Any]) -> dict[str, Any]:
    return helm.lint(
        chart, values or None, strict=True, namespace=NAMESPACE, kube_version=KUBE_VERSION
    )


def render(chart: str, values: dict[str, Any]) -> dict[str, Any]:
    """A client-side dry-run install: the full release manifest and NOTES, no cluster."""
    config = helm.Config(namespace=NAMESPACE)
    try:
        release = config.install(
            chart, RELEASE, values or None, namespace=NAMESPACE, dry_run="client"
        )
    finally:
        config.close()
    return {"manifest": release.get("manifest", ""), "notes": release.get("notes", "")}


def documents(manifest: str) -> list[dict[str, Any]]:
    """Each non-empty document of a manifest as JSON, parsed by Helm's YAML parser."""
    docs = []
    for text in DOC_SEPARATOR.split(manifest):
        parsed = helm.values_from_yaml(text)
        if parsed:
            docs.append(parsed)
    return docs


def lint_failed(report: dict[str, Any]) -> bool:
    # --strict: warnings (severity 2) fail like errors (3).
    return bool(report.get("errors")) or any(
        m.get("severity", 0) >= 2 for m in report.get("messages", [])
    )


def run_case(chart: str, case: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": case["name"]}
    try:
        values = load_values(case.get("values_files", []))
        merge(values, case.get("values") or {})
        out["lint"] = lint(chart, values)
        rendered = render(chart, values)
        out["notes"] = rendered["notes"]
        out["documents"] = documents(rendered["manifest"])
    except helm.HelmError as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


def cmd_batch(args: argparse.Namespace) -> int:
    cases = json.load(sys.stdin)
    json.dump([run_case(args.chart, c) for c in cases], sys.stdout)
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    values = load_values(args.values)
    report = lint(args.chart, values)
    for m in report.get("messages", []):
        level = {1: "INFO", 2: "WARNING", 3: "ERROR"}.get(m.get("severity"), "UNKNOWN")
        print(f"# lint [{level}] {m.get('path')}: {m.get('error')}")
    for e in report.get("errors", []):
        print(f"# lint [ERROR] {e}")
    print(f"# lint: {'FAILED' if lint_failed(report) else 'passed'} (strict)")
    try:
        rendered = render(args.chart, values)
    except helm.HelmError as exc:
        print(f"render failed: {exc}", file=sys.stderr)
        return 1
    print(rendered["manifest"])
    if args.notes:
        print(rendered["notes"])
    return 1 if lint_failed(report) else 0


def cluster_config(args: argparse.Namespace) -> Any:
    return helm.Config(kubeconfig_path=args.kubeconfig, namespace=args.namespace)


def cmd_install(args: argparse.Namespace) -> int:
    config = cluster_config(args)
    try:
        action = config.upgrade if args.command == "upgrade" else config.install
        release = action(
            args.chart,
            args.release,
            load_values(args.values) or None,
            namespace=args.namespace,
            wait="watcher",
            timeout=args.timeout,
        )
    finally:
        config.close()
    print(json.dumps({k: v for k, v in release.items() if k != "manifest"}))
    return 0


def cmd_uninstall(args: argparse.Namespace) -> int:
    config = cluster_config(args)
    try:
        config.uninstall(
            args.release, wait="watcher", timeout=args.timeout, ignore_not_found=True
        )
    finally:
        config.close()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("render", help="lint --strict and render the chart")
    p.add_argument("chart")
    p.add_argument("-f", "--values", action="append", default=[])
    p.add_argument("--notes", action="store_true", help="also print NOTES.txt")
    p.set_defaults(func=cmd_render)
    p = sub.add_parser("batch", help="lint and render test cases read from stdin (JSON)")
    p.add_argument("chart")
    p.set_defaults(func=cmd_batch)
    for name in ("install", "upgrade"):
        p = sub.add_parser(name, help=f"helm {name} into the cluster of KUBECONFIG")
        p.add_argument("chart")
        p.add_argument("--release", required=True)
        p.add_argument("--namespace", required=True)
        p.add_argument("--kubeconfig")
        p.add_argument("-f", "--values", action="append", default=[])
        p.add_argument("--timeout", type=int, default=300)
        p.set_defaults(func=cmd_install)
    p = sub.add_parser("uninstall", help="helm uninstall from the cluster of KUBECONFIG")
    p.add_argument("--release", required=True)
    p.add_argument("--namespace", required=True)
    p.add_argument("--kubeconfig")
    p.add_argument("--timeout", type=int, default=300)
    p.set_defaults(func=cmd_uninstall)
    args = parser.parse_args()
    try:
        return args.func(args)
    except helm.HelmError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
