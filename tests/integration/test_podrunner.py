"""The pod runner stands in for the kubelet, so it is held to what a kubelet does with a pod: its
Secrets and ConfigMaps as files and env, restarts with back-off, its own probes. Plain Pods on the
real control plane, no operator: whatever a test through the runner proves about auth, crashes or
readiness is only worth something if these hold."""

from __future__ import annotations

import json
import os
import signal
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import kget
from devcluster import FAULT_LABEL, wait_until
from devcluster.podrunner import CLAIM_CONDITION

pytestmark = pytest.mark.cluster

IMAGE = "registry.example/modelserver:test"
AUTH_MOUNT = "/var/run/modeldeploy/auth"
CACHE_DIR = "/var/cache/modelserver"
TIMEOUT = 60  # generous for a loaded machine; every wait ends as soon as its condition holds
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_probe(path: str, **extra: Any) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": 1,
        "failureThreshold": 1,
        "timeoutSeconds": 2,
        **extra,
    }


def server_pod(
    name: str,
    model_uri: str,
    *,
    env: list[dict[str, Any]] | None = None,
    env_from: list[dict[str, Any]] | None = None,
    volumes: list[dict[str, Any]] | None = None,
    mounts: list[dict[str, Any]] | None = None,
    labels: dict[str, str] | None = None,
    readiness: dict[str, Any] | None = None,
    liveness: dict[str, Any] | None = None,
    service_account_token: bool = False,
) -> dict[str, Any]:
    """A Pod shaped like the operator's: named port `http`, MODELSERVER_* env, an emptyDir cache."""
    base = {
        "MODELSERVER_HOST": "0.0.0.0",
        "MODELSERVER_MODEL_URI": model_uri,
        "MODELSERVER_MODEL_NAME": "iris",
        "MODELSERVER_CACHE_DIR": CACHE_DIR,
    }
    extra = env or []
    overridden = {e["name"] for e in extra}
    container: dict[str, Any] = {
        "name": "server",
        "image": IMAGE,
        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
        "env": [{"name": k, "value": v} for k, v in base.items() if k not in overridden] + extra,
        "readinessProbe": readiness or http_probe("/v2/health/ready"),
        "volumeMounts": [{"name": "cache", "mountPath": CACHE_DIR}, *(mounts or [])],
    }
    if env_from:
        container["envFrom"] = env_from
    if liveness:
        container["livenessProbe"] = liveness
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/component": "model-server", **(labels or {})},
        },
        "spec": {
            "automountServiceAccountToken": service_account_token,
            "terminationGracePeriodSeconds": 5,
            "containers": [container],
            "volumes": [{"name": "cache", "emptyDir": {}}, *(volumes or [])],
        },
    }


def secret(name: str, /, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data}


def config_map(name: str, /, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def apply(cluster, namespace: str, *objects: dict[str, Any]) -> None:
    # Pods are refused until the namespace's default ServiceAccount exists.
    wait_until(
        lambda: (
            cluster.kubectl("get", "sa", "default", "-n", namespace, check=False).returncode == 0
        ),
        TIMEOUT,
        "the default ServiceAccount",
    )
    body = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body))


def pod(cluster, namespace: str, name: str) -> dict[str, Any]:
    return kget(cluster, "pod", name, "-n", namespace)


def container_status(cluster, namespace: str, name: str) -> dict[str, Any]:
    statuses = pod(cluster, namespace, name).get("status", {}).get("containerStatuses") or [{}]
    return statuses[0]


def is_ready(obj: dict[str, Any]) -> bool:
    conditions = obj.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def claimed(obj: dict[str, Any]) -> bool:
    """Whether the runner plays the pod's kubelet (else kwok makes it Ready after a while)."""
    conditions = obj.get("status", {}).get("conditions") or []
    return any(c["type"] == CLAIM_CONDITION and c["status"] == "True" for c in conditions)


def wait_ready(cluster, namespace: str, name: str, *, runner: bool = True) -> dict[str, Any]:
    def ready() -> bool:
        obj = pod(cluster, namespace, name)
        return is_ready(obj) and claimed(obj) == runner

    wait_until(ready, TIMEOUT, f"pod {name} Ready")
    return pod(cluster, namespace, name)


def waiting(cluster, namespace: str, name: str) -> dict[str, Any]:
    return container_status(cluster, namespace, name).get("state", {}).get("waiting") or {}


