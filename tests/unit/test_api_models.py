"""The pydantic models: defaults, helpers, strict parsing and the rules they share with CEL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from modeldeploy.api import (
    API_VERSION,
    AutoscalingPlan,
    Condition,
    InvalidModelDeployment,
    ModelDeployment,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    Phase,
    Scaling,
    parse_model_deployment,
    parse_spec,
    parse_status,
)
from modeldeploy.api.rules import ApiModel, Rule
from pydantic import BaseModel, ValidationError

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)


def manifest(spec: dict[str, Any] | None = None, name: str = "fraud") -> dict[str, Any]:
    body = {"model": {"uri": "s3://models/fraud/model.joblib", "format": "sklearn"}}
    body.update(spec or {})
    return {
        "apiVersion": API_VERSION,
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": "ml"},
        "spec": body,
    }


def errors_of(obj: dict[str, Any]) -> list[str]:
    with pytest.raises(InvalidModelDeployment) as info:
        parse_model_deployment(obj)
    return [str(e) for e in info.value.errors]


def test_minimal_manifest_gets_every_default() -> None:
    md = parse_model_deployment(manifest())
    assert md.spec.rollout.steps == [10, 25, 50, 100]
    assert md.spec.rollout.step_duration == "60s"
    assert md.spec.rollout.analysis.interval == "30s"
    assert md.spec.rollout.analysis.max_error_rate == 0.05
    assert md.spec.serving.port == 8080
    assert md.spec.serving.resources.requests.cpu == "100m"
    assert md.spec.traffic.router == "replicas"
    assert md.status == ModelDeploymentStatus()


def test_fields_are_camel_case_on_the_wire() -> None:
    spec = parse_spec({"model": {"uri": "s3://bucket/k", "format": "onnx", "predictProba": True}})
    dumped = spec.model_dump(mode="json", exclude_none=True)
    assert dumped["model"]["predictProba"] is True
    assert dumped["serving"]["maxBatchWaitMs"] == 5
    assert (
        "targetCPUUtilizationPercentage" in Scaling.model_json_schema(by_alias=True)["properties"]
    )


def test_snake_case_names_are_refused_on_the_wire_like_the_api_server_does() -> None:
    assert errors_of(manifest({"scaling": {"max_replicas": 3}})) == [
        "spec.scaling.max_replicas: Extra inputs are not permitted"
    ]


def test_python_code_may_still_build_models_by_field_name() -> None:
    assert Scaling(max_replicas=3, min_replicas=2).autoscaling


@pytest.mark.parametrize(
    ("scaling", "expected"),
    [
        ({"replicas": "3"}, "spec.scaling.replicas: Input should be a valid integer"),
        ({"replicas": 2.5}, "spec.scaling.replicas: Input should be a valid integer"),
        ({"replicas": True}, "spec.scaling.replicas: Input should be a valid integer"),
    ],
)
def test_parsing_is_strict_about_json_types(scaling: dict[str, Any], expected: str) -> None:
    assert errors_of(manifest({"scaling": scaling})) == [expected]


def test_every_error_is_reported_with_its_path() -> None:
    errors = errors_of(
        manifest({"scaling": {"replicas": -1}, "rollout": {"steps": [10, 101], "paused": "no"}})
    )
    assert sorted(errors) == [
        "spec.rollout.paused: Input should be a valid boolean",
        "spec.rollout.steps[1]: Input should be less than or equal to 100",
        "spec.scaling.replicas: Input should be greater than or equal to 0",
    ]


def test_rule_errors_point_at_the_rules_field_path() -> None:
    errors = errors_of(manifest({"scaling": {"minReplicas": 5, "maxReplicas": 3}}))
    assert errors == ["spec.scaling.minReplicas: minReplicas must not exceed maxReplicas"]


class _View(Mapping[str, Any]):
    """Stands in for kopf's read-only ``spec``/``status`` views, which are not dicts."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def test_parse_spec_accepts_kopf_style_mapping_views() -> None:
    spec = parse_spec(_View({"model": _View({"uri": "s3://bucket/k", "format": "onnx"})}))
    assert spec.model.format == "onnx"


def test_parse_spec_prefixes_paths_with_spec() -> None:
    with pytest.raises(InvalidModelDeployment, match=r"spec\.model\.uri: Field required"):
        parse_spec({"model": {"format": "onnx"}})


@pytest.mark.parametrize(
    ("scaling", "plan", "fixed"),
    [
        ({}, None, 1),
        ({"replicas": 0}, None, 0),
        ({"replicas": 7}, None, 7),
        ({"maxReplicas": 5}, AutoscalingPlan(1, 5, 80, None), 1),
        (
            {"minReplicas": 2, "maxReplicas": 5, "targetRequestsPerSecond": 50},
            AutoscalingPlan(2, 5, None, 50),
            1,
        ),
        (
            {"maxReplicas": 9, "targetCPUUtilizationPercentage": 60, "targetRequestsPerSecond": 50},
            AutoscalingPlan(1, 9, 60, 50),
            1,
        ),
    ],
)
def test_scaling_helpers_fill_in_defaults(
    scaling: dict[str, Any], plan: AutoscalingPlan | None, fixed: int
) -> None:
    model = parse_spec(
        {"model": {"uri": "s3://bucket/k", "format": "sklearn"}, "scaling": scaling}
    ).scaling
    assert model.autoscaling_plan() == plan
    assert model.autoscaling is (plan is not None)
    assert model.fixed_replicas() == fixed


