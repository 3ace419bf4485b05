"""Pure judgements of a canary's health: Kubernetes signals, serving metrics, model gates.

Each `judge_*` takes plain evidence (gathered elsewhere) and the analysis settings and returns a
`Check` — Passed, Failed or Inconclusive, with the observed value, the threshold and the number
of samples, so a rollback record can say exactly what failed and by how much.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

from .api import Analysis, CheckOutcome, Shadow, parse_duration
from .api.status import CheckResult
from .observed import pod_ready

PASSED, FAILED, INCONCLUSIVE = CheckOutcome.PASSED, CheckOutcome.FAILED, CheckOutcome.INCONCLUSIVE
# Waiting reasons that mean the container will not start without a change to the pod.
BAD_WAITING = frozenset(
    {
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)


@dataclass(frozen=True)
class Check:
    name: str
    outcome: CheckOutcome
    value: str | None = None
    threshold: str | None = None
    samples: int | None = None
    message: str = ""
    # Hard failures (a crash loop, an image that cannot be pulled) skip failureThreshold.
    hard: bool = False

    def as_result(self) -> CheckResult:
        """The check as status records it (no message when there is nothing to say)."""
        return CheckResult(
            name=self.name,
            outcome=self.outcome,
            value=self.value,
            threshold=self.threshold,
            samples=self.samples,
            message=self.message or None,
        )


@dataclass(frozen=True)
class RevisionMetrics:
    """Inference requests of one revision over the judged window, summed across its pods.

    `buckets` maps a histogram upper bound (seconds, `math.inf` last) to the cumulative count.
    """

    requests: float
    errors: float
    buckets: dict[float, float] = field(default_factory=dict)
    p99_seconds: float | None = None  # set directly by sources that compute it (Prometheus)

    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def p99(self) -> float | None:
        if self.p99_seconds is not None:
            return self.p99_seconds
        return histogram_quantile(0.99, self.buckets)


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus' histogram_quantile over cumulative buckets, with linear interpolation.

    Example: buckets {0.01: 90, 0.1: 100, inf: 100} → p99 lies in (0.01, 0.1]: 0.01 + 0.09 * 9/10
    = 0.091 seconds.
    """
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # as Prometheus: the highest finite bound
            width = count - lower_count
            return lower_bound + (bound - lower_bound) * (
                (rank - lower_count) / width if width else 1
            )
        lower_bound, lower_count = bound, count
    return lower_bound


def percent(x: float) -> str:
    return f"{x * 100:.3g}%"


def millis(seconds: float) -> str:
    return f"{seconds * 1000:.0f}ms"


def judge_pods(
    pods: list[dict[str, Any]],
    created: dt.datetime | None,
    now: dt.datetime,
    deadline: str,
    max_restarts: int = 2,
) -> Check:
    """Kubernetes signals of the canary's pods, the cheapest and fastest evidence."""
    for pod in pods:
        name = pod["metadata"]["name"]
        for status in pod.get("status", {}).get("containerStatuses", []) or []:
            failure = container_failure(status, max_restarts)
            if failure is not None:
                value, threshold = failure
                return Check(
                    "podsHealthy",
                    FAILED,
                    value,
                    threshold,
                    message=f"pod {name}: {value}",
                    hard=True,
                )
    ready = sum(1 for p in pods if pod_ready(p))
    if pods and ready == len(pods):
        return Check("podsReady", PASSED, f"{ready}/{len(pods)}")
    # Each pod gets the whole deadline from its own creation: pods added at a later step are not
    # held to the canary's start. No pods at all count from the Deployment's creation.
    limit = parse_duration(deadline)
    waiting = [p for p in pods if not pod_ready(p)]
    starts = [_created(p) or created for p in waiting] if waiting else [created]
    waited = max(((now - s).total_seconds() for s in starts if s is not None), default=0.0)
    if waited > limit:
        return Check(
            "podsReady",
            FAILED,
            f"{ready}/{len(pods)} ready, one waiting {waited:.0f}s",
            f"all ready within {deadline}",
            hard=True,
        )
    return Check("podsReady", INCONCLUSIVE, f"{ready}/{len(pods)}", f"all ready within {deadline}")


def _created(pod: dict[str, Any]) -> dt.datetime | None:
    value = pod.get("metadata", {}).get("creationTimestamp")
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def container_failure(status: dict[str, Any], max_restarts: int = 2) -> tuple[str, str] | None:
    """(observed, expected) when a container status shows it will not run properly: the most
    telling reason first (OOMKilled explains the CrashLoopBackOff it causes).

    Restarts alone fail only above `max_restarts`: one liveness restart is not a broken release,
    while a crash loop shows as CrashLoopBackOff and fails at once.
    Example: max_restarts 2 → 2 restarts pass, 3 fail ("3 restarts" vs "<= 2 restarts").
    """
    last = (status.get("lastState") or {}).get("terminated") or {}
    if last.get("reason") == "OOMKilled":
        return "OOMKilled", "no container failures"
    waiting = (status.get("state") or {}).get("waiting") or {}
    if waiting.get("reason") in BAD_WAITING:
        return str(waiting["reason"]), "no container failures"
    restarts = int(status.get("restartCount") or 0)
    if restarts > max_restarts:
        return f"{restarts} restarts", f"<= {max_restarts} restarts"
    return None