def http_status(url: str, token: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with _OPENER.open(urllib.request.Request(url, headers=headers), timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def server_env(pod_runner, name: str) -> dict[str, str]:
    pid = pod_runner.server_pid(name)
    assert pid is not None, f"no server runs for {name}"
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if item)


def test_token_from_a_secret_volume_turns_auth_on_and_follows_rotation(
    cluster, namespace, pod_runner, model_uris
):
    apply(
        cluster,
        namespace,
        secret("model-auth", **{"api-token": "first-token"}),
        server_pod(
            "authed",
            model_uris["v1"],
            env=[{"name": "MODELSERVER_AUTH_TOKEN_FILE", "value": f"{AUTH_MOUNT}/token"}],
            volumes=[
                {
                    "name": "auth",
                    "secret": {
                        "secretName": "model-auth",
                        "items": [{"key": "api-token", "path": "token"}],
                    },
                }
            ],
            mounts=[{"name": "auth", "mountPath": AUTH_MOUNT, "readOnly": True}],
        ),
    )
    ip = wait_ready(cluster, namespace, "authed")["status"]["podIP"]
    url = f"http://{ip}:8080/v2/models/iris"
    assert http_status(url) == 401
    assert http_status(url, "wrong") == 401
    assert http_status(url, "first-token") == 200

    # The mount maps to the pod's volume directory; env paths inside mounts follow it.
    volumes = pod_runner.workdir / "authed" / "volumes"
    env = server_env(pod_runner, "authed")
    assert env["MODELSERVER_AUTH_TOKEN_FILE"] == str(volumes / "auth" / "token")
    assert env["MODELSERVER_CACHE_DIR"] == str(volumes / "cache")
    assert (volumes / "auth" / "token").read_text() == "first-token"

    apply(cluster, namespace, secret("model-auth", **{"api-token": "second-token"}))
    wait_until(
        lambda: http_status(url, "second-token") == 200, TIMEOUT, "the rotated token accepted"
    )
    assert http_status(url, "first-token") == 401
    assert container_status(cluster, namespace, "authed")["restartCount"] == 0


def test_env_from_secrets_configmaps_and_the_downward_api(
    cluster, namespace, pod_runner, model_uris
):
    apply(
        cluster,
        namespace,
        secret("creds", token="env-token", ACCESS_KEY="AKIAEXAMPLE"),
        config_map("serving", name="iris-from-configmap", LEVEL="warning"),
        server_pod(
            "envy",
            model_uris["v1"],
            env=[
                {
                    "name": "MODELSERVER_MODEL_NAME",
                    "valueFrom": {"configMapKeyRef": {"name": "serving", "key": "name"}},
                },
                {
                    "name": "MODELSERVER_AUTH_TOKEN",
                    "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}},
                },
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "GREETING", "value": "hello $(POD_NAME), $$(not expanded)"},
                {
                    "name": "ABSENT",
                    "valueFrom": {
                        "secretKeyRef": {"name": "nowhere", "key": "k", "optional": True}
                    },
                },
                {
                    "name": "SA_TOKEN_FILE",
                    "value": "/var/run/secrets/kubernetes.io/serviceaccount/token",
                },
            ],
            env_from=[
                {"secretRef": {"name": "creds"}, "prefix": "CREDS_"},
                {"configMapRef": {"name": "serving"}, "prefix": "CM_"},
                {"configMapRef": {"name": "nowhere", "optional": True}},
            ],
            service_account_token=True,  # the API server adds its projected volume
        ),
    )
    obj = wait_ready(cluster, namespace, "envy")
    ip = obj["status"]["podIP"]
    # The model's name came from the ConfigMap, the token from the Secret.
    assert http_status(f"http://{ip}:8080/v2/models/iris-from-configmap") == 401
    assert http_status(f"http://{ip}:8080/v2/models/iris-from-configmap", "env-token") == 200

    env = server_env(pod_runner, "envy")
    assert env["CREDS_ACCESS_KEY"] == "AKIAEXAMPLE" and env["CREDS_token"] == "env-token"
    assert env["CM_LEVEL"] == "warning"
    assert env["POD_NAME"] == env["HOSTNAME"] == "envy"
    assert env["POD_IP"] == ip == env["MODELSERVER_HOST"]
    assert env["GREETING"] == "hello envy, $(not expanded)"
    assert "ABSENT" not in env
    assert "PYTEST_CURRENT_TEST" not in env  # the pod's environment, not the runner's
    token = Path(env["SA_TOKEN_FILE"]).read_text()
    assert env["SA_TOKEN_FILE"].startswith(str(pod_runner.workdir / "envy" / "volumes"))
    assert token.count(".") == 2  # a JWT from the TokenRequest API