def test_requests_and_limits_compare_as_quantities() -> None:
    ok = {"serving": {"resources": {"requests": {"memory": "1Gi"}, "limits": {"memory": "1024Mi"}}}}
    parse_model_deployment(manifest(ok))
    bad = {"serving": {"resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1G"}}}}
    assert errors_of(manifest(bad)) == [
        "spec.serving.resources.requests.memory: requests.memory must not exceed limits.memory"
        " (requests default to 100m CPU and 256Mi memory)"
    ]


def test_default_memory_request_is_checked_against_a_small_limit() -> None:
    small = {"serving": {"resources": {"limits": {"memory": "128Mi"}}}}
    assert errors_of(manifest(small)) == [
        "spec.serving.resources.requests.memory: requests.memory must not exceed limits.memory"
        " (requests default to 100m CPU and 256Mi memory)"
    ]


def test_metadata_is_kept_whole() -> None:
    obj = manifest()
    obj["metadata"].update(uid="u-1", generation=4, resourceVersion="99", labels={"team": "a"})
    md = parse_model_deployment(obj)
    assert (md.metadata.uid, md.metadata.generation, md.metadata.labels) == (
        "u-1",
        4,
        {"team": "a"},
    )
    assert md.metadata.model_dump()["resourceVersion"] == "99"


def test_generate_name_objects_without_a_name_are_accepted() -> None:
    obj = manifest()
    obj["metadata"] = {"generateName": "fraud-"}
    assert parse_model_deployment(obj).metadata.name is None


def test_wrong_kind_or_api_version_is_refused() -> None:
    obj = manifest()
    obj["apiVersion"] = "modeldeploy.io/v1"
    assert errors_of(obj) == ["apiVersion: Input should be 'modeldeploy.io/v1alpha1'"]


def full_status() -> ModelDeploymentStatus:
    return ModelDeploymentStatus(
        observed_generation=3,
        phase=Phase.PROGRESSING,
        conditions=[
            Condition(type="Ready", status="True", reason="Serving", last_transition_time=NOW)
        ],
        ready_replicas=4,
        stable_revision="7c9e6f1a2b",
        desired_weight=10,
        effective_weight=9.1,
        weight_summary="10% → 9.1%",
        step_started_at=NOW,
        kopf={"progress": {"handler": {"retries": 1}}},
    )


def test_status_round_trips_through_json() -> None:
    status = full_status()
    wire = status.model_dump(mode="json", exclude_none=True)
    assert wire["conditions"][0]["lastTransitionTime"] == "2026-11-27T12:00:00Z"
    assert wire["weightSummary"] == "10% → 9.1%"
    assert parse_status(wire) == status


def test_status_ignores_fields_it_does_not_know() -> None:
    wire = full_status().model_dump(mode="json") | {"fromANewerOperator": 1}
    assert parse_status(wire) == full_status()


def test_status_times_must_carry_a_timezone() -> None:
    with pytest.raises(ValidationError):
        Condition(
            type="Ready",
            status="True",
            reason="Serving",
            last_transition_time=NOW.replace(tzinfo=None),
        )


def test_status_lists_are_bounded_like_the_crd() -> None:
    wire = {
        "history": [
            {"revision": f"r{i}", "outcome": "Promoted", "finishedAt": "2026-11-27T12:00:00Z"}
            for i in range(11)
        ]
    }
    with pytest.raises(InvalidModelDeployment, match=r"status\.history"):
        parse_status(wire)


def test_parse_status_accepts_a_missing_status() -> None:
    assert parse_status(None) == ModelDeploymentStatus()


class _Pair(ApiModel):
    low: int
    high: int

    __rules__ = (
        Rule(
            cel="self.low <= self.high",
            message="low must not exceed high {really}",
            check=lambda p: p.low <= p.high,
            field_path=".low",
            reason="FieldValueInvalid",
        ),
    )


def test_a_rule_renders_to_cel_and_runs_in_python() -> None:
    schema = _Pair.model_json_schema()
    assert schema["x-kubernetes-validations"] == [
        {
            "rule": "self.low <= self.high",
            "message": "low must not exceed high {really}",
            "fieldPath": ".low",
            "reason": "FieldValueInvalid",
        }
    ]
    with pytest.raises(ValidationError) as info:
        _Pair(low=2, high=1)
    (error,) = info.value.errors()
    assert error["msg"] == "low must not exceed high {really}"
    assert error["ctx"] == {"field_path": ".low"}


def _models(root: type[BaseModel]) -> set[type[BaseModel]]:
    found = {root}
    for field in root.model_fields.values():
        for arg in _type_args(field.annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel) and arg not in found:
                found |= _models(arg)
    return found


def _type_args(annotation: Any) -> list[Any]:
    args = [annotation]
    for inner in getattr(annotation, "__args__", ()):
        args.extend(_type_args(inner))
    return args


def _name(model: object) -> str:
    return str(getattr(model, "__name__", model))


SPEC_AND_STATUS_MODELS = sorted(
    _models(ModelDeploymentSpec) | _models(ModelDeploymentStatus), key=_name
)
ALL_MODELS = sorted(_models(ModelDeployment), key=_name)


@pytest.mark.parametrize("model", SPEC_AND_STATUS_MODELS, ids=_name)
def test_optional_fields_default_to_unset(model: type[BaseModel]) -> None:
    """A nullable field with a real default could not be unset through the API server, which
    replaces a null with the schema default; pydantic would keep the null."""
    for name, field in model.model_fields.items():
        nullable = type(None) in _type_args(field.annotation)
        if nullable:
            assert field.default is None, f"{model.__name__}.{name}"


@pytest.mark.parametrize("model", ALL_MODELS, ids=_name)
def test_every_field_is_described(model: type[BaseModel]) -> None:
    for name, field in model.model_fields.items():
        assert field.description, f"{model.__name__}.{name} has no description"
