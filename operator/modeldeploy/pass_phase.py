"""Where the rollout stands at the start of a pass, decided once: from status, spec, the revisions
that have a Deployment, and `now`.

`reconcile` works the phase out right after reading; the smoke inputs it reads, the evidence it
gathers and the next state the rollout decides all follow from that one value, so no module asks
another which phase the canary is in. Pure.

Not to be confused with ``status.phase``, the one-word summary written for people (`api.Phase`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from .actions import ABORT, ONE_SHOT, PROMOTE, paused, requested, retry_token
from .api import CheckOutcome, ModelDeployment, RolloutOutcome, parse_duration
from .api.status import AnalysisStatus

SPEC_CAUSE, OPERATOR_CAUSE = "Spec", "Operator"


@dataclass(frozen=True)
class Admission:
    """Whether a new canary may start now. `cause`: Spec when the user changed model or serving,
    Operator when only the operator's rendering changed (default image, template, credential).
    `waiting`: set when an Operator-caused rollout must wait for a fleet-wide slot (why)."""

    cause: str = SPEC_CAUSE
    waiting: str | None = None


class PhaseKind(StrEnum):
    """What this pass does with the desired revision; the rules are tried in this order."""

    # Nothing to roll back to (no stable yet, its Deployment is gone, or the model is scaled to
    # zero on purpose): the desired revision goes straight in.
    FIRST_DEPLOY = "FirstDeploy"
    # The desired revision is stable; a canary still running is aborted.
    STABLE = "Stable"
    # The desired revision was rolled back under the current retry token: stable stays.
    REJECTED = "Rejected"
    # An operator-caused revision waits for a fleet-wide rollout slot.
    QUEUED = "Queued"
    # The desired revision starts as a canary (replacing the one running, if any).
    NEW_CANARY = "NewCanary"
    # The desired revision is the running canary: it goes on, or a person's request acts on it.
    CANARY = "Canary"


class CanaryStage(StrEnum):
    """Where the running canary stands, by the analysis in status."""

    GATES = "Gates"  # its model gates have not passed: no traffic
    SHADOW_PENDING = "ShadowPending"  # gates passed; the shadow phase waits for its pods
    SHADOW = "Shadow"  # it answers copies of stable's requests and serves no user
    TRAFFIC = "Traffic"  # it serves live traffic at its step


class Judged(StrEnum):
    """What this pass gathers evidence about: exactly what its decision reads, and no more (the
    evidence is I/O on the pods and Prometheus, each call bounded by a timeout)."""

    NOTHING = "Nothing"
    CANARY = "Canary"  # the running canary, at its stage
    WINDOW = "Window"  # the promoted revision still in its rollback window


@dataclass(frozen=True)
class PassPhase:
    """The rollout as this pass finds it.

    `stable`: as status has it (None before the first revision went in).
    `canary`: the stage of status's canary when it is the desired revision and not rejected
    (None otherwise); evidence about it is gathered whenever it is set, as status says it runs.
    `watched`: the revision that stays stable this pass when it was promoted less than
    rollbackWindow ago, so its checks go on; `previous`: the revision kept warm for it meanwhile.
    `requests`: a person's one-shot requests not acted on yet (action → token); `paused`: by the
    spec or by the annotation.
    """

    kind: PhaseKind
    desired: str
    stable: str | None
    canary: CanaryStage | None = None
    gates_passed: bool = False
    analysis_due: bool = False
    watched: str | None = None
    previous: str | None = None
    admission: Admission = field(default_factory=Admission)
    requests: Mapping[str, str] = field(default_factory=dict)
    paused: bool = False

    @property
    def decided_by_request(self) -> bool:
        """A person asked to promote or abort the running canary: this pass carries it out
        whatever the canary's checks would say."""
        return self.kind is PhaseKind.CANARY and bool({ABORT, PROMOTE} & set(self.requests))

    @property
    def judged(self) -> Judged:
        """The canary while it runs on its own checks; else, when stable stays and was promoted
        less than rollbackWindow ago, that revision; else nothing (a new canary starting, a
        rejected or first revision, a request carried out)."""
        if self.kind is PhaseKind.CANARY and self.canary is not None:
            return Judged.NOTHING if self.decided_by_request else Judged.CANARY
        if self.watched is not None and self.kind in (PhaseKind.STABLE, PhaseKind.QUEUED):
            return Judged.WINDOW
        return Judged.NOTHING


