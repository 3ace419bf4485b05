"""The canary state machine: which revision is stable, which is the canary, at what weight, and
when to advance, promote or roll back. Pure: status so far + where the rollout stands
(`pass_phase.PassPhase`, decided once per pass) + evidence + now → the next state.

Vocabulary (as in status):
- stable: the revision that serves by default. canary: the revision being rolled out.
- step: index into spec.rollout.steps; its weight is the canary's desired traffic percent.
- previous: the old stable after a promotion, kept warm (no traffic) for rollbackWindow.

The rules, in order, for a pass where the desired revision R differs from stable S (rules 1
and 2 are `PhaseKind`s, worked out by `pass_phase.phase_of`):
1. R was rolled back before and neither R nor rollout.retry changed since: stay on S.
2. R is not the canary yet: start it at step 0 (a newer revision mid-canary replaces the canary
   and restarts its analysis; unvalidated pods are never promoted).
3. Hard failures (crash loop, image pull, OOM, restarts, not Ready by progressDeadline, a failed
   model gate) fail the canary at once; metric failures count, failureThreshold in a row fail it.
4. The model gates (metadata, smoke tests) pass before the canary gets any traffic.
4b. With spec.rollout.shadow, a shadow phase follows the gates: the canary stays at 0% while
   stable's servers copy live requests to it and compare the answers; it must pass every check
   for shadow.duration (inconclusive intervals do not count) before its first step's traffic.
5. After stepDuration at a step whose last analysis passed, move to the next step; after the
   100% step, promote.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from .actions import ABORT, PROMOTE, RETRY, retry_token
from .api import (
    CheckOutcome,
    FailurePolicy,
    InconclusivePolicy,
    ModelDeployment,
    RolloutOutcome,
    ShadowMirror,
    parse_duration,
)
from .api.status import (
    MAX_HISTORY,
    MAX_REJECTED,
    ActionsStatus,
    AnalysisStatus,
    HistoryEntry,
    RejectedRevision,
    RollbackRecord,
    StatusModel,
)
from .judge import Check
from .pass_phase import PassPhase, PhaseKind, gates_passed, promoted_at, shadowing
from .planner_types import Event

GATE_CHECKS = ("modelMetadata", "smokeTests")
SHADOW_AGREEMENT = "shadowAgreement"


@dataclass(frozen=True)
class Hold:
    """Why the canary cannot be judged now through no fault of its own (its smoke inputs cannot
    be read, its pods cannot be reached): it waits at its step, neither advancing nor counting
    towards a rollback, until a person fixes the cause."""

    reason: str
    message: str


@dataclass(frozen=True)
class Evidence:
    """What the shell gathered this pass; None means "not gathered" (not due or not needed).

    `fallback_ready`: the revision a rollback would return to (stable during a canary, the
    previous one in the rollback window) has a ready pod. When it has none, a rollback would
    help nobody: the canary is judged on its own and a failure is reported, not rolled back.
    `stable_mirrors`: stable's servers accept the operator's credential on ``/v2/shadow``
    (their pods carry its digest). A stable started before ``spec.rollout.shadow`` was set
    does not, so a Server-mirrored shadow phase cannot run against it.
    """

    pods: Check | None = None
    metrics: list[Check] | None = None
    gates: list[Check] | None = None
    hold: Hold | None = None
    fallback_ready: bool = True
    stable_mirrors: bool = True


@dataclass
class RolloutState:
    """The rollout part of status after this pass, plus what the planner must do about it.

    Its records are the models of `api.status`, turned into JSON only by `status_fields`."""

    stable: str
    canary: str | None = None
    previous: str | None = None
    weight: int = 0
    step: int | None = None
    step_started_at: str | None = None
    analysis: AnalysisStatus | None = None
    last_rollback: RollbackRecord | None = None
    rejected: list[RejectedRevision] = field(default_factory=list)
    history: list[HistoryEntry] = field(default_factory=list)
    stable_version: str | None = None
    canary_version: str | None = None
    failed: Check | None = None  # set when the canary failed this pass and policy is Pause
    events: list[Event] = field(default_factory=list)
    scaled_to_zero: str | None = None  # a rejected canary kept at 0 pods for inspection
    paused: bool = False
    held: Hold | None = None  # the canary waits for a person to fix something that is not its own
    canary_cause: str | None = None
    queued: Hold | None = None  # an operator-caused revision waiting for a rollout slot
    actions: ActionsStatus = field(default_factory=ActionsStatus)  # requests acted on
    # A failure that was not rolled back because the fallback has no ready pod: (reason, message).
    no_fallback: tuple[str, str] | None = None

    def status_fields(self) -> dict[str, Any]:
        """The rollout part of the status document. A record holds the fields status had or this
        pass set (an analysis started empty stays empty), never the models' other defaults."""
        return {
            "stableRevision": self.stable,
            "stableVersion": self.stable_version,
            "canaryRevision": self.canary,
            "canaryVersion": self.canary_version if self.canary else None,
            "canaryCause": self.canary_cause if self.canary else None,
            "currentStep": self.step if self.canary else None,
            "stepStartedAt": self.step_started_at if self.canary else None,
            "analysis": _json(self.analysis),
            "lastRollback": _json(self.last_rollback),
            "rejectedRevisions": [_json(r) for r in self.rejected] or None,
            "history": [_json(h) for h in self.history] or None,
            "actions": _json(self.actions) or None,
        }


