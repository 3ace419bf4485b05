"""How fast does a bad canary lose its traffic, and how close does a good one get to its plan?

Each scenario deploys a stable revision with real model servers (PodRunner) and traffic, then
applies a faulty revision and times, from the status the operator writes:
- apply → rollback (Service pinned back to stable), and
- first canary traffic → rollback (for faults that only show under load).
A good canary is timed from apply to promotion against the plan's minimum (the sum of the step
durations). Writes the "Rollout" section of docs/benchmarks.md.

Usage: python bench/rollout.py [--only NAME]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from devcluster import FAULT_LABEL, LocalCluster, ensure_binaries, wait_until
from devcluster.harness import OperatorProcess, Traffic, train_models
from devcluster.podrunner import PodRunner

sys.path.insert(0, str(Path(__file__).parent))
from report import replace_section

REPO = Path(__file__).resolve().parents[1]
DEFAULTS = "defaults (interval 30s, failureThreshold 2)"


@dataclass
class Scenario:
    name: str
    settings: str
    rollout: dict
    fault: dict  # changes to spec for the bad (or good) revision
    good: bool = False


def scenarios(uris: dict[str, str]) -> list[Scenario]:
    fast = {"interval": "10s", "failureThreshold": 2, "compareMetadata": False}
    custom = {"model": {"uri": uris["v1"], "format": "custom"}}
    return [
        Scenario("crash loop", DEFAULTS, {}, {"serving": {"podLabels": {FAULT_LABEL: "crash-loop"}}}),
        Scenario("OOMKilled", DEFAULTS, {}, {"serving": {"podLabels": {FAULT_LABEL: "oom-killed"}}}),
        Scenario("image pull error", DEFAULTS, {}, {"serving": {"podLabels": {FAULT_LABEL: "image-pull-backoff"}}}),
        Scenario(
            "pods never Ready", "progressDeadline 30s", {"progressDeadline": "30s"},
            {"serving": {"podLabels": {FAULT_LABEL: "never-ready"}}},
        ),
        Scenario(
            "5xx answers", "interval 10s, failureThreshold 2", {"analysis": fast},
            {"model": {**custom["model"], "customClass": "fault_models:FailingModel"}},
        ),
        Scenario(
            "5xx answers", DEFAULTS, {"analysis": {"compareMetadata": False}},
            {"model": {**custom["model"], "customClass": "fault_models:FailingModel"}},
        ),
        Scenario(
            "slow (p99 > 100ms)", "interval 10s, failureThreshold 2",
            {"analysis": {**fast, "maxLatencyP99": "100ms"}},
            {"model": {**custom["model"], "customClass": "fault_models:SlowModel"}},
        ),
        Scenario(
            "good canary", "steps 10/50/100, stepDuration 10s, interval 5s",
            {"steps": [10, 50, 100], "stepDuration": "10s", "analysis": {"interval": "5s", "minRequests": 5}},
            {"model": {"uri": uris["v2"], "version": "v2"}}, good=True,
        ),
    ]  # fmt: skip


def body(uri: str, rollout: dict, extra: dict | None = None) -> dict:
    spec: dict = {
        "model": {"uri": uri, "format": "sklearn", "version": "v1"},
        "scaling": {"replicas": 2},
        "rollout": rollout,
    }
    for key, value in (extra or {}).items():
        spec[key] = {**spec.get(key, {}), **value}
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "bench"},
        "spec": spec,
    }


def run(cluster: LocalCluster, scenario: Scenario, uris: dict[str, str], work: Path) -> dict:
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", namespace)
    runner = PodRunner(
        cluster.binaries.kubectl, cluster.kubeconfig, namespace, work / namespace,
        pythonpath=[str(REPO / "tests" / "integration")],
    ).start()  # fmt: skip
    operator = OperatorProcess(cluster.kubeconfig, namespace, work / f"{namespace}-operator.log",
                               MODELDEPLOY_RESYNC_SECONDS="30").start()  # fmt: skip
    traffic = Traffic(runner, "bench").start()

    def status() -> dict:
        out = cluster.kubectl("get", "md", "bench", "-n", namespace, "-o", "json").stdout
        return json.loads(out).get("status", {})

    try:
        cluster.kubectl(
            "apply",
            "-n",
            namespace,
            "-f",
            "-",
            input=json.dumps(body(uris["v1"], scenario.rollout)),
        )
        wait_until(lambda: status().get("phase") == "Ready", 120, "stable Ready")
        stable = status()["stableRevision"]
        applied = time.monotonic()
        cluster.kubectl(
            "apply", "-n", namespace, "-f", "-",
            input=json.dumps(body(uris["v1"], scenario.rollout, scenario.fault)),
        )  # fmt: skip
        first_traffic = None
        while time.monotonic() - applied < 600:
            s = status()
            if first_traffic is None and (s.get("desiredWeight") or 0) > 0:
                first_traffic = time.monotonic()
            if (
                scenario.good
                and s.get("stableRevision") not in (None, stable)
                and s.get("phase") == "Ready"
            ):
                break
            if not scenario.good and s.get("lastRollback"):
                break
            time.sleep(0.2)
        else:
            return {"result": "timed out after 600 s"}
        done = time.monotonic()
        record = s.get("lastRollback", {})
        return {
            "applied_to_done": done - applied,
            "traffic_to_done": (done - first_traffic) if first_traffic else None,
            "check": record.get("check", "—"),
            "value": " vs ".join(
                str(record[k]) for k in ("observedValue", "threshold") if k in record
            ),
            "result": "promoted" if scenario.good else "rolled back",
        }
    finally:
        traffic.stop()
        operator.stop()
        runner.stop()
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", help="run only scenarios whose name contains this")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-rollout-") as tmp:
        work = Path(tmp)
        uris = train_models(work)
        cluster = LocalCluster(work / "cluster", ensure_binaries()).start()
        try:
            crd = REPO / "crds" / "modeldeploy.io_modeldeployments.yaml"
            cluster.kubectl("apply", "--server-side", "-f", str(crd))
            cluster.kubectl(
                "wait", "--for=condition=Established", "crd/modeldeployments.modeldeploy.io"
            )
            rows = []
            for scenario in scenarios(uris):
                if args.only and args.only not in scenario.name:
                    continue
                result = run(cluster, scenario, uris, work)
                print(scenario.name, scenario.settings, result, flush=True)
                rows.append((scenario, result))
        finally:
            cluster.stop()
    table = [
        "| scenario | settings | outcome | check (value vs threshold) | apply → done | first canary traffic → done |",
        "|---|---|---|---|---|---|",
    ]
    for scenario, r in rows:
        if "applied_to_done" not in r:
            table.append(f"| {scenario.name} | {scenario.settings} | {r['result']} | | | |")
            continue
        traffic = (
            f"{r['traffic_to_done']:.1f} s"
            if r["traffic_to_done"] is not None
            else "never got traffic"
        )
        check = "—" if scenario.good else f"{r['check']} ({r['value']})"
        table.append(
            f"| {scenario.name} | {scenario.settings} | {r['result']} | {check} | "
            f"{r['applied_to_done']:.1f} s | {traffic} |"
        )
    good = next((r for s, r in rows if s.good and "applied_to_done" in r), None)
    notes = [
        "",
        '"done" is the pass that wrote the rollback (Service pinned back to stable, canary at 0 '
        "pods) or the promotion. Hard faults (crash loop, OOM, image pull) are judged from pod "
        "status at once and never reach traffic: the model gates wait for Ready pods first.",
    ]
    if good:
        notes.append(
            f"Good canary: {good['applied_to_done']:.1f} s from apply to promotion against a plan "
            "minimum of 30 s (three 10 s steps), the rest being pod start, model gates and the "
            "analysis interval."
        )
    body_text = "\n".join(table + notes)
    print(body_text)
    replace_section(
        "rollout",
        "Rollout: time to roll back and to promote",
        f"`make bench-rollout` ({time.strftime('%Y-%m-%d')}, 2 cores, embedded control plane, "
        f"real model servers behind kwok pods, operator resync 30 s)\n\n{body_text}",
    )


if __name__ == "__main__":
    main()
