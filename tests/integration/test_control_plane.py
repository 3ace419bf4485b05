"""The control plane under the tests is a real one: API server, controllers, scheduler and kwok."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from devcluster import FAULT_LABEL, wait_until

pytestmark = pytest.mark.cluster
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"


def get_json(cluster, *args: str) -> dict:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def deployment(name: str, replicas: int, pod_labels: dict[str, str] | None = None) -> str:
    labels = {"app": name, **(pod_labels or {})}
    return json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "main", "image": PAUSE_IMAGE}]},
                },
            },
        }
    )


def pods(cluster, namespace: str, selector: str) -> list[dict]:
    return get_json(cluster, "pods", "-n", namespace, "-l", selector)["items"]


def pod_ready(pod: dict) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def test_api_server_is_ready_and_reports_the_built_version(cluster):
    assert cluster.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
    version = json.loads(cluster.kubectl("get", "--raw", "/version").stdout)
    assert version["major"] == "1"
    assert version["gitVersion"].startswith("v1.")
    if cluster.embedded:
        expected = os.environ.get("K8S_VERSION", "v1.36.3")
        assert version["gitVersion"] == expected
        assert version["minor"] == expected.split(".")[1]


def test_crd_installs_and_becomes_established(cluster):
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.controlplane-test.modeldeploy.io"},
        "spec": {
            "group": "controlplane-test.modeldeploy.io",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {"size": {"type": "integer", "minimum": 1}},
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(crd))
    try:
        cluster.kubectl(
            "wait", "--for=condition=Established", "crd/" + crd["metadata"]["name"], "--timeout=60s"
        )
        # The schema is enforced: a bad value is refused by the API server.
        bad = {
            "apiVersion": "controlplane-test.modeldeploy.io/v1",
            "kind": "Widget",
            "metadata": {"name": "w", "namespace": "default"},
            "spec": {"size": 0},
        }
        result = cluster.kubectl("apply", "-f", "-", input=json.dumps(bad), check=False)
        assert result.returncode != 0
        assert "spec.size" in result.stderr
    finally:
        cluster.kubectl("delete", "crd", crd["metadata"]["name"], "--wait=false", check=False)


def test_deployment_gets_a_replicaset_and_ready_pods(cluster, namespace):
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=deployment("web", 3))
    cluster.kubectl(
        "rollout", "status", "-n", namespace, "deployment/web", "--timeout=90s", timeout=100
    )
    replicasets = get_json(cluster, "replicasets", "-n", namespace, "-l", "app=web")["items"]
    assert len(replicasets) == 1
    assert replicasets[0]["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
    running = pods(cluster, namespace, "app=web")
    assert len(running) == 3
    assert all(p["status"]["phase"] == "Running" and pod_ready(p) for p in running)
    assert all(p["spec"]["nodeName"] for p in running), "the scheduler placed every pod"


def test_pod_with_fault_label_stays_not_ready(cluster, namespace):
    if not cluster.embedded:
        pytest.skip("fault stages are kwok's; a real kubelet runs the pause image fine")
    cluster.kubectl(
        "apply", "-n", namespace, "-f", "-",
        input=deployment("stuck", 1, {FAULT_LABEL: "never-ready"}),
    )  # fmt: skip
    cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input=deployment("healthy", 1)
    )  # fmt: skip

    def both_running() -> bool:
        return all(
            p["status"].get("phase") == "Running"
            for sel in ("app=stuck", "app=healthy")
            for p in pods(cluster, namespace, sel) or [{"status": {}}]
        )

    wait_until(both_running, 60, "both pods Running")
    # The healthy pod turned Ready in the same time; the labelled one is Running but not Ready.
    assert pod_ready(pods(cluster, namespace, "app=healthy")[0])
    stuck = pods(cluster, namespace, "app=stuck")[0]
    assert not pod_ready(stuck)
    status = get_json(cluster, "deployment/stuck", "-n", namespace)["status"]
    assert status.get("readyReplicas", 0) == 0


def apply_faulty(cluster, namespace: str, name: str, fault: str) -> None:
    """A one-pod Deployment whose pod kwok makes misbehave (skipped off the embedded cluster)."""
    if not cluster.embedded:
        pytest.skip("fault stages are kwok's")
    cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input=deployment(name, 1, {FAULT_LABEL: fault})
    )


def test_crash_loop_fault_shows_restarts_and_reason(cluster, namespace):
    apply_faulty(cluster, namespace, "crashy", "oom-killed")

    def crash_looping() -> bool:
        statuses = pods(cluster, namespace, "app=crashy")[0]["status"]["containerStatuses"]
        return statuses[0]["state"]["waiting"]["reason"] == "CrashLoopBackOff"

    wait_until(crash_looping, 60, "pod in CrashLoopBackOff")
    status = pods(cluster, namespace, "app=crashy")[0]["status"]["containerStatuses"][0]
    assert status["restartCount"] > 0
    assert status["lastState"]["terminated"]["reason"] == "OOMKilled"


def test_hpa_gets_status_from_the_controller_manager(cluster, namespace):
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=deployment("scaled", 1))
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "scaled"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "scaled"},
            "minReplicas": 2,
            "maxReplicas": 4,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70},
                    },
                }
            ],
        },
    }
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(hpa))

    def hpa_reconciled() -> bool:
        status = get_json(cluster, "hpa/scaled", "-n", namespace).get("status", {})
        return status.get("desiredReplicas") == 2 and bool(status.get("conditions"))

    wait_until(hpa_reconciled, 90, "HPA status from the controller manager")
    # Below minReplicas the HPA raises the Deployment to its minimum even without metrics.
    wait_until(
        lambda: get_json(cluster, "deployment/scaled", "-n", namespace)["spec"]["replicas"] == 2,
        60,
        "Deployment scaled to minReplicas",
    )
    conditions = {
        c["type"]: c
        for c in get_json(cluster, "hpa/scaled", "-n", namespace)["status"]["conditions"]
    }
    assert conditions["AbleToScale"]["status"] == "True"


def test_namespace_deletion_completes_and_collects_children(cluster):
    name = f"t-gc-{int(time.time() * 1000) % 10**8}"
    cluster.kubectl("create", "namespace", name)
    cluster.kubectl("apply", "-n", name, "-f", "-", input=deployment("doomed", 2))
    cluster.kubectl(
        "rollout", "status", "-n", name, "deployment/doomed", "--timeout=90s", timeout=100
    )
    # Garbage collection: deleting the Deployment removes its ReplicaSet and Pods.
    cluster.kubectl("delete", "-n", name, "deployment/doomed", "--cascade=background")
    wait_until(
        lambda: not get_json(cluster, "replicasets,pods", "-n", name)["items"],
        60,
        "ReplicaSet and Pods garbage-collected",
    )
    cluster.kubectl("delete", "namespace", name, "--timeout=90s", timeout=100)
    result = cluster.kubectl("get", "namespace", name, check=False)
    assert result.returncode != 0 and "NotFound" in result.stderr


# ----------------------------------------------------------------------------- process hygiene
STARTER = """
import sys, time
from pathlib import Path
from devcluster import LocalCluster, ensure_binaries
cluster = LocalCluster(Path(sys.argv[1]), ensure_binaries(), die_with_parent=True).start()
print("ready", flush=True)
time.sleep(600)
"""


def _recorded_pids(directory: Path) -> list[int]:
    return [int(p.read_text().split()[0]) for p in (directory / "pids").glob("*.pid")]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_killing_the_starter_stops_every_component(cluster, tmp_path):
    """Even `kill -9` of the process that started the cluster leaves no component running."""
    if not cluster.embedded:
        pytest.skip("about the embedded control plane")
    directory = tmp_path / "cluster"
    starter = subprocess.Popen(
        [sys.executable, "-c", STARTER, str(directory)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert starter.stdout is not None
        assert starter.stdout.readline().strip() == "ready"
        pids = _recorded_pids(directory)
        assert len(pids) == 5 and all(_alive(pid) for pid in pids)
    finally:
        starter.send_signal(signal.SIGKILL)
        starter.wait()
    wait_until(lambda: not any(_alive(pid) for pid in pids), 30, "every component to exit")


def test_cli_up_and_down_manage_a_detached_cluster(cluster, tmp_path):
    if not cluster.embedded:
        pytest.skip("about the embedded control plane")
    directory = tmp_path / "detached"
    run = [sys.executable, "-m", "devcluster"]
    up = subprocess.run(
        [*run, "up", "--dir", str(directory)], capture_output=True, text=True, timeout=180
    )
    assert up.returncode == 0, up.stderr
    assert "export KUBECONFIG=" in up.stdout
    pids = _recorded_pids(directory)
    assert len(pids) == 5 and all(_alive(pid) for pid in pids), "outlives the `up` command"
    state = json.loads((directory / "state.json").read_text())
    assert set(state["memoryMiB"]) == {
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kwok",
    }
    down = subprocess.run(
        [*run, "down", "--dir", str(directory)], capture_output=True, text=True, timeout=60
    )
    assert down.returncode == 0, down.stderr
    assert not any(_alive(pid) for pid in pids)
    assert not directory.exists()


def test_image_pull_fault_keeps_the_pod_pending(cluster, namespace):
    apply_faulty(cluster, namespace, "unpullable", "image-pull-backoff")

    def backing_off() -> bool:
        statuses = pods(cluster, namespace, "app=unpullable")[0]["status"].get(
            "containerStatuses", []
        )
        return (
            bool(statuses)
            and statuses[0]["state"].get("waiting", {}).get("reason") == "ImagePullBackOff"
        )

    wait_until(backing_off, 60, "ImagePullBackOff")
    time.sleep(3)  # kwok's stock stages would have made it Ready by now
    pod = pods(cluster, namespace, "app=unpullable")[0]
    assert pod["status"]["phase"] == "Pending" and not pod_ready(pod)
