"""Rollouts under the configurations real users have: auth, changed ports, outages, missing
inputs, restarts, deletions, operator upgrades, an unreachable API server or pod.

Real control plane, real model servers behind the pods (the pod runner mounts Secrets and
restarts exited servers as the kubelet does), the operator as a process.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import pytest
from conftest import OperatorProcess, Traffic, kget
from devcluster import FAULT_LABEL, wait_until
from mdkit import (
    FAST_ROLLOUT,
    apply,
    body,
    conditions,
    deployments,
    event_reasons,
    events,
    rolled_back,
    service_selector,
    status,
    wait_promoted,
    wait_stable,
)

pytestmark = pytest.mark.cluster

USER_TOKEN = "user-token-3f9a"
SMOKE = [{"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [1, 4], "data": [0.1, 0.2, 0.3, 0.4]}]}]  # fmt: skip


def infer(url: str, token: str | None = None) -> int:
    """POST one request; the HTTP status."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=json.dumps(SMOKE[0]).encode(), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def secret(cluster, namespace: str, name: str, **data: str) -> None:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    obj = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": encoded}
    apply(cluster, namespace, obj)


def config_map(cluster, namespace: str, name: str, **data: str) -> None:
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}
    apply(cluster, namespace, obj)


def test_auth_protected_model_is_updated_through_its_gates_and_users_still_need_their_token(
    cluster, namespace, operator, pod_runner, model_uris
):
    """Before: the gates got 401, a hard failure — every update of a protected model, and
    turning auth on, was rolled back."""
    secret(cluster, namespace, "model-token", token=USER_TOKEN)
    rollout = {
        **FAST_ROLLOUT,
        "analysis": {**FAST_ROLLOUT["analysis"], "smokeTests": {"inputs": SMOKE}},
    }
    apply(cluster, namespace, body(model_uris["v1"], rollout, version="v1"))
    open_rev = wait_stable(cluster, namespace)
    load = Traffic(pod_runner, "fraud", token=USER_TOKEN).start()
    try:
        # Auth turned on for the running model: a new revision, judged through the gates.
        auth = {"authSecretRef": {"name": "model-token"}}
        apply(cluster, namespace, body(model_uris["v1"], rollout, auth, version="v1"))
        protected = wait_promoted(cluster, namespace, open_rev)["stableRevision"]
        # And a model update of the protected model.
        apply(cluster, namespace, body(model_uris["v2"], rollout, auth, version="v2"))
        s = wait_promoted(cluster, namespace, protected)
    finally:
        load.stop()
    assert not s.get("lastRollback"), s.get("lastRollback")
    assert [h["outcome"] for h in s["history"][:2]] == ["Promoted", "Promoted"]
    # User traffic still needs the user's token; the operator's credential is not a user's.
    url = next(u for u in Traffic(pod_runner, "fraud").urls())
    assert infer(url) == 401
    assert infer(url, "wrong") == 401
    assert infer(url, USER_TOKEN) == 200
    assert load.codes.get(200, 0) > 0 and set(load.codes) == {200}, load.codes
    # The operator read no Secret of the user's to get in: the pods know only its token's hash.
    pod = kget(
        cluster, "pods", "-n", namespace, "-l", f"modeldeploy.io/revision={s['stableRevision']}"
    )["items"][0]
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert re.fullmatch("[0-9a-f]{64}", env["MODELSERVER_OPERATOR_TOKEN_SHA256"])
    assert USER_TOKEN not in json.dumps(pod["spec"])


def test_changing_port_and_model_name_in_one_update_addresses_stable_as_it_runs(
    cluster, namespace, operator, pod_runner, model_uris
):
    """Before: the gates called stable on the new port under the new name (refused / 404), and
    the good canary was rolled back."""
    rollout = {
        **FAST_ROLLOUT,
        "analysis": {**FAST_ROLLOUT["analysis"], "smokeTests": {"inputs": SMOKE}},
    }
    apply(cluster, namespace, body(model_uris["v1"], rollout, version="v1"))
    old = wait_stable(cluster, namespace)
    load = Traffic(pod_runner, "fraud").start()
    try:
        update = body(model_uris["v2"], rollout, {"port": 9090}, version="v2", name="fraud-v2")
        apply(cluster, namespace, update)
        s = wait_promoted(cluster, namespace, old)
    finally:
        load.stop()
    assert not s.get("lastRollback"), s.get("lastRollback")
    assert s["url"].endswith("/v2/models/fraud-v2")

    def only_new_pods_serve() -> bool:
        urls = Traffic(pod_runner, "fraud").urls()
        return bool(urls) and all(":9090/v2/models/fraud-v2/" in u for u in urls)

    wait_until(only_new_pods_serve, 30, "the old revision's pods gone")


