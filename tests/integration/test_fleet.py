"""The operator as a fleet operator, proven on the real API server through its audit log: watches
filtered server-side, idle passes that read nothing, leader election with failover mid-canary,
status writes that lose (409) rather than overwrite, and shards that keep to their own models.

Every request the operator makes carries its leader-election identity in its User-Agent
(`modeldeploy-operator (<pod>_<pid>)`), so the audit log says which process made it.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import time
import urllib.parse
from collections.abc import Iterator

import pytest
from conftest import OperatorProcess, Traffic, kget
from devcluster import wait_until
from mdkit import FAST_ROLLOUT, apply, body, status, wait_stable

pytestmark = pytest.mark.cluster

WRITES = frozenset({"create", "update", "patch", "delete", "deletecollection"})
ROUTES = {"httproutes", "grpcroutes"}
CHILD_RESOURCES = {"deployments", "services", "horizontalpodautoscalers", "pods", *ROUTES}
LEASE_SECONDS = 3  # retry every 0.6 s: failover in seconds, not the default 15


def plain_model(name: str, labels: dict[str, str] | None = None) -> dict:
    """A model whose pods kwok runs (no model server behind them): enough to reach Ready."""
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, **({"labels": labels} if labels else {})},
        "spec": {"model": {"uri": "s3://models/fraud/v7/model.joblib", "format": "sklearn"}},
    }


def wait_ready(cluster, namespace: str, name: str, timeout: float = 60) -> None:
    def ready() -> bool:
        obj = kget(cluster, "md", name, "-n", namespace)
        s = obj.get("status", {})
        return s.get("phase") == "Ready" and s.get("observedGeneration") == obj["metadata"][
            "generation"
        ]  # fmt: skip

    wait_until(ready, timeout, f"ModelDeployment {name} Ready")


def identity_tail(process: OperatorProcess) -> str:
    """How `process`'s leader-election identity (<host>_<pid>) ends."""
    assert process.process is not None
    return f"_{process.process.pid}"


def by(records: list[dict], process: OperatorProcess) -> list[dict]:
    """The requests `process` made itself (kopf's watch of ModelDeployments says kopf/...)."""
    tail = f"{identity_tail(process)})"
    return [r for r in records if r.get("userAgent", "").endswith(tail)]


def writes(records: list[dict]) -> list[dict]:
    return [r for r in records if r["verb"] in WRITES]


def query(record: dict) -> dict[str, list[str]]:
    return urllib.parse.parse_qs(urllib.parse.urlsplit(record["requestURI"]).query)


def in_namespace(records: list[dict], namespace: str) -> list[dict]:
    return [r for r in records if r.get("objectRef", {}).get("namespace") == namespace]


def start(cluster, namespace: str, log, **env: str) -> OperatorProcess:
    return OperatorProcess(cluster.kubeconfig, namespace, log, **env).start()


@pytest.fixture
def operators(cluster, namespace, crds, tmp_path) -> Iterator[list[OperatorProcess]]:
    """Operator processes a test starts (appended to the list); all stopped at the end, and their
    logs printed when the test failed."""
    if not cluster.embedded:
        pytest.skip("reads the embedded API server's audit log")
    started: list[OperatorProcess] = []
    yield started
    for process in started:
        process.stop()
    for process in started:
        print(f"--- {process.log_path.name} ---\n{process.log()[-5000:]}")


