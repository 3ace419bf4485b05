"""The two images, built from their Dockerfiles (`make images`), run with runc as a restricted pod
would run them: the image's own user, entrypoint and environment; a read-only root filesystem
with tmpfs only where the operator mounts emptyDirs; no capabilities. No kubelet is involved, so a
failure here is the image's, not the node's.

The images are built by the first test that needs them when the cache has none (cold: several
minutes, hence the long timeout), exactly as `make images` builds them.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from devcluster import wait_until
from devcluster.ports import free_port

REPO = Path(__file__).resolve().parents[2]
IMAGE_USER = 10001
EMPTY_DIRS = ["/tmp", "/var/cache/modelserver"]  # the operator's emptyDirs (children.py)
pytestmark = pytest.mark.timeout(1800)


def built_images() -> dict:
    """The images, with runc and umoci installed first where they can be (root and apt-get): on a
    fresh machine they are missing until hack/node-packages.sh has run, and checking before it
    skipped every test here."""
    from devcluster import images
    from devcluster.runc import runc_missing

    if images.docker_engine():
        pytest.skip("a Docker engine builds into Docker here; these checks run images with runc")
    subprocess.run([str(REPO / "hack" / "node-packages.sh")], check=True)
    reason = runc_missing() or images.why_no_local_builder()
    if reason:
        pytest.skip(reason)
    return images.build()


@pytest.fixture(scope="module")
def images() -> dict:
    return built_images()


@pytest.fixture(scope="module")
def bundles(images, tmp_path_factory) -> Iterator[dict[str, Path]]:
    from devcluster.runc import unpack

    root = tmp_path_factory.mktemp("bundles")
    found = {name: unpack(image, root / name) for name, image in images.items()}
    yield found
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    directory = tmp_path_factory.mktemp("model")
    directory.chmod(0o755)
    x, y = load_iris(return_X_y=True)
    path = directory / "iris.joblib"
    joblib.dump(LogisticRegression(max_iter=500).fit(x, y), path)
    path.chmod(0o644)
    return path


def http(url: str, body: dict | None = None, timeout: float = 5) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, {}


def ids(pid: int) -> dict[str, list[int]]:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {
        line.split(":")[0]: [int(v) for v in line.split()[1:]]
        for line in status
        if line.startswith(("Uid:", "Gid:"))
    }


def start(bundle: Path, tmp_path: Path, env: dict[str, str], binds=()):  # type: ignore[no-untyped-def]
    from devcluster.runc import Container, restricted

    original = bundle / "config.image.json"  # umoci's config from the image, kept pristine
    if not original.exists():
        original.write_text((bundle / "config.json").read_text())
    config = json.loads(original.read_text())
    container = Container(bundle, tmp_path / "runc-state", tmp_path / "container.log")
    return container.start(restricted(config, env=env, tmpfs=EMPTY_DIRS, binds=list(binds)))


def test_serving_image_serves_as_its_non_root_user_on_a_read_only_root(
    bundles, model_file, tmp_path
):
    port = free_port()
    env = {
        "MODELSERVER_HOST": "127.0.0.1",
        "MODELSERVER_PORT": str(port),
        "MODELSERVER_MODEL_URI": "file:///mnt/models/iris.joblib",
        "MODELSERVER_MODEL_NAME": "iris",
        "MODELSERVER_CACHE_DIR": "/var/cache/modelserver",
    }
    container = start(bundles["modelserver"], tmp_path, env, [(model_file.parent, "/mnt/models")])
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: http(f"{base}/v2/health/ready")[0] == 200, 90, "server ready")
        status, reply = http(
            f"{base}/v2/models/iris/infer",
            {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64",
                         "data": [5.1, 3.5, 1.4, 0.2]}]},
        )  # fmt: skip
        assert status == 200, container.log()
        assert reply["model_name"] == "iris" and reply["outputs"][0]["shape"][0] == 1

        pid = container.init_pid()
        # PID 1 of the container is the server itself (the image's ENTRYPOINT, no shell).
        assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:3] == [
            b"python", b"-m", b"modelserver"
        ]  # fmt: skip
        assert ids(pid) == {"Uid": [IMAGE_USER] * 4, "Gid": [IMAGE_USER] * 4}
        assert Path(f"/proc/{pid}/status").read_text().count("CapEff:\t0000000000000000") == 1

        # Read-only root, writable emptyDirs: what the server needs is only in the mounted dirs.
        probe = (
            "import os, sys\n"
            "def w(p):\n"
            "    try:\n"
            "        open(p, 'w').close(); return 'ok'\n"
            "    except OSError as e:\n"
            "        return e.strerror\n"
            "print(w('/opt/modelserver/x'), w('/x'), w('/tmp/x'), w('/var/cache/modelserver/x'))\n"
        )
        done = container.exec("python", "-c", probe)
        assert done.stdout.split() == [
            "Read-only", "file", "system", "Read-only", "file", "system", "ok", "ok"
        ], done.stdout + done.stderr  # fmt: skip
    finally:
        container.remove()


def test_sigterm_to_the_serving_pid_1_ends_it_cleanly(bundles, model_file, tmp_path):
    port = free_port()
    env = {
        "MODELSERVER_HOST": "127.0.0.1",
        "MODELSERVER_PORT": str(port),
        "MODELSERVER_MODEL_URI": "file:///mnt/models/iris.joblib",
        "MODELSERVER_MODEL_NAME": "iris",
        "MODELSERVER_WORKERS": "2",
    }
    container = start(bundles["modelserver"], tmp_path, env, [(model_file.parent, "/mnt/models")])
    try:
        url = f"http://127.0.0.1:{port}/v2/health/ready"
        wait_until(lambda: http(url)[0] == 200, 90, "server ready")
        container.signal(signal.SIGTERM)
        # Clean: exit status 0 well within a pod's grace period (the kubelet's SIGKILL would
        # follow after 35 s), workers included.
        assert container.wait(timeout=30) == 0, container.log()[-3000:]
        assert "Traceback" not in container.log()
    finally:
        container.remove()


def test_operator_image_runs_non_root_on_a_read_only_root_and_stops_on_sigterm(
    bundles, cluster, namespace, tmp_path
):
    if not cluster.embedded:
        pytest.skip("runs the operator image against the embedded control plane on 127.0.0.1")
    config_dir = tmp_path / "kube"
    config_dir.mkdir()
    config_dir.chmod(0o755)
    shutil.copy(cluster.kubeconfig, config_dir / "config")
    (config_dir / "config").chmod(0o644)
    cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f",
        str(REPO / "crds" / "modeldeploy.io_modeldeployments.yaml"),
    )  # fmt: skip
    health = free_port()
    env = {
        "KUBECONFIG": "/etc/kube/config",
        "MODELDEPLOY_NAMESPACES": namespace,
        "MODELDEPLOY_OPERATOR_NAMESPACE": namespace,
        "MODELDEPLOY_HEALTH_PORT": str(health),
        "MODELDEPLOY_METRICS_PORT": str(free_port()),
    }
    container = start(bundles["operator"], tmp_path, env, [(config_dir, "/etc/kube")])
    try:
        wait_until(
            lambda: http(f"http://127.0.0.1:{health}/readyz")[0] == 200, 60, "operator /readyz"
        )
        assert http(f"http://127.0.0.1:{health}/healthz")[0] == 200
        pid = container.init_pid()
        assert ids(pid) == {"Uid": [IMAGE_USER] * 4, "Gid": [IMAGE_USER] * 4}
        # It made its credential Secret: it talks to the API server from inside the image.
        wait_until(
            lambda: cluster.kubectl(
                "get", "secret", "modeldeploy-operator-credential", "-n", namespace, check=False
            ).returncode == 0,
            30,
            "operator credential Secret",
        )  # fmt: skip
        container.signal(signal.SIGTERM)
        assert container.wait(timeout=30) == 0, container.log()[-3000:]
    finally:
        container.remove()