def stamp(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _at(now: dt.datetime) -> dt.datetime:
    """`now` as status keeps times: UTC, to the second (as `stamp` writes them)."""
    return now.astimezone(dt.UTC).replace(microsecond=0)


Record = TypeVar("Record", bound=StatusModel)


def _copy(record: Record) -> Record:
    """A copy of a status record this pass may change, with every field it read kept."""
    return type(record).model_validate(record.model_dump())


def _json(record: StatusModel | None) -> Any:
    """The record as status holds it: camelCase, and only the fields read or set."""
    if record is None:
        return None
    return record.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_unset=True)


def _history(state: RolloutState, entry: HistoryEntry) -> list[HistoryEntry]:
    """Newest first, bounded: status.history never grows past MAX_HISTORY entries."""
    return [entry, *state.history][:MAX_HISTORY]


def next_state(
    md: ModelDeployment,
    phase: PassPhase,
    evidence: Evidence,
    now: dt.datetime,
    canary_created: dt.datetime | None = None,
) -> RolloutState:
    """Decide the rollout state for this pass, from where it stands (`phase`) and what was
    gathered about it (`evidence`).

    `canary_created`: when the canary's Deployment was created (the start of its rollout, for
    progressDeadline and time to detect).
    """
    state = _decide(md, phase, evidence, now, canary_created)
    _ignore(state, phase)
    return state


def _decide(
    md: ModelDeployment,
    phase: PassPhase,
    evidence: Evidence,
    now: dt.datetime,
    canary_created: dt.datetime | None,
) -> RolloutState:
    status = md.status
    desired, version = phase.desired, md.spec.model.version
    state = RolloutState(
        stable=status.stable_revision or desired,
        canary=status.canary_revision,
        step=status.current_step,
        step_started_at=stamp(status.step_started_at) if status.step_started_at else None,
        analysis=_copy(status.analysis) if status.analysis else None,
        last_rollback=_copy(status.last_rollback) if status.last_rollback else None,
        rejected=[_copy(r) for r in status.rejected_revisions],
        history=[_copy(h) for h in status.history],
        stable_version=status.stable_version,
        canary_version=status.canary_version,
        canary_cause=status.canary_cause.value if status.canary_cause else None,
        actions=_copy(status.actions) if status.actions else ActionsStatus(),
    )
    pending = dict(phase.requests)
    if RETRY in pending:
        state.actions.retry = pending.pop(RETRY)
        state.events.append(
            Event("Normal", "RetryRequested", "rejected revisions may be tried again")
        )
    match phase.kind:
        case PhaseKind.FIRST_DEPLOY:
            # A failure here is reported as Degraded by the planner; a model scaled to zero on
            # purpose has no users to protect and no pod to judge.
            state.stable, state.stable_version, state.canary = desired, version, None
            state.previous = phase.previous
            return state
        case PhaseKind.STABLE:
            if state.canary is not None:  # the spec went back to stable mid-canary
                _supersede(md, state, now, "spec returned to the stable revision")
                state.events.append(
                    Event("Normal", "CanaryAborted", f"spec returned to stable {state.stable}")
                )
                state.canary, state.analysis = None, None
            state.stable_version = state.stable_version or version
            state.previous = phase.previous
            return _watch_window(md, state, evidence, now)
        case PhaseKind.REJECTED:
            state.canary = None
            state.scaled_to_zero = desired
            return state
        case PhaseKind.QUEUED:
            waiting = phase.admission.waiting
            assert waiting is not None
            state.queued = Hold("RolloutQueued", waiting)
            if not _condition_says(md, "Reconciling", "RolloutQueued", waiting):
                state.events.append(Event("Normal", "RolloutQueued", waiting))
            state.previous = phase.previous
            return _watch_window(md, state, evidence, now)
        case PhaseKind.NEW_CANARY:
            if state.canary is not None:
                _supersede(md, state, now, f"replaced by revision {desired}")
            state.canary, state.canary_version = desired, version
            state.canary_cause = phase.admission.cause
            state.step, state.step_started_at = 0, stamp(now)
            state.analysis = AnalysisStatus(
                consecutive_failures=0, consecutive_inconclusive=0, checks=[]
            )
            state.events.append(
                Event("Normal", "CanaryStarted", f"revision {desired} starts as a canary")
            )
            return state
        case PhaseKind.CANARY:
            if phase.decided_by_request:
                return _act(md, state, pending, now, canary_created)
            return _advance(md, state, phase, evidence, now, canary_created)


