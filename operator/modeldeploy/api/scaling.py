"""``spec.scaling``: a fixed replica count or an autoscaling range. Not part of the revision."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field

from .rules import ApiModel, Rule

MAX_REPLICAS = 1000
DEFAULT_REPLICAS = 1
DEFAULT_TARGET_CPU = 80


@dataclass(frozen=True)
class AutoscalingPlan:
    """The autoscaling settings with defaults filled in, as the HPA builder needs them."""

    min_replicas: int
    max_replicas: int
    target_cpu_utilization_percentage: int | None
    target_requests_per_second: int | None


class Scaling(ApiModel):
    """How many serving pods run.

    Either ``replicas`` (fixed) or ``maxReplicas`` with optional ``minReplicas`` and targets
    (autoscaling through a HorizontalPodAutoscaler). Neither: one fixed replica.
    """

    replicas: int | None = Field(
        default=None,
        ge=0,
        le=MAX_REPLICAS,
        description=(
            "Fixed number of serving pods (0 stops serving). Unset and no autoscaling: 1. "
            "Cannot be combined with minReplicas, maxReplicas or targets."
        ),
    )
    min_replicas: int | None = Field(
        default=None,
        ge=1,
        le=MAX_REPLICAS,
        description="Autoscaling lower bound. Unset with maxReplicas set: 1.",
    )
    max_replicas: int | None = Field(
        default=None,
        ge=1,
        le=MAX_REPLICAS,
        description="Autoscaling upper bound; setting it turns autoscaling on.",
    )
    target_cpu_utilization_percentage: int | None = Field(
        default=None,
        alias="targetCPUUtilizationPercentage",
        ge=1,
        le=100,
        description=(
            "Target average CPU use as a percent of the CPU request. Unset and no other target: "
            f"{DEFAULT_TARGET_CPU}."
        ),
    )
    target_requests_per_second: int | None = Field(
        default=None,
        ge=1,
        le=100000,
        description=(
            "Target inference requests per second per pod. Needs a custom metrics API (for "
            "example prometheus-adapter) serving the operator's request-rate metric."
        ),
    )

    @property
    def autoscaling(self) -> bool:
        """True when an HPA should manage the replica count."""
        return self.max_replicas is not None

    def fixed_replicas(self) -> int:
        """The replica count without autoscaling: ``replicas``, or 1 when unset."""
        return DEFAULT_REPLICAS if self.replicas is None else self.replicas

    def autoscaling_plan(self) -> AutoscalingPlan | None:
        """Autoscaling bounds and targets with defaults applied, or None for a fixed size."""
        if self.max_replicas is None:
            return None
        cpu = self.target_cpu_utilization_percentage
        if cpu is None and self.target_requests_per_second is None:
            cpu = DEFAULT_TARGET_CPU
        return AutoscalingPlan(
            min_replicas=self.min_replicas or 1,
            max_replicas=self.max_replicas,
            target_cpu_utilization_percentage=cpu,
            target_requests_per_second=self.target_requests_per_second,
        )

    __rules__ = (
        Rule(
            cel=(
                "!has(self.replicas) || !(has(self.minReplicas) || has(self.maxReplicas)"
                " || has(self.targetCPUUtilizationPercentage) || has(self.targetRequestsPerSecond))"
            ),
            message=(
                "set either replicas (fixed size) or minReplicas/maxReplicas/targets "
                "(autoscaling), not both"
            ),
            check=lambda s: (
                s.replicas is None
                or (
                    s.min_replicas is None
                    and s.max_replicas is None
                    and s.target_cpu_utilization_percentage is None
                    and s.target_requests_per_second is None
                )
            ),
            field_path=".replicas",
            reason="FieldValueForbidden",
        ),
        Rule(
            cel=(
                "has(self.maxReplicas) || !(has(self.minReplicas)"
                " || has(self.targetCPUUtilizationPercentage) || has(self.targetRequestsPerSecond))"
            ),
            message="maxReplicas is required when minReplicas or a target is set",
            check=lambda s: (
                s.max_replicas is not None
                or (
                    s.min_replicas is None
                    and s.target_cpu_utilization_percentage is None
                    and s.target_requests_per_second is None
                )
            ),
            field_path=".maxReplicas",
            reason="FieldValueRequired",
        ),
        Rule(
            cel=(
                "!has(self.minReplicas) || !has(self.maxReplicas)"
                " || self.minReplicas <= self.maxReplicas"
            ),
            message="minReplicas must not exceed maxReplicas",
            check=lambda s: (
                s.min_replicas is None or s.max_replicas is None or s.min_replicas <= s.max_replicas
            ),
            field_path=".minReplicas",
        ),
    )
