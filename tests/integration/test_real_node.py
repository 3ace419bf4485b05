"""The real node (devcluster.node) joined to the embedded control plane beside kwok's nodes: a real
kubelet runs the serving image in containerd + runc, probes it, and the host reaches it on its
bridge IP. Pods land there only when they ask to (label + taint), so kwok's tests are untouched.
"""

from __future__ import annotations

import json
import shutil

import pytest
from devcluster import wait_until
from nodekit import PLACEMENT, SERVING_IMAGE, http, pods, ready, world_readable_model

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(2400)]


def test_real_node_joins_labelled_and_tainted(cluster, real_node):
    from devcluster.node import NODE_LABEL, NODE_NAME

    node = json.loads(cluster.kubectl("get", "node", NODE_NAME, "-o", "json").stdout)
    assert node["metadata"]["labels"][NODE_LABEL] == "real"
    assert {"key": NODE_LABEL, "value": "real", "effect": "NoSchedule"} in node["spec"]["taints"]
    info = node["status"]["nodeInfo"]
    assert info["kubeletVersion"] == "v1.36.3"
    assert info["containerRuntimeVersion"] == "containerd://2.2.9"
    images = {n for i in node["status"].get("images", []) for n in i.get("names", [])}
    assert any(SERVING_IMAGE in n for n in images), images
    # kwok's nodes are still there and Ready.
    kwok = json.loads(cluster.kubectl("get", "nodes", "-l", "type=kwok", "-o", "json").stdout)
    assert len(kwok["items"]) == 2


def test_pod_without_the_toleration_stays_on_kwok(cluster, namespace, real_node):
    from devcluster.node import NODE_NAME, NODE_SELECTOR

    for name, spec in (("plain", {}), ("selector-only", {"nodeSelector": NODE_SELECTOR})):
        cluster.kubectl(
            "run", name, "-n", namespace, "--image=registry.k8s.io/pause:3.10",
            f"--overrides={json.dumps({'spec': spec})}",
        )  # fmt: skip

    def placed() -> bool:
        plain = json.loads(
            cluster.kubectl("get", "pod", "plain", "-n", namespace, "-o", "json").stdout
        )
        return bool(plain["spec"].get("nodeName"))

    wait_until(placed, 30, "plain pod scheduled")
    plain = json.loads(cluster.kubectl("get", "pod", "plain", "-n", namespace, "-o", "json").stdout)
    assert plain["spec"]["nodeName"].startswith("kwok-node-")

    # Asking for the real node without tolerating its taint: unschedulable, never placed there.
    def unschedulable() -> bool:
        pod = json.loads(
            cluster.kubectl("get", "pod", "selector-only", "-n", namespace, "-o", "json").stdout
        )
        return any(
            c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable"
            for c in pod["status"].get("conditions", [])
        )

    wait_until(unschedulable, 30, "selector-only pod unschedulable")
    pod = json.loads(
        cluster.kubectl("get", "pod", "selector-only", "-n", namespace, "-o", "json").stdout
    )
    assert pod["spec"].get("nodeName") != NODE_NAME


def test_serving_image_pod_runs_with_real_probes_on_its_bridge_ip(
    cluster, namespace, real_node, model_uris, tmp_path
):
    from devcluster.node import POD_SUBNET

    model = world_readable_model(tmp_path / "models", model_uris["v1"])
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "server", "labels": {"app": "server"}},
        "spec": {
            **PLACEMENT,
            "containers": [
                {
                    "name": "server",
                    "image": SERVING_IMAGE,
                    "imagePullPolicy": "Never",
                    "env": [
                        {"name": "MODELSERVER_MODEL_URI", "value": "file:///mnt/models/v1.joblib"},
                        {"name": "MODELSERVER_MODEL_NAME", "value": "fraud"},
                    ],
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {
                        "httpGet": {"path": "/v2/health/ready", "port": "http"},
                        "periodSeconds": 1,
                    },
                    "volumeMounts": [{"name": "models", "mountPath": "/mnt/models"}],
                }
            ],
            "volumes": [{"name": "models", "hostPath": {"path": str(model.parent)}}],
        },
    }
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(pod))
    wait_until(
        lambda: (
            all(ready(p) for p in pods(cluster, namespace, "app=server"))
            and bool(pods(cluster, namespace, "app=server"))
        ),
        120,
        "serving pod Ready (kubelet readiness probe)",
    )
    status = pods(cluster, namespace, "app=server")[0]["status"]
    ip = status["podIP"]
    import ipaddress

    assert ipaddress.ip_address(ip) in ipaddress.ip_network(POD_SUBNET)
    assert status["containerStatuses"][0]["containerID"].startswith("containerd://")
    code, reply = http(f"http://{ip}:8080/v2/models/fraud/infer", {
        "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [1, 4],
                    "data": [0.1, 0.2, 0.3, 0.4]}]})  # fmt: skip
    assert code == 200 and reply["outputs"][0]["shape"][0] == 1
    shutil.rmtree(tmp_path / "models", ignore_errors=True)
