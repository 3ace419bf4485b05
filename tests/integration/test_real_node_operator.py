"""The operator in-cluster on the real node: its own image (operator/Dockerfile, built by
`make images`), installed from the kustomize manifests with the images set as `make deploy IMG=`
sets them, running as the manifests' ServiceAccount with their RBAC — no admin kubeconfig, no
process on the host — and carrying a canary from start to promotion under real traffic.

The install is the namespaced overlay, relocated as test_manifests relocates it (a unique
operator namespace, the test's namespace as the watched one) and placed on the real node (its
nodeSelector and toleration: the one change a test cluster needs). The CRD is the `crds`
fixture's; the canary-weight admission policy is not what this test is about and stays out.
"""

from __future__ import annotations

import copy
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import kget
from devcluster import wait_until
from mdkit import apply, status, wait_promoted, wait_stable
from modeldeploy.leader import LEASE_NAME
from nodekit import OPERATOR_IMAGE, PLACEMENT, SERVING_IMAGE, ServiceLoad, pods, ready
from test_manifests import ACCOUNT, authorization_failures, relocate

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
LEFT_OUT = ("CustomResourceDefinition", "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding")  # fmt: skip
CANARY = {
    "steps": [50, 100],
    "stepDuration": "3s",
    "progressDeadline": "180s",
    "analysis": {"interval": "1s", "failureThreshold": 3, "minRequests": 5,
                 "maxInconclusive": 60},
}  # fmt: skip


def deploy_render(cluster, overlay: str) -> list[dict[str, Any]]:
    """What `make deploy IMG=<operator image> SERVING_IMG=<serving image>` applies."""
    out = subprocess.run(
        [str(REPO / "hack" / "deploy.sh"), "render", OPERATOR_IMAGE, SERVING_IMAGE, overlay],
        capture_output=True, text=True, check=True,
        env={**os.environ, "KUBECTL": str(cluster.kubectl_path)},
    ).stdout  # fmt: skip
    return [doc for doc in yaml.safe_load_all(out) if doc]


def on_the_real_node(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = copy.deepcopy(objs)
    for obj in out:
        if obj["kind"] == "Deployment":
            spec = obj["spec"]["template"]["spec"]
            spec["nodeSelector"] = {**spec.get("nodeSelector", {}), **PLACEMENT["nodeSelector"]}
            spec["tolerations"] = PLACEMENT["tolerations"]
    return out


@pytest.fixture
def installed_operator(cluster, crds, restricted, real_node) -> Iterator[dict[str, Any]]:
    """The namespaced install watching the test's namespace, both operator replicas Ready on the
    real node and one of them holding the leader Lease. Yields the leader's pod; removes the
    install (after the test's ModelDeployment)."""
    suffix = restricted.removeprefix("t-")
    operator_namespace = f"mdsys-{suffix}"
    objs = relocate(deploy_render(cluster, "namespaced"), operator_namespace, restricted, suffix)
    objs = [
        o for o in on_the_real_node(objs)
        if o["kind"] not in LEFT_OUT
        and not (o["kind"] == "Namespace" and o["metadata"]["name"] == restricted)
    ]  # fmt: skip
    [deployment] = [o for o in objs if o["kind"] == "Deployment"]
    replicas = deployment["spec"]["replicas"]
    selector = "app.kubernetes.io/component=operator"
    try:
        cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(objs))

        def replicas_ready() -> bool:
            found = pods(cluster, operator_namespace, selector)
            return len(found) == replicas and all(ready(p) for p in found)

        wait_until(replicas_ready, 180, f"{replicas} operator pods Ready on the real node")
        leader: dict[str, Any] = {}

        def elected() -> bool:
            got = cluster.kubectl(
                "get", "lease", LEASE_NAME, "-n", operator_namespace, "-o",
                "jsonpath={.spec.holderIdentity}", check=False,
            )  # fmt: skip
            holder = got.stdout.strip() if got.returncode == 0 else ""
            found = pods(cluster, operator_namespace, selector)
            mine = [p for p in found if holder.startswith(p["metadata"]["name"] + "_")]
            leader.update(mine[0] if mine else {})
            return bool(leader)

        wait_until(elected, 60, "one operator pod holding the leader Lease")
        yield leader
    finally:
        # The ModelDeployment goes while its operator still runs, then the install.
        cluster.kubectl("delete", "md", "--all", "-n", restricted, "--timeout=60s", check=False)
        for pod in pods(cluster, operator_namespace, selector):
            log = real_node.pod_log(operator_namespace, pod["metadata"]["name"], "operator")
            print(f"--- in-cluster operator log ({pod['metadata']['name']}) ---\n{log[-6000:]}")
        cluster.kubectl(
            "delete", "--ignore-not-found", "--wait=false", "-f", "-",
            input=yaml.safe_dump_all(objs), check=False,
        )  # fmt: skip