def test_an_outage_is_fixed_by_rolling_forward(
    cluster, namespace, operator, pod_runner, model_uris
):
    """Before: with no ready stable pod to compare with, the fix waited until progressDeadline
    and was rolled back to the broken revision."""
    rollout = {**FAST_ROLLOUT, "progressDeadline": "20s",
               "analysis": {**FAST_ROLLOUT["analysis"], "smokeTests": {"inputs": SMOKE}}}  # fmt: skip
    apply(
        cluster,
        namespace,
        body(model_uris["v1"], rollout, {"podLabels": {FAULT_LABEL: "never-ready"}}),
    )
    wait_until(lambda: status(cluster, namespace).get("phase") == "Degraded", 60, "broken stable")
    broken = status(cluster, namespace)["stableRevision"]

    apply(cluster, namespace, body(model_uris["v1"], rollout))  # the fix
    s = wait_promoted(cluster, namespace, broken, timeout=60)
    assert not s.get("lastRollback") and s["history"][0]["outcome"] == "Promoted"
    assert "had no ready pod" in s["history"][0]["message"]
    assert {"StableUnavailable", "RolledForward"} <= event_reasons(cluster, namespace)
    wait_until(lambda: set(deployments(cluster, namespace)) == {s["stableRevision"]}, 30,
               "the broken revision is not kept to roll back to")  # fmt: skip


def test_a_failing_canary_is_not_rolled_back_to_a_stable_with_no_ready_pod(
    cluster, namespace, operator, model_uris
):
    apply(
        cluster,
        namespace,
        body(model_uris["v1"], serving={"podLabels": {FAULT_LABEL: "never-ready"}}),
    )
    wait_until(lambda: status(cluster, namespace).get("stableRevision"), 30, "a stable revision")
    broken = status(cluster, namespace)["stableRevision"]
    apply(
        cluster,
        namespace,
        body(model_uris["v2"], serving={"podLabels": {FAULT_LABEL: "crash-loop"}}),
    )

    def reported() -> bool:
        return (
            conditions(cluster, namespace).get("Degraded", {}).get("reason") == "NoRollbackTarget"
        )

    wait_until(reported, 60, "the failure reported without a rollback")
    s = status(cluster, namespace)
    assert s["stableRevision"] == broken and s["canaryRevision"], "nothing rolled back to"
    assert not s.get("lastRollback") and not s.get("rejectedRevisions")
    assert "has no ready pod" in conditions(cluster, namespace)["Degraded"]["message"]
    assert "NoRollbackTarget" in event_reasons(cluster, namespace)


def test_smoke_inputs_from_a_bad_config_map_hold_the_canary_and_resume_once_fixed(
    cluster, namespace, operator, pod_runner, model_uris, request
):
    """Before: a missing ConfigMap passed the gate on 0 inputs; malformed JSON raised on every
    pass, so nothing of that ModelDeployment was reconciled any more."""
    analysis = {**FAST_ROLLOUT["analysis"], "smokeTests": {"configMapRef": {"name": "smoke"}}}
    rollout = {**FAST_ROLLOUT, "analysis": analysis}
    config_map(cluster, namespace, "smoke", **{"inputs.json": json.dumps(SMOKE)})
    apply(cluster, namespace, body(model_uris["v1"], rollout, version="v1"))
    old = wait_stable(cluster, namespace)
    cluster.kubectl("delete", "configmap", "smoke", "-n", namespace)
    load = Traffic(pod_runner, "fraud").start()
    request.addfinalizer(load.stop)
    apply(cluster, namespace, body(model_uris["v2"], rollout, version="v2"))

    def held_on(fragment: str) -> bool:
        stalled = conditions(cluster, namespace).get("Stalled", {})
        return stalled.get("reason") == "SmokeInputsInvalid" and fragment in stalled.get(
            "message", ""
        )

    cases = [
        (None, f"ConfigMap {namespace}/smoke (smokeTests.configMapRef) does not exist"),
        ("[{", "is not valid JSON"),
        (json.dumps(SMOKE[0]), "must be a JSON array of inference requests, not a JSON object"),
    ]
    for value, message in cases:
        if value is not None:
            config_map(cluster, namespace, "smoke", **{"inputs.json": value})
        wait_until(lambda message=message: held_on(message), 30, f"held: {message}")
        s = status(cluster, namespace)
        assert s["phase"] == "Paused" and s["desiredWeight"] == 0 and s["currentStep"] == 0
        assert s["stableRevision"] == old and not s.get("lastRollback")
    warnings = [
        e["message"] for e in events(cluster, namespace) if e["reason"] == "SmokeInputsInvalid"
    ]
    assert len(warnings) >= 3 and all(f"{namespace}/smoke" in w for w in warnings)
    # Everything else is still reconciled: a Service deleted by hand comes back while held.
    cluster.kubectl("delete", "service", "fraud", "-n", namespace)
    wait_until(lambda: cluster.kubectl("get", "service", "fraud", "-n", namespace, check=False).returncode == 0,
               30, "Service restored while the canary is held")  # fmt: skip

    config_map(cluster, namespace, "smoke", **{"inputs.json": json.dumps(SMOKE)})
    s = wait_promoted(cluster, namespace, old)
    assert not s.get("lastRollback")