def _act(
    md: ModelDeployment,
    state: RolloutState,
    pending: dict[str, str],
    now: dt.datetime,
    started: dt.datetime | None,
) -> RolloutState:
    """A person's promote or abort of the running canary (abort wins when both are asked)."""
    assert state.canary is not None
    if ABORT in pending:
        state.actions.abort = pending[ABORT]
        message = f"aborted on request (annotation modeldeploy.io/abort={pending[ABORT]})"
        aborted = Check("userAbort", CheckOutcome.FAILED, message=message, hard=True)
        return _roll_back(md, state, aborted, now, started)
    state.actions.promote = pending[PROMOTE]
    steps = md.spec.rollout.steps
    skipped = len(steps) - (state.step or 0) - 1
    note = f"on request, skipping {skipped} of {len(steps)} steps"
    return _promote(md, state, now, started, note=note)


def _ignore(state: RolloutState, phase: PassPhase) -> None:
    """Acknowledge promote/abort requests that find no canary, saying so."""
    for action in (ABORT, PROMOTE):
        token = phase.requests.get(action)
        if token and getattr(state.actions, action) != token and state.canary is None:
            setattr(state.actions, action, token)
            state.events.append(
                Event("Normal", "RequestIgnored", f"{action}: there is no canary to {action}")
            )


def _entry(
    md: ModelDeployment,
    revision: str,
    outcome: RolloutOutcome,
    now: dt.datetime,
    message: str,
    started: dt.datetime | None = None,
) -> HistoryEntry:
    versioned = md.status.canary_version and md.status.canary_revision == revision
    return HistoryEntry(
        revision=revision,
        version=md.status.canary_version if versioned else None,
        outcome=outcome,
        started_at=_at(started) if started else None,
        finished_at=_at(now),
        message=message,
    )


def _supersede(md: ModelDeployment, state: RolloutState, now: dt.datetime, why: str) -> None:
    """Record that the current canary stopped without a verdict."""
    assert state.canary is not None
    state.history = _history(state, _entry(md, state.canary, RolloutOutcome.SUPERSEDED, now, why))


def _record(analysis: AnalysisStatus, checks: list[Check], now: dt.datetime) -> CheckOutcome:
    """Fold this interval's checks into the counters; returns the interval's verdict."""
    if any(c.outcome == CheckOutcome.FAILED for c in checks):
        verdict = CheckOutcome.FAILED
    elif any(c.outcome == CheckOutcome.INCONCLUSIVE for c in checks):
        verdict = CheckOutcome.INCONCLUSIVE
    else:
        verdict = CheckOutcome.PASSED
    failures, inconclusive = analysis.consecutive_failures, analysis.consecutive_inconclusive
    analysis.consecutive_failures = failures + 1 if verdict == CheckOutcome.FAILED else 0
    analysis.consecutive_inconclusive = (
        inconclusive + 1 if verdict == CheckOutcome.INCONCLUSIVE else 0
    )
    analysis.outcome = verdict
    analysis.last_run_at = _at(now)
    gates = [c for c in analysis.checks if c.name in GATE_CHECKS]
    analysis.checks = gates + [c.as_result() for c in checks if c.name not in GATE_CHECKS]
    return verdict


