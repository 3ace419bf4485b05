#!/usr/bin/env python3
"""Write the files that are copies of others, or `--check` that they are current (exit 1 + diff).

- manifests/monitoring/prometheusrule.yaml: the PrometheusRule whose spec is
  manifests/monitoring/rules.yaml, comments and all (the rules are written once, in the plain
  Prometheus rules file);
- charts/modeldeploy/crds/: the generated CRD (crds/), which Helm installs from there;
- charts/modeldeploy/files/: the alert rules, the Grafana dashboard and the canary-weight
  admission warning, which the chart's templates read with .Files.Get (Helm reads no file outside
  the chart's directory);
- manifests/argocd/argocd-cm.yaml: the argocd-cm entries (health check and resource actions) made
  from the Lua files beside it (hack/argocd_cm.py), which an admin merges into Argo CD's ConfigMap.

Run by `make generated` and `make check-generated`; tests/integration/test_monitoring.py checks it.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import argocd_cm

REPO = Path(__file__).resolve().parents[1]
MONITORING = REPO / "manifests" / "monitoring"
CHART = REPO / "charts" / "modeldeploy"
CRD = "modeldeploy.io_modeldeployments.yaml"

PROMETHEUS_RULE_HEAD = """\
# Generated from rules.yaml by `make generated`: edit rules.yaml, not this file.
# The alert rules for the prometheus-operator (kube-prometheus-stack selects PrometheusRules by
# label, often `release: <its release name>`: add it in an overlay if yours does).
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: modeldeploy
  namespace: modeldeploy-system
  labels:
    app.kubernetes.io/name: modeldeploy
    app.kubernetes.io/component: monitoring
spec:
"""


def rules_body(rules: str) -> str:
    """rules.yaml without its leading comment block (the file's own header)."""
    lines = rules.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.strip() and not line.startswith("#"))
    return "".join(lines[start:])


def prometheus_rule(rules: str) -> str:
    body = "".join(
        f"  {line}" if line.strip() else line for line in rules_body(rules).splitlines(True)
    )
    return PROMETHEUS_RULE_HEAD + body


def expected() -> dict[Path, str]:
    rules = (MONITORING / "rules.yaml").read_text()
    return {
        MONITORING / "prometheusrule.yaml": prometheus_rule(rules),
        CHART / "crds" / CRD: (REPO / "crds" / CRD).read_text(),
        CHART / "files" / "rules.yaml": rules,
        CHART / "files" / "dashboard.json": (MONITORING / "dashboard.json").read_text(),
        CHART / "files" / "canary-weight-warning.yaml": (
            REPO / "manifests" / "base" / "canary-weight-warning.yaml"
        ).read_text(),
        argocd_cm.OUT: argocd_cm.render(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a file is not current")
    args = parser.parse_args()
    stale = []
    for path, text in expected().items():
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(path)
            diff = difflib.unified_diff(
                (current or "").splitlines(True), text.splitlines(True),
                str(path.relative_to(REPO)), "expected",
            )  # fmt: skip
            sys.stdout.writelines(list(diff)[:40])
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(REPO)}")
    if stale:
        names = ", ".join(str(p.relative_to(REPO)) for p in stale)
        print(f"not current: {names}; run `make generated`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