def test_a_missing_secret_keeps_the_container_waiting_until_it_appears(
    cluster, namespace, pod_runner, model_uris
):
    token_env = {
        "name": "MODELSERVER_AUTH_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "late", "key": "token"}},
    }
    apply(
        cluster,
        namespace,
        server_pod("from-env", model_uris["v1"], env=[token_env]),
        server_pod(
            "from-volume",
            model_uris["v1"],
            env=[{"name": "MODELSERVER_AUTH_TOKEN_FILE", "value": f"{AUTH_MOUNT}/token"}],
            volumes=[{"name": "auth", "secret": {"secretName": "late-volume"}}],
            mounts=[{"name": "auth", "mountPath": AUTH_MOUNT}],
        ),
    )
    # As the kubelet shows it: an env reference fails the container's config, a volume its mount.
    wait_until(
        lambda: (
            waiting(cluster, namespace, "from-env").get("reason") == "CreateContainerConfigError"
        ),
        TIMEOUT,
        "CreateContainerConfigError",
    )
    wait_until(
        lambda: (
            'secret "late-volume" not found'
            in waiting(cluster, namespace, "from-volume").get("message", "")
        ),
        TIMEOUT,
        "a failed mount",
    )
    assert waiting(cluster, namespace, "from-env")["message"] == 'secret "late" not found'
    assert waiting(cluster, namespace, "from-volume")["reason"] == "ContainerCreating"
    for name in ("from-env", "from-volume"):
        obj = pod(cluster, namespace, name)
        assert not is_ready(obj) and obj["status"]["phase"] == "Running"  # see podrunner
        assert pod_runner.server_pid(name) is None

    apply(cluster, namespace, secret("late", token="t1"), secret("late-volume", token="t2"))
    for name, token in (("from-env", "t1"), ("from-volume", "t2")):
        obj = wait_ready(cluster, namespace, name)
        url = f"http://{obj['status']['podIP']}:8080/v2/models/iris"
        assert http_status(url) == 401 and http_status(url, token) == 200
        assert obj["status"]["phase"] == "Running"
        assert obj["status"]["containerStatuses"][0]["restartCount"] == 0


def test_a_pod_is_not_ready_before_its_server_answers(cluster, namespace, pod_runner, model_uris):
    """kwok starts the pod and hands it over; only the runner's probe makes it Ready."""
    apply(cluster, namespace, server_pod("fresh", model_uris["v1"]))
    early: list[dict[str, Any]] = []

    def ready_and_serving() -> bool:
        obj = pod(cluster, namespace, "fresh")
        if not is_ready(obj):
            return False
        url = f"http://{obj['status']['podIP']}:8080/v2/health/ready"
        try:
            serving = http_status(url) == 200
        except OSError:
            serving = False
        if not serving or not claimed(obj):
            early.append(obj["status"])
        return True

    wait_until(ready_and_serving, TIMEOUT, "pod fresh Ready")
    assert not early, f"Ready before its server answered: {early}"


def test_a_killed_server_is_restarted_and_counted(cluster, namespace, pod_runner, model_uris):
    apply(cluster, namespace, server_pod("victim", model_uris["v1"]))
    wait_ready(cluster, namespace, "victim")
    first = container_status(cluster, namespace, "victim")
    pid = pod_runner.server_pid("victim")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)

    def restarted() -> bool:
        obj = pod(cluster, namespace, "victim")
        return is_ready(obj) and obj["status"]["containerStatuses"][0]["restartCount"] == 1

    wait_until(restarted, TIMEOUT, "the server restarted and Ready again")
    status = container_status(cluster, namespace, "victim")
    terminated = status["lastState"]["terminated"]
    assert terminated["exitCode"] == 137 and terminated["reason"] == "Error"
    assert terminated["containerID"] == first["containerID"] != status["containerID"]
    assert "running" in status["state"] and status["ready"] and status["started"]
    assert pod_runner.server_pid("victim") not in (None, pid)


