"""ModelDeployments on the real node: the serving image built from its Dockerfile, run by a real
kubelet in containerd + runc, judged by the operator from real kubelet status.

What this proves beyond the kwok tier: the operator's pod spec is admitted under the restricted
Pod Security Standard *and* runs (non-root, read-only root filesystem, the emptyDirs it declares,
probes on the right paths and port), a `pvc://` model is mounted and loaded, a broken artifact
with fail-fast really crash-loops and an undersized memory limit is really OOMKilled by the
kernel — and the operator rolls both back from what the kubelet reports. And a Service's
ClusterIP (kube-proxy's iptables rules) spreads requests the way the replica router assumes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import kget
from devcluster import wait_until
from mdkit import apply, deployments, rolled_back, service_selector, status, wait_stable
from nodekit import INFER_BODY, PLACEMENT, SERVING_IMAGE, ServiceLoad, http, pods, ready

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(2400)]

ROLLOUT = {
    "steps": [25, 50, 100],
    "stepDuration": "2s",
    "progressDeadline": "120s",
    "analysis": {"interval": "1s", "failureThreshold": 2, "minRequests": 5, "maxInconclusive": 30},
}


@pytest.fixture
def model_claim(cluster, restricted, model_uris, tmp_path) -> str:
    """A PersistentVolumeClaim `models`, bound to a hostPath PV holding v1, v2 and a broken
    artifact, readable by the pods' uid."""
    directory = tmp_path / "pv"
    directory.mkdir()
    directory.chmod(0o755)
    for version in ("v1", "v2"):
        target = directory / f"{version}.joblib"
        target.write_bytes(Path(model_uris[version].removeprefix("file://")).read_bytes())
        target.chmod(0o644)
    (directory / "broken.joblib").write_bytes(b"not a model")
    (directory / "broken.joblib").chmod(0o644)
    pv_name = f"models-{restricted}"
    objects = [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv_name},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadOnlyMany"],
                "storageClassName": "",
                "persistentVolumeReclaimPolicy": "Retain",
                "hostPath": {"path": str(directory), "type": "Directory"},
                "claimRef": {"namespace": restricted, "name": "models"},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "models", "namespace": restricted},
            "spec": {
                "accessModes": ["ReadOnlyMany"],
                "storageClassName": "",
                "volumeName": pv_name,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    ]
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"kind": "List", "apiVersion": "v1",
                                                          "items": objects}))  # fmt: skip
    wait_until(
        lambda: kget(cluster, "pvc", "models", "-n", restricted)["status"].get("phase") == "Bound",
        60,
        "PVC bound",
    )
    yield "models"
    cluster.kubectl("delete", "pv", pv_name, "--wait=false", check=False)


def md(
    uri: str, *, version: str, replicas: int = 2, rollout: dict | None = None, **serving
) -> dict:
    return {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "fraud"},
        "spec": {
            "model": {"uri": uri, "format": "sklearn", "version": version},
            "scaling": {"replicas": replicas},
            "rollout": rollout or ROLLOUT,
            "serving": {"image": SERVING_IMAGE, **PLACEMENT, **serving},
        },
    }


def serving_pods(cluster, namespace: str, revision: str) -> list[dict]:
    return pods(cluster, namespace, f"modeldeploy.io/revision={revision}")


def test_model_from_a_pvc_goes_ready_on_the_real_node_under_restricted_pss(
    cluster, restricted, real_node, model_claim, operator
):
    from devcluster.node import NODE_NAME

    apply(cluster, restricted, md(f"pvc://{model_claim}/v1.joblib", version="v1"))
    revision = wait_stable(cluster, restricted, timeout=180)
    running = serving_pods(cluster, restricted, revision)
    assert len(running) == 2 and all(ready(p) for p in running)
    for pod in running:
        assert pod["spec"]["nodeName"] == NODE_NAME
        container = pod["status"]["containerStatuses"][0]
        assert container["containerID"].startswith("containerd://") and container["ready"]
        assert container["restartCount"] == 0
        # Admitted under `restricted` (the namespace enforces it) and running as its user on a
        # read-only root: the server answers on the pod IP, with the model from the claim.
        code, reply = http(
            f"http://{pod['status']['podIP']}:8080/v2/models/fraud/infer", INFER_BODY
        )
        assert code == 200 and reply["model_version"] == revision
    log = real_node.pod_log(restricted, running[0]["metadata"]["name"], "server")
    assert "Traceback" not in log


