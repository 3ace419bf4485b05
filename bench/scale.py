"""A fleet on the embedded control plane: how the operator scales with the number of models.

Side by side in one run, on one cluster (kwok nodes added so every pod fits):
- create: N ModelDeployments (1 replica each) applied at once → all Ready, against the baseline
  of applying the equivalent N Deployments + N Services directly → all Available;
- idle: API requests per second the operator makes with N Ready objects, counted from the API
  server's audit log (its User-Agent) over `--idle` seconds, and how many of them are writes;
- footprint: the operator's RSS and CPU (share of one core) over the same idle window.

`--operator-path` runs another checkout's operator (its `operator` folder on PYTHONPATH), so the
code before a change can be measured by the same harness. The other items of issue 9's list
(canary amid the fleet, failover, update storm) are not measured here yet.

Usage: python bench/scale.py [--models 1000] [--idle 120] [--operator-path DIR] [--label after]
Writes the "Scale" section of docs/benchmarks.md (one row per --label; rows of other labels stay).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

from devcluster import LocalCluster, ensure_binaries, wait_until
from devcluster.cluster import fake_node
from devcluster.harness import OperatorProcess
from devcluster.processes import rss_mib

sys.path.insert(0, str(Path(__file__).parent))
from report import BENCHMARKS, replace_section

REPO = Path(__file__).resolve().parents[1]
FLEET, BASELINE = "fleet", "baseline"
PODS_PER_NODE = 500
RESYNC_SECONDS = 30.0
IMAGE = "registry.example/modelserver:bench"


def model(i: int) -> dict:
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": f"m-{i:04d}", "namespace": FLEET},
        "spec": {
            "model": {"uri": "s3://models/fraud/v7/model.joblib", "format": "sklearn"},
            "scaling": {"replicas": 1},
        },
    }


def direct(i: int) -> list[dict]:
    """What the operator would make for model(i), written by hand: a Deployment and a Service."""
    labels = {"app": f"d-{i:04d}"}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"d-{i:04d}", "namespace": BASELINE},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "server", "image": IMAGE}]},
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": f"d-{i:04d}", "namespace": BASELINE},
        "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    return [deployment, service]


def apply_all(cluster: LocalCluster, items: list[dict]) -> None:
    # One request stream, as `kubectl apply -f fleet.yaml` of a whole directory would be.
    listing = {"apiVersion": "v1", "kind": "List", "items": items}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(listing), timeout=1800)


def count(cluster: LocalCluster, resource: str, namespace: str, done) -> int:  # type: ignore[no-untyped-def]
    out = cluster.kubectl("get", resource, "-n", namespace, "-o", "json", timeout=300).stdout
    return sum(1 for item in json.loads(out)["items"] if done(item))


def ready(item: dict) -> bool:
    s = item.get("status", {})
    return s.get("phase") == "Ready" and s.get("observedGeneration") == item["metadata"].get(
        "generation"
    )


def available(item: dict) -> bool:
    conditions = item.get("status", {}).get("conditions", [])
    return any(c["type"] == "Available" and c["status"] == "True" for c in conditions)


def timed(cluster: LocalCluster, items: list[dict], resource: str, namespace: str, done, n: int):  # type: ignore[no-untyped-def]
    start = time.monotonic()
    apply_all(cluster, items)
    wait_until(lambda: count(cluster, resource, namespace, done) >= n, 3600, f"{n} {resource}")
    return time.monotonic() - start


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--idle", type=float, default=120.0, help="seconds of idle measurement")
    parser.add_argument("--operator-path", type=Path, help="another checkout to measure")
    parser.add_argument("--label", default="this code")
    args = parser.parse_args()
    n = args.models
    env = {"MODELDEPLOY_RESYNC_SECONDS": str(RESYNC_SECONDS), "MODELDEPLOY_SERVING_IMAGE": IMAGE}
    if args.operator_path:
        root = args.operator_path.resolve()
        env["PYTHONPATH"] = f"{root / 'operator'}{os.pathsep}{root / 'serving_image'}"

    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        cluster = LocalCluster(Path(tmp) / "cluster", ensure_binaries()).start()
        try:
            extra = [fake_node(f"kwok-scale-{i}") for i in range(2 * n // PODS_PER_NODE + 1)]
            apply_all(cluster, extra)
            cluster.kubectl(
                "apply", "--server-side", "-f",
                str(REPO / "crds" / "modeldeploy.io_modeldeployments.yaml"),
            )  # fmt: skip
            cluster.kubectl(
                "wait", "--for=condition=Established", "crd/modeldeployments.modeldeploy.io"
            )
            for namespace in (FLEET, BASELINE):
                cluster.kubectl("create", "namespace", namespace)

            baseline_items = [obj for i in range(n) for obj in direct(i)]
            baseline = timed(cluster, baseline_items, "deployments", BASELINE, available, n)
            print(f"baseline: {n} Deployments + Services Available in {baseline:.1f} s")

            operator = OperatorProcess(
                cluster.kubeconfig, FLEET, Path(tmp) / "operator.log", **env
            ).start()
            try:
                fleet = timed(cluster, [model(i) for i in range(n)], "md", FLEET, ready, n)
                print(f"operator: {n} ModelDeployments Ready in {fleet:.1f} s")
                time.sleep(min(RESYNC_SECONDS, 30))  # the last events settle
                assert operator.process is not None
                pid = operator.process.pid
                mark, cpu0, t0 = cluster.audit_size(), cpu_seconds(pid), time.monotonic()
                time.sleep(args.idle)
                elapsed = time.monotonic() - t0
                cpu = (cpu_seconds(pid) - cpu0) / elapsed
                rss = rss_mib(pid)
                ours = [
                    r for r in cluster.audit(mark)
                    if r.get("userAgent", "").startswith(("modeldeploy", "kopf"))
                    and r.get("stage") == "ResponseComplete" and r["verb"] != "watch"
                ]  # fmt: skip
                writes = [r for r in ours if r["verb"] not in ("get", "list")]
                renewals = [r for r in writes if r["objectRef"].get("resource") == "leases"]
            finally:
                operator.stop()
        finally:
            cluster.stop()

    row = (
        f"| {args.label} | {n} | {baseline:.0f} s | {fleet:.0f} s | {fleet / baseline:.2f}x | "
        f"{len(ours) / elapsed:.2f} /s | {len(writes) - len(renewals)} (+ {len(renewals)} Lease "
        f"renewals) | {rss:.0f} MiB | {100 * cpu:.1f} % |"
    )
    print(row)
    write_row(args.label, row, args.idle)


def write_row(label: str, row: str, idle: float) -> None:
    """Keep the rows of other labels (the code before a change, say), replace this label's."""
    old = BENCHMARKS.read_text() if BENCHMARKS.exists() else ""
    section = re.search(r"<!-- scale:start -->(.*?)<!-- scale:end -->", old, re.S)
    rows = [
        line for line in (section.group(1).splitlines() if section else [])
        if line.startswith("| ") and not line.startswith(("| code ", f"| {label} |"))
    ]  # fmt: skip
    table = [
        "| code | models | baseline: Deployments + Services → Available | ModelDeployments → "
        "Ready | ratio (target ≤ 1.3) | idle API requests (target < 1/s) | idle writes | RSS "
        "(≤ 300 MiB) | CPU of one core (≤ 5 %) |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        row,
    ]
    replace_section(
        "scale",
        "Scale: a fleet of ModelDeployments",
        f"`make bench-scale` ({time.strftime('%Y-%m-%d')}, 2 cores shared with other jobs, "
        "embedded control plane with kwok nodes, operator as a process, 1 replica per model, "
        f"resync {RESYNC_SECONDS:.0f} s; idle counted from the audit log over {idle:.0f} s, "
        "watches excluded, Lease renewals included)\n\n" + "\n".join(table),
    )


if __name__ == "__main__":
    main()
