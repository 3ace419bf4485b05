"""The generated CRD on a real API server: it installs, and it refuses what the models refuse.

Every manifest under tests/manifests/invalid is applied with kubectl (server-side and
client-side apply) and must be rejected with a message naming the field its ``# expect:``
lines name; tests/unit/test_api_manifests.py holds the pydantic models to the same lines. Every
manifest under tests/manifests/valid must be accepted, and the spec the server stores after
defaulting must equal what the models fill in.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from modeldeploy.api import (
    CRD_NAME,
    GROUP,
    PLURAL,
    VERSION,
    ModelDeploymentStatus,
    Phase,
    parse_model_deployment,
)

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "crds" / "modeldeploy.io_modeldeployments.yaml"
MANIFESTS = REPO / "tests" / "manifests"


def load(kind: str) -> list[tuple[Path, list[str], list[str]]]:
    """(path, expected fragments, fragments that must not appear) for every manifest under
    ``kind``: a rejection must name the field and must not carry a broken rule's own error."""
    cases = []
    for path in sorted((MANIFESTS / kind).glob("*.yaml")):
        lines = path.read_text(encoding="utf-8").splitlines()
        expects = [line.split(":", 1)[1].strip() for line in lines if line.startswith("# expect:")]
        absent = [line.split(":", 1)[1].strip() for line in lines if line.startswith("# not:")]
        cases.append((path, expects, absent))
    return cases


INVALID = load("invalid")
VALID = load("valid")


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.25)


