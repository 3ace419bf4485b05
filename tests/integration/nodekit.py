"""Helpers for the tests on the real node (devcluster.node): models on disk, pods and HTTP."""

from __future__ import annotations

import json
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