def _failure(md: ModelDeployment, state: RolloutState, evidence: Evidence) -> Check | None:
    """The check that fails the canary this pass, if any (hard failures first)."""
    analysis = state.analysis or AnalysisStatus()
    for check in [evidence.pods, *(evidence.gates or [])]:
        if check is not None and check.outcome == CheckOutcome.FAILED:
            return check
    spec = md.spec.rollout.analysis
    metric_checks = evidence.metrics or []
    failed = next((c for c in metric_checks if c.outcome == CheckOutcome.FAILED), None)
    if failed is not None and analysis.consecutive_failures >= spec.failure_threshold:
        return failed
    inconclusive = next((c for c in metric_checks if c.outcome == CheckOutcome.INCONCLUSIVE), None)
    if inconclusive is not None:
        count = analysis.consecutive_inconclusive
        if spec.on_inconclusive == InconclusivePolicy.ROLLBACK and count >= spec.failure_threshold:
            return inconclusive
        if spec.on_inconclusive == InconclusivePolicy.HOLD and count >= spec.max_inconclusive:
            return Check(
                inconclusive.name,
                CheckOutcome.FAILED,
                inconclusive.value,
                inconclusive.threshold,
                inconclusive.samples,
                f"inconclusive {count} intervals in a row (maxInconclusive "
                f"{spec.max_inconclusive}): {inconclusive.message}",
            )
    return None


def _advance(
    md: ModelDeployment,
    state: RolloutState,
    phase: PassPhase,
    evidence: Evidence,
    now: dt.datetime,
    canary_created: dt.datetime | None,
) -> RolloutState:
    assert state.canary is not None
    analysis = state.analysis if state.analysis is not None else AnalysisStatus()
    state.analysis = analysis
    if evidence.gates:
        kept = [c for c in analysis.checks if c.name not in GATE_CHECKS]
        analysis.checks = [g.as_result() for g in evidence.gates] + kept
    gates_ok = gates_passed(md, analysis)  # this pass's gates in; later checks leave them be
    if not phase.gates_passed and gates_ok:
        state.step_started_at = stamp(now)  # the first step's clock starts with its traffic
    if gates_ok and not _started(analysis):
        _after_gates(md, state, analysis, evidence, now)
    elif (
        md.spec.rollout.shadow is None
        and analysis.shadow_started_at is not None
        and analysis.traffic_started_at is None
    ):
        analysis.traffic_started_at = _at(now)  # the shadow was removed mid-phase
    if not evidence.fallback_ready and not analysis.without_stable:
        analysis.without_stable = True
        state.events.append(Event("Warning", "StableUnavailable", _alone_message(state)))
    verdict = None
    if evidence.metrics is not None:
        verdict = _record(analysis, list(evidence.metrics), now)

    failed = _failure(md, state, evidence)
    steps = md.spec.rollout.steps
    step = state.step or 0
    shadow_now = shadowing(md, analysis)
    # With a shadow phase asked for, no live traffic before it passed (or was skipped).
    before_traffic = md.spec.rollout.shadow is not None and analysis.traffic_started_at is None
    state.weight = steps[step] if gates_ok and not before_traffic else 0
    if failed is not None:
        if not evidence.fallback_ready:
            return _fail_without_fallback(md, state, failed)
        if md.spec.rollout.on_failure == FailurePolicy.PAUSE:
            state.failed, state.paused = failed, True
            return state
        return _roll_back(md, state, failed, now, canary_created)
    if evidence.hold is not None:
        state.held = evidence.hold
        if not _condition_says(md, "Stalled", evidence.hold.reason, evidence.hold.message):
            state.events.append(Event("Warning", evidence.hold.reason, evidence.hold.message))
        return state
    pods_ready = evidence.pods is not None and evidence.pods.outcome == CheckOutcome.PASSED
    if gates_ok and pods_ready and not evidence.fallback_ready:
        return _promote(md, state, now, canary_created, rolled_forward=True)
    was_paused = _condition_reason(md, "Progressing") == "Paused"
    if phase.paused:
        state.paused = True
        if not was_paused:
            message = f"canary {state.canary} held at {state.weight}% by {_pauser(md)}"
            state.events.append(Event("Normal", "Paused", message))
        return state
    if was_paused:
        message = f"canary {state.canary} goes on from {state.weight}%"
        state.events.append(Event("Normal", "Resumed", message))

    if shadow_now:
        return _shadow(md, state, analysis, verdict, now)
    started = parse_time(state.step_started_at) or now
    if verdict == CheckOutcome.INCONCLUSIVE:
        # Hold: an interval without enough traffic does not count towards the step's duration.
        interval = dt.timedelta(seconds=parse_duration(md.spec.rollout.analysis.interval))
        started = min(started + interval, now)
        state.step_started_at = stamp(started)
    held = (now - started).total_seconds() >= parse_duration(md.spec.rollout.step_duration)
    last_ok = (verdict or _last_verdict(analysis)) == CheckOutcome.PASSED
    if gates_ok and held and last_ok:
        if step + 1 < len(steps):
            state.step, state.step_started_at = step + 1, stamp(now)
            state.weight = steps[step + 1]
            message = f"canary {state.canary} at {steps[step + 1]}%"
            state.events.append(Event("Normal", "StepAdvanced", message))
        else:
            return _promote(md, state, now, canary_created)
    return state