def test_one_container_restart_does_not_roll_the_canary_back(
    cluster, namespace, operator, pod_runner, model_uris
):
    """Before: restartCount > 0 was a hard failure."""
    rollout = {**FAST_ROLLOUT, "stepDuration": "6s"}
    apply(cluster, namespace, body(model_uris["v1"], rollout, version="v1"))
    old = wait_stable(cluster, namespace)
    load = Traffic(pod_runner, "fraud").start()
    try:
        apply(cluster, namespace, body(model_uris["v2"], rollout, version="v2"))
        wait_until(
            lambda: (status(cluster, namespace).get("desiredWeight") or 0) > 0, 60, "canary traffic"
        )
        canary = status(cluster, namespace)["canaryRevision"]
        pod = kget(cluster, "pods", "-n", namespace, "-l", f"modeldeploy.io/revision={canary}")[
            "items"
        ][0]
        name = pod["metadata"]["name"]
        pid = pod_runner.server_pid(name)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)  # the container dies once; the runner restarts it

        def restarted() -> bool:
            found = kget(cluster, "pod", name, "-n", namespace)
            statuses = found.get("status", {}).get("containerStatuses") or [{}]
            return statuses[0].get("restartCount", 0) == 1 and statuses[0].get("ready") is True

        wait_until(restarted, 60, "the canary pod restarted once and Ready again")
        s = wait_promoted(cluster, namespace, old)
    finally:
        load.stop()
    assert not s.get("lastRollback"), s.get("lastRollback")


def test_deleting_a_model_mid_canary_forgets_it_everywhere(
    cluster, namespace, operator, pod_runner, model_uris
):
    """Before: the operator fetched the deleted object every half second until restarted, and
    its gauges kept the object's phase and canary weight."""
    rollout = {**FAST_ROLLOUT, "stepDuration": "300s"}
    apply(cluster, namespace, body(model_uris["v1"], rollout, version="v1"))
    wait_stable(cluster, namespace)
    apply(cluster, namespace, body(model_uris["v2"], rollout, version="v2"))
    wait_until(lambda: status(cluster, namespace).get("canaryRevision"), 30, "canary started")
    series = f'modeldeploy_operator_canary_weight_percent{{name="fraud",namespace="{namespace}"}}'
    wait_until(lambda: series in operator.metrics(), 30, "canary weight gauge")

    cluster.kubectl("delete", "md", "fraud", "-n", namespace)

    def settled() -> bool:
        metrics = operator.metrics()
        phases = sum(
            v for k, v in metrics.items() if k.startswith("modeldeploy_operator_modeldeployments{")
        )
        return series not in metrics and phases == 0

    wait_until(settled, 20, "the operator's gauges forget the deleted model")
    # Child events (pods terminating) legitimately trigger passes until garbage collection ends.
    wait_until(
        lambda: not kget(cluster, "pods", "-n", namespace, "-l", "modeldeploy.io/name=fraud")["items"],
        60, "the deleted model's pods gone",
    )  # fmt: skip
    time.sleep(1)
    reads = "modeldeploy_operator_api_reads_total"
    before, started = operator.metrics()[reads], time.monotonic()
    time.sleep(6)
    per_second = (operator.metrics()[reads] - before) / (time.monotonic() - started)
    # Only the periodic listing remains (one read per 2 s resync); a deleted canary fetched every
    # half second would add two per second.
    assert per_second <= 1.0, f"{per_second:.1f} API reads/s after the delete"


