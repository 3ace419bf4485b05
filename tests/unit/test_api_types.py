"""Durations, quantities and URIs: the small parsers the operator and the CRD must agree on."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated

import pytest
from modeldeploy.api import parse_duration, parse_quantity
from modeldeploy.api.types import MODEL_URI_PATTERN, DurationRange, ModelUri, Quantity
from pydantic import BaseModel, ValidationError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("5m", 300),
        ("1h", 3600),
        ("1m30s", 90),
        ("1h30m", 5400),
        ("1.5h", 5400),
        ("250ms", 0.25),
        ("0s", 0),
        ("2h45m30s500ms", 9930.5),
        ("90s", 90),
    ],
)
def test_parse_duration_returns_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["", "5", "5 minutes", "1d", "-1s", "1.s", ".5s", "1h 30m", "1S", "3ns"]
)
def test_parse_duration_refuses_what_the_crd_refuses(text: str) -> None:
    with pytest.raises(ValueError, match=r"e\.g\. 30s, 5m or 1h30m"):
        parse_duration(text)


class _Bounded(BaseModel):
    value: Annotated[str, DurationRange("10s", "1h")]


@pytest.mark.parametrize("text", ["10s", "1h", "59m59s", "0.5h"])
def test_duration_range_accepts_bounds_inclusive(text: str) -> None:
    assert _Bounded(value=text).value == text


@pytest.mark.parametrize("text", ["9s", "9999ms", "1h1s", "2h", "ten seconds", "1" * 30 + "s"])
def test_duration_range_refuses_out_of_range_or_malformed(text: str) -> None:
    with pytest.raises(ValidationError, match="must be a duration from 10s to 1h"):
        _Bounded(value=text)


@pytest.mark.parametrize(
    ("quantity", "value"),
    [
        (2, Decimal(2)),
        ("2", Decimal(2)),
        ("500m", Decimal("0.5")),
        ("1.5", Decimal("1.5")),
        ("1Ki", Decimal(1024)),
        ("1.5Gi", Decimal(1610612736)),
        ("256Mi", Decimal(268435456)),
        ("1k", Decimal(1000)),
        ("2e9", Decimal(2000000000)),
        ("1E3", Decimal(1000)),
        ("1E", Decimal(10) ** 18),
        ("100u", Decimal("0.0001")),
    ],
)
def test_parse_quantity_is_exact(quantity: int | str, value: Decimal) -> None:
    assert parse_quantity(quantity) == value


def test_quantities_compare_across_units() -> None:
    assert parse_quantity("1536Mi") == parse_quantity("1.5Gi")
    assert parse_quantity("2000m") == parse_quantity(2)


@pytest.mark.parametrize("quantity", ["lots", "1 Gi", "-1", "1GB", "", "1.5.5"])
def test_parse_quantity_refuses_malformed(quantity: str) -> None:
    with pytest.raises(ValueError, match="invalid quantity"):
        parse_quantity(quantity)


class _Resources(BaseModel):
    cpu: Quantity


@pytest.mark.parametrize("bad", [-1, True, "lots", "x" * 65, 1.5])
def test_quantity_field_gives_one_message(bad: object) -> None:
    with pytest.raises(ValidationError) as info:
        _Resources.model_validate({"cpu": bad})
    assert [e["msg"] for e in info.value.errors()] == [
        "Value error, must be a quantity such as 500m, 2, 512Mi or 1Gi"
    ]


class _Model(BaseModel):
    uri: ModelUri


@pytest.mark.parametrize(
    "uri",
    [
        "file:///models/fraud/model.joblib",
        "http://models.example.com/fraud.onnx",
        "https://models.example.com:8443/a/b?version=7",
        "s3://bucket/fraud/v7/model.joblib",
        "s3://my.bucket-1/prefix/",
        "gs://bucket_name/model.bst",
        "pvc://model-store/fraud/v7/model.joblib",
    ],
)
def test_model_uri_accepts_supported_schemes(uri: str) -> None:
    assert _Model(uri=uri).uri == uri


@pytest.mark.parametrize(
    "uri",
    [
        "ftp://host/model",
        "file://relative/path",
        "s3://bucket",
        "s3://Bucket/key",
        "pvc://claim",
        "pvc:///path",
        "https://host/with space",
        "/models/fraud.joblib",
        "hdfs://cluster/model",
    ],
)
def test_model_uri_refuses_other_forms(uri: str) -> None:
    with pytest.raises(ValidationError, match="uri must be file:///path"):
        _Model(uri=uri)


def test_uri_pattern_has_no_backslashes_so_it_reads_the_same_in_cel() -> None:
    assert "\\" not in MODEL_URI_PATTERN
    assert "'" not in MODEL_URI_PATTERN
    re.compile(MODEL_URI_PATTERN)
