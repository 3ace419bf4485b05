"""``spec.rollout.analysis``: the health checks that decide whether a canary advances.

Checks run every ``interval`` against the canary (and, for the relative limits, against stable):
Kubernetes signals always, serving metrics when there are at least ``minRequests`` samples,
smoke tests and metadata comparison once per revision before traffic moves.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field

from .rules import ApiModel, Rule
from .types import DurationRange, ObjectName


class InconclusivePolicy(StrEnum):
    """What an analysis interval with too few requests to judge (below minRequests) means."""

    HOLD = "Hold"
    ROLLBACK = "Rollback"


class MetricSourceType(StrEnum):
    """Where serving metrics come from."""

    DIRECT = "direct"
    PROMETHEUS = "prometheus"


class MetricSource(ApiModel):
    """Where the operator reads request counts, errors and latency."""

    type: MetricSourceType = Field(
        default=MetricSourceType.DIRECT,
        description=(
            "direct: the operator scrapes each pod's /metrics itself (no add-ons). prometheus: "
            "PromQL against prometheusUrl."
        ),
    )
    prometheus_url: Annotated[str, Field(max_length=2048, pattern="^https?://[!-~]+$")] | None = (
        Field(
            default=None,
            description="Base URL of the Prometheus HTTP API, required for type prometheus.",
        )
    )

    __rules__ = (
        Rule(
            cel="self.type != 'prometheus' || has(self.prometheusUrl)",
            message="prometheusUrl is required when type is prometheus",
            check=lambda m: m.type != MetricSourceType.PROMETHEUS or m.prometheus_url is not None,
            field_path=".prometheusUrl",
            reason="FieldValueRequired",
        ),
        Rule(
            cel="self.type == 'prometheus' || !has(self.prometheusUrl)",
            message="prometheusUrl is only allowed when type is prometheus",
            check=lambda m: m.type == MetricSourceType.PROMETHEUS or m.prometheus_url is None,
            field_path=".prometheusUrl",
            reason="FieldValueForbidden",
        ),
    )


class ConfigMapKeyRef(ApiModel):
    """A key in a ConfigMap in the ModelDeployment's namespace."""

    name: ObjectName = Field(description="ConfigMap name.")
    key: Annotated[str, Field(min_length=1, max_length=253, pattern="^[-._a-zA-Z0-9]+$")] = Field(
        default="inputs.json",
        description="Key holding a JSON array of inference requests.",
    )


class SmokeTests(ApiModel):
    """Requests sent to canary and stable before the canary gets traffic.

    The canary must answer every request; its outputs must have the same names, datatypes and
    shapes as stable's and, when ``tolerance`` is set, numeric values within it.
    """

    inputs: Annotated[list[dict[str, Any]], Field(max_length=20)] = Field(
        default_factory=list,
        description=(
            "Inference requests as Open Inference Protocol v2 bodies, e.g. "
            '{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [...]}]}.'
        ),
    )
    config_map_ref: ConfigMapKeyRef | None = Field(
        default=None,
        description="More requests from a ConfigMap key holding a JSON array of such bodies.",
    )
    tolerance: float | None = Field(
        default=None,
        ge=0,
        description=(
            "Largest allowed absolute difference between canary and stable numeric outputs. "
            "Unset: only names, datatypes and shapes are compared (a new model may predict "
            "differently)."
        ),
    )

    __rules__ = (
        Rule(
            cel="(has(self.inputs) && self.inputs.size() > 0) || has(self.configMapRef)",
            message="smokeTests needs inputs or configMapRef",
            check=lambda s: bool(s.inputs) or s.config_map_ref is not None,
            reason="FieldValueRequired",
        ),
    )


class Analysis(ApiModel):
    """Limits the canary must stay within, and how often and how firmly they are judged."""

    interval: Annotated[str, DurationRange("1s", "1h")] = Field(
        default="30s", description="How often the checks run."
    )
    failure_threshold: int = Field(
        default=2,
        ge=1,
        le=100,
        description="Consecutive failed intervals that fail the canary.",
    )
    min_requests: int = Field(
        default=20,
        ge=0,
        le=1000000,
        description=(
            "Canary requests an interval needs before error rate and latency are judged. "
            "Fewer makes the interval inconclusive (see onInconclusive); 0 judges every interval."
        ),
    )
    on_inconclusive: InconclusivePolicy = Field(
        default=InconclusivePolicy.HOLD,
        description=(
            "Hold: stay at the current step (its clock does not advance) until enough traffic "
            "arrives, at most maxInconclusive intervals in a row; then the canary fails. "
            "Rollback: an inconclusive interval counts as a failed one."
        ),
    )
    max_inconclusive: int = Field(
        default=10,
        ge=1,
        le=1000,
        description=(
            "Consecutive inconclusive intervals tolerated under Hold before the canary fails, "
            "so low traffic cannot stall a rollout forever."
        ),
    )
    max_restarts: int = Field(
        default=2,
        ge=0,
        le=1000,
        description=(
            "Container restarts a canary pod may have before the canary fails; one liveness "
            "restart or a node hiccup is not a failed release. CrashLoopBackOff, OOMKilled, "
            "image pull and container config errors fail the canary at once regardless."
        ),
    )
    max_error_rate: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description=(
            "Highest canary error ratio (5xx responses / requests) as a fraction: 0.05 is 5%, "
            "1 turns the absolute limit off."
        ),
    )
    max_latency_p99: Annotated[str, DurationRange("1ms", "1h")] | None = Field(
        default=None,
        alias="maxLatencyP99",
        description="Highest canary 99th-percentile latency, e.g. 250ms. Unset: no limit.",
    )
    max_error_rate_increase: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description=(
            "Largest amount the canary's error ratio may exceed stable's, as a fraction: 0.01 "
            "allows stable's rate plus one percentage point. Unset: not compared."
        ),
    )
    max_latency_increase: float | None = Field(
        default=None,
        ge=0,
        le=100,
        description=(
            "Largest relative increase of the canary's p99 latency over stable's: 0.2 allows "
            "20% slower. Unset: not compared."
        ),
    )
    metric_source: MetricSource = Field(
        default_factory=MetricSource,
        description="Where request, error and latency metrics come from.",
    )
    smoke_tests: SmokeTests | None = Field(
        default=None,
        description=(
            "Requests the canary must answer like stable before it gets traffic. Unset: none."
        ),
    )
    compare_metadata: bool = Field(
        default=True,
        description=(
            "Fail a canary whose model metadata (input and output names, datatypes, shapes) "
            "differs from stable's."
        ),
    )
