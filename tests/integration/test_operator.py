"""The operator on a real control plane: `kubectl apply` of a ModelDeployment becomes a running,
inspectable deployment, and the operator keeps it that way."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
import yaml
from conftest import OperatorProcess, kget
from devcluster import wait_until

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]


def model_deployment(name: str = "fraud", **spec: object) -> dict:
    body = {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {
                "uri": "s3://models/fraud/v7/model.joblib",
                "format": "sklearn",
                "version": "v7",
            },
            **spec,
        },
    }
    return body


def apply(cluster, namespace: str, body: dict) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body))


def md(cluster, namespace: str, name: str = "fraud") -> dict:
    return kget(cluster, "md", name, "-n", namespace, "--show-managed-fields")


def condition(obj: dict, type_: str) -> str | None:
    for c in obj.get("status", {}).get("conditions", []):
        if c["type"] == type_:
            return c["status"]
    return None


def wait_ready(cluster, namespace: str, name: str = "fraud", timeout: float = 60) -> dict:
    def ready() -> bool:
        obj = md(cluster, namespace, name)
        status = obj.get("status", {})
        return (
            status.get("phase") == "Ready"
            and status.get("observedGeneration") == obj["metadata"]["generation"]
        )

    wait_until(ready, timeout, f"ModelDeployment {name} Ready")
    return md(cluster, namespace, name)


def deployments(cluster, namespace: str, name: str = "fraud") -> list[dict]:
    selector = f"modeldeploy.io/name={name}"
    return kget(cluster, "deployments", "-n", namespace, "-l", selector, "--show-managed-fields")[
        "items"
    ]


def test_create_makes_children_and_reports_ready(cluster, namespace, operator):
    apply(cluster, namespace, model_deployment(scaling={"replicas": 2}))
    obj = wait_ready(cluster, namespace)

    status = obj["status"]
    assert status["readyReplicas"] == 2 and status["replicas"] == 2
    assert condition(obj, "Ready") == "True"
    assert condition(obj, "Reconciling") == "False" and condition(obj, "Stalled") == "False"
    assert status["url"] == f"http://fraud.{namespace}.svc.cluster.local/v2/models/fraud"

    [deployment] = deployments(cluster, namespace)
    assert deployment["metadata"]["name"] == f"fraud-{status['stableRevision']}"
    assert deployment["spec"]["replicas"] == 2
    owner = deployment["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("ModelDeployment", "fraud", True)
    managers = {
        f["manager"] for f in deployment["metadata"]["managedFields"] if f["operation"] == "Apply"
    }
    assert managers == {"modeldeploy"}, "server-side apply under one field manager"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["MODELSERVER_MODEL_URI"] == "s3://models/fraud/v7/model.joblib"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"

    service = kget(cluster, "service", "fraud", "-n", namespace)
    assert service["spec"]["selector"]["modeldeploy.io/revision"] == status["stableRevision"]
    assert not kget(cluster, "hpa", "-n", namespace)["items"]

    row = cluster.kubectl("get", "md", "fraud", "-n", namespace, "--no-headers").stdout.split()
    assert row[:4] == ["fraud", "Ready", "2", "v7"], row
    listed = cluster.kubectl("get", "ml", "-n", namespace, "-o", "name").stdout
    assert "modeldeployment.modeldeploy.io/fraud" in listed


def test_no_kopf_annotations_or_finalizers_for_gitops(cluster, namespace, operator):
    apply(cluster, namespace, model_deployment())
    obj = wait_ready(cluster, namespace)
    assert not obj["metadata"].get("finalizers"), "delete must never wait for the operator"
    annotations = obj["metadata"].get("annotations", {})
    assert not [k for k in annotations if "kopf" in k], annotations
    # The spec is exactly what was applied: the operator never writes it.
    managers = {
        f["manager"]
        for f in obj["metadata"]["managedFields"]
        if "f:spec" in json.dumps(f.get("fieldsV1", {}))
    }
    assert managers == {"kubectl-client-side-apply"}, managers


def test_autoscaling_creates_an_hpa_that_owns_replicas(cluster, namespace, operator):
    apply(cluster, namespace, model_deployment(scaling={"minReplicas": 2, "maxReplicas": 5}))
    wait_until(lambda: kget(cluster, "hpa", "-n", namespace)["items"], 30, "HPA created")
    hpa = kget(cluster, "hpa", "fraud", "-n", namespace)
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
    obj = wait_ready(cluster, namespace)
    [deployment] = deployments(cluster, namespace)
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    # The HPA raised the Deployment to its minimum; our field manager does not own replicas.
    wait_until(
        lambda: deployments(cluster, namespace)[0]["spec"]["replicas"] == 2, 60, "HPA scaled"
    )
    ours = next(
        f
        for f in deployments(cluster, namespace)[0]["metadata"]["managedFields"]
        if f["manager"] == "modeldeploy"
    )
    assert "f:replicas" not in ours["fieldsV1"]["f:spec"]
    assert obj["status"]["stableRevision"]

    # Back to a fixed size: the HPA goes away and the replica count is ours again.
    apply(cluster, namespace, model_deployment(scaling={"replicas": 3}))
    wait_until(lambda: not kget(cluster, "hpa", "-n", namespace)["items"], 30, "HPA removed")
    wait_until(
        lambda: deployments(cluster, namespace)[0]["spec"]["replicas"] == 3, 30, "replicas 3"
    )


def test_scale_change_keeps_the_revision(cluster, namespace, operator):
    apply(cluster, namespace, model_deployment(scaling={"replicas": 1}))
    revision = wait_ready(cluster, namespace)["status"]["stableRevision"]
    apply(cluster, namespace, model_deployment(scaling={"replicas": 3}))
    obj = wait_ready(cluster, namespace)
    assert obj["status"]["stableRevision"] == revision
    assert obj["status"]["readyReplicas"] == 3
    assert [d["metadata"]["name"] for d in deployments(cluster, namespace)] == [f"fraud-{revision}"]


FAST_ROLLOUT = {
    "steps": [50, 100],
    "stepDuration": "1s",
    "analysis": {"interval": "1s", "minRequests": 0},
}


def real_model(uri: str, version: str) -> dict:
    """A ModelDeployment whose pods run a real server (with the pod_runner fixture)."""
    body = model_deployment(scaling={"replicas": 2}, rollout=FAST_ROLLOUT)
    body["spec"]["model"].update(uri=uri, version=version)
    return body


def test_model_change_creates_new_revision_and_retires_the_old(
    cluster, namespace, operator, pod_runner, model_uris
):
    apply(cluster, namespace, real_model(model_uris["v1"], "v1"))
    old = wait_ready(cluster, namespace)["status"]["stableRevision"]
    apply(cluster, namespace, real_model(model_uris["v2"], "v2"))

    def switched() -> bool:
        status = md(cluster, namespace).get("status", {})
        return status.get("stableRevision") not in (None, old) and status.get("phase") == "Ready"

    wait_until(switched, 60, "new revision serving")
    new = md(cluster, namespace)["status"]
    assert new["stableVersion"] == "v2"
    wait_until(lambda: len(deployments(cluster, namespace)) == 1, 30, "old revision retired")
    assert (
        deployments(cluster, namespace)[0]["metadata"]["name"] == f"fraud-{new['stableRevision']}"
    )
    reasons = {e["reason"] for e in kget(cluster, "events", "-n", namespace)["items"]}
    assert {"RevisionCreated", "CanaryStarted", "Promoted"} <= reasons


def test_children_deleted_or_edited_by_hand_are_restored(cluster, namespace, operator):
    apply(cluster, namespace, model_deployment(scaling={"replicas": 2}))
    revision = wait_ready(cluster, namespace)["status"]["stableRevision"]
    name = f"fraud-{revision}"

    cluster.kubectl("delete", "deployment", name, "-n", namespace, "--wait=false")
    wait_until(
        lambda: any(d["metadata"]["name"] == name and not d["metadata"].get("deletionTimestamp")
                    for d in deployments(cluster, namespace)),
        30, "Deployment restored",
    )  # fmt: skip

    patch = {
        "spec": {"template": {"spec": {"containers": [{"name": "server", "image": "evil:1"}]}}}
    }
    cluster.kubectl("patch", "deployment", name, "-n", namespace, "-p", json.dumps(patch))

    def image() -> str:
        pod_spec = kget(cluster, "deployment", name, "-n", namespace)["spec"]["template"]["spec"]
        return str(pod_spec["containers"][0]["image"])

    wait_until(lambda: image() == "registry.example/modelserver:test", 30, "image restored")

    port_patch = '[{"op": "replace", "path": "/spec/ports/0/port", "value": 81}]'
    cluster.kubectl("patch", "service", "fraud", "-n", namespace, "--type=json", "-p", port_patch)

    def ports() -> list[int]:
        return [
            p["port"] for p in kget(cluster, "service", "fraud", "-n", namespace)["spec"]["ports"]
        ]

    wait_until(lambda: ports() == [80], 30, "service port restored")


def test_an_idle_pass_makes_no_api_writes_and_no_api_reads(cluster, namespace, operator):
    """Idle passes read the watch-fed caches: no get or list reaches the API server, and nothing
    is written but the leader's Lease renewal."""
    if not cluster.embedded:
        pytest.skip("counts requests in the embedded API server's audit log")
    apply(cluster, namespace, model_deployment(scaling={"replicas": 2}))
    wait_ready(cluster, namespace)
    time.sleep(3)  # let the last child events settle
    before = cluster.local.audit_size()
    passes_before = sum(
        v
        for k, v in operator.metrics().items()
        if k.startswith("modeldeploy_operator_reconciles_total")
    )
    time.sleep(7)  # at least three timer passes (resync 2 s)
    passes = (
        sum(
            v
            for k, v in operator.metrics().items()
            if k.startswith("modeldeploy_operator_reconciles_total")
        )
        - passes_before
    )
    ours = [
        (w["verb"], w["requestURI"]) for w in cluster.local.audit(before)
        if w.get("userAgent", "").startswith(("modeldeploy", "kopf"))
        and w["verb"] != "watch"  # long-lived: opened once, not per pass
    ]  # fmt: skip
    lease = [w for w in ours if "/leases/" in w[1]]
    assert passes >= 3, "the operator kept reconciling"
    assert [w for w in ours if w not in lease] == [], f"idle passes called: {ours}"
    # The only write is the leader's Lease renewal: one PUT every lease/5 seconds (15 s → 3 s).
    assert len(lease) <= 4 and all(verb == "update" for verb, _ in lease), lease