def test_changing_the_default_serving_image_rolls_models_out_as_capped_canaries(
    cluster, namespace, crds, pod_runner, model_uris, tmp_path
):
    """Before: the image was hashed into every revision, so an operator upgrade started a canary
    for every model at once."""
    # Judged on every interval, traffic or not: this test is about when canaries start.
    rollout = {
        **FAST_ROLLOUT,
        "stepDuration": "3s",
        "analysis": {**FAST_ROLLOUT["analysis"], "minRequests": 0},
    }
    names = ["m1", "m2", "m3"]
    first = OperatorProcess(cluster.kubeconfig, namespace, tmp_path / "first.log").start()
    try:
        for name in names:
            obj = body(model_uris["v1"], rollout)
            obj["metadata"]["name"] = name
            obj["spec"]["scaling"] = {"replicas": 1}
            apply(cluster, namespace, obj)
        wait_until(
            lambda: all(status(cluster, namespace, n).get("phase") == "Ready" for n in names),
            60,
            "all Ready",
        )
    finally:
        first.stop()
    before = {n: status(cluster, namespace, n)["stableRevision"] for n in names}
    upgraded = OperatorProcess(
        cluster.kubeconfig, namespace, tmp_path / "upgraded.log",
        MODELDEPLOY_SERVING_IMAGE="registry.example/modelserver:next",
        MODELDEPLOY_MAX_CONCURRENT_ROLLOUTS="1",
    ).start()  # fmt: skip
    peak, queued_seen = 0, False
    try:

        def all_rolled() -> bool:
            nonlocal peak, queued_seen
            states = {n: status(cluster, namespace, n) for n in names}
            running = [n for n, s in states.items() if s.get("canaryRevision")]
            peak = max(peak, len(running))
            queued_seen = queued_seen or any(
                c.get("reason") == "RolloutQueued"
                for s in states.values()
                for c in s.get("conditions", [])
            )
            return all(
                s.get("stableRevision") != before[n] and s.get("phase") == "Ready"
                for n, s in states.items()
            )

        wait_until(all_rolled, 180, "every model on the new image")
    finally:
        upgraded.stop()
    assert peak == 1, f"{peak} operator-caused canaries at once (cap 1)"
    assert queued_seen, "the waiting models said why"
    for name in names:
        history = status(cluster, namespace, name)["history"]
        assert history[0]["outcome"] == "Promoted"
        image = kget(
            cluster,
            "deployment",
            f"{name}-{status(cluster, namespace, name)['stableRevision']}",
            "-n",
            namespace,
        )
        assert (
            image["spec"]["template"]["spec"]["containers"][0]["image"]
            == "registry.example/modelserver:next"
        )