def _started(analysis: AnalysisStatus) -> bool:
    return analysis.traffic_started_at is not None or analysis.shadow_started_at is not None


def _after_gates(
    md: ModelDeployment,
    state: RolloutState,
    analysis: AnalysisStatus,
    evidence: Evidence,
    now: dt.datetime,
) -> None:
    """The gates passed: live traffic starts, or first the shadow phase when one is asked for
    and stable has a ready pod to mirror from (alone, the canary is judged on its own). The
    phase waits for every canary pod to be Ready, so its intervals are not spent on pods that
    cannot answer yet."""
    shadow = md.spec.rollout.shadow
    if shadow is None or not evidence.fallback_ready:
        analysis.traffic_started_at = _at(now)
        return
    if shadow.mirror == ShadowMirror.SERVER and not evidence.stable_mirrors:
        analysis.traffic_started_at = _at(now)
        message = (
            f"stable {state.stable}'s pods do not carry the operator's credential (they were "
            f"started before spec.rollout.shadow was set, or the operator has none), so its "
            f"servers refuse to mirror: canary {state.canary} goes to its steps without a shadow "
            f"phase; the next update has one"
        )
        state.events.append(Event("Warning", "ShadowSkipped", message))
        return
    if evidence.pods is None or evidence.pods.outcome != CheckOutcome.PASSED:
        return  # the phase starts with every canary pod Ready: there is nothing to mirror to
    analysis.shadow_started_at = _at(now)
    message = (
        f"canary {state.canary} answers copies of {shadow.fraction * 100:g}% of stable's "
        f"requests for {shadow.duration}; no user sees its answers"
    )
    state.events.append(Event("Normal", "ShadowStarted", message))


def _shadow(
    md: ModelDeployment,
    state: RolloutState,
    analysis: AnalysisStatus,
    verdict: CheckOutcome | None,
    now: dt.datetime,
) -> RolloutState:
    """The shadow phase: after shadow.duration whose last interval passed, the first step's
    live traffic starts. An inconclusive interval (too few compared answers) does not count
    towards the duration, as at a step."""
    shadow = md.spec.rollout.shadow
    assert shadow is not None and state.canary is not None
    started = analysis.shadow_started_at or now
    if verdict == CheckOutcome.INCONCLUSIVE:
        interval = dt.timedelta(seconds=parse_duration(md.spec.rollout.analysis.interval))
        started = min(started + interval, now)
        analysis.shadow_started_at = _at(started)
    held = (now - started).total_seconds() >= parse_duration(shadow.duration)
    last_ok = (verdict or _last_verdict(analysis)) == CheckOutcome.PASSED
    if held and last_ok:
        analysis.traffic_started_at = _at(now)
        state.step_started_at = stamp(now)
        state.weight = md.spec.rollout.steps[state.step or 0]
        agreement = next((c.value for c in analysis.checks if c.name == SHADOW_AGREEMENT), None)
        message = (
            f"canary {state.canary} passed its shadow phase ({shadow.duration}"
            + (f", last agreement {agreement}" if agreement else "")
            + f") and gets {state.weight}% of live traffic"
        )
        state.events.append(Event("Normal", "ShadowPassed", message))
    return state