def test_crash_loop_and_oom_kill_on_the_real_node_are_rolled_back(
    cluster, restricted, real_node, model_claim, operator
):
    apply(cluster, restricted, md(f"pvc://{model_claim}/v1.joblib", version="v1"))
    stable = wait_stable(cluster, restricted, timeout=180)

    # A broken artifact with fail-fast: the container exits, the kubelet restarts it and backs
    # off — CrashLoopBackOff, reported by the real kubelet.
    apply(
        cluster, restricted,
        md(f"pvc://{model_claim}/broken.joblib", version="broken",
           env=[{"name": "MODELSERVER_FAIL_FAST", "value": "true"}]),
    )  # fmt: skip
    wait_until(lambda: rolled_back(cluster, restricted), 180, "crash-looping canary rolled back")
    record = status(cluster, restricted)["lastRollback"]
    assert record["check"] == "podsHealthy", record
    assert "CrashLoopBackOff" in record["observedValue"] or "Error" in record["observedValue"], (
        record
    )
    assert status(cluster, restricted)["stableRevision"] == stable
    assert service_selector(cluster, restricted)["modeldeploy.io/revision"] == stable

    # An undersized memory limit: the kernel's OOM killer ends the server while it loads.
    apply(
        cluster, restricted,
        md(f"pvc://{model_claim}/v2.joblib", version="v2",
           resources={"requests": {"cpu": "100m", "memory": "32Mi"},
                      "limits": {"memory": "32Mi"}}),
    )  # fmt: skip

    def oom_rolled_back() -> bool:
        record = status(cluster, restricted).get("lastRollback") or {}
        return "OOMKilled" in str(record.get("observedValue", ""))

    wait_until(oom_rolled_back, 180, "OOMKilled canary rolled back")
    s = status(cluster, restricted)
    assert s["stableRevision"] == stable and s["lastRollback"]["check"] == "podsHealthy"


def test_cluster_ip_spreads_requests_as_the_replica_router_assumes(
    cluster, restricted, real_node, model_claim, operator
):
    """Requests through the Service's ClusterIP, sent from the host (kube-proxy DNATs each new
    connection to a uniformly random ready endpoint), answered by the canary in the share that
    status.effectiveWeight states.

    Tolerance: with n requests each independently answered by the canary with probability p
    (= effectiveWeight), the count is Binomial(n, p). We accept |k/n - p| <= 4.5 * sqrt(p(1-p)/n):
    a correct split fails this less than once in 100,000 runs (normal approximation, two-sided,
    np and n(1-p) well above 10), while a router that ignored the canary (p=0) or split evenly
    (p=0.5) instead of 25% is off by >= 9 standard deviations at n=600 and fails every time.
    """
    rollout = {
        **ROLLOUT,
        "steps": [25, 100],
        "stepDuration": "10m",  # hold at the first step while we measure
        "analysis": {**ROLLOUT["analysis"], "minRequests": 1, "maxInconclusive": 1000,
                     "compareMetadata": False},
    }  # fmt: skip
    apply(cluster, restricted, md(f"pvc://{model_claim}/v1.joblib", version="v1", replicas=3,
                                  rollout=rollout))  # fmt: skip
    stable = wait_stable(cluster, restricted, timeout=180)
    apply(cluster, restricted, md(f"pvc://{model_claim}/v2.joblib", version="v2", replicas=3,
                                  rollout=rollout))  # fmt: skip

    def split_in_effect() -> bool:
        s = status(cluster, restricted)
        canary = s.get("canaryRevision")
        if not canary or s.get("effectiveWeight") in (None, 0):
            return False
        if "modeldeploy.io/revision" in service_selector(cluster, restricted):
            return False  # still pinned to one revision (gates)
        slices = kget(cluster, "endpointslices", "-n", restricted,
                      "-l", "kubernetes.io/service-name=fraud")["items"]  # fmt: skip
        endpoints = [e for sl in slices for e in sl.get("endpoints", [])
                     if e.get("conditions", {}).get("ready")]  # fmt: skip
        ready_pods = [p for r in (stable, canary) for p in serving_pods(cluster, restricted, r)
                      if ready(p)]  # fmt: skip
        return len(endpoints) == len(ready_pods) == 4

    wait_until(split_in_effect, 240, "canary step with the Service over both revisions")
    s = status(cluster, restricted)
    canary, p = s["canaryRevision"], s["effectiveWeight"] / 100
    service = kget(cluster, "service", "fraud", "-n", restricted)
    url = f"http://{service['spec']['clusterIP']}:80/v2/models/fraud/infer"
    n, answered = 600, {stable: 0, canary: 0}
    for _ in range(n):
        code, reply = http(url, INFER_BODY)
        assert code == 200
        answered[reply["model_version"]] += 1
    assert status(cluster, restricted)["canaryRevision"] == canary  # nothing moved meanwhile
    share = answered[canary] / n
    tolerance = 4.5 * math.sqrt(p * (1 - p) / n)
    assert abs(share - p) <= tolerance, (answered, p, tolerance)