def test_child_watches_filter_on_the_server_and_an_idle_fleet_reads_nothing(
    cluster, namespace, operators, tmp_path
):
    since = cluster.local.audit_size()
    operator = start(cluster, namespace, tmp_path / "operator.log")
    operators.append(operator)
    for name in ("alpha", "beta", "gamma"):
        apply(cluster, namespace, plain_model(name))
    for name in ("alpha", "beta", "gamma"):
        wait_ready(cluster, namespace, name)

    # Every list and watch of children asks the API server for the operator's children only.
    reads = [
        r for r in by(cluster.local.audit(since), operator)
        if r["verb"] in ("list", "watch") and r["objectRef"].get("resource") in CHILD_RESOURCES
    ]  # fmt: skip
    watched = {r["objectRef"]["resource"] for r in reads if r["verb"] == "watch"}
    assert watched >= CHILD_RESOURCES - ROUTES, watched  # no Gateway API: nothing to watch
    selectors = {query(r).get("labelSelector", [""])[0] for r in reads}
    assert selectors == {"app.kubernetes.io/managed-by=modeldeploy,modeldeploy.io/name"}, selectors

    # Idle: three resync periods (2 s) of passes from the caches, and no get or list at all.
    time.sleep(3)  # the last child events settle
    before = cluster.local.audit_size()
    passes_before = passes(operator)
    time.sleep(8)
    idle = [
        (r["verb"], r["requestURI"]) for r in by(cluster.local.audit(before), operator)
        if r["verb"] != "watch" and "/leases/" not in r["requestURI"]
    ]  # fmt: skip
    assert passes(operator) - passes_before >= 9, "3 models, at least 3 sweeps each"
    assert idle == [], f"an idle fleet called the API server: {idle}"


def test_a_settled_model_is_not_planned_again_until_something_changes(
    cluster, namespace, operators, tmp_path
):
    """The sweep's passes over a settled model (nothing changed since its last pass found
    nothing to do) are skipped: at 1,000 models they were a core's tenth of pure planning. A
    change to the model or to any child is still acted on at once."""
    operator = start(cluster, namespace, tmp_path / "operator.log")
    operators.append(operator)
    for name in ("alpha", "beta"):
        apply(cluster, namespace, plain_model(name))
    for name in ("alpha", "beta"):
        wait_ready(cluster, namespace, name)
    time.sleep(3)  # the last child events settle
    planned, skipped = results(operator, "ok"), results(operator, "settled")
    time.sleep(6)  # three resync periods
    assert results(operator, "settled") - skipped >= 4, "2 models, at least 2 sweeps each"
    assert results(operator, "ok") == planned, "a settled model was planned again"

    # A hand edit of a child changes the inputs: repaired by the next pass, as before.
    cluster.kubectl("delete", "service", "alpha", "-n", namespace)
    wait_until(
        lambda: cluster.kubectl("get", "service", "alpha", "-n", namespace, check=False)
        .returncode == 0,
        20, "the deleted Service put back",
    )  # fmt: skip
    assert results(operator, "ok") > planned


def results(operator: OperatorProcess, result: str) -> float:
    """Passes taken from the queue with this result (ok: planned; settled: skipped)."""
    return sum(
        value
        for series, value in operator.metrics().items()
        if series.startswith("modeldeploy_operator_reconciles_total")
        and f'result="{result}"' in series
    )


def passes(operator: OperatorProcess) -> float:
    return sum(
        value
        for series, value in operator.metrics().items()
        if series.startswith("modeldeploy_operator_reconciles_total")
    )


def leader_of(cluster, namespace: str, lease: str = "modeldeploy-operator") -> str:
    spec = kget(cluster, "lease", lease, "-n", namespace).get("spec", {})
    return str(spec.get("holderIdentity") or "")