def _alone_message(state: RolloutState) -> str:
    return (
        f"stable revision {state.stable} has no ready pod: canary {state.canary} is judged on "
        "its own (pod health, smoke requests answered, its own metrics) and promoted without "
        "steps once healthy"
    )


def _condition_reason(md: ModelDeployment, kind: str) -> str | None:
    """The reason of the last status' condition `kind`, if any."""
    return next((c.reason for c in md.status.conditions if c.type == kind), None)


def _pauser(md: ModelDeployment) -> str:
    """Who paused: Git (`spec.rollout.paused`) or a person (the annotation)."""
    return "spec.rollout.paused" if md.spec.rollout.paused else "annotation modeldeploy.io/paused"


def _condition_says(md: ModelDeployment, kind: str, reason: str, message: str) -> bool:
    """Whether the last status already carries this condition (so its Event was posted)."""
    return any(
        c.type == kind and c.status == "True" and c.reason == reason and c.message == message
        for c in md.status.conditions
    )


def _fail_without_fallback(md: ModelDeployment, state: RolloutState, failed: Check) -> RolloutState:
    """The canary failed, but the revision a rollback would return to has no ready pod: keep the
    canary where it is and say so — a person must fix the model, and a new revision starts at
    once."""
    why = failed.message or f"{failed.name} {failed.value} broke {failed.threshold}"
    message = (
        f"canary {state.canary} failed {failed.name}: {why}; not rolled back because stable "
        f"revision {state.stable} has no ready pod. Apply a fixed model to replace the canary."
    )
    state.failed, state.paused = replace(failed, message=message), True
    state.no_fallback = ("NoRollbackTarget", message)
    if not _condition_says(md, "Degraded", "NoRollbackTarget", message):
        state.events.append(Event("Warning", "NoRollbackTarget", message))
    return state


def _last_verdict(analysis: AnalysisStatus) -> CheckOutcome | None:
    return analysis.outcome


def _promote(
    md: ModelDeployment,
    state: RolloutState,
    now: dt.datetime,
    started: dt.datetime | None,
    rolled_forward: bool = False,
    note: str = "",
) -> RolloutState:
    """The canary becomes stable. `rolled_forward`: stable had no ready pod, so the canary was
    promoted on its own checks without walking the steps (and the broken revision is not kept
    warm to roll back to)."""
    assert state.canary is not None
    old = state.stable
    how = f"promoted over {old}"
    if rolled_forward:
        how += f" without steps: {old} had no ready pod"
    if note:
        how += f" {note}"
    entry = _entry(md, state.canary, RolloutOutcome.PROMOTED, now, how, started)
    state.history = _history(state, entry)
    reason = "RolledForward" if rolled_forward else "PromotedOnRequest" if note else "Promoted"
    state.events.append(Event("Normal", reason, f"revision {state.canary} is stable: {how}"))
    state.stable, state.stable_version = state.canary, state.canary_version
    state.canary, state.analysis, state.step, state.step_started_at, state.weight = (
        None,
        None,
        None,
        None,
        0,
    )
    window = parse_duration(md.spec.rollout.rollback_window)
    state.previous = old if window > 0 and not rolled_forward else None
    return state


def _seconds(now: dt.datetime, since: dt.datetime | None) -> str | None:
    return f"{(now - since).total_seconds():.0f}s" if since else None