def judge_metrics(
    analysis: Analysis, canary: RevisionMetrics | None, stable: RevisionMetrics | None
) -> list[Check]:
    """Error ratio and p99 latency of the canary, absolute and relative to stable.

    Below `minRequests` canary samples nothing is judged: one Inconclusive check says so.
    """
    if canary is None:
        return [Check("metrics", INCONCLUSIVE, message="no metrics could be read for the canary")]
    samples = int(canary.requests)
    if samples < analysis.min_requests:
        return [
            Check(
                "requests",
                INCONCLUSIVE,
                str(samples),
                f">= {analysis.min_requests}",
                samples,
                f"{samples} canary requests, fewer than minRequests {analysis.min_requests}",
            )
        ]
    checks = []
    rate = canary.error_rate()
    outcome = FAILED if rate > analysis.max_error_rate else PASSED
    checks.append(
        Check("errorRate", outcome, percent(rate), percent(analysis.max_error_rate), samples)
    )
    p99 = canary.p99()
    if analysis.max_latency_p99 is not None and p99 is not None:
        limit = parse_duration(analysis.max_latency_p99)
        outcome = FAILED if p99 > limit else PASSED
        checks.append(Check("latencyP99", outcome, millis(p99), analysis.max_latency_p99, samples))
    comparable = stable is not None and stable.requests >= max(analysis.min_requests, 1)
    if comparable and stable is not None and analysis.max_error_rate_increase is not None:
        limit = stable.error_rate() + analysis.max_error_rate_increase
        outcome = FAILED if rate > limit else PASSED
        checks.append(
            Check("errorRateVsStable", outcome, percent(rate), f"<= {percent(limit)}", samples)
        )
    stable_p99 = stable.p99() if comparable and stable is not None else None
    if stable_p99 and p99 is not None and analysis.max_latency_increase is not None:
        limit = stable_p99 * (1 + analysis.max_latency_increase)
        outcome = FAILED if p99 > limit else PASSED
        checks.append(
            Check("latencyVsStable", outcome, millis(p99), f"<= {millis(limit)}", samples)
        )
    return checks


@dataclass(frozen=True)
class ShadowMetrics:
    """What stable's servers counted about the copies they sent the canary over the judged
    window, summed across stable's pods (`modelserver_shadow_*`, labelled with the canary)."""

    mirrored: float = 0.0
    dropped: float = 0.0
    agreed: float = 0.0
    disagreed: float = 0.0
    errors: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # the shadow's answer time

    def compared(self) -> int:
        return int(self.agreed + self.disagreed)

    def sent(self) -> int:
        """Copies with an outcome: compared, or not answered with a 2xx."""
        return int(self.agreed + self.disagreed + self.errors)


def judge_shadow(analysis: Analysis, shadow: Shadow, metrics: ShadowMetrics | None) -> list[Check]:
    """The shadow phase's checks: agreement with stable, and the canary's own error ratio and
    p99 on the copies (against the same limits as live traffic).

    Below `minRequests` copies with an outcome nothing is judged, as for live traffic.
    Example: 57 compared, 55 agreed, minAgreement 0.99 → shadowAgreement Failed, 96.5% vs >= 99%.
    """
    if metrics is None:
        return [
            Check(
                "shadowMetrics",
                INCONCLUSIVE,
                message="no shadow metrics could be read from stable's pods",
            )
        ]
    sent, compared = metrics.sent(), metrics.compared()
    if sent < analysis.min_requests:
        dropped = f"; {int(metrics.dropped)} copies dropped (queue full)" if metrics.dropped else ""
        return [
            Check(
                "shadowRequests",
                INCONCLUSIVE,
                str(sent),
                f">= {analysis.min_requests}",
                sent,
                f"{sent} requests mirrored to the canary, fewer than minRequests "
                f"{analysis.min_requests}{dropped}",
            )
        ]
    checks = []
    if compared:
        agreement = metrics.agreed / compared
        failed = agreement < shadow.min_agreement
        message = (
            f"the canary's answers agreed with stable's on {int(metrics.agreed)} of {compared} "
            f"mirrored requests ({percent(agreement)}), below shadow.minAgreement "
            f"{percent(shadow.min_agreement)}; rejected before it served a user"
            if failed
            else ""
        )
        checks.append(
            Check(
                "shadowAgreement",
                FAILED if failed else PASSED,
                percent(agreement),
                f">= {percent(shadow.min_agreement)}",
                compared,
                message,
            )
        )
    rate = metrics.errors / sent if sent else 0.0
    outcome = FAILED if rate > analysis.max_error_rate else PASSED
    checks.append(
        Check("shadowErrorRate", outcome, percent(rate), percent(analysis.max_error_rate), sent)
    )
    p99 = histogram_quantile(0.99, metrics.buckets)
    if analysis.max_latency_p99 is not None and p99 is not None:
        limit = parse_duration(analysis.max_latency_p99)
        outcome = FAILED if p99 > limit else PASSED
        checks.append(
            Check("shadowLatencyP99", outcome, millis(p99), analysis.max_latency_p99, sent)
        )
    return checks


