"""The ValidatingAdmissionPolicy in manifests/base warns (and only warns) at apply time when the
replica router cannot realise a canary step's weight with the replicas given."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import yaml
from devcluster import wait_until

pytestmark = pytest.mark.cluster
POLICY = Path(__file__).resolve().parents[2] / "manifests" / "base" / "canary-weight-warning.yaml"


@pytest.fixture
def weight_policy(cluster, crds):
    """The policy and its binding under unique names, removed afterwards."""
    suffix = uuid.uuid4().hex[:6]
    docs = list(yaml.safe_load_all(POLICY.read_text()))
    docs[0]["metadata"]["name"] += f"-{suffix}"
    docs[1]["metadata"]["name"] += f"-{suffix}"
    docs[1]["spec"]["policyName"] = docs[0]["metadata"]["name"]
    manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})
    cluster.kubectl("apply", "-f", "-", input=manifest)
    yield docs
    cluster.kubectl("delete", "-f", "-", input=manifest, check=False)


def md(replicas: int, steps: list[int], router: str = "replicas") -> str:
    spec = {
        "model": {"uri": "s3://models/fraud/v7/model.joblib", "format": "sklearn"},
        "scaling": {"replicas": replicas},
        "rollout": {"steps": steps},
        "traffic": {"router": router},
    }
    if router == "gateway-api":
        spec["traffic"]["gateway"] = {"parentRefs": [{"name": "public"}]}
    body = {
        "apiVersion": "modeldeploy.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "w"},
        "spec": spec,
    }
    return json.dumps(body)


def test_impossible_weights_are_accepted_with_a_warning(cluster, namespace, weight_policy):
    def warns() -> bool:
        # The policy takes a moment to be loaded by the API server after it is created.
        result = cluster.kubectl(
            "apply", "--dry-run=server", "-n", namespace, "-f", "-", input=md(1, [10, 100])
        )
        return result.returncode == 0 and "Warning" in result.stderr

    wait_until(warns, 30, "the admission warning")
    result = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=md(1, [10, 50, 100]))
    assert result.returncode == 0, "a warning, not a refusal"
    assert (
        "spec.rollout.steps" in result.stderr
        and "10%" in result.stderr
        and "50%" not in result.stderr
    )
    assert "gateway-api" in result.stderr


@pytest.mark.parametrize(
    ("replicas", "steps", "router"),
    [
        (10, [10, 50, 100], "replicas"),
        (4, [25, 50, 100], "replicas"),
        (1, [10, 100], "gateway-api"),
    ],
)
def test_reachable_weights_or_exact_routers_get_no_warning(
    cluster, namespace, weight_policy, replicas, steps, router
):
    # First make sure the policy is live (an impossible split warns), then check the case.
    wait_until(
        lambda: (
            "Warning"
            in cluster.kubectl(
                "apply", "--dry-run=server", "-n", namespace, "-f", "-", input=md(1, [10, 100])
            ).stderr
        ),
        30,
        "the policy to be active",
    )
    result = cluster.kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-", input=md(replicas, steps, router)
    )
    assert result.returncode == 0 and "Warning" not in result.stderr, result.stderr
