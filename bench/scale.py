"""A fleet on the embedded control plane: how the operator scales with the number of models.

Side by side in one run, on one cluster (kwok nodes added so every pod fits):
- create: N ModelDeployments (1 replica each) applied at once → all Ready, against the baseline
  of applying the equivalent N Deployments + N Services directly → all Available;
- idle: API requests per second the operator makes with N Ready objects, counted from the API
  server's audit log (its User-Agent) over `--idle` seconds, and how many of them are writes;
- footprint: the operator's RSS and CPU (share of one core) over the same idle window;
- canary amid the fleet (`--canary`): apply → rollback of a canary answering 5xx (interval 10 s,
  failureThreshold 2; real model servers behind its pods, with traffic) in a namespace of its own,
  first with no fleet, then beside N idle models, then while 100 of them are mid-canary (the
  median of `--repeat` runs each);
- failover (`--canary` too): a second replica stands by; the leader is killed (SIGKILL) once
  the bad canary has traffic → seconds until the standby's first write, and how the canary ends;
- update storm (`--canary` too): the operator restarted with a new default serving image → time
  until every model runs the new revision, and the most canaries seen at once (the cap on
  operator-caused rollouts, MODELDEPLOY_MAX_CONCURRENT_ROLLOUTS, at its default).

The fleet's own pods are kwok's (nothing answers on them), so its canaries are judged on a real
Prometheus that has no series of theirs: zero requests, which their minRequests 0 lets pass. They
walk their steps with one analysis per interval, as canaries of models without traffic would.

`--operator-path` runs another checkout's operator (its `operator` folder on PYTHONPATH), so the
code before a change can be measured by the same harness.

Usage: python bench/scale.py [--models 1000] [--idle 120] [--canary] [--operator-path DIR]
       [--label after]
Writes the "Scale" section of docs/benchmarks.md (one row per --label; rows of other labels stay).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import signal
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from devcluster import LocalCluster, ensure_binaries, wait_until
from devcluster.cluster import WRITE_VERBS as WRITES
from devcluster.cluster import fake_node
from devcluster.harness import OperatorProcess, Traffic, train_models
from devcluster.podrunner import PodRunner
from devcluster.processes import rss_mib
from devcluster.prometheus import PrometheusServer
from modeldeploy.config import OperatorConfig

sys.path.insert(0, str(Path(__file__).parent))
from report import BENCHMARKS, replace_section

REPO = Path(__file__).resolve().parents[1]
FLEET, BASELINE, PROBE = "fleet", "baseline", "probe"
BUSY_CANARIES = 100
PODS_PER_NODE = 500
RESYNC_SECONDS = 30.0
IMAGE = "registry.example/modelserver:bench"


def model(i: int, rollout: dict | None = None, version: str | None = None) -> dict:
    spec: dict = {
        "model": {"uri": "s3://models/fraud/v7/model.joblib", "format": "sklearn"},
        "scaling": {"replicas": 1},
    }
    if rollout:
        spec["rollout"] = rollout
    if version:
        spec["model"]["version"] = version  # a new revision: a canary, started by a user
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": f"m-{i:04d}", "namespace": FLEET},
        "spec": spec,
    }


def fleet_rollout(prometheus_url: str, steps: list[int], step_duration: str) -> dict:
    """The fleet's canaries are judged on a real Prometheus that scrapes none of their pods
    (nothing answers on kwok's): zero requests, which minRequests 0 lets pass. So they walk
    their steps, one analysis per interval, as canaries of models without traffic would."""
    interval = "10s" if step_duration.endswith("0s") else "1s"
    source = {"type": "prometheus", "prometheusUrl": prometheus_url}
    analysis = {
        "interval": interval, "minRequests": 0, "compareMetadata": False, "metricSource": source
    }  # fmt: skip
    return {"steps": steps, "stepDuration": step_duration, "analysis": analysis}


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


def probe(uris: dict[str, str], bad: str | None = None) -> dict:
    """The model whose canary is timed: stable v1 on two real servers; `bad` names a revision
    that answers 5xx (bench/rollout.py's "5xx answers" scenario, so the numbers compare)."""
    model = {"uri": uris["v1"], "format": "sklearn", "version": "v1"}
    if bad:
        model = {**model, "format": "custom", "customClass": "fault_models:FailingModel"}
        model["version"] = bad
    analysis = {"interval": "10s", "failureThreshold": 2, "compareMetadata": False}
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "probe", "namespace": PROBE},
        "spec": {"model": model, "scaling": {"replicas": 2}, "rollout": {"analysis": analysis}},
    }