@pytest.fixture(scope="module")
def crd(cluster: Any) -> str:
    """The committed CRD, installed and served (not a hand copy: the file `make crds` writes)."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{CRD_NAME}")
    # Discovery and the published OpenAPI schema trail the Established condition briefly.
    wait_for(
        lambda: cluster.kubectl("explain", "md.spec.model", check=False).returncode == 0,
        60,
        "the ModelDeployment schema to be published",
    )
    return CRD_NAME


@pytest.fixture(scope="module")
def corpus_namespace(cluster: Any, crd: str) -> Iterator[str]:
    """One namespace for the whole corpus: a namespace per manifest would only add churn."""
    name = f"api-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def get_object(cluster: Any, namespace: str, name: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "md", name, "-n", namespace, "-o", "json").stdout
    return json.loads(out)


def test_crd_is_established_and_structural(cluster: Any, crd: str) -> None:
    status = json.loads(cluster.kubectl("get", "crd", crd, "-o", "json").stdout)["status"]
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["Established"] == "True"
    assert conditions["NamesAccepted"] == "True"
    assert "NonStructuralSchema" not in conditions
    assert status["acceptedNames"]["shortNames"] == ["md"]
    assert status["acceptedNames"]["categories"] == ["ml"]


@pytest.mark.parametrize("mode", ["server-side", "client-side"])
@pytest.mark.parametrize(("path", "expects", "absent"), INVALID, ids=[c[0].name for c in INVALID])
def test_invalid_manifest_is_rejected_naming_the_field(
    cluster: Any,
    corpus_namespace: str,
    path: Path,
    expects: list[str],
    absent: list[str],
    mode: str,
) -> None:
    # kubectl validates strictly by default (--validate=strict): the server, not kubectl, refuses.
    args = ["apply", "-n", corpus_namespace, "-f", str(path)]
    if mode == "server-side":
        args.insert(1, "--server-side")
    result = cluster.kubectl(*args, check=False)
    assert result.returncode != 0, f"{path.name} was accepted: {result.stdout}"
    for fragment in expects:
        assert fragment.lower() in result.stderr.lower(), (
            f"{path.name}: {fragment!r} not in {result.stderr!r}"
        )
    for fragment in absent:
        assert fragment.lower() not in result.stderr.lower(), f"{path.name}: {result.stderr!r}"
    name = yaml.safe_load(path.read_text(encoding="utf-8"))["metadata"]["name"]
    assert cluster.kubectl("get", "md", name, "-n", corpus_namespace, check=False).returncode != 0


def without_empty(value: Any) -> Any:
    """Absent, empty and null mean the same to both sides; compare what remains."""
    if isinstance(value, dict):
        cleaned = {k: without_empty(v) for k, v in value.items()}
        return {k: v for k, v in cleaned.items() if v not in ({}, [], None)}
    if isinstance(value, list):
        return [without_empty(v) for v in value]
    return value


@pytest.mark.parametrize("path", [c[0] for c in VALID], ids=[c[0].name for c in VALID])
def test_valid_manifest_is_accepted_and_defaulted_like_the_models(
    cluster: Any, corpus_namespace: str, path: Path
) -> None:
    manifest = yaml.safe_load(path.read_text(encoding="utf-8"))
    name = manifest["metadata"]["name"]
    cluster.kubectl("apply", "--server-side", "-n", corpus_namespace, "-f", str(path))
    try:
        stored = get_object(cluster, corpus_namespace, name)
        model_defaults = parse_model_deployment(manifest).spec.model_dump(
            mode="json", exclude_none=True
        )
        assert without_empty(stored["spec"]) == without_empty(model_defaults)
        # And the operator can read back exactly what the server stores.
        assert parse_model_deployment(stored).spec == parse_model_deployment(manifest).spec
    finally:
        cluster.kubectl("delete", "md", name, "-n", corpus_namespace, "--wait=false", check=False)


def minimal(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {"model": {"uri": "s3://models/fraud/model.joblib", "format": "sklearn"}},
    }


def test_python_client_without_strict_field_validation_drops_unknown_fields(
    cluster: Any, crd: str, namespace: str
) -> None:
    """kubectl asks for Strict field validation; a client that does not only gets a warning."""
    api = client.CustomObjectsApi(cluster.api_client())
    body = minimal("lenient")
    body["spec"]["model"]["checksum"] = "abc"
    with pytest.raises(ApiException) as info:
        api.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, body, field_validation="Strict"
        )
    assert info.value.status == 400
    assert 'unknown field "spec.model.checksum"' in json.loads(info.value.body or "{}")["message"]

    created = cast(
        dict[str, Any],
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body),
    )
    assert "checksum" not in created["spec"]["model"]


def test_kubectl_explain_describes_the_fields(cluster: Any, crd: str) -> None:
    model = cluster.kubectl("explain", "md.spec.model").stdout
    assert "Where the artifact lives" in model
    assert "enum: sklearn" in model
    steps = cluster.kubectl("explain", "md.spec.rollout.steps").stdout
    assert "Defaults to [10, 25, 50, 100]" in steps


def test_short_name_and_category_list_model_deployments(
    cluster: Any, crd: str, namespace: str
) -> None:
    cluster.kubectl(
        "apply", "--server-side", "-n", namespace, "-f", "-", input=json.dumps(minimal("listed"))
    )
    for resource in ("md", "ml", "modeldeployments.modeldeploy.io"):
        names = cluster.kubectl("get", resource, "-n", namespace, "-o", "name").stdout.split()
        assert names == ["modeldeployment.modeldeploy.io/listed"], resource


def test_status_subresource_keeps_kopf_state_and_feeds_the_printer_columns(
    cluster: Any, crd: str, namespace: str
) -> None:
    cluster.kubectl(
        "apply", "--server-side", "-n", namespace, "-f", "-", input=json.dumps(minimal("shown"))
    )
    status = ModelDeploymentStatus(
        observed_generation=1,
        phase=Phase.PROGRESSING,
        ready_replicas=11,
        stable_revision="7c9e6f1a2b",
        stable_version="v7",
        canary_revision="d41d8cd98f",
        desired_weight=10,
        effective_weight=9.1,
        weight_summary="10% → 9.1%",
        current_step=0,
        kopf={"progress": {"reconcile": {"retries": 1, "started": "2026-11-27T12:00:00Z"}}},
    )
    patch = {"status": status.model_dump(mode="json", exclude_none=True)}
    cluster.kubectl(
        "patch", "md", "shown", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps(patch),
    )  # fmt: skip
    stored = get_object(cluster, namespace, "shown")
    assert stored["status"]["kopf"] == patch["status"]["kopf"]
    assert parse_model_deployment(stored).status == status

    table = cluster.kubectl("get", "md", "shown", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "PHASE", "READY", "VERSION", "REVISION", "WEIGHT", "AGE"]
    assert table[1].split()[:7] == ["shown", "Progressing", "11", "v7", "7c9e6f1a2b", "10%", "→"]
    wide = cluster.kubectl("get", "md", "shown", "-n", namespace, "-o", "wide").stdout
    assert "CANARY" in wide and "d41d8cd98f" in wide


def test_status_outside_the_schema_is_rejected(cluster: Any, crd: str, namespace: str) -> None:
    cluster.kubectl(
        "apply", "--server-side", "-n", namespace, "-f", "-", input=json.dumps(minimal("odd"))
    )
    result = cluster.kubectl(
        "patch", "md", "odd", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"phase": "Exploding", "desiredWeight": 150}}), check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "status.phase" in result.stderr and "status.desiredWeight" in result.stderr


def test_status_in_a_user_manifest_is_ignored(cluster: Any, crd: str, namespace: str) -> None:
    """Only the operator writes status: GitOps tools applying a manifest cannot overwrite it."""
    manifest = minimal("gitops") | {"status": {"phase": "Ready"}}
    cluster.kubectl(
        "apply", "--server-side", "-n", namespace, "-f", "-", input=json.dumps(manifest)
    )
    assert "status" not in get_object(cluster, namespace, "gitops")


def test_updates_are_validated_like_creates(cluster: Any, crd: str, namespace: str) -> None:
    cluster.kubectl(
        "apply", "--server-side", "-n", namespace, "-f", "-", input=json.dumps(minimal("edited"))
    )
    result = cluster.kubectl(
        "patch", "md", "edited", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"scaling": {"minReplicas": 5, "maxReplicas": 2}}}), check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "spec.scaling.minReplicas" in result.stderr
    assert "minReplicas must not exceed maxReplicas" in result.stderr
