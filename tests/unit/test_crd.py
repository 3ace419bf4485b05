"""The generated CRD: up to date, structural, bounded, and defaulting like the models."""

from __future__ import annotations

import copy
import difflib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from modeldeploy.api import parse_model_deployment
from modeldeploy.api.crd import DEFAULT_PATH, PRINTER_COLUMNS, build_crd, main, render_crd

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / DEFAULT_PATH
VALID = sorted((REPO / "tests" / "manifests" / "valid").glob("*.yaml"))


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return build_crd()


@pytest.fixture(scope="module")
def schema(crd: dict[str, Any]) -> dict[str, Any]:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_committed_crd_matches_the_models() -> None:
    committed = COMMITTED.read_text(encoding="utf-8")
    generated = render_crd()
    if committed != generated:
        diff = "".join(
            difflib.unified_diff(
                committed.splitlines(keepends=True),
                generated.splitlines(keepends=True),
                "committed",
                "generated",
            )
        )
        pytest.fail(f"{DEFAULT_PATH} is out of date; run `make crds`.\n{diff}")


def test_check_mode_reports_a_stale_file_with_a_diff(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = tmp_path / "crd.yaml"
    stale.write_text(render_crd().replace("shortNames:\n    - md", "shortNames:\n    - mdx"))
    assert main(["--check", str(stale)]) == 1
    out = capsys.readouterr()
    assert "-    - mdx" in out.out and "+    - md" in out.out
    assert "make crds" in out.err
    assert main([str(stale)]) == 0
    assert main(["--check", str(stale)]) == 0


def test_rendering_is_deterministic() -> None:
    assert render_crd() == render_crd()
    assert yaml.safe_load(render_crd()) == build_crd()


def test_names_scope_and_subresources(crd: dict[str, Any]) -> None:
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "modeldeployments.modeldeploy.io"
    assert spec["group"] == "modeldeploy.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": "ModelDeployment",
        "listKind": "ModelDeploymentList",
        "plural": "modeldeployments",
        "singular": "modeldeployment",
        "shortNames": ["md"],
        "categories": ["ml"],
    }
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with a readable path (``.spec.rollout.steps[]``)."""
    yield path, node
    for name, prop in node.get("properties", {}).items():
        yield from walk(prop, f"{path}.{name}")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def test_schema_is_structural(schema: dict[str, Any]) -> None:
    forbidden = {"$ref", "$defs", "title", "allOf", "oneOf", "not", "const", "nullable"}
    for path, node in walk(schema):
        assert not forbidden & node.keys(), f"{path}: {forbidden & node.keys()}"
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string"), f"{path}: anyOf outside int-or-string"
        if node.get("x-kubernetes-int-or-string"):
            assert "type" not in node, path
        else:
            assert "type" in node, f"{path}: no type"
        if "properties" in node:
            assert "additionalProperties" not in node, path
            assert "x-kubernetes-preserve-unknown-fields" not in node, path


def test_every_field_has_a_description_for_kubectl_explain(schema: dict[str, Any]) -> None:
    missing = [
        p
        for p, n in walk(schema)
        if p and not p.startswith(".metadata") and not n.get("description")
    ]
    missing = [p for p in missing if not p.endswith(("[]", "{}"))]
    assert missing == []
    assert "description" not in schema["properties"]["metadata"], "the API server refuses it"


def test_lists_maps_and_strings_are_bounded_so_cel_cost_stays_small(schema: dict[str, Any]) -> None:
    for path, node in walk(schema):
        if path.startswith((".apiVersion", ".kind")):
            continue
        kind = node.get("type")
        if kind == "array":
            assert "maxItems" in node, f"{path}: no maxItems"
        elif kind == "object" and "additionalProperties" in node:
            assert "maxProperties" in node, f"{path}: no maxProperties"
        elif (
            kind == "string" and "enum" not in node and node.get("format") != "date-time"
        ) or node.get("x-kubernetes-int-or-string"):
            assert "maxLength" in node, f"{path}: no maxLength"


def rules(schema: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
    return {
        p: n["x-kubernetes-validations"] for p, n in walk(schema) if "x-kubernetes-validations" in n
    }


def test_cross_field_rules_are_present_with_messages(schema: dict[str, Any]) -> None:
    found = rules(schema)
    expected_messages = {
        ".spec.scaling": [
            "not both",
            "maxReplicas is required",
            "minReplicas must not exceed maxReplicas",
        ],
        ".spec.rollout.steps": ["strictly increasing", "the last step must be 100"],
        ".spec.rollout": [
            "analysis.interval must not exceed stepDuration",
            "shadow.duration must be at least analysis.interval",
        ],
        ".spec": ["rollout.shadow.mirror Gateway needs traffic.router gateway-api"],
        ".spec.model": [
            "customClass is required when format is custom",
            "only allowed when format is custom",
        ],
        ".spec.traffic": [
            "gateway is required when router is gateway-api",
            "only allowed when router is gateway-api",
        ],
        ".spec.rollout.analysis.metricSource": ["prometheusUrl is required"],
        ".spec.serving.resources": [
            "requests.cpu must not exceed",
            "requests.memory must not exceed",
        ],
        "": ["DNS-1035"],
    }
    for path, fragments in expected_messages.items():
        messages = " | ".join(r["message"] for r in found[path])
        for fragment in fragments:
            assert fragment in messages, f"{path}: {fragment!r} not in {messages!r}"
    for path, entries in found.items():
        for entry in entries:
            assert entry["message"].strip() and "\n" not in entry["message"], path
            assert set(entry) <= {"rule", "message", "messageExpression", "fieldPath", "reason"}, (
                path
            )


def test_status_is_preserved_for_kopf_and_has_no_defaults(schema: dict[str, Any]) -> None:
    status = schema["properties"]["status"]
    assert status["properties"]["kopf"] == {
        "description": status["properties"]["kopf"]["description"],
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    assert [p for p, n in walk(status) if "default" in n] == []
    conditions = status["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert set(conditions["items"]["required"]) == {
        "type",
        "status",
        "lastTransitionTime",
        "reason",
    }


def resolve(schema: dict[str, Any], json_path: str) -> dict[str, Any] | None:
    node: dict[str, Any] | None = schema
    for part in json_path.strip(".").split("."):
        node = (node or {}).get("properties", {}).get(part)
    return node


def test_printer_columns_point_at_real_fields(schema: dict[str, Any]) -> None:
    names = [c["name"] for c in PRINTER_COLUMNS]
    assert names[:6] == ["Phase", "Ready", "Version", "Revision", "Weight", "Age"]
    for column in PRINTER_COLUMNS:
        if column["jsonPath"].startswith(".metadata"):
            continue
        field = resolve(schema, column["jsonPath"])
        assert field is not None, column
        assert field["type"] == column["type"], column


def default(obj: Any, schema: dict[str, Any]) -> Any:
    """The API server's structural defaulting (apiextensions' defaulting.Default), in Python."""
    if isinstance(obj, dict):
        for name, prop in schema.get("properties", {}).items():
            if "default" in prop and obj.get(name) is None:
                obj[name] = copy.deepcopy(prop["default"])
        for name, value in obj.items():
            if name in schema.get("properties", {}):
                default(value, schema["properties"][name])
            elif isinstance(schema.get("additionalProperties"), dict):
                default(value, schema["additionalProperties"])
    elif isinstance(obj, list) and "items" in schema:
        for item in obj:
            default(item, schema["items"])
    return obj


def without_empty(value: Any) -> Any:
    if isinstance(value, dict):
        cleaned = {k: without_empty(v) for k, v in value.items()}
        return {k: v for k, v in cleaned.items() if v not in ({}, [], None)}
    if isinstance(value, list):
        return [without_empty(v) for v in value]
    return value


@pytest.mark.parametrize("path", VALID, ids=[p.name for p in VALID])
def test_schema_defaults_equal_model_defaults(schema: dict[str, Any], path: Path) -> None:
    """What the API server stores after defaulting is what the operator's models assume."""
    obj = yaml.safe_load(path.read_text(encoding="utf-8"))
    server_side = default(copy.deepcopy(obj["spec"]), schema["properties"]["spec"])
    model_side = parse_model_deployment(obj).spec.model_dump(mode="json", exclude_none=True)
    assert without_empty(server_side) == without_empty(model_side)