def test_model_baked_into_an_image_goes_ready_from_its_file_path(
    cluster, restricted, real_node, model_image, model_uris, operator
):
    """A `file://` URI naming a path inside the image (model-image/Dockerfile): no volume, the
    server loads what the image holds — v1's answers, not v2's."""
    import joblib

    apply(cluster, restricted, md("file:///models/fraud/v1.joblib", version="v1",
                                  image=model_image))  # fmt: skip
    revision = wait_stable(cluster, restricted, timeout=180)
    x = [[1.0, -0.5, 0.0, 0.0]]
    v1, v2 = (joblib.load(model_uris[v].removeprefix("file://")) for v in ("v1", "v2"))
    expected = int(v1.predict(x)[0])
    assert int(v2.predict(x)[0]) != expected  # the answer tells the two models apart
    body = {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [1, 4], "data": x[0]}]}
    running = serving_pods(cluster, restricted, revision)
    assert len(running) == 2
    for pod in running:
        [container] = pod["spec"]["containers"]
        assert container["image"] == model_image
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["MODELSERVER_MODEL_URI"] == "file:///models/fraud/v1.joblib"
        # Only the emptyDirs the operator always declares: the model comes from the image.
        assert {v["name"] for v in pod["spec"]["volumes"]} == {"cache", "tmp"}
        assert ready(pod) and pod["status"]["containerStatuses"][0]["restartCount"] == 0
        code, reply = http(f"http://{pod['status']['podIP']}:8080/v2/models/fraud/infer", body)
        assert code == 200 and reply["model_version"] == revision
        assert int(reply["outputs"][0]["data"][0]) == expected, reply


def test_rolling_restart_under_load_loses_no_request(
    cluster, restricted, real_node, model_image, operator
):
    """`kubectl rollout restart` of a serving Deployment (a pod-template annotation change)
    while steady traffic goes through the Service's ClusterIP: every request is answered.

    Each old pod gets SIGTERM as its endpoint is removed; the server answers not-ready but keeps
    serving for its shutdown delay (MODELSERVER_SHUTDOWN_DELAY) while the EndpointSlice and
    kube-proxy's rules drop it, then drains in-flight requests and exits. A server that stopped
    at SIGTERM would refuse the connections kube-proxy still sends it.
    """
    apply(cluster, restricted, md("file:///models/fraud/v1.joblib", version="v1",
                                  image=model_image))  # fmt: skip
    revision = wait_stable(cluster, restricted, timeout=180)
    name = deployments(cluster, restricted)[revision]["metadata"]["name"]
    old = {p["metadata"]["name"] for p in serving_pods(cluster, restricted, revision)}
    assert len(old) == 2

    def endpoints_ready() -> int:
        slices = kget(cluster, "endpointslices", "-n", restricted,
                      "-l", "kubernetes.io/service-name=fraud")["items"]  # fmt: skip
        return sum(1 for sl in slices for e in sl.get("endpoints") or []
                   if e.get("conditions", {}).get("ready"))  # fmt: skip

    wait_until(lambda: endpoints_ready() == 2, 60, "both pods behind the Service")
    service = kget(cluster, "service", "fraud", "-n", restricted)
    url = f"http://{service['spec']['clusterIP']}:80/v2/models/fraud/infer"

    def routed() -> bool:
        """kube-proxy has written the endpoints into its rules: it syncs at most once a second
        (minSyncPeriod), and until then the ClusterIP refuses connections (no endpoints yet)."""
        try:
            return http(url, INFER_BODY)[0] == 200
        except OSError:
            return False

    wait_until(routed, 30, "the ClusterIP routed to the pods")

    def replaced() -> bool:
        current = serving_pods(cluster, restricted, revision)
        names = {p["metadata"]["name"] for p in current}
        return not (names & old) and len(current) == 2 and all(ready(p) for p in current)

    with ServiceLoad(url) as load:
        load.wait_for(50)
        before = load.sent
        cluster.kubectl("rollout", "restart", f"deployment/{name}", "-n", restricted)
        # Until the old pods are gone from the API: terminated, drained and exited.
        wait_until(replaced, 240, "both pods replaced, the old ones gone")
        during = load.sent - before
        load.wait_for(50)
    assert load.failures == [], (len(load.failures), load.sent, load.failures[:20])
    assert during >= 200, f"only {during} requests while the Deployment rolled"
    assert sum(load.answered.values()) == load.sent and set(load.answered) == {revision}
    # The operator left the restart alone: the template keeps kubectl's annotation.
    template = kget(cluster, "deployment", name, "-n", restricted)["spec"]["template"]
    assert "kubectl.kubernetes.io/restartedAt" in template["metadata"].get("annotations", {})
