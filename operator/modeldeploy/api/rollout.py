"""``spec.rollout``: how a new revision moves from canary to stable. Not part of the revision."""

from __future__ import annotations

from enum import StrEnum
from itertools import pairwise
from typing import Annotated

from pydantic import Field

from .analysis import Analysis
from .rules import ApiModel, Rule, Rules
from .types import DURATION_PATTERN, DurationRange, parse_duration

DEFAULT_STEPS = (10, 25, 50, 100)
MAX_STEPS = 20


class FailurePolicy(StrEnum):
    """What happens when a canary fails its checks or misses its deadline."""

    ROLLBACK = "Rollback"
    PAUSE = "Pause"


def _strictly_increasing(steps: list[int]) -> bool:
    return all(a < b for a, b in pairwise(steps))


Steps = Annotated[
    list[Annotated[int, Field(ge=1, le=100)]],
    Field(min_length=1, max_length=MAX_STEPS),
    Rules(
        # isSorted() plus "each value once" rather than an indexed comprehension: it works on
        # every Kubernetes version with CEL validation, not only 1.32+.
        Rule(
            cel="self.isSorted() && self.all(x, self.exists_one(y, y == x))",
            message="steps must be strictly increasing, e.g. [10, 25, 50, 100]",
            check=_strictly_increasing,
        ),
        Rule(
            # Guarded: an empty list is refused by minItems, and must not also raise an index
            # error from this rule.
            cel="self.size() == 0 || self[self.size() - 1] == 100",
            message="the last step must be 100 (all traffic on the canary before promotion)",
            check=lambda steps: not steps or steps[-1] == 100,
        ),
    ),
]


class Rollout(ApiModel):
    """Canary steps, their pacing, and what to do on failure."""

    steps: Steps = Field(
        default_factory=lambda: list(DEFAULT_STEPS),
        description=(
            "Canary traffic percent per step, strictly increasing and ending at 100. [100] "
            "switches at once after the checks pass."
        ),
    )
    step_duration: Annotated[str, DurationRange("1s", "24h")] = Field(
        default="60s",
        description="Healthy time required at each step before the next, e.g. 30s, 5m, 1h30m.",
    )
    paused: bool = Field(
        default=False,
        description=(
            "Hold the canary at its current step; checks keep running. Set false to resume."
        ),
    )
    on_failure: FailurePolicy = Field(
        default=FailurePolicy.ROLLBACK,
        description=(
            "Rollback: send all traffic back to stable, scale the canary down and reject the "
            "revision. Pause: keep the current weights and wait for a person."
        ),
    )
    progress_deadline: Annotated[str, DurationRange("10s", "24h")] = Field(
        default="300s",
        description="A canary whose pods are not all Ready after this long has failed.",
    )
    rollback_window: Annotated[str, DurationRange("0s", "168h")] = Field(
        default="0s",
        description=(
            "After promotion, keep judging the new stable with the same checks for this long "
            "and roll back to the previous revision if they fail. 0s: no watch after promotion."
        ),
    )
    retry: Annotated[str, Field(max_length=63)] | None = Field(
        default=None,
        description=(
            "Opaque token. A rolled-back revision is not tried again until the model or serving "
            "spec changes, or until this value changes (e.g. set it to a date)."
        ),
    )
    analysis: Analysis = Field(
        default_factory=Analysis, description="Health checks that gate each step."
    )

    __rules__ = (
        Rule(
            cel=(
                "!has(self.analysis) || !has(self.analysis.interval) || !has(self.stepDuration)"
                f" || !self.analysis.interval.matches('{DURATION_PATTERN}')"
                f" || !self.stepDuration.matches('{DURATION_PATTERN}')"
                " || duration(self.analysis.interval) <= duration(self.stepDuration)"
            ),
            message="analysis.interval must not exceed stepDuration, or steps would pass unchecked",
            check=lambda r: parse_duration(r.analysis.interval) <= parse_duration(r.step_duration),
            field_path=".analysis.interval",
        ),
    )