def status_of(cluster: LocalCluster, namespace: str, name: str) -> dict:
    out = cluster.kubectl("get", "md", name, "-n", namespace, "-o", "json").stdout
    return json.loads(out).get("status", {})


@dataclass
class CanaryRun:
    seconds: float  # apply → the pass that wrote the rollback
    record: dict  # status.lastRollback


def roll_back_a_bad_canary(
    cluster: LocalCluster,
    uris: dict[str, str],
    bad: str,
    on_traffic=None,  # type: ignore[no-untyped-def]
) -> CanaryRun:
    """Apply a 5xx revision of the probe and time it until the operator has rolled it back.
    `on_traffic` is called once, when the canary first has traffic (the failover's kill)."""
    before = status_of(cluster, PROBE, "probe").get("lastRollback")
    applied = time.monotonic()
    apply_all(cluster, [probe(uris, bad)])
    while time.monotonic() - applied < 600:
        s = status_of(cluster, PROBE, "probe")
        if on_traffic is not None and (s.get("desiredWeight") or 0) > 0:
            on_traffic()
            on_traffic = None
        record = s.get("lastRollback")
        if record and record != before:
            return CanaryRun(time.monotonic() - applied, record)
        time.sleep(0.2)
    raise TimeoutError(f"canary {bad} was not rolled back within 600 s")


def median_rollback(cluster: LocalCluster, uris: dict[str, str], setting: str, times: int) -> float:
    """The median of `times` bad canaries' apply → rollback: the analysis interval (10 s) makes
    a single run jump by an interval either way."""
    runs = [
        roll_back_a_bad_canary(cluster, uris, f"bad-{setting}-{i}").seconds for i in range(times)
    ]
    print(f"{setting}: {', '.join(f'{r:.1f}' for r in runs)} s", flush=True)
    return statistics.median(runs)


def fleet_status(cluster: LocalCluster) -> list[dict]:
    out = cluster.kubectl("get", "md", "-n", FLEET, "-o", "json", timeout=300).stdout
    return [item.get("status", {}) for item in json.loads(out)["items"]]


def mid_canary(cluster: LocalCluster) -> int:
    return sum(1 for s in fleet_status(cluster) if s.get("canaryRevision"))


def leader_pid(cluster: LocalCluster) -> int:
    """The operator holding the Lease: its identity is <host>_<pid>."""
    out = cluster.kubectl("get", "lease", "modeldeploy-operator", "-n", FLEET, "-o", "json").stdout
    return int(json.loads(out)["spec"]["holderIdentity"].rsplit("_", 1)[1])


