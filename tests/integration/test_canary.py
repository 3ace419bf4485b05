"""Canary rollouts on the real control plane, with real model servers behind kwok's pods.

Each test deploys a stable revision, changes what the pods run, and watches the operator walk the
steps, promote, or roll back — judged from pod signals, from real /metrics, and from real model
gates. Traffic is sent straight to the pods' loopback IPs, as a Service would spread it.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.parse
import urllib.request

import pytest
from conftest import OperatorProcess, Traffic, kget
from devcluster import FAULT_LABEL, wait_until
from mdkit import (
    FAST_ROLLOUT,
    apply,
    body,
    deployments,
    rolled_back,
    service_selector,
    stable_then_custom_canary,
    status,
    wait_drained_after_rollback,
    wait_stable,
)

pytestmark = pytest.mark.cluster


@pytest.fixture
def traffic(pod_runner) -> Traffic:
    load = Traffic(pod_runner, "fraud").start()
    yield load
    load.stop()


def test_good_canary_walks_every_step_and_is_promoted(
    cluster, namespace, operator, pod_runner, traffic, model_uris
):
    apply(cluster, namespace, body(model_uris["v1"], version="v1"))
    old = wait_stable(cluster, namespace)
    apply(cluster, namespace, body(model_uris["v2"], version="v2"))

    weights: list[int] = []
    canary_pods: set[str] = set()
    pins: list[str | None] = []

    def promoted() -> bool:
        s = status(cluster, namespace)
        if s.get("canaryRevision"):
            weight = s.get("desiredWeight")
            if weight is not None and (not weights or weights[-1] != weight):
                weights.append(weight)
            pods = kget(
                cluster,
                "pods",
                "-n",
                namespace,
                "-l",
                f"modeldeploy.io/revision={s['canaryRevision']}",
            )
            canary_pods.update(p["metadata"]["uid"] for p in pods["items"])
            pin = service_selector(cluster, namespace).get("modeldeploy.io/revision")
            if not pins or pins[-1] != pin:
                pins.append(pin)
        return s.get("stableRevision") not in (None, old) and s.get("phase") == "Ready"

    wait_until(promoted, 90, "canary promoted")
    s = status(cluster, namespace)
    assert [w for w in weights if w] == [25, 50, 100], weights
    # The Service: pinned to stable during the gates, to every revision mid-way, then the canary.
    assert None in pins and pins[-1] != old, pins
    assert s["history"][0]["outcome"] == "Promoted" and s["stableVersion"] == "v2"
    assert not s.get("lastRollback")
    # Promotion restarts no pod: the canary's pods are the stable pods now.
    new_pods = kget(
        cluster, "pods", "-n", namespace, "-l", f"modeldeploy.io/revision={s['stableRevision']}"
    )
    assert {p["metadata"]["uid"] for p in new_pods["items"]} <= canary_pods
    wait_until(
        lambda: set(deployments(cluster, namespace)) == {s["stableRevision"]},
        30,
        "old revision removed",
    )
    assert service_selector(cluster, namespace)["modeldeploy.io/revision"] == s["stableRevision"]
    reasons = {e["reason"] for e in kget(cluster, "events", "-n", namespace)["items"]}
    assert {"CanaryStarted", "StepAdvanced", "Promoted"} <= reasons


def test_canary_whose_pods_never_turn_ready_is_rolled_back_after_the_deadline(
    cluster, namespace, operator, model_uris
):
    apply(cluster, namespace, body(model_uris["v1"]))
    stable = wait_stable(cluster, namespace)
    bad = body(model_uris["v1"], serving={"podLabels": {FAULT_LABEL: "never-ready"}})
    bad["spec"]["rollout"] = {**FAST_ROLLOUT, "progressDeadline": "10s"}
    apply(cluster, namespace, bad)

    wait_until(lambda: rolled_back(cluster, namespace), 60, "rollback")
    s = wait_drained_after_rollback(cluster, namespace)
    record = s["lastRollback"]
    assert record["check"] == "podsReady"
    assert "0/" in record["observedValue"] and record["threshold"] == "all ready within 10s"
    assert s["stableRevision"] == stable and s["phase"] == "Degraded"
    assert s["rejectedRevisions"][0]["revision"] == record["revision"]
    assert {c["type"]: c["status"] for c in s["conditions"]}["Degraded"] == "True"
    assert service_selector(cluster, namespace)["modeldeploy.io/revision"] == stable
    wait_until(
        lambda: deployments(cluster, namespace)[record["revision"]]["spec"]["replicas"] == 0,
        20,
        "canary at 0",
    )


def test_crash_looping_canary_is_rolled_back_within_interval_times_threshold(
    cluster, namespace, operator, model_uris
):
    apply(cluster, namespace, body(model_uris["v1"]))
    stable = wait_stable(cluster, namespace)
    apply(
        cluster,
        namespace,
        body(model_uris["v1"], serving={"podLabels": {FAULT_LABEL: "crash-loop"}}),
    )
    wait_until(lambda: rolled_back(cluster, namespace), 60, "rollback")
    record = status(cluster, namespace)["lastRollback"]
    assert record["check"] == "podsHealthy" and "CrashLoopBackOff" in record["observedValue"]
    assert status(cluster, namespace)["stableRevision"] == stable
    # A crash loop is a hard failure: judged from pod status at once, not after failureThreshold
    # metric intervals (`make bench-rollout` measures how fast) — and before any traffic, so
    # there is no time to detect from first traffic, only the time since the canary started.
    assert "samples" not in record and record["timeSinceStart"].endswith("s")
    assert "timeToDetect" not in record


def test_canary_answering_5xx_is_rolled_back_naming_the_metric(
    cluster, namespace, operator, pod_runner, traffic, model_uris
):
    rollout = {
        **FAST_ROLLOUT,
        "stepDuration": "30s",
        "analysis": {**FAST_ROLLOUT["analysis"], "compareMetadata": False},
    }
    stable = stable_then_custom_canary(
        cluster, namespace, model_uris["v1"], rollout, "FailingModel"
    )

    wait_until(lambda: rolled_back(cluster, namespace), 60, "rollback")
    s = status(cluster, namespace)
    record = s["lastRollback"]
    assert record["check"] == "errorRate"
    assert record["observedValue"] == "100%" and record["threshold"] == "5%"
    assert record["samples"] >= 5 and record["window"] == "1s"
    # Users were exposed from the canary's first traffic, after its gates: no longer than the
    # whole rollout took.
    assert int(record["timeToDetect"][:-1]) <= int(record["timeSinceStart"][:-1])
    assert s["stableRevision"] == stable
    assert s["history"][0]["outcome"] == "RolledBack"
    metrics = operator.metrics()
    assert metrics.get('modeldeploy_operator_rollbacks_total{reason="errorRate"}', 0) >= 1
    assert (
        metrics.get('modeldeploy_operator_time_to_rollback_seconds_count{reason="errorRate"}', 0)
        >= 1
    )


def test_slow_canary_is_rolled_back_on_p99_latency(
    cluster, namespace, operator, pod_runner, traffic, model_uris
):
    analysis = {
        **FAST_ROLLOUT["analysis"],
        "compareMetadata": False,
        "maxLatencyP99": "100ms",
        "minRequests": 3,
    }
    rollout = {**FAST_ROLLOUT, "stepDuration": "30s", "analysis": analysis}
    stable_then_custom_canary(cluster, namespace, model_uris["v1"], rollout, "SlowModel")
    wait_until(lambda: rolled_back(cluster, namespace), 90, "rollback")
    record = status(cluster, namespace)["lastRollback"]
    assert record["check"] == "latencyP99" and record["threshold"] == "100ms"
    assert int(record["observedValue"].removesuffix("ms")) > 100


@pytest.mark.parametrize("policy", ["Hold", "Rollback"])
def test_low_traffic_follows_on_inconclusive(
    cluster, namespace, operator, pod_runner, model_uris, policy
):
    analysis = {
        **FAST_ROLLOUT["analysis"],
        "minRequests": 1000,
        "onInconclusive": policy,
        "maxInconclusive": 100,
    }
    rollout = {**FAST_ROLLOUT, "analysis": analysis}
    apply(cluster, namespace, body(model_uris["v1"], rollout, version="v1"))
    wait_stable(cluster, namespace)
    apply(cluster, namespace, body(model_uris["v2"], rollout, version="v2"))
    if policy == "Rollback":
        wait_until(lambda: rolled_back(cluster, namespace), 60, "rollback on inconclusive")
        record = status(cluster, namespace)["lastRollback"]
        assert record["check"] == "requests" and record["threshold"] == ">= 1000"
        return

    def holding() -> bool:
        analysis_status = status(cluster, namespace).get("analysis") or {}
        return analysis_status.get("consecutiveInconclusive", 0) >= 5

    wait_until(holding, 60, "five inconclusive intervals")
    s = status(cluster, namespace)
    assert s["phase"] == "Progressing" and s["currentStep"] == 0 and s["desiredWeight"] == 25
    assert not s.get("lastRollback"), "low traffic must not abort"


def test_rejected_revision_is_not_retried_until_the_retry_token_changes(
    cluster, namespace, operator, model_uris
):
    apply(cluster, namespace, body(model_uris["v1"]))
    wait_stable(cluster, namespace)
    bad = body(model_uris["v1"], serving={"podLabels": {FAULT_LABEL: "crash-loop"}})
    apply(cluster, namespace, bad)
    wait_until(lambda: rolled_back(cluster, namespace), 30, "rollback")
    rejected = status(cluster, namespace)["lastRollback"]["revision"]
    time.sleep(4)  # several passes (resync 2 s, interval 1 s)
    s = status(cluster, namespace)
    assert not s.get("canaryRevision") and s["phase"] == "Degraded"
    assert deployments(cluster, namespace)[rejected]["spec"]["replicas"] == 0

    bad["spec"]["rollout"] = {**FAST_ROLLOUT, "retry": "try-again-1"}
    apply(cluster, namespace, bad)

    def retried() -> bool:
        # Retried: a canary again — which, still crash-looping, is soon rejected again, this time
        # under the new token.
        s = status(cluster, namespace)
        tokens = [
            r.get("retryToken") for r in s.get("rejectedRevisions", []) if r["revision"] == rejected
        ]
        return s.get("canaryRevision") == rejected or tokens == ["try-again-1"]

    wait_until(retried, 30, "retried under the new token")
    history = [
        h["outcome"] for h in status(cluster, namespace)["history"] if h["revision"] == rejected
    ]
    assert history.count("RolledBack") in (1, 2)


def test_operator_killed_mid_rollout_resumes_without_a_traffic_jump(
    cluster, namespace, operator, pod_runner, traffic, model_uris, tmp_path
):
    rollout = {**FAST_ROLLOUT, "stepDuration": "6s"}
    apply(cluster, namespace, body(model_uris["v1"], rollout, version="v1"))
    old = wait_stable(cluster, namespace)
    apply(cluster, namespace, body(model_uris["v2"], rollout, version="v2"))
    wait_until(lambda: status(cluster, namespace).get("currentStep") == 1, 60, "second step")
    operator.stop(signal.SIGKILL)
    before = status(cluster, namespace)
    second = OperatorProcess(cluster.kubeconfig, namespace, tmp_path / "second.log").start()
    try:
        time.sleep(1.5)
        after = status(cluster, namespace)
        assert after["currentStep"] >= before["currentStep"], "no restart from step 0"
        assert after["canaryRevision"] == before["canaryRevision"]
        assert after["desiredWeight"] >= before["desiredWeight"]

        def promoted() -> bool:
            s = status(cluster, namespace)
            return s.get("stableRevision") not in (None, old) and s.get("phase") == "Ready"

        wait_until(promoted, 90, "promoted after restart")
    finally:
        second.stop()


@pytest.fixture(scope="session")
def gateway_api(cluster) -> None:
    """The Gateway API CRDs from the sigs.k8s.io/gateway-api module (built into the cache)."""
    if not cluster.embedded:
        if cluster.kubectl(
            "get", "crd", "httproutes.gateway.networking.k8s.io", check=False
        ).returncode:
            pytest.skip("the Gateway API CRDs are not installed in this cluster")
        return
    crds = cluster.local.binaries.gateway_api_crds.resolve()
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crds))

    # Not `kubectl wait`: right after the apply the CRD may have no status yet, and kubectl
    # wait then fails ("<nil> is of the type <nil>") instead of waiting.
    def established() -> bool:
        for kind in ("httproutes", "grpcroutes"):
            crd = kget(cluster, "crd", f"{kind}.gateway.networking.k8s.io")
            conditions = (crd.get("status") or {}).get("conditions") or []
            if not any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                return False
        return True

    wait_until(established, 60, "the HTTPRoute and GRPCRoute CRDs Established")


def test_gateway_api_weights_follow_the_steps(
    cluster, namespace, gateway_api, operator, pod_runner, traffic, model_uris
):
    gateway = {
        "router": "gateway-api",
        "gateway": {"parentRefs": [{"name": "public"}], "mesh": True},
    }
    grpc = {"grpc": {"enabled": True}}  # and a GRPCRoute with the same weights
    first = body(model_uris["v1"], None, grpc, version="v1")
    first["spec"]["traffic"] = gateway
    apply(cluster, namespace, first)
    old = wait_stable(cluster, namespace)
    route = kget(cluster, "httproute", "fraud", "-n", namespace)
    assert [(b["name"], b["weight"]) for b in route["spec"]["rules"][0]["backendRefs"]] == [
        ("fraud-stable", 100)
    ]
    grpc_route = kget(cluster, "grpcroute", "fraud", "-n", namespace)
    assert [(b["name"], b["port"]) for b in grpc_route["spec"]["rules"][0]["backendRefs"]] == [
        ("fraud-stable", 9000)
    ]
    # mesh: the route also attaches to the model's own Service (GAMMA), accepted by the real API
    # server with the Gateway API CRDs, so a GAMMA mesh splits in-cluster calls exactly.
    assert {"group": "", "kind": "Service", "name": "fraud"} in route["spec"]["parentRefs"]

    second = body(model_uris["v2"], {**FAST_ROLLOUT, "stepDuration": "3s"}, grpc, version="v2")
    second["spec"]["traffic"] = gateway
    apply(cluster, namespace, second)
    seen: list[tuple[int, ...]] = []
    seen_grpc: list[tuple[int, ...]] = []
    pins: list[str | None] = []

    def promoted() -> bool:
        # Both routes in one call: each step lasts a few seconds, and every call of the loop
        # is time in which a step could come and go unseen.
        routes = kget(cluster, "httproute,grpcroute", "fraud", "-n", namespace)["items"]
        for route in routes:
            log = seen if route["kind"] == "HTTPRoute" else seen_grpc
            weights = tuple(b["weight"] for b in route["spec"]["rules"][0]["backendRefs"])
            if not log or log[-1] != weights:
                log.append(weights)
        pin = service_selector(cluster, namespace).get("modeldeploy.io/revision")
        if not pins or pins[-1] != pin:
            pins.append(pin)
        s = status(cluster, namespace)
        return s.get("stableRevision") not in (None, old) and s.get("phase") == "Ready"

    wait_until(promoted, 90, "promotion through the Gateway API router")
    assert [w for w in seen if len(w) == 2 and w[1] > 0] == [(75, 25), (50, 50), (0, 100)], seen
    assert [w for w in seen_grpc if len(w) == 2 and w[1] > 0] == [(75, 25), (50, 50), (0, 100)]
    # In-cluster callers of the `fraud` Service (status.url) follow the split as well: the
    # Service selects both revisions mid-way instead of staying pinned to stable.
    assert pins[0] == old and None in pins, pins
    stable_svc = kget(cluster, "service", "fraud-stable", "-n", namespace)
    assert (
        stable_svc["spec"]["selector"]["modeldeploy.io/revision"]
        == status(cluster, namespace)["stableRevision"]
    )

    def canary_service_gone() -> bool:
        found = cluster.kubectl("get", "service", "fraud-canary", "-n", namespace, check=False)
        return found.returncode != 0

    wait_until(canary_service_gone, 30, "canary Service removed after promotion")


@pytest.fixture
def prometheus(cluster, pod_runner, tmp_path):
    """A real Prometheus (Debian's package) scraping every ready serving pod each second."""
    from devcluster.prometheus import PrometheusServer

    binary = cluster.local.binaries.prometheus
    if not binary.exists():
        pytest.skip(
            "Prometheus is not in the cache (hack/build-control-plane.sh could not fetch it)"
        )
    server = PrometheusServer(binary, tmp_path / "prometheus").start()
    pod_runner.on_targets = server.write_targets
    yield server
    server.stop()


def test_prometheus_source_rolls_back_a_failing_canary(
    cluster, namespace, operator, pod_runner, prometheus, traffic, model_uris
):
    analysis = {
        **FAST_ROLLOUT["analysis"],
        "compareMetadata": False,
        "metricSource": {"type": "prometheus", "prometheusUrl": prometheus.url},
    }
    rollout = {**FAST_ROLLOUT, "stepDuration": "60s", "analysis": analysis}
    stable = stable_then_custom_canary(
        cluster, namespace, model_uris["v1"], rollout, "FailingModel"
    )

    wait_until(lambda: rolled_back(cluster, namespace), 90, "rollback judged from PromQL")
    s = status(cluster, namespace)
    record = s["lastRollback"]
    assert record["check"] == "errorRate" and record["threshold"] == "5%"
    assert float(record["observedValue"].removesuffix("%")) > 5 and record["samples"] >= 5
    assert s["stableRevision"] == stable
    # The verdict came from Prometheus: it holds the canary revision's series.
    query = f'sum(modelserver_requests_total{{version="{record["revision"]}",code="500"}})'
    url = f"{prometheus.url}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
    with urllib.request.urlopen(url, timeout=5) as response:
        answer = json.loads(response.read())
    assert float(answer["data"]["result"][0]["value"][1]) > 0