def test_standby_takes_over_a_killed_leader_mid_canary_from_its_recorded_step(
    cluster, namespace, operators, pod_runner, model_uris, tmp_path
):
    env = {"MODELDEPLOY_LEASE_SECONDS": str(LEASE_SECONDS)}
    first = start(cluster, namespace, tmp_path / "first.log", **env)
    operators.append(first)
    wait_until(lambda: leader_of(cluster, namespace).endswith(identity_tail(first)), 20, "lead")
    second = start(cluster, namespace, tmp_path / "second.log", **env)
    operators.append(second)
    since = cluster.local.audit_size()

    # Long enough steps that the kill lands mid-canary, with a step still ahead.
    rollout = {**FAST_ROLLOUT, "steps": [25, 50, 75, 100], "stepDuration": "6s"}
    apply(cluster, namespace, body(model_uris["v1"], rollout, version="v1"))
    stable = wait_stable(cluster, namespace)
    traffic = Traffic(pod_runner, "fraud").start()
    try:
        apply(cluster, namespace, body(model_uris["v2"], rollout, version="v2"))
        wait_until(lambda: status(cluster, namespace).get("desiredWeight") == 50, 60, "step 2")
        at_kill = status(cluster, namespace)
        standing_by = by(cluster.local.audit(since), second)
        assert writes(standing_by) == [], "the standby wrote while the leader lived"
        assert in_namespace(writes(by(cluster.local.audit(since), first)), namespace)

        killed_at = time.time()
        mark = cluster.local.audit_size()
        first.stop(signal.SIGKILL)
        weights: list[int] = []

        def promoted() -> bool:
            s = status(cluster, namespace)
            if s.get("canaryRevision") and s.get("desiredWeight") is not None:
                weights.append(s["desiredWeight"])
            return s.get("stableRevision") not in (None, stable) and s.get("phase") == "Ready"

        wait_until(promoted, 90, "the canary promoted by the standby")
    finally:
        traffic.stop()

    taken_over = [
        r for r in writes(by(cluster.local.audit(mark), second))
        if r["objectRef"].get("resource") != "leases"
    ]  # fmt: skip
    assert taken_over, "the standby never wrote"
    first_write = stamp(taken_over[0]["requestReceivedTimestamp"]) - killed_at
    # The Lease expires LEASE_SECONDS after the last renewal; a retry period (lease/5) to notice.
    assert first_write < LEASE_SECONDS + 8, f"first write {first_write:.1f}s after the kill"
    # Continued from the recorded step: never back to an earlier weight, never a fresh canary.
    assert weights and min(weights) >= at_kill["desiredWeight"], weights
    s = status(cluster, namespace)
    assert s["history"][0]["outcome"] == "Promoted" and s["stableVersion"] == "v2"
    assert s["history"][0]["revision"] == at_kill["canaryRevision"]
    reasons = [
        e["reason"] for e in kget(cluster, "events", "-n", namespace)["items"]
        if e["reason"] == "CanaryStarted"
    ]  # fmt: skip
    assert len(reasons) == 1, "the standby started the canary again"


def stamp(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_a_status_write_from_a_stale_copy_gets_409_and_is_retried_from_fresh_state(
    cluster, namespace, operators, tmp_path
):
    """A replica that planned from an old copy (here: the object before anyone wrote status)
    loses the write instead of overwriting, re-reads, and plans again from the server's copy."""
    import threading

    from modeldeploy.config import OperatorConfig
    from modeldeploy.handlers import load_credential
    from modeldeploy.kube import Kube
    from modeldeploy.runtime import Runtime
    from modeldeploy.workers import work

    apply(cluster, namespace, plain_model("fraud"))
    stale = kget(cluster, "md", "fraud", "-n", namespace)
    operator = start(cluster, namespace, tmp_path / "operator.log")
    operators.append(operator)
    wait_ready(cluster, namespace, "fraud")
    operator.stop()
    fresh = kget(cluster, "md", "fraud", "-n", namespace)
    assert int(fresh["metadata"]["resourceVersion"]) > int(stale["metadata"]["resourceVersion"])

    # The write itself: a stale resourceVersion is refused.
    refused = cluster.kubectl(
        "patch", "md", "fraud", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"metadata": {"resourceVersion": stale["metadata"]["resourceVersion"]},
                          "status": {"phase": "Pending"}}),
        check=False,
    )  # fmt: skip
    assert refused.returncode != 0 and "Conflict" in refused.stderr + refused.stdout, refused

    # A pass planned from the stale copy: its status write gets 409, it re-reads and passes again.
    config = OperatorConfig.from_env(
        {
            "MODELDEPLOY_NAMESPACES": namespace,
            "MODELDEPLOY_OPERATOR_NAMESPACE": namespace,
            "MODELDEPLOY_SERVING_IMAGE": operator.env["MODELDEPLOY_SERVING_IMAGE"],
            "MODELDEPLOY_LEADER_ELECTION": "false",
        }
    )
    runtime = Runtime(config)
    api = cluster.api_client()
    api.user_agent = "modeldeploy-operator (stale-test)"
    runtime.kube = Kube(api, runtime.metrics)
    load_credential(runtime)  # the operator's Secret: the same revision as the process computed
    runtime.children.start(runtime.kube, (namespace,), lambda owner: None, runtime.stop)
    assert runtime.children.wait_synced(20)
    runtime.models.put(stale)
    runtime.leading.set()
    since = cluster.local.audit_size()
    runtime.queue.add((namespace, "fraud"))
    worker = threading.Thread(target=work, args=(runtime, "worker-0"), daemon=True)
    worker.start()
    try:
        wait_until(
            lambda: stale_results(runtime.metrics) >= 1 and ok_results(runtime.metrics) >= 1,
            30, "a stale pass, then a good one",
        )  # fmt: skip
    finally:
        runtime.stop.set()
        runtime.queue.shutdown()
        worker.join(5)
    ours = [
        (r["verb"], r["objectRef"].get("subresource"), r["responseStatus"]["code"])
        for r in cluster.local.audit(since)
        if r.get("userAgent", "").endswith("(stale-test)")
        and r["objectRef"].get("resource") == "modeldeployments"
        and r.get("stage") == "ResponseComplete"
    ]  # fmt: skip
    assert ("patch", "status", 409) in ours, ours
    refused_at = ours.index(("patch", "status", 409))
    assert ("get", None, 200) in ours[refused_at:], f"no re-read after the 409: {ours}"
    # The retry planned from the server's copy: nothing of it needed writing again, or it wrote
    # on the fresh version (never the stale one).
    after = kget(cluster, "md", "fraud", "-n", namespace)
    assert after["status"]["phase"] == "Ready"
    assert after["status"]["stableRevision"] == fresh["status"]["stableRevision"]
    assert conditions_since(after) == conditions_since(fresh), "the stale pass rewrote history"


