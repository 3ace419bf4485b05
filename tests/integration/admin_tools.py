"""The admin tools the monitoring and chart tests run: promtool, helm and the prometheus-operator's
CRDs, which hack/build-control-plane.sh puts into the binary cache beside the control plane."""

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@functools.cache
def cache_dir() -> Path:
    """`$MODELDEPLOY_CACHE/<version key>`: builds what is missing first (quick when warm)."""
    from devcluster import ensure_binaries

    return ensure_binaries().bin_dir.parent


def promtool() -> Path:
    path = cache_dir() / "prometheus" / "promtool"
    if not path.exists():  # as for Prometheus: apt could not reach Debian
        pytest.skip("promtool is not in the cache (hack/build-control-plane.sh could not fetch it)")
    return path


def helm() -> Path:
    path = cache_dir() / "helm" / "helm"
    assert path.exists(), f"{path} is missing: run hack/build-control-plane.sh"
    return path


def prometheus_operator_crds() -> list[Path]:
    files = sorted((cache_dir() / "prometheus-operator-crds").glob("*.yaml"))
    assert len(files) == 3, f"expected 3 CRDs in {cache_dir() / 'prometheus-operator-crds'}"
    return files


def run(*argv: str | Path, cwd: Path = REPO, input: str | None = None) -> str:
    """Run a tool; fail with its output when it exits non-zero. Returns stdout."""
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, input=input, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{' '.join(map(str, argv))} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def install_monitoring_crds(cluster) -> None:  # type: ignore[no-untyped-def]
    """ServiceMonitor, PodMonitor and PrometheusRule, Established. A cluster that already has them
    (a kube-prometheus-stack behind KUBECONFIG) keeps its own versions."""
    from devcluster import wait_until

    kinds = ("servicemonitors", "podmonitors", "prometheusrules")
    names = [f"{kind}.monitoring.coreos.com" for kind in kinds]
    present = cluster.kubectl("get", "crd", *names, check=False).returncode == 0
    if not present or cluster.embedded:
        for path in prometheus_operator_crds():
            cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))

    def established() -> bool:
        # Not `kubectl wait`: it fails on a CRD whose status the API server has not written yet.
        listed = json.loads(cluster.kubectl("get", "crd", *names, "-o", "json").stdout)["items"]
        return len(listed) == len(names) and all(
            any(c["type"] == "Established" and c["status"] == "True" for c in conditions)
            for conditions in (crd.get("status", {}).get("conditions", []) for crd in listed)
        )

    wait_until(established, 60, "the prometheus-operator CRDs Established")
