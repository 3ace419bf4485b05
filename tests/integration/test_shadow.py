"""The shadow phase on the real control plane, with real model servers behind kwok's pods.

Stable's servers are configured by the operator over HTTP, mirror live traffic to the canary's
pods, compare the answers and export the counts; the operator judges them before the canary
gets any live traffic. A canary that disagrees is rejected having served no user; one that
agrees walks the steps.
"""

from __future__ import annotations

import base64
import json
import urllib.request
from collections.abc import Iterator

import pytest
from conftest import Traffic, kget
from devcluster import wait_until
from mdkit import (
    FAST_ROLLOUT,
    apply,
    body,
    event_reasons,
    rolled_back,
    stable_then_custom_canary,
    status,
    wait_showing_status,
    wait_stable,
)
from test_canary import gateway_api  # noqa: F401 - the Gateway API CRDs, a fixture

pytestmark = pytest.mark.cluster
CREDENTIAL_SECRET = "modeldeploy-operator-credential"

SHADOW_ROLLOUT = {
    **FAST_ROLLOUT,
    "analysis": {**FAST_ROLLOUT["analysis"], "compareMetadata": False},
    "shadow": {"duration": "4s", "fraction": 1.0, "minAgreement": 0.99},
}


@pytest.fixture
def traffic(pod_runner) -> Traffic:
    load = Traffic(pod_runner, "fraud").start()
    yield load
    load.stop()


def pod_urls(pod_runner, revision: str) -> Iterator[str]:
    """The base URL of each running, ready pod of `revision` (its server's http port)."""
    for state in list(pod_runner.pods.values()):
        labels = state.pod["metadata"].get("labels", {})
        if not state.ready or labels.get("modeldeploy.io/revision") != revision:
            continue
        port = state.pod["spec"]["containers"][0].get("ports", [{}])[0].get("containerPort", 8080)
        yield f"http://{state.ip}:{port}"


def operator_token(cluster, namespace: str) -> str:
    """The operator's own token (its credential Secret; the test operator keeps it in the
    test's namespace): /v2/shadow answers nobody else when users need no token."""
    encoded = cluster.kubectl(
        "get", "secret", CREDENTIAL_SECRET, "-n", namespace, "-o", "jsonpath={.data.token}"
    ).stdout
    return base64.b64decode(encoded).decode().strip()


def shadow_configs(pod_runner, revision: str, token: str) -> list[dict]:
    """GET /v2/shadow of each running pod of `revision`: what its server mirrors now."""
    configs = []
    for url in pod_urls(pod_runner, revision):
        request = urllib.request.Request(
            f"{url}/v2/shadow", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=5) as reply:
            configs.append(json.loads(reply.read()))
    return configs


def mirrored_to(pod_runner, revision: str) -> dict[str, float]:
    """Copies the running pods of `revision` sent, by the revision they went to (their
    modelserver_shadow_mirrored_total): a record that outlives the shadow phase, unlike
    /v2/shadow, which a poll can miss when the phase lasts a few seconds."""
    from modelserver.metric_names import LABEL_SHADOW, SHADOW_MIRRORED_TOTAL
    from prometheus_client.parser import text_string_to_metric_families

    sent: dict[str, float] = {}
    for url in pod_urls(pod_runner, revision):
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as reply:
            text = reply.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == SHADOW_MIRRORED_TOTAL:
                    target = sample.labels[LABEL_SHADOW]
                    sent[target] = sent.get(target, 0.0) + sample.value
    return sent


class Watch:
    """Status as the rollout goes: the weights and the phases of the shadow seen."""

    def __init__(self, cluster, namespace: str) -> None:
        self.cluster, self.namespace = cluster, namespace
        self.weights: list[int] = []
        self.shadowed = False

    def look(self) -> dict:
        s = status(self.cluster, self.namespace)
        if s.get("canaryRevision"):
            weight = s.get("desiredWeight")
            if weight is not None and (not self.weights or self.weights[-1] != weight):
                self.weights.append(weight)
            analysis = s.get("analysis") or {}
            if analysis.get("shadowStartedAt") and not analysis.get("trafficStartedAt"):
                self.shadowed = True
        return s


def test_a_disagreeing_shadow_is_rejected_before_it_serves_a_user(
    cluster, namespace, operator, pod_runner, traffic, model_uris
):
    stable = stable_then_custom_canary(
        cluster, namespace, model_uris["v1"], SHADOW_ROLLOUT, "FlippedModel"
    )
    watch = Watch(cluster, namespace)

    def rejected() -> bool:
        watch.look()
        return rolled_back(cluster, namespace)

    wait_showing_status(cluster, namespace, rejected, 90, "the shadow rejected")
    s = status(cluster, namespace)
    record = s["lastRollback"]
    assert record["check"] == "shadowAgreement", record
    assert record["observedValue"] == "0%" and record["threshold"] == ">= 99%", record
    assert record["samples"] >= 5  # minRequests compared answers at least
    assert "agreed with stable's on 0 of" in record["message"]
    assert "timeToDetect" not in record  # it never served a user
    assert s["stableRevision"] == stable
    assert s["rejectedRevisions"][0]["reason"] == "ShadowDisagrees"
    # It never had live traffic: 0% from its start to its rejection.
    assert watch.shadowed and set(watch.weights) == {0}, watch.weights
    # Stable's servers were told where to mirror, and did.
    sent = mirrored_to(pod_runner, stable)
    assert sent.get(record["revision"], 0) >= record["samples"], sent
    assert {"ShadowStarted", "RolledBack"} <= event_reasons(cluster, namespace)
    # The operator stops the mirroring at once, not only when the configuration expires.
    token = operator_token(cluster, namespace)
    wait_until(
        lambda: all(not c["active"] for c in shadow_configs(pod_runner, stable, token)),
        10,
        "stable's servers stopped mirroring",
    )