def model(uri: str, version: str, image: str) -> dict[str, Any]:
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "fraud"},
        "spec": {
            "model": {"uri": uri, "format": "sklearn", "version": version},
            "scaling": {"replicas": 2},
            "rollout": CANARY,
            "serving": {"image": image, **PLACEMENT},
        },
    }


def test_operator_in_cluster_from_its_image_carries_a_canary_to_promotion(
    cluster, restricted, real_node, model_image, installed_operator
):
    from devcluster.node import NODE_NAME

    pod = installed_operator
    operator_namespace = pod["metadata"]["namespace"]
    # Its own image, its ServiceAccount's token and nothing else: no kubeconfig anywhere.
    spec = pod["spec"]
    [container] = spec["containers"]
    assert spec["nodeName"] == NODE_NAME and spec["serviceAccountName"] == ACCOUNT
    assert container["image"] == OPERATOR_IMAGE
    assert not any(e["name"] == "KUBECONFIG" for e in container.get("env", []))
    assert not any("kubeconfig" in str(v).lower() for v in spec.get("volumes", []))
    assert pod["status"]["containerStatuses"][0]["containerID"].startswith("containerd://")
    # `images:` set the default serving image too (MODELDEPLOY_SERVING_IMAGE).
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MODELDEPLOY_SERVING_IMAGE"] == SERVING_IMAGE

    stable_body = model("file:///models/fraud/v1.joblib", "v1", model_image)
    apply(cluster, restricted, stable_body)
    stable = wait_stable(cluster, restricted, timeout=180)

    service = kget(cluster, "service", "fraud", "-n", restricted)
    url = f"http://{service['spec']['clusterIP']}:80/v2/models/fraud/infer"
    canary_body = copy.deepcopy(stable_body)
    canary_body["spec"]["model"].update(uri="file:///models/fraud/v2.joblib", version="v2")
    with ServiceLoad(url) as load:
        load.wait_for(20)
        apply(cluster, restricted, canary_body)
        promoted = wait_promoted(cluster, restricted, stable, timeout=300)
        load.wait_for(20)  # and the promoted revision answers
    canary = promoted["stableRevision"]
    # The canary was analysed on real requests through the ClusterIP, then promoted.
    assert load.answered.get(canary, 0) > 0 and load.answered.get(stable, 0) > 0, load.answered
    assert promoted["phase"] == "Ready" and not promoted.get("lastRollback"), promoted
    for p in pods(cluster, restricted, f"modeldeploy.io/revision={canary}"):
        assert p["spec"]["nodeName"] == NODE_NAME and ready(p)
    # Every request either replica made (the standby's Lease reads too) was allowed by the
    # manifests' RBAC.
    for replica in pods(cluster, operator_namespace, "app.kubernetes.io/component=operator"):
        log = real_node.pod_log(operator_namespace, replica["metadata"]["name"], "operator")
        assert log.strip(), f"no log from {replica['metadata']['name']}"
        failures = authorization_failures(log, strict=True)
        assert not failures, "\n".join(failures[:10])
    assert status(cluster, restricted)["stableRevision"] == canary
