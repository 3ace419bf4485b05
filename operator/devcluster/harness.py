"""Run the operator and send traffic the way a cluster would, for tests and benchmarks.

`OperatorProcess` runs `python -m modeldeploy` exactly as its container does, against any
kubeconfig. `Traffic` sends inference requests to every ready serving pod that a `PodRunner`
keeps a real server for, as a Service spreads requests over its endpoints.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

from .podrunner import PodRunner
from .ports import free_port
from .processes import kill_when_parent_dies, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]


class OperatorProcess:
    """`python -m modeldeploy` against a kubeconfig, with its log in a file."""

    def __init__(self, kubeconfig: Path, namespace: str, log_path: Path, **env: str):
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.log_path = log_path
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "MODELDEPLOY_NAMESPACES": namespace,
            # Its credential Secret lives beside the models it watches (in a cluster: its own).
            "MODELDEPLOY_OPERATOR_NAMESPACE": namespace,
            "MODELDEPLOY_RESYNC_SECONDS": "2",
            "MODELDEPLOY_METRICS_PORT": str(self.metrics_port),
            "MODELDEPLOY_HEALTH_PORT": str(self.health_port),
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
                cwd=REPO_ROOT,
                preexec_fn=kill_when_parent_dies,  # no operator outlives its test run
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

    def health(self, path: str = "/healthz") -> tuple[int, dict]:
        """(HTTP status, JSON body) of the operator's /healthz or /readyz."""
        url = f"http://127.0.0.1:{self.health_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

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

    def __init__(
        self, runner: PodRunner, model: str, interval: float = 0.02, token: str | None = None
    ):
        self.runner, self.model, self.interval = runner, model, interval
        self.headers = {"Content-Type": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.sent = 0
        self.errors = 0
        self.codes: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            for url in self.urls():
                request = urllib.request.Request(url, data=self.BODY, headers=self.headers)
                try:
                    with urllib.request.urlopen(request, timeout=2) as response:
                        response.read()
                        code = response.status
                except urllib.error.HTTPError as error:
                    self.errors += 1
                    code = error.code
                except OSError:
                    continue
                self.sent += 1
                self.codes[code] = self.codes.get(code, 0) + 1

    def urls(self) -> list[str]:
        """Each ready pod's infer URL, at the port and model name that pod serves (they change
        between revisions when an update changes serving.port or model.name)."""
        urls = []
        for state in list(self.runner.pods.values()):
            if not state.ready:
                continue
            container = state.pod["spec"]["containers"][0]
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            port = container.get("ports", [{}])[0].get("containerPort", 8080)
            model = env.get("MODELSERVER_MODEL_NAME") or self.model
            urls.append(f"http://{state.ip}:{port}/v2/models/{model}/infer")
        return urls

    def start(self) -> Traffic:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def train_models(directory: Path) -> dict[str, str]:
    """Two small scikit-learn classifiers with the same 4 inputs and different weights (v1, v2),
    as file:// URIs: a stable revision and a canary that really differ."""
    import joblib
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(7)
    x = rng.normal(size=(400, 4))
    uris = {}
    for version, flip in (("v1", 1.0), ("v2", -1.0)):
        y = (flip * x[:, 0] + x[:, 1] > 0).astype(int)
        path = directory / f"{version}.joblib"
        joblib.dump(LogisticRegression().fit(x, y), path)
        uris[version] = f"file://{path}"
    return uris
