"""Integration fixtures: the generated CRD installed once, and the operator as a real process.

The operator runs as `python -m modeldeploy`, exactly as in its container, scoped to the test's
namespace with a short resync period, and is stopped (SIGTERM) when the test ends.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from devcluster import wait_until
from devcluster.harness import OperatorProcess, Traffic, free_port, train_models

__all__ = ["OperatorProcess", "Traffic", "free_port", "kget"]

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "crds" / "modeldeploy.io_modeldeployments.yaml"
# The serving image with models baked in (the `model_image` fixture).
MODEL_IMAGE = "localhost/modeldeploy/modelserver-models:test"


@pytest.fixture(scope="session")
def crds(cluster) -> None:
    """The generated CRD, installed with server-side apply and Established.

    Polled rather than `kubectl wait`, which errors out instead of waiting while a new CRD has no
    status conditions yet.
    """
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))

    def established() -> bool:
        crd = kget(cluster, "crd", "modeldeployments.modeldeploy.io")
        conditions = crd.get("status", {}).get("conditions", [])
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    wait_until(established, 60, "the ModelDeployment CRD Established")


@pytest.fixture
def operator(cluster, namespace, crds, tmp_path) -> Iterator[OperatorProcess]:
    process = OperatorProcess(cluster.kubeconfig, namespace, tmp_path / "operator.log").start()
    try:
        yield process
    finally:
        process.stop()
        # Shown by pytest only when the test failed.
        print(f"--- operator log ({process.log_path}) ---\n{process.log()[-6000:]}")


@pytest.fixture
def restricted(cluster, namespace) -> str:
    """The test namespace enforcing the restricted Pod Security Standard (as the
    namespaced install's `models` namespace does)."""
    cluster.kubectl(
        "label", "namespace", namespace,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
    )  # fmt: skip
    return namespace


@pytest.fixture(scope="session")
def model_uris(tmp_path_factory) -> dict[str, str]:
    """Two real scikit-learn models with the same inputs (4 features) and different weights."""
    return train_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def model_image(real_node, model_uris, tmp_path_factory) -> str:
    """The serving image with v1 and v2 baked in at /models/fraud/ (model-image/Dockerfile),
    built once with the images' builder (cached by its inputs) and imported into the real node."""
    from devcluster import images

    context = tmp_path_factory.mktemp("model-image")
    for version in ("v1", "v2"):
        source = Path(model_uris[version].removeprefix("file://"))
        (context / f"{version}.joblib").write_bytes(source.read_bytes())
    spec = images.ImageSpec(
        "model-image", Path(__file__).parent / "model-image" / "Dockerfile", context, MODEL_IMAGE
    )
    image = images.build_derived(spec, images.built_images()["modelserver"])
    real_node.import_image(image.docker_archive)  # type: ignore[attr-defined]
    return MODEL_IMAGE


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


def kget(cluster, *args: str) -> Any:
    """`kubectl get ... -o json`, parsed."""
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)