def test_an_api_server_outage_mid_canary_costs_one_line_per_retry_and_the_canary_resumes(
    cluster, namespace, crds, pod_runner, model_uris, tmp_path
):
    """Before: calls blocked 30 s each, a due canary was retried every 0.5 s with a traceback,
    and /healthz stayed green while the resync loop hung. Now /healthz names the stuck worker."""
    from devcluster.faultproxy import FaultProxy

    server = urlsplit(cluster.api_client().configuration.host)
    proxy = FaultProxy((server.hostname or "127.0.0.1", server.port or 443)).start()
    kubeconfig = proxy.kubeconfig(cluster.kubeconfig, tmp_path / "via-proxy.kubeconfig")
    # A call that hangs fails after 5 s (a new connection's TLS handshake: the connect timeout)
    # or 20 s (a pooled connection's read): "stuck" is set below both, so a pass in either is
    # reported whichever connection it got.
    operator = OperatorProcess(
        kubeconfig, namespace, tmp_path / "operator.log", MODELDEPLOY_STUCK_SECONDS="3"
    ).start()
    rollout = {**FAST_ROLLOUT, "steps": [25, 50, 75, 100], "stepDuration": "8s"}
    load = Traffic(pod_runner, "fraud").start()
    try:
        apply(cluster, namespace, body(model_uris["v1"], rollout, version="v1"))
        old = wait_stable(cluster, namespace)
        apply(cluster, namespace, body(model_uris["v2"], rollout, version="v2"))
        wait_until(lambda: status(cluster, namespace).get("currentStep") == 1, 60, "second step")
        before = status(cluster, namespace)
        selector, replicas = service_selector(cluster, namespace), {
            r: d["spec"]["replicas"] for r, d in deployments(cluster, namespace).items()}  # fmt: skip
        mark = len(operator.log())

        proxy.blackhole()  # 30 s of a hung API server: connections accepted, nothing answered
        health: dict = {}

        def stuck_reported() -> bool:
            code, answer = operator.health("/healthz")
            health.update(code=code, answer=answer)
            return code == 503

        wait_until(stuck_reported, 30, "/healthz reports the stuck loop")
        assert "stuck for" in health["answer"]["workers"], health
        time.sleep(max(0.0, 30 - 8))
        proxy.refuse()  # 30 s of a stopped API server: connections refused
        refused_at = time.monotonic()
        wait_until(lambda: operator.health("/readyz")[0] == 503, 30, "/readyz reports the outage")
        assert "unreachable for" in operator.health("/readyz")[1]["apiServer"]
        # A pass that went into a hung call just before may still wait for its read timeout;
        # once it returns, calls fail at once and no worker is stuck: alive, because a restart
        # cannot fix the API server — and it stays alive for the rest of the outage.
        alive = lambda: operator.health("/healthz")[0] == 200  # noqa: E731
        wait_until(alive, 25, "/healthz alive again while the API server refuses")
        time.sleep(max(0.0, 30 - (time.monotonic() - refused_at)))
        assert alive(), "alive: a restart cannot fix the API server"
        # Traffic stayed where it was throughout.
        assert service_selector(cluster, namespace) == selector
        assert {
            r: d["spec"]["replicas"] for r, d in deployments(cluster, namespace).items()
        } == replicas
        assert operator.alive(), "the operator rode the outage out"
        proxy.restore()

        after = wait_promoted(cluster, namespace, old, timeout=120)
        outage_log = operator.log()[mark:]
    finally:
        load.stop()
        operator.stop()
        proxy.stop()
    assert not after.get("lastRollback")
    assert after["history"][0]["outcome"] == "Promoted"
    assert before["currentStep"] == 1
    # One line per failed pass of the canary (the old code retried every half second, each with a
    # traceback) — and only while this replica could still believe it led: unable to renew its
    # Lease, it stood down (a standby may take over meanwhile), and led again once the API server
    # answered. The back-off's growth itself is a unit table (backoff_seconds).
    retries = [
        line for line in outage_log.splitlines() if f"pass of {namespace}/fraud failed" in line
    ]
    assert 1 <= len(retries) <= 20, f"{len(retries)} retry lines for the due canary in 60 s"
    assert re.search(r"retrying in \d+s", retries[0]), retries
    assert "standing by" in outage_log and "leading (lease" in outage_log
    assert "Traceback" not in outage_log


def test_a_canary_the_operator_cannot_reach_is_held_with_that_reason(
    cluster, namespace, operator, pod_runner, model_uris
):
    """Before: an unreachable pod made every interval inconclusive and ended in a rollback."""
    rollout = {**FAST_ROLLOUT, "progressDeadline": "15s"}
    apply(cluster, namespace, body(model_uris["v1"], rollout, version="v1"))
    old = wait_stable(cluster, namespace)
    apply(
        cluster,
        namespace,
        body(model_uris["v2"], rollout, {"podLabels": {FAULT_LABEL: "unreachable"}}, version="v2"),
    )

    def held() -> bool:
        return conditions(cluster, namespace).get("Stalled", {}).get("reason") == "PodsUnreachable"

    wait_until(held, 60, "held as unreachable")
    message = conditions(cluster, namespace)["Stalled"]["message"]
    assert "cannot reach pod" in message and "NetworkPolicy" in message
    time.sleep(20)  # past progressDeadline: still held, not rolled back
    s = status(cluster, namespace)
    assert s["stableRevision"] == old and s["canaryRevision"] and not s.get("lastRollback")
    assert s["phase"] == "Paused" and not rolled_back(cluster, namespace)
    assert "PodsUnreachable" in event_reasons(cluster, namespace)