SHADOW_NAMES = {
    "errorRate": "shadowErrorRate",
    "latencyP99": "shadowLatencyP99",
    "requests": "shadowRequests",
    "metrics": "shadowMetrics",
}


def judge_shadow_alone(analysis: Analysis, canary: RevisionMetrics | None) -> list[Check]:
    """The shadow phase when the gateway mirrors: the canary's own error ratio and p99 over the
    copies it answered (it serves nothing else at 0%), as shadow checks; nothing compares its
    answers with stable's."""
    checks = judge_metrics(analysis, canary, None)
    return [
        Check(
            SHADOW_NAMES.get(c.name, c.name), c.outcome, c.value, c.threshold, c.samples,
            c.message.replace("canary requests", "requests mirrored to the canary"), c.hard,
        )
        for c in checks
    ]  # fmt: skip


def compare_metadata(canary: dict[str, Any], stable: dict[str, Any]) -> Check:
    """Inputs and outputs (names, datatypes, shapes) of the canary's model against stable's."""

    def signature(meta: dict[str, Any]) -> dict[str, list[tuple[str, str, tuple[int, ...]]]]:
        return {
            side: sorted(
                (t["name"], t["datatype"], tuple(t.get("shape", []))) for t in meta.get(side, [])
            )
            for side in ("inputs", "outputs")
        }

    ours, theirs = signature(canary), signature(stable)
    if ours == theirs:
        return Check("modelMetadata", PASSED)
    diffs = [
        f"{side}: canary {ours[side]} vs stable {theirs[side]}"
        for side in ours
        if ours[side] != theirs[side]
    ]
    return Check("modelMetadata", FAILED, message="; ".join(diffs), hard=True)


def check_metadata(canary: dict[str, Any]) -> Check:
    """Model metadata judged on its own (no ready stable pod to compare with): it must name its
    inputs and outputs."""
    if not canary.get("inputs") or not canary.get("outputs"):
        return Check(
            "modelMetadata", FAILED, message="metadata lists no inputs or outputs", hard=True
        )
    return Check("modelMetadata", PASSED, message="no ready stable pod to compare with")


def check_answers(canary: list[dict[str, Any]]) -> Check:
    """Smoke-test responses judged on their own, when no stable pod is there to compare with:
    every request answered with at least one named output carrying data."""
    for index, response in enumerate(canary):
        outputs = response.get("outputs") if isinstance(response, dict) else None
        if not outputs or not all(isinstance(o, dict) and "data" in o for o in outputs):
            return Check(
                "smokeTests",
                FAILED,
                message=f"input {index}: the answer has no outputs with data",
                hard=True,
            )
    return Check(
        "smokeTests",
        PASSED,
        samples=len(canary),
        message="answered every request; no ready stable pod to compare predictions with",
    )


def compare_predictions(
    canary: list[dict[str, Any]], stable: list[dict[str, Any]], tolerance: float | None
) -> Check:
    """Smoke-test responses: same output names, datatypes, shapes; values within `tolerance`."""
    worst = 0.0
    for index, (ours, theirs) in enumerate(zip(canary, stable, strict=True)):
        a = {o["name"]: o for o in ours.get("outputs", [])}
        b = {o["name"]: o for o in theirs.get("outputs", [])}
        if a.keys() != b.keys():
            return Check(
                "smokeTests",
                FAILED,
                message=f"input {index}: outputs {sorted(a)} vs stable {sorted(b)}",
                hard=True,
            )
        for name in a:
            if (a[name]["datatype"], a[name]["shape"]) != (b[name]["datatype"], b[name]["shape"]):
                return Check(
                    "smokeTests",
                    FAILED,
                    message=f"input {index}: output {name} differs in type or shape",
                    hard=True,
                )
            if tolerance is None:
                continue
            for x, y in zip(a[name]["data"], b[name]["data"], strict=True):
                if isinstance(x, (int, float)) and isinstance(y, (int, float)):
                    worst = max(worst, abs(x - y))
    if tolerance is not None and worst > tolerance:
        return Check(
            "smokeTests",
            FAILED,
            f"{worst:.4g}",
            f"<= {tolerance:g}",
            len(canary),
            "canary predictions differ from stable's",
            hard=True,
        )
    return Check(
        "smokeTests",
        PASSED,
        f"{worst:.4g}" if tolerance is not None else None,
        None if tolerance is None else f"<= {tolerance:g}",
        len(canary),
    )