def test_a_crashing_server_backs_off(cluster, namespace, pod_runner, tmp_path):
    missing = f"file://{tmp_path / 'no-such-model.joblib'}"
    apply(
        cluster,
        namespace,
        server_pod("crasher", missing, env=[{"name": "MODELSERVER_FAIL_FAST", "value": "true"}]),
    )
    wait_until(
        lambda: waiting(cluster, namespace, "crasher").get("reason") == "CrashLoopBackOff",
        TIMEOUT,
        "CrashLoopBackOff",
    )
    obj = pod(cluster, namespace, "crasher")
    status = obj["status"]["containerStatuses"][0]
    # The first restart is immediate; the second waits out the first back-off step.
    assert status["restartCount"] == 1
    assert status["state"]["waiting"]["message"] == (
        f"back-off 10s restarting failed container=server "
        f"pod=crasher_{namespace}({obj['metadata']['uid']})"
    )
    assert status["lastState"]["terminated"]["exitCode"] == 1
    assert not is_ready(obj) and obj["status"]["phase"] == "Running"


def test_the_pods_own_probes_decide_readiness_and_liveness(
    cluster, namespace, pod_runner, model_uris
):
    apply(
        cluster,
        namespace,
        # Serves, but its readiness probe asks for a model it does not have.
        server_pod("unready", model_uris["v1"], readiness=http_probe("/v2/models/absent/ready")),
        # Ready, but its liveness probe fails twice in a row: the kubelet restarts it.
        server_pod(
            "unlive",
            model_uris["v1"],
            liveness=http_probe("/v2/health/absent", failureThreshold=2),
        ),
    )
    unready_ip = wait_until_ip(cluster, namespace, "unready")
    health = f"http://{unready_ip}:8080/v2/health/ready"
    wait_until(lambda: http_status(health) == 200, TIMEOUT, "the model loaded")

    def failed_probes() -> float:
        with _OPENER.open(f"http://{unready_ip}:8080/metrics", timeout=5) as response:
            text = response.read().decode()
        return sum(
            float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith("modelserver_requests_total")
            and 'endpoint="model_ready"' in line
            and 'code="404"' in line
        )

    # Two probes that failed while the server was ready in every other sense.
    before = failed_probes()
    wait_until(lambda: failed_probes() >= before + 2, TIMEOUT, "two failed readiness probes")
    assert not is_ready(pod(cluster, namespace, "unready"))

    wait_until(
        lambda: container_status(cluster, namespace, "unlive").get("restartCount", 0) >= 1,
        TIMEOUT,
        "a restart after failed liveness probes",
    )
    assert "terminated" in container_status(cluster, namespace, "unlive")["lastState"]


def wait_until_ip(cluster, namespace: str, name: str) -> str:
    """The pod's IP once its server answers there."""

    def answering() -> bool:
        ip = pod(cluster, namespace, name).get("status", {}).get("podIP")
        return bool(ip) and http_status(f"http://{ip}:8080/v2/health/live") == 200

    wait_until(answering, TIMEOUT, f"pod {name}'s server answering")
    return str(pod(cluster, namespace, name)["status"]["podIP"])


def test_an_unreachable_pod_is_ready_but_refuses_connections(
    cluster, namespace, pod_runner, model_uris
):
    apply(
        cluster,
        namespace,
        server_pod("unreachable", model_uris["v1"], labels={FAULT_LABEL: "unreachable"}),
        server_pod("reachable", model_uris["v1"]),
    )
    # By the time the runner has made its sibling Ready it has seen this pod and left it alone.
    wait_ready(cluster, namespace, "reachable")
    obj = wait_ready(cluster, namespace, "unreachable", runner=False)
    assert obj["status"]["phase"] == "Running"
    assert pod_runner.server_pid("unreachable") is None
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((obj["status"]["podIP"], 8080), timeout=5).close()


def test_a_pod_ip_is_not_reused_while_a_terminating_server_still_holds_it(tmp_path) -> None:
    """kwok gives a deleted pod's IP to the next pod at once, while the old server may still
    serve out its shutdown delay there: the new pod waited in a crash loop of "address already
    in use" (a canary rolled back for it, in the full suite). It now waits as for its sandbox."""
    import subprocess

    from devcluster.podrunner import PodRunner, Stopping

    runner = PodRunner(Path("kubectl"), Path("kubeconfig"), "ns", tmp_path)
    old = subprocess.Popen(["sleep", "60"])
    try:
        runner._stopping.append(Stopping(old, kill_at=1e12, directory=tmp_path / "old-pod",
                                         ip="127.66.0.5"))  # fmt: skip
        assert runner._ip_held("127.66.0.5") == "old-pod"
        assert runner._ip_held("127.66.0.6") is None
        old.kill()
        old.wait()
        assert runner._ip_held("127.66.0.5") is None  # free once the old server has exited
    finally:
        old.kill()