def conditions_since(obj: dict) -> dict[str, str]:
    return {c["type"]: c["lastTransitionTime"] for c in obj["status"].get("conditions", [])}


def stale_results(metrics) -> float:
    return metrics.reconciles.labels(trigger="queue", result="stale")._value.get()


def ok_results(metrics) -> float:
    return metrics.reconciles.labels(trigger="queue", result="ok")._value.get()


def test_two_shards_each_reconcile_only_their_own_models(cluster, namespace, operators, tmp_path):
    since = cluster.local.audit_size()
    shard_a = start(cluster, namespace, tmp_path / "a.log", MODELDEPLOY_SELECTOR="shard=a")
    shard_b = start(cluster, namespace, tmp_path / "b.log", MODELDEPLOY_SELECTOR="shard=b")
    operators.extend([shard_a, shard_b])
    apply(cluster, namespace, plain_model("alpha", {"shard": "a"}))
    apply(cluster, namespace, plain_model("beta", {"shard": "b"}))
    apply(cluster, namespace, plain_model("nobody", {"shard": "c"}))
    wait_ready(cluster, namespace, "alpha")
    wait_ready(cluster, namespace, "beta")

    records = in_namespace(cluster.local.audit(since), namespace)

    def touched(process: OperatorProcess) -> set[str]:
        """The models whose status or children `process` wrote."""
        names = set()
        for r in writes(by(records, process)):
            ref = r["objectRef"]
            if ref.get("resource") == "modeldeployments":
                names.add(ref["name"])
            elif ref.get("resource") in CHILD_RESOURCES:
                names.add(ref["name"].split("-")[0])
        return names

    assert touched(shard_a) == {"alpha"}
    assert touched(shard_b) == {"beta"}
    assert "status" not in kget(cluster, "md", "nobody", "-n", namespace)
    # kopf's watch of ModelDeployments carries each shard's selector to the API server.
    md_selectors = {
        query(r).get("labelSelector", [""])[0] for r in records
        if r["verb"] in ("list", "watch") and r["objectRef"].get("resource") == "modeldeployments"
    }  # fmt: skip
    assert {"shard=a", "shard=b"} <= md_selectors, md_selectors
    # Each shard leads on its own Lease: both work at once.
    leases = {
        lease["metadata"]["name"] for lease in kget(cluster, "lease", "-n", namespace)["items"]
    }
    assert len({n for n in leases if n.startswith("modeldeploy-operator-")}) == 2, leases