def test_delete_garbage_collects_children(cluster, namespace, operator):
    apply(cluster, namespace, model_deployment(scaling={"minReplicas": 1, "maxReplicas": 2}))
    wait_ready(cluster, namespace)
    cluster.kubectl("delete", "md", "fraud", "-n", namespace, "--timeout=30s")
    selector = "modeldeploy.io/name=fraud"
    wait_until(
        lambda: (
            not kget(cluster, "deployments,services,hpa,pods", "-n", namespace, "-l", selector)[
                "items"
            ]
        ),
        60,
        "children garbage-collected",
    )


def test_restarted_operator_resumes_without_duplicates(
    cluster, namespace, operator, pod_runner, model_uris, tmp_path
):
    apply(cluster, namespace, real_model(model_uris["v1"], "v1"))
    old = wait_ready(cluster, namespace)["status"]["stableRevision"]
    operator.stop(signal.SIGKILL)
    apply(cluster, namespace, real_model(model_uris["v2"], "v2"))  # while no operator runs

    second = OperatorProcess(cluster.kubeconfig, namespace, tmp_path / "second.log").start()
    try:
        wait_until(
            lambda: md(cluster, namespace)["status"].get("stableRevision") != old, 60, "promoted"
        )
        wait_ready(cluster, namespace)
        wait_until(lambda: len(deployments(cluster, namespace)) == 1, 30, "old revision retired")
        selector = "modeldeploy.io/name=fraud"
        services = kget(cluster, "services", "-n", namespace, "-l", selector)["items"]
        assert len(services) == 1
    finally:
        second.stop()


