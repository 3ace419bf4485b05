"""Helpers for the tests on the real node (devcluster.node): models on disk, pods and HTTP."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from devcluster.node import NODE_SELECTOR, TOLERATIONS

SERVING_IMAGE = "localhost/modeldeploy/modelserver:dev"
OPERATOR_IMAGE = "localhost/modeldeploy/operator:dev"
PLACEMENT = {"nodeSelector": NODE_SELECTOR, "tolerations": TOLERATIONS}
INFER_BODY = {
    "inputs": [
        {"name": "input-0", "datatype": "FP64", "shape": [1, 4], "data": [0.1, 0.2, 0.3, 0.4]}
    ]
}


def http(url: str, body: Any = None, timeout: float = 5) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, {}


def pods(cluster, namespace: str, selector: str) -> list[dict]:
    return json.loads(
        cluster.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json").stdout
    )["items"]


def ready(pod: dict) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in pod.get("status", {}).get("conditions", [])
    )


def world_readable_model(directory: Path, source_uri: str) -> Path:
    """Copy a file:// model into `directory` readable by the pods' uid."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    target = directory / Path(source_uri.removeprefix("file://")).name
    target.write_bytes(Path(source_uri.removeprefix("file://")).read_bytes())
    target.chmod(0o644)
    return target


class ServiceLoad:
    """Steady inference traffic to a URL (a Service's ClusterIP) from `workers` threads, one new
    connection per request — so kube-proxy picks an endpoint for every request — with every
    outcome counted: answers by model version, and each failure with its time and reason.

        with ServiceLoad(url) as load:
            ...                        # roll the Deployment
        assert load.failures == []
    """

    def __init__(self, url: str, workers: int = 2, interval: float = 0.02, timeout: float = 5):
        self.url, self.interval, self.timeout = url, interval, timeout
        self.answered: dict[str, int] = {}
        self.failures: list[tuple[float, str]] = []
        self.sent = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(workers)]

    def __enter__(self) -> ServiceLoad:
        self.started = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)

    def _loop(self) -> None:
        data = json.dumps(INFER_BODY).encode()
        headers = {"Content-Type": "application/json", "Connection": "close"}
        while not self._stop.wait(self.interval):
            request = urllib.request.Request(self.url, data=data, headers=headers)
            version, failure = None, None
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    version = json.loads(response.read())["model_version"]
            except urllib.error.HTTPError as error:
                failure = f"HTTP {error.code}"
            except (OSError, ValueError, KeyError) as error:
                failure = f"{type(error).__name__}: {error}"
            with self._lock:
                self.sent += 1
                if failure is None:
                    self.answered[version] = self.answered.get(version, 0) + 1
                else:
                    self.failures.append((round(time.monotonic() - self.started, 2), failure))

    def wait_for(self, requests: int, timeout: float = 60) -> None:
        """Until at least `requests` more requests were sent (traffic is really flowing)."""
        target = self.sent + requests
        deadline = time.monotonic() + timeout
        while self.sent < target:
            assert time.monotonic() < deadline, f"only {self.sent} of {target} requests sent"
            time.sleep(0.1)