def stamp(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass
class Idle:
    requests_per_second: float
    writes: int
    renewals: int
    rss_mib: float
    cpu_share: float


def measure_idle(cluster: LocalCluster, operator: OperatorProcess, seconds: float) -> Idle:
    """The operator's API requests (audit log, watches aside), RSS and CPU over `seconds`."""
    assert operator.process is not None
    pid = operator.process.pid
    mark, cpu0, t0 = cluster.audit_size(), cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - t0
    cpu = (cpu_seconds(pid) - cpu0) / elapsed
    ours = [
        r for r in cluster.audit(mark)
        if r.get("userAgent", "").startswith(("modeldeploy", "kopf"))
        and r.get("stage") == "ResponseComplete" and r["verb"] != "watch"
    ]  # fmt: skip
    writes = [r for r in ours if r["verb"] not in ("get", "list")]
    renewals = [r for r in writes if r["objectRef"].get("resource") == "leases"]
    return Idle(len(ours) / elapsed, len(writes) - len(renewals), len(renewals), rss_mib(pid), cpu)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--idle", type=float, default=120.0, help="seconds of idle measurement")
    parser.add_argument(
        "--canary", action="store_true",
        help="also time a bad canary amid the fleet, a failover and an update storm",
    )  # fmt: skip
    parser.add_argument(
        "--repeat", type=int, default=3, help="bad canaries per setting (the median is reported)"
    )
    parser.add_argument("--operator-path", type=Path, help="another checkout to measure")
    parser.add_argument("--label", default="this code")
    args = parser.parse_args()
    n = args.models
    env = {
        "MODELDEPLOY_RESYNC_SECONDS": str(RESYNC_SECONDS),
        "MODELDEPLOY_SERVING_IMAGE": IMAGE,
        "MODELDEPLOY_NAMESPACES": f"{FLEET},{PROBE}",
        "MODELDEPLOY_OPERATOR_NAMESPACE": FLEET,
    }
    if args.operator_path:
        root = args.operator_path.resolve()
        env["PYTHONPATH"] = f"{root / 'operator'}{os.pathsep}{root / 'serving_image'}"

    fleet_row = canary_row = None
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        cluster = LocalCluster(work / "cluster", ensure_binaries()).start()
        stack.callback(cluster.stop)
        extra = [fake_node(f"kwok-scale-{i}") for i in range(2 * n // PODS_PER_NODE + 1)]
        apply_all(cluster, extra)
        crd = REPO / "crds" / "modeldeploy.io_modeldeployments.yaml"
        cluster.kubectl("apply", "--server-side", "-f", str(crd))
        established = ("wait", "--for=condition=Established", "crd/modeldeployments.modeldeploy.io")
        # `kubectl wait` fails outright while the new CRD has no conditions yet: ask again.
        wait_until(lambda: cluster.kubectl(*established, check=False).returncode == 0, 60, "CRD")
        for namespace in (FLEET, BASELINE, PROBE):
            cluster.kubectl("create", "namespace", namespace)

        baseline_items = [obj for i in range(n) for obj in direct(i)]
        baseline = timed(cluster, baseline_items, "deployments", BASELINE, available, n)
        print(f"baseline: {n} Deployments + Services Available in {baseline:.1f} s", flush=True)

        operators = [OperatorProcess(cluster.kubeconfig, FLEET, work / "operator.log", **env)]

        def stop_operators() -> None:
            for operator in operators:
                operator.stop()

        stack.callback(stop_operators)
        operators[0].start()
        rollout = None
        if args.canary:
            uris = train_models(work)
            prometheus = PrometheusServer(cluster.binaries.prometheus, work / "prometheus").start()
            stack.callback(prometheus.stop)
            runner = PodRunner(
                cluster.binaries.kubectl, cluster.kubeconfig, PROBE, work / PROBE,
                pythonpath=[str(REPO / "tests" / "integration")],
            ).start()  # fmt: skip
            stack.callback(runner.stop)
            apply_all(cluster, [probe(uris)])
            wait_until(
                lambda: status_of(cluster, PROBE, "probe").get("phase") == "Ready", 180,
                "the probe model Ready",
            )  # fmt: skip
            traffic = Traffic(runner, "probe").start()
            stack.callback(traffic.stop)
            alone = median_rollback(cluster, uris, "alone", args.repeat)
            print(f"canary alone: rolled back in {alone:.1f} s", flush=True)
            # Long steps: the fleet's canaries started below stay mid-canary for minutes.
            rollout = fleet_rollout(prometheus.url, [25, 50, 100], "120s")

        fleet = timed(cluster, [model(i, rollout) for i in range(n)], "md", FLEET, ready, n)
        print(f"operator: {n} ModelDeployments Ready in {fleet:.1f} s", flush=True)
        time.sleep(min(RESYNC_SECONDS, 30))  # the last events settle
        idle = measure_idle(cluster, operators[0], args.idle)
        print(f"idle: {idle}", flush=True)
        fleet_row = (
            f"| {args.label} | {n} | {baseline:.0f} s | {fleet:.0f} s | {fleet / baseline:.2f}x | "
            f"{idle.requests_per_second:.2f} /s | {idle.writes} (+ {idle.renewals} Lease "
            f"renewals) | {idle.rss_mib:.0f} MiB | {100 * idle.cpu_share:.1f} % |"
        )
        print(fleet_row, flush=True)

        if args.canary:
            amid_idle = median_rollback(cluster, uris, "idle", args.repeat)
            print(f"canary amid {n} idle: {amid_idle:.1f} s", flush=True)
            busy = min(BUSY_CANARIES, n)
            apply_all(cluster, [model(i, rollout, version="v2") for i in range(busy)])
            wait_until(lambda: mid_canary(cluster) >= busy, 600, f"{busy} canaries started")
            amid_busy = median_rollback(cluster, uris, "busy", args.repeat)
            print(f"canary amid {busy} canaries: {amid_busy:.1f} s", flush=True)
            operators.append(
                OperatorProcess(cluster.kubeconfig, FLEET, work / "standby.log", **env)
            )
            failover = measure_failover(cluster, uris, *operators)
            print(f"failover: {failover}", flush=True)
            storm = measure_storm(cluster, operators, prometheus.url, work, env, n)
            print(f"storm: {storm}", flush=True)
            canary_row = (
                f"| {args.label} | {n} | {alone:.1f} s | {amid_idle:.1f} s "
                f"({amid_idle / alone - 1:+.0%}) | {amid_busy:.1f} s "
                f"({amid_busy / alone - 1:+.0%}) | {failover.first_write:.1f} s | "
                f"{failover.ended} in {failover.seconds:.1f} s | {storm.seconds:.0f} s, at most "
                f"{storm.peak} canaries at once (cap {storm.cap}) |"
            )
            print(canary_row, flush=True)
    write_rows(args.label, fleet_row, canary_row, args.idle)


@dataclass
class Failover:
    first_write: float  # seconds from the leader's SIGKILL to the standby's first write
    ended: str
    seconds: float  # the canary's apply → rollback, across the failover


def measure_failover(
    cluster: LocalCluster, uris: dict[str, str], leader: OperatorProcess, standby: OperatorProcess
) -> Failover:
    """Start `standby` beside `leader`, then kill the leader once the bad canary has traffic."""
    standby.start()
    assert leader.process is not None and standby.process is not None
    if leader_pid(cluster) != leader.process.pid:
        raise RuntimeError("the first operator is not the leader")
    killed: list[tuple[float, int]] = []

    def kill_the_leader() -> None:
        killed.append((time.time(), cluster.audit_size()))
        leader.stop(signal.SIGKILL)

    run = roll_back_a_bad_canary(cluster, uris, "bad-failover", on_traffic=kill_the_leader)
    if not killed:
        raise RuntimeError("the canary was rolled back before it had traffic")
    killed_at, mark = killed[0]
    tail = f"_{standby.process.pid})"
    first = next(
        r for r in cluster.audit(mark)
        if r.get("userAgent", "").endswith(tail) and r["verb"] in WRITES
        and r["objectRef"].get("resource") != "leases"
    )  # fmt: skip
    ended = f"rolled back on {run.record.get('check')} ({run.record.get('observedValue')})"
    return Failover(stamp(first["requestReceivedTimestamp"]) - killed_at, ended, run.seconds)


@dataclass
class Storm:
    seconds: float  # the upgraded operator's start → every model on the new image's revision
    peak: int
    cap: int


def measure_storm(  # type: ignore[no-untyped-def]
    cluster: LocalCluster,
    operators: list[OperatorProcess],
    prometheus_url: str,
    work: Path,
    env,
    n: int,
) -> Storm:
    """An operator upgrade with a new default serving image: every model's revision changes,
    and the operator rolls them out as canaries, at most MODELDEPLOY_MAX_CONCURRENT_ROLLOUTS
    at a time. Short steps (one of 100 %, 2 s) so the storm is about scheduling, not waiting."""
    wait_until(lambda: mid_canary(cluster) == 0, 900, "the fleet's canaries done")
    # The probe would take a rollout slot for its default-length canary: out of the way.
    cluster.kubectl("delete", "md", "probe", "-n", PROBE, "--wait=true", timeout=120)
    apply_all(cluster, [model(i, fleet_rollout(prometheus_url, [100], "2s")) for i in range(n)])
    wait_until(lambda: count(cluster, "md", FLEET, ready) >= n, 900, "the new rollout settings")
    before = {s.get("stableRevision") for s in fleet_status(cluster)}
    for operator in operators:
        operator.stop()
    cap = OperatorConfig().max_concurrent_rollouts  # the default: the bench does not set it
    upgraded = {**env, "MODELDEPLOY_SERVING_IMAGE": IMAGE.replace(":bench", ":next")}
    operators.append(OperatorProcess(cluster.kubeconfig, FLEET, work / "upgraded.log", **upgraded))
    started = time.monotonic()
    operators[-1].start()
    peak = 0

    def all_upgraded() -> bool:
        nonlocal peak
        states = fleet_status(cluster)
        peak = max(peak, sum(1 for s in states if s.get("canaryRevision")))
        return all(
            s.get("stableRevision") not in before and s.get("phase") == "Ready" for s in states
        )

    wait_until(all_upgraded, 7200, "every model on the new image")
    return Storm(time.monotonic() - started, peak, cap)


def write_rows(label: str, row: str, canary_row: str | None, idle: float) -> None:
    """Keep the rows of other labels (the code before a change, say), replace this label's."""
    old = BENCHMARKS.read_text() if BENCHMARKS.exists() else ""
    section = re.search(r"<!-- scale:start -->(.*?)<!-- scale:end -->", old, re.S)
    tables = (section.group(1) if section else "").split("\n\n")

    def kept(header: str) -> list[str]:
        """Rows of other labels from the old table that starts with `header`."""
        for table in tables:
            lines = table.strip().splitlines()
            if lines and lines[0].startswith(header):
                return [line for line in lines[2:] if not line.startswith(f"| {label} |")]
        return []

    scale_header = (
        "| code | models | baseline: Deployments + Services → Available | ModelDeployments → "
        "Ready | ratio (target ≤ 1.3) | idle API requests (target < 1/s) | idle writes | RSS "
        "(≤ 300 MiB) | CPU of one core (≤ 5 %) |"
    )
    canary_header = (
        "| code | models | 5xx canary alone: apply → rolled back | amid the idle fleet | amid "
        f"{BUSY_CANARIES} canaries | failover: leader killed → standby's first write | the "
        "canary across the failover | update storm: new default image → all on it |"
    )
    scale = [scale_header, "|---|---|---|---|---|---|---|---|---|", *kept(scale_header[:40]), row]
    canaries = [*kept(canary_header[:40]), *([canary_row] if canary_row else [])]
    text = (
        f"`make bench-scale` ({time.strftime('%Y-%m-%d')}, 2 cores, embedded control plane with "
        "kwok nodes, operator as a process, 1 replica per model, "
        f"resync {RESYNC_SECONDS:.0f} s; idle counted from the audit log over {idle:.0f} s, "
        "watches excluded, Lease renewals included)\n\n" + "\n".join(scale)
    )
    if canaries:
        text += (
            "\n\nA canary answering 5xx (interval 10 s, failureThreshold 2, 2 real model "
            "servers with traffic) in a namespace of its own, beside the fleet "
            '(`BENCH_ARGS="--models N --canary"`), the median of 3 runs each. The fleet\'s '
            "canaries (3 steps of 120 s) and the storm's (1 step of 2 s) are judged on a real "
            "Prometheus that has no series of theirs (kwok pods; minRequests 0). Failover: a "
            "second replica, the Lease at its default 15 s, the leader SIGKILLed once the canary "
            "has traffic.\n\n"
            + "\n".join([canary_header, "|---|---|---|---|---|---|---|---|", *canaries])
        )
    replace_section("scale", "Scale: a fleet of ModelDeployments", text)


if __name__ == "__main__":
    main()