def phase_of(
    md: ModelDeployment,
    desired: str,
    existing: Iterable[str],
    now: dt.datetime,
    admission: Admission | None = None,
) -> PassPhase:
    """Where the rollout of `desired` stands. `existing`: revisions that have a Deployment.

    Example: status has stable S and canary R at step 1 with its gates passed, the spec asks for R,
    both Deployments exist → kind CANARY, canary stage TRAFFIC.
    """
    admission = admission or Admission()
    existing = set(existing)
    status = md.status
    stable, canary = status.stable_revision, status.canary_revision
    rejected = is_rejected(md, desired)
    gates = gates_passed(md, status.analysis)
    no_pods_wanted = not md.spec.scaling.autoscaling and md.spec.scaling.fixed_replicas() == 0
    if stable is None or stable not in existing or no_pods_wanted:
        kind = PhaseKind.FIRST_DEPLOY
    elif desired == stable:
        kind = PhaseKind.STABLE
    elif rejected:
        kind = PhaseKind.REJECTED
    elif canary != desired:
        queued = canary is None and admission.waiting is not None
        kind = PhaseKind.QUEUED if queued else PhaseKind.NEW_CANARY
    else:
        kind = PhaseKind.CANARY
    runs = stable is not None and canary == desired and not rejected
    stays = desired if kind is PhaseKind.FIRST_DEPLOY else stable
    watched = stays if stays is not None and in_rollback_window(md, stays, now) else None
    return PassPhase(
        kind=kind,
        desired=desired,
        stable=stable,
        canary=_stage(md, gates) if runs else None,
        gates_passed=gates,
        analysis_due=analysis_due(md, now),
        watched=watched,
        previous=previous_revision(md, watched, existing) if watched else None,
        admission=admission,
        requests={a: token for a in ONE_SHOT if (token := requested(md, a))},
        paused=paused(md),
    )


def _stage(md: ModelDeployment, gates: bool) -> CanaryStage:
    analysis = md.status.analysis
    if not gates:
        return CanaryStage.GATES
    if shadowing(md, analysis):
        return CanaryStage.SHADOW
    started = analysis is not None and (analysis.shadow_started_at or analysis.traffic_started_at)
    if md.spec.rollout.shadow is not None and not started:
        return CanaryStage.SHADOW_PENDING
    return CanaryStage.TRAFFIC


def is_rejected(md: ModelDeployment, revision: str) -> bool:
    """Rejected under the current retry token: changing spec.rollout.retry retries it."""
    return any(
        r.revision == revision and r.retry_token == retry_token(md)
        for r in md.status.rejected_revisions
    )


def analysis_due(md: ModelDeployment, now: dt.datetime) -> bool:
    """Metrics are read once per spec.rollout.analysis.interval."""
    analysis = md.status.analysis
    last = analysis.last_run_at if analysis else None
    interval = parse_duration(md.spec.rollout.analysis.interval)
    return last is None or (now - last).total_seconds() >= interval


def gates_passed(md: ModelDeployment, analysis: AnalysisStatus | None) -> bool:
    """Whether `analysis` (status's, or the one being decided this pass) has every model gate
    the spec asks for passed."""
    needed = set(needed_gates(md))
    passed = {
        c.name for c in (analysis.checks if analysis else []) if c.outcome == CheckOutcome.PASSED
    }
    return needed <= passed


def shadowing(md: ModelDeployment, analysis: AnalysisStatus | None) -> bool:
    """Whether `analysis` has the canary shadowing stable: a shadow phase is asked for, it
    started, and the canary has had no live traffic yet."""
    return (
        md.spec.rollout.shadow is not None
        and analysis is not None
        and analysis.shadow_started_at is not None
        and analysis.traffic_started_at is None
    )


def needed_gates(md: ModelDeployment) -> list[str]:
    gates = []
    if md.spec.rollout.analysis.compare_metadata:
        gates.append("modelMetadata")
    if md.spec.rollout.analysis.smoke_tests is not None:
        gates.append("smokeTests")
    return gates


def promoted_at(md: ModelDeployment, revision: str) -> dt.datetime | None:
    for entry in md.status.history:
        if entry.revision == revision and entry.outcome == RolloutOutcome.PROMOTED:
            return entry.finished_at
    return None


def in_rollback_window(md: ModelDeployment, stable: str, now: dt.datetime) -> bool:
    """True while `stable` was promoted less than spec.rollout.rollbackWindow ago."""
    window = parse_duration(md.spec.rollout.rollback_window)
    since = promoted_at(md, stable)
    return window > 0 and since is not None and (now - since).total_seconds() < window


def previous_revision(md: ModelDeployment, stable: str, existing: set[str]) -> str | None:
    """The revision kept warm after a promotion: the one Deployment left besides stable's that
    was not rejected (the planner deletes every other revision once a rollout ends)."""
    rejected = {r.revision for r in md.status.rejected_revisions}
    others = sorted(existing - {stable} - rejected)
    return others[0] if others else None