def test_an_agreeing_shadow_goes_on_to_the_canary_steps(
    cluster, namespace, operator, pod_runner, traffic, model_uris
):
    apply(cluster, namespace, body(model_uris["v1"], SHADOW_ROLLOUT, version="v1"))
    old = wait_stable(cluster, namespace)
    # The same model under a new version label: a new revision that answers exactly like stable.
    apply(cluster, namespace, body(model_uris["v1"], SHADOW_ROLLOUT, version="v1-rebuilt"))
    watch = Watch(cluster, namespace)
    agreement: list[dict] = []

    def promoted() -> bool:
        s = watch.look()
        for check in (s.get("analysis") or {}).get("checks", []):
            if check["name"] == "shadowAgreement":
                agreement.append(check)
        return s.get("stableRevision") not in (None, old) and s.get("phase") == "Ready"

    wait_showing_status(cluster, namespace, promoted, 120, "the shadowed canary promoted")
    s = status(cluster, namespace)
    assert watch.shadowed
    # 0% while shadowing, then every step in order.
    assert watch.weights[0] == 0 and [w for w in watch.weights if w] == [25, 50, 100], watch.weights
    assert agreement and all(c["outcome"] == "Passed" for c in agreement), agreement
    assert agreement[-1]["value"] == "100%" and agreement[-1]["samples"] >= 5
    assert not s.get("lastRollback") and s["stableVersion"] == "v1-rebuilt"
    assert {"ShadowStarted", "ShadowPassed", "StepAdvanced", "Promoted"} <= event_reasons(
        cluster, namespace
    )


@pytest.mark.usefixtures("gateway_api")
def test_with_the_gateway_router_both_routes_mirror_while_shadowing(
    cluster, namespace, operator, pod_runner, traffic, model_uris
):
    rollout = {**SHADOW_ROLLOUT, "shadow": {**SHADOW_ROLLOUT["shadow"], "mirror": "Gateway",
                                            "fraction": 0.25}}  # fmt: skip
    gateway = {"router": "gateway-api", "gateway": {"parentRefs": [{"name": "public"}]}}
    grpc = {"grpc": {"enabled": True}}  # and a GRPCRoute, mirrored like the HTTPRoute
    first = body(model_uris["v1"], rollout, grpc, version="v1")
    first["spec"]["traffic"] = gateway
    apply(cluster, namespace, first)
    old = wait_stable(cluster, namespace)
    second = body(model_uris["v1"], rollout, grpc, version="v1-rebuilt")
    second["spec"]["traffic"] = gateway
    apply(cluster, namespace, second)
    watch = Watch(cluster, namespace)
    filters: dict[str, list[list[dict]]] = {"HTTPRoute": [], "GRPCRoute": []}
    checks: set[str] = set()
    server_mirrors: list[dict[str, float]] = []

    def promoted() -> bool:
        s = watch.look()
        # Both routes in one call, as in test_canary: a second call per loop is time in which
        # the short shadow phase could come and go unseen.
        for route in kget(cluster, "httproute,grpcroute", "fraud", "-n", namespace)["items"]:
            filters[route["kind"]].append(route["spec"]["rules"][0].get("filters", []))
        analysis = s.get("analysis") or {}
        checks.update(c["name"] for c in analysis.get("checks", []))
        if analysis.get("shadowStartedAt") and not analysis.get("trafficStartedAt"):
            server_mirrors.append(mirrored_to(pod_runner, old))
        return s.get("stableRevision") not in (None, old) and s.get("phase") == "Ready"

    wait_showing_status(cluster, namespace, promoted, 120, "promoted after a gateway shadow")

    def mirror(port: int) -> dict:
        backend = {"group": "", "kind": "Service", "name": "fraud-canary", "port": port}
        fraction = {"numerator": 2500, "denominator": 10000}
        return {
            "type": "RequestMirror",
            "requestMirror": {"backendRef": backend, "fraction": fraction},
        }

    # Accepted by the real API server with the Gateway API CRDs, while the canary shadowed: REST
    # to the Services' port 80, gRPC to their grpc port (9000), the same share of each.
    for kind, port in (("HTTPRoute", 80), ("GRPCRoute", 9000)):
        seen = filters[kind]
        assert any(f == [mirror(port)] for f in seen), (kind, seen)
        assert seen[-1] == [], (kind, seen)  # gone once live traffic moved
    assert watch.shadowed and [w for w in watch.weights if w] == [25, 50, 100], watch.weights
    # Judged on its own over the copies: no agreement, and stable's servers never mirrored.
    assert "shadowErrorRate" in checks and "shadowAgreement" not in checks, checks
    assert server_mirrors and not any(server_mirrors), server_mirrors
