"""Time from `kubectl apply` of a ModelDeployment to its children and to status Ready, and the API
calls an idle pass makes, on the embedded control plane with the operator as a process.

Usage: python bench/reconcile.py [--runs 7]
Writes the "Reconcile" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from devcluster import LocalCluster, ensure_binaries, wait_until
from devcluster.harness import OperatorProcess

sys.path.insert(0, str(Path(__file__).parent))
from report import replace_section

REPO = Path(__file__).resolve().parents[1]
NAMESPACE = "bench"
IDLE_SECONDS = 20.0
RESYNC_SECONDS = 2.0


def body(name: str) -> str:
    return json.dumps(
        {
            "apiVersion": "modeldeploy.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                "model": {"uri": "s3://models/fraud/v7/model.joblib", "format": "sklearn"},
                "scaling": {"replicas": 2},
            },
        }
    )


def counter(metrics: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in metrics.items() if k.startswith(prefix))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-reconcile-") as tmp:
        cluster = LocalCluster(Path(tmp) / "cluster", ensure_binaries()).start()
        try:
            cluster.kubectl(
                "apply",
                "--server-side",
                "-f",
                str(REPO / "crds" / "modeldeploy.io_modeldeployments.yaml"),
            )
            cluster.kubectl(
                "wait", "--for=condition=Established", "crd/modeldeployments.modeldeploy.io"
            )
            cluster.kubectl("create", "namespace", NAMESPACE)
            operator = OperatorProcess(
                cluster.kubeconfig, NAMESPACE, Path(tmp) / "operator.log",
                MODELDEPLOY_RESYNC_SECONDS=str(RESYNC_SECONDS),
            ).start()  # fmt: skip
            try:
                children, ready = [], []
                for i in range(args.runs):
                    name = f"md-{i}"
                    start = time.monotonic()
                    cluster.kubectl("apply", "-f", "-", input=body(name))

                    def exists(name: str = name) -> bool:
                        got = cluster.kubectl("get", "deployments", "-n", NAMESPACE, "-l",
                                              f"modeldeploy.io/name={name}", "-o", "name")  # fmt: skip
                        return bool(got.stdout.strip())

                    wait_until(exists, 60, "children")
                    children.append(time.monotonic() - start)

                    def is_ready(name: str = name) -> bool:
                        out = cluster.kubectl(
                            "get", "md", name, "-n", NAMESPACE, "-o", "json"
                        ).stdout
                        return json.loads(out).get("status", {}).get("phase") == "Ready"

                    wait_until(is_ready, 60, "Ready")
                    ready.append(time.monotonic() - start)
                time.sleep(3)  # let the last events settle
                before = operator.metrics()
                time.sleep(IDLE_SECONDS)
                after = operator.metrics()
            finally:
                operator.stop()
        finally:
            cluster.stop()

    prefix = "modeldeploy_operator_"
    passes = counter(after, f"{prefix}reconciles_total") - counter(
        before, f"{prefix}reconciles_total"
    )
    reads = counter(after, f"{prefix}api_reads_total") - counter(before, f"{prefix}api_reads_total")
    writes = counter(after, f"{prefix}api_writes_total") - counter(
        before, f"{prefix}api_writes_total"
    )
    rows = [
        f"| measure | median of {args.runs} | min | max |",
        "|---|---|---|---|",
        f"| `kubectl apply` → Deployment exists | {statistics.median(children):.2f} s | {min(children):.2f} s | {max(children):.2f} s |",
        f"| `kubectl apply` → status Ready (kwok pods Ready) | {statistics.median(ready):.2f} s | {min(ready):.2f} s | {max(ready):.2f} s |",
        "",
        f"Idle: {args.runs} Ready ModelDeployments, {IDLE_SECONDS:.0f} s, resync every {RESYNC_SECONDS:.0f} s: "
        f"{passes:.0f} passes, {reads / max(passes, 1):.1f} API reads per pass (get the object; list "
        f"Deployments, Services, HPAs, Pods, HTTPRoutes), {writes:.0f} writes.",
    ]  # fmt: skip
    text = "\n".join(rows)
    print(text)
    replace_section(
        "reconcile",
        "Reconcile: apply to Ready, and idle passes",
        f"`make bench-reconcile` ({time.strftime('%Y-%m-%d')}, 2 cores, embedded control plane, "
        f"operator as a process, 2 replicas per ModelDeployment)\n\n{text}",
    )


if __name__ == "__main__":
    main()