def test_pods_pass_the_restricted_pod_security_standard(cluster, namespace, operator):
    cluster.kubectl(
        "label",
        "namespace",
        namespace,
        "pod-security.kubernetes.io/enforce=restricted",
        "--overwrite",
    )
    apply(cluster, namespace, model_deployment(scaling={"replicas": 1}))
    wait_ready(cluster, namespace)
    warnings = [
        e for e in kget(cluster, "events", "-n", namespace)["items"]
        if e["reason"] == "FailedCreate"
    ]  # fmt: skip
    assert not warnings, [e["message"] for e in warnings]


def test_odd_but_valid_manifests_never_crash_the_operator(cluster, namespace, operator):
    def observed_generation(name: str) -> int | None:
        return md(cluster, namespace, name).get("status", {}).get("observedGeneration")

    names = []
    for path in sorted((REPO / "tests" / "manifests" / "valid").glob("*.yaml")):
        body = yaml.safe_load(path.read_text(encoding="utf-8"))
        apply(cluster, namespace, body)
        names.append(body["metadata"]["name"])
    for name in names:
        wait_until(lambda name=name: observed_generation(name) == 1, 60, f"status of {name}")
        # Delete at once: nobody needs the thousand pods of huge-fixed-replicas.
        cluster.kubectl("delete", "md", name, "-n", namespace, "--wait=false")
    assert operator.alive()
    assert "Traceback" not in operator.log()
