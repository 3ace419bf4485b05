"""`make deploy IMG=... SERVING_IMG=...` (hack/deploy.sh): kustomize's `images:` sets the operator's
image and its default serving image, and nothing else."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("overlay", ["cluster-wide", "namespaced"])
def test_deploy_sets_both_images_through_kustomize(cluster, overlay):
    rendered = subprocess.run(
        [str(REPO / "hack" / "deploy.sh"), "render", "registry.example.com/ml/operator:1.2",
         "registry.example.com/ml/modelserver@sha256:" + "a" * 64, overlay],
        env={**os.environ, "KUBECTL": str(cluster.kubectl_path)},
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert container["image"] == "registry.example.com/ml/operator:1.2"
    assert (
        env["MODELDEPLOY_SERVING_IMAGE"] == "registry.example.com/ml/modelserver@sha256:" + "a" * 64
    )
    # Every other value is untouched (the shipped defaults).
    assert env["MODELDEPLOY_RESYNC_SECONDS"] == "30" and env["MODELDEPLOY_LOG_FORMAT"] == "json"
    assert ("models" if overlay == "namespaced" else "") == env["MODELDEPLOY_NAMESPACES"]
    # The shipped manifests without an overlay still name the published defaults.
    plain = cluster.kubectl("kustomize", str(REPO / "manifests" / overlay)).stdout
    assert "ghcr.io/modeldeploy/modelserver:0.1.0" in plain
