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


class ShadowMirror(StrEnum):
    """Who copies live requests to the canary during its shadow phase."""

    SERVER = "Server"
    GATEWAY = "Gateway"


class Shadow(ApiModel):
    """A phase before any live traffic moves: the canary answers copies of live requests.

    Stable's model servers copy ``fraction`` of their inference requests to the canary's pods
    after answering them (the caller never waits for, nor sees, the copy), compare the canary's
    answer with their own and export the counts; the operator judges agreement, and the
    canary's error ratio and p99 on the copies, every analysis interval for ``duration``.
    """

    duration: Annotated[str, DurationRange("1s", "24h")] = Field(
        default="60s",
        description=(
            "How long the canary must shadow stable, with every analysis interval passing, "
            "before it gets its first live traffic, e.g. 5m."
        ),
    )
    fraction: float = Field(
        default=0.1,
        gt=0,
        le=1,
        description=(
            "Share of each stable pod's inference requests copied to the canary: 0.1 is 10%, "
            "1 copies every request."
        ),
    )
    min_agreement: float = Field(
        default=0.99,
        ge=0,
        le=1,
        description=(
            "Lowest share of compared answers that must agree with stable's in an interval: "
            "0.99 is 99%. Intervals with fewer than analysis.minRequests compared answers are "
            "inconclusive, as for the other checks."
        ),
    )
    tolerance: float = Field(
        default=0,
        ge=0,
        description=(
            "Largest absolute difference between a canary and a stable numeric output for the "
            "answers to agree, as smokeTests.tolerance; other values must be equal. Output "
            "names, datatypes and shapes must always match. 0: numbers must be equal."
        ),
    )
    mirror: ShadowMirror = Field(
        default=ShadowMirror.SERVER,
        description=(
            "Server: stable's model servers copy the requests and compare the canary's answers "
            "with their own; works with any router. Gateway: the HTTPRoute's RequestMirror "
            "filter copies them, and the GRPCRoute's the gRPC calls when gRPC is on (router "
            "gateway-api, Gateway API v1.2 or later for its fraction); the gateway drops the "
            "canary's answers unseen, so there is no agreement to judge: the canary is judged "
            "on its own error ratio and p99 over the copies, and minAgreement, tolerance and "
            "maxQueue do not apply."
        ),
    )
    max_queue: int = Field(
        default=1000,
        ge=1,
        le=100000,
        description=(
            "Copies a stable pod holds for the canary at most; more are dropped and counted "
            "(modelserver_shadow_dropped_total), never waited for."
        ),
    )


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
    shadow: Shadow | None = Field(
        default=None,
        description=(
            "Mirror a share of live requests to the canary before it gets any traffic, and "
            "reject it if its answers disagree with stable's. Unset: no shadow phase."
        ),
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
        Rule(
            cel=(
                "!has(self.shadow) || !has(self.shadow.duration) || !has(self.analysis)"
                " || !has(self.analysis.interval)"
                f" || !self.analysis.interval.matches('{DURATION_PATTERN}')"
                f" || !self.shadow.duration.matches('{DURATION_PATTERN}')"
                " || duration(self.shadow.duration) >= duration(self.analysis.interval)"
            ),
            message=(
                "shadow.duration must be at least analysis.interval, or the shadow phase would "
                "end before it was judged once"
            ),
            check=lambda r: (
                r.shadow is None
                or parse_duration(r.shadow.duration) >= parse_duration(r.analysis.interval)
            ),
            field_path=".shadow.duration",
        ),
    )
