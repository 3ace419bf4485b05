"""Measure the embedded control plane: warm start to /readyz, to nodes Ready, to the first pod
Ready, and each component's memory at rest. Writes a section of docs/benchmarks.md.

Usage: python bench/control_plane.py [--runs 5] [--rest-seconds 30]
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

sys.path.insert(0, str(Path(__file__).parent))
from report import replace_section

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "first", "namespace": "default"},
    "spec": {"containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10"}]},
}


def one_run(rest_seconds: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-cp-") as tmp:
        cluster = LocalCluster(Path(tmp) / "c", ensure_binaries())
        t0 = time.monotonic()
        cluster.start()
        try:
            cluster.kubectl("apply", "-f", "-", input=json.dumps(POD))

            def ready() -> bool:
                pod = json.loads(cluster.kubectl("get", "pod", "first", "-o", "json").stdout)
                return any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in pod.get("status", {}).get("conditions", [])
                )

            wait_until(ready, 60, "first pod Ready")
            result = dict(cluster.timings, first_pod_ready=time.monotonic() - t0)
            if rest_seconds:
                time.sleep(rest_seconds)
                result.update({f"rss_{k}": v for k, v in cluster.memory_mib().items()})
            return result
        finally:
            cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rest-seconds", type=float, default=30)
    args = parser.parse_args()
    runs = [one_run(args.rest_seconds if i == 0 else 0) for i in range(args.runs)]
    med = {
        k: statistics.median(r[k] for r in runs)
        for k in ("etcd_healthy", "apiserver_ready", "nodes_ready", "first_pod_ready")
    }
    rows = [
        f"| measure | median of {args.runs} warm starts | min | max |",
        "|---|---|---|---|",
    ]
    labels = {
        "etcd_healthy": "start → etcd healthy",
        "apiserver_ready": "start → kube-apiserver /readyz",
        "nodes_ready": "start → kwok nodes Ready",
        "first_pod_ready": "start → first Pod Ready",
    }
    for key, label in labels.items():
        values = [r[key] for r in runs]
        rows.append(f"| {label} | {med[key]:.1f} s | {min(values):.1f} s | {max(values):.1f} s |")
    memory = {k[4:]: v for k, v in runs[0].items() if k.startswith("rss_")}
    rows += [
        "",
        f"Memory at rest ({args.rest_seconds:.0f} s after start, RSS):",
        "",
        "| process | RSS |",
        "|---|---|",
    ]
    rows += [f"| {name} | {mib:.0f} MiB |" for name, mib in sorted(memory.items())]
    rows.append(f"| total | {sum(memory.values()):.0f} MiB |")
    body = "\n".join(rows)
    print(body)
    replace_section(
        "control-plane",
        "Control plane (embedded, warm start)",
        f"`make bench-control-plane` ({time.strftime('%Y-%m-%d')}, 2 cores)\n\n{body}",
    )


if __name__ == "__main__":
    main()