def _roll_back(
    md: ModelDeployment,
    state: RolloutState,
    failed: Check,
    now: dt.datetime,
    started: dt.datetime | None,
    traffic_started: dt.datetime | None = None,
) -> RolloutState:
    """Traffic back to stable at once, the canary to zero pods, the revision rejected.

    The record times the failure twice: from the canary's first traffic (timeToDetect: how long
    users were exposed) and from its start (timeSinceStart: how long the rollout took to fail).
    """
    assert state.canary is not None
    canary = state.canary
    analysis = state.analysis
    traffic = (analysis.traffic_started_at if analysis else None) or traffic_started
    message = failed.message or f"{failed.name} {failed.value} broke {failed.threshold}"
    state.last_rollback = RollbackRecord(
        revision=canary,
        version=state.canary_version,
        check=failed.name,
        observed_value=failed.value,
        threshold=failed.threshold,
        samples=failed.samples,
        window=md.spec.rollout.analysis.interval if failed.samples is not None else None,
        time_to_detect=_seconds(now, traffic),
        time_since_start=_seconds(now, started),
        time=_at(now),
        message=message,
    )
    rejected = [r for r in state.rejected if r.revision != canary]
    entry = RejectedRevision(
        revision=canary, retry_token=retry_token(md), rejected_at=_at(now), reason=_reason(failed)
    )
    state.rejected = ([entry, *rejected])[:MAX_REJECTED]
    state.history = _history(
        state, _entry(md, canary, RolloutOutcome.ROLLED_BACK, now, message, started)
    )
    state.events.append(Event("Warning", "RolledBack", f"revision {canary} rolled back: {message}"))
    state.scaled_to_zero = canary
    state.canary, state.analysis, state.step, state.step_started_at = None, None, None, None
    state.weight = 0
    return state


def _watch_window(
    md: ModelDeployment, state: RolloutState, evidence: Evidence, now: dt.datetime
) -> RolloutState:
    """After a promotion the checks go on while the previous revision is warm; a failure puts
    the previous revision back at once, without steps."""
    if state.previous is None:
        return state
    analysis = state.analysis if state.analysis is not None else AnalysisStatus()
    state.analysis = analysis
    if evidence.metrics is not None:
        _record(analysis, list(evidence.metrics), now)
    spec = md.spec.rollout.analysis
    failed = evidence.pods if evidence.pods and evidence.pods.outcome == "Failed" else None
    metric_failed = next((c for c in evidence.metrics or [] if c.outcome == "Failed"), None)
    if failed is None and metric_failed and analysis.consecutive_failures >= spec.failure_threshold:
        failed = metric_failed
    if failed is None:
        return state
    if not evidence.fallback_ready:
        why = failed.message or f"{failed.name} {failed.value} broke {failed.threshold}"
        message = (
            f"revision {state.stable} fails {failed.name} ({why}) inside its rollback window, "
            f"but previous revision {state.previous} has no ready pod to roll back to"
        )
        state.no_fallback = ("NoRollbackTarget", message)
        if not _condition_says(md, "Degraded", "NoRollbackTarget", message):
            state.events.append(Event("Warning", "NoRollbackTarget", message))
        return state
    promoted = state.stable
    state.canary, state.canary_version = promoted, state.stable_version
    state.stable, state.stable_version = state.previous, None
    for entry in md.status.history:
        if entry.revision == state.stable:
            state.stable_version = entry.version
            break
    state.previous = None
    since = promoted_at(md, promoted)
    return _roll_back(md, state, failed, now, since, traffic_started=since)


def _reason(check: Check) -> str:
    return {
        "podsReady": "PodsNotReady",
        "podsHealthy": "PodsFailing",
        "errorRate": "ErrorRateTooHigh",
        "errorRateVsStable": "ErrorRateAboveStable",
        "latencyP99": "LatencyTooHigh",
        "latencyVsStable": "LatencyAboveStable",
        "modelMetadata": "ModelMetadataMismatch",
        "smokeTests": "SmokeTestsFailed",
        "requests": "NotEnoughTraffic",
        "metrics": "MetricsUnavailable",
        "userAbort": "Aborted",
        SHADOW_AGREEMENT: "ShadowDisagrees",
        "shadowErrorRate": "ShadowErrorRateTooHigh",
        "shadowLatencyP99": "ShadowLatencyTooHigh",
        "shadowRequests": "NotEnoughShadowTraffic",
        "shadowMetrics": "ShadowMetricsUnavailable",
    }.get(check.name, "CheckFailed")
