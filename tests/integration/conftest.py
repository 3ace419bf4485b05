"""Integration fixtures: the generated CRD installed once, and the operator as a real process.

The operator runs as `python -m modeldeploy`, exactly as in its container, scoped to the test's
namespace with a short resync period, and is stopped (SIGTERM) when the test ends.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from devcluster import wait_until

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "crds" / "modeldeploy.io_modeldeployments.yaml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OperatorProcess:
    """`python -m modeldeploy` against a kubeconfig, with its log in a file."""

    def __init__(self, kubeconfig: Path, namespace: str, log_path: Path, **env: str):
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.log_path = log_path
        self.metrics_port = free_port()
        self.env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "MODELDEPLOY_NAMESPACES": namespace,
            "MODELDEPLOY_RESYNC_SECONDS": "2",
            "MODELDEPLOY_METRICS_PORT": str(self.metrics_port),
            "MODELDEPLOY_HEALTH_PORT": str(free_port()),
            "MODELDEPLOY_SERVING_IMAGE": "registry.example/modelserver:test",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "modeldeploy"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        wait_until(
            lambda: "Initial authentication has finished" in self.log(), 30, "operator start"
        )
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def metrics(self) -> dict[str, float]:
        """The operator's /metrics as {series: value} (labels inline, as exposed)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                series, _, value = line.rpartition(" ")
                values[series] = float(value)
        return values


@pytest.fixture(scope="session")
def crds(cluster) -> None:
    """The generated CRD, installed with server-side apply and Established."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    cluster.kubectl(
        "wait", "--for=condition=Established", "crd/modeldeployments.modeldeploy.io",
        "--timeout=60s",
    )  # fmt: skip


@pytest.fixture
def operator(cluster, namespace, crds, tmp_path) -> Iterator[OperatorProcess]:
    process = OperatorProcess(cluster.kubeconfig, namespace, tmp_path / "operator.log").start()
    try:
        yield process
    finally:
        process.stop()
        # Shown by pytest only when the test failed.
        print(f"--- operator log ({process.log_path}) ---\n{process.log()[-6000:]}")


@pytest.fixture(scope="session")
def model_uris(tmp_path_factory) -> dict[str, str]:
    """Two real scikit-learn models with the same inputs (4 features) and different weights."""
    import joblib
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    directory = tmp_path_factory.mktemp("models")
    rng = np.random.default_rng(7)
    x = rng.normal(size=(400, 4))
    uris = {}
    for version, flip in (("v1", 1.0), ("v2", -1.0)):
        y = (flip * x[:, 0] + x[:, 1] > 0).astype(int)
        path = directory / f"{version}.joblib"
        joblib.dump(LogisticRegression().fit(x, y), path)
        uris[version] = f"file://{path}"
    return uris


@pytest.fixture
def pod_runner(cluster, namespace, tmp_path) -> Iterator[Any]:
    """Real model servers for the namespace's serving pods (on their loopback pod IPs)."""
    if not cluster.embedded:
        pytest.skip("needs kwok's loopback pod IPs")
    from devcluster.podrunner import PodRunner

    runner = PodRunner(
        cluster.kubectl_path, cluster.kubeconfig, namespace, tmp_path / "pods",
        pythonpath=[str(Path(__file__).parent)],
    ).start()  # fmt: skip
    try:
        yield runner
    finally:
        runner.stop()


class Traffic:
    """Inference requests to every running serving pod in a namespace, as a Service would send."""

    BODY = json.dumps(
        {
            "inputs": [
                {
                    "name": "input-0",
                    "datatype": "FP64",
                    "shape": [1, 4],
                    "data": [0.1, 0.2, 0.3, 0.4],
                }
            ]
        }
    ).encode()

    def __init__(self, runner, model: str, interval: float = 0.02):
        import threading

        self.runner, self.model, self.interval = runner, model, interval
        self.sent = 0
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        import urllib.error

        while not self._stop.wait(self.interval):
            for url in self.urls():
                request = urllib.request.Request(
                    url, data=self.BODY, headers={"Content-Type": "application/json"}
                )
                try:
                    with urllib.request.urlopen(request, timeout=2) as response:
                        response.read()
                except urllib.error.HTTPError:
                    self.errors += 1
                except OSError:
                    continue
                self.sent += 1

    def urls(self) -> list[str]:
        return [f"http://{ip}:8080/v2/models/{self.model}/infer" for ip in self.runner.ready_ips()]

    def start(self) -> Traffic:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def kget(cluster, *args: str) -> Any:
    """`kubectl get ... -o json`, parsed."""
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)
