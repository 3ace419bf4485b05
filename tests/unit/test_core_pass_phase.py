"""Where a pass finds the rollout, as a table: status, spec and existing Deployments → phase."""

from __future__ import annotations

import datetime as dt

import pytest
from core_fixtures import make_md
from modeldeploy.pass_phase import (
    OPERATOR_CAUSE,
    Admission,
    CanaryStage,
    Judged,
    PassPhase,
    PhaseKind,
    phase_of,
)
from modeldeploy.rollout import stamp

T0 = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
ROLLOUT = {"steps": [10, 100], "analysis": {"interval": "10s"}}
SHADOW = {**ROLLOUT, "shadow": {"duration": "60s"}}
QUEUED = Admission(OPERATOR_CAUSE, waiting="no rollout slot")
BOTH = {"stable1", "canary1"}


def canary(gates: bool = True, **analysis: str) -> dict:
    checks = [{"name": "modelMetadata", "outcome": "Passed"}] if gates else []
    return {
        "stableRevision": "stable1",
        "canaryRevision": "canary1",
        "currentStep": 0,
        "analysis": {"checks": checks, **analysis},
    }


STARTED = stamp(T0 - dt.timedelta(seconds=30))


@pytest.mark.parametrize(
    ("spec", "status", "desired", "existing", "admission", "kind", "stage"),
    [
        # the first revision: nothing to roll back to
        ({}, None, "rev1", set(), None, PhaseKind.FIRST_DEPLOY, None),
        # stable's Deployment is gone: the new revision goes straight in
        ({}, {"stableRevision": "stable1"}, "rev2", set(), None, PhaseKind.FIRST_DEPLOY, None),
        # scaled to zero on purpose: no users to protect
        (
            {"scaling": {"replicas": 0}},
            {"stableRevision": "stable1"},
            "rev2",
            {"stable1"},
            None,
            PhaseKind.FIRST_DEPLOY,
            None,
        ),
        ({}, {"stableRevision": "stable1"}, "stable1", {"stable1"}, None, PhaseKind.STABLE, None),
        # the spec went back to stable mid-canary
        ({}, canary(), "stable1", BOTH, None, PhaseKind.STABLE, None),
        (
            {},
            {
                "stableRevision": "stable1",
                "rejectedRevisions": [{"revision": "canary1", "rejectedAt": STARTED}],
            },
            "canary1",
            BOTH,
            None,
            PhaseKind.REJECTED,
            None,
        ),
        ({}, {"stableRevision": "stable1"}, "canary1", BOTH, QUEUED, PhaseKind.QUEUED, None),
        ({}, {"stableRevision": "stable1"}, "canary1", BOTH, None, PhaseKind.NEW_CANARY, None),
        # a running canary is replaced, never queued
        ({}, canary(), "canary2", BOTH, QUEUED, PhaseKind.NEW_CANARY, None),
        ({}, canary(gates=False), "canary1", BOTH, None, PhaseKind.CANARY, CanaryStage.GATES),
        (
            {"rollout": SHADOW},
            canary(),
            "canary1",
            BOTH,
            None,
            PhaseKind.CANARY,
            CanaryStage.SHADOW_PENDING,
        ),
        (
            {"rollout": SHADOW},
            canary(shadowStartedAt=STARTED),
            "canary1",
            BOTH,
            None,
            PhaseKind.CANARY,
            CanaryStage.SHADOW,
        ),
        (
            {"rollout": SHADOW},
            canary(shadowStartedAt=STARTED, trafficStartedAt=STARTED),
            "canary1",
            BOTH,
            None,
            PhaseKind.CANARY,
            CanaryStage.TRAFFIC,
        ),
        # the shadow was removed from the spec mid-phase: live traffic is next
        (
            {},
            canary(shadowStartedAt=STARTED),
            "canary1",
            BOTH,
            None,
            PhaseKind.CANARY,
            CanaryStage.TRAFFIC,
        ),
    ],
)
def test_each_kind_of_pass(spec, status, desired, existing, admission, kind, stage):
    md = make_md({"rollout": ROLLOUT, **spec}, status=status)
    phase = phase_of(md, desired, existing, T0, admission)
    assert (phase.kind, phase.canary) == (kind, stage)


def test_a_rejected_canary_has_no_stage_and_a_new_retry_token_starts_it_again():
    rejected = [{"revision": "canary1", "rejectedAt": STARTED}]
    status = {**canary(gates=False), "rejectedRevisions": rejected}
    md = make_md({"rollout": ROLLOUT}, status=status)
    assert phase_of(md, "canary1", BOTH, T0).canary is None
    retried = make_md({"rollout": {**ROLLOUT, "retry": "r2"}}, status=status)
    assert phase_of(retried, "canary1", BOTH, T0).canary is CanaryStage.GATES


@pytest.mark.parametrize(("promoted_ago", "watched"), [(60, "stable1"), (900, None)])
def test_a_revision_promoted_within_the_rollback_window_is_watched_with_its_previous_warm(
    promoted_ago, watched
):
    history = [
        {
            "revision": "stable1",
            "outcome": "Promoted",
            "finishedAt": stamp(T0 - dt.timedelta(seconds=promoted_ago)),
        }
    ]
    md = make_md(
        {"rollout": {**ROLLOUT, "rollbackWindow": "10m"}},
        status={"stableRevision": "stable1", "history": history},
    )
    phase = phase_of(md, "stable1", {"stable1", "old1"}, T0)
    assert (phase.kind, phase.watched) == (PhaseKind.STABLE, watched)
    assert phase.previous == ("old1" if watched else None)


@pytest.mark.parametrize(("last_run_ago", "due"), [(None, True), (5, False), (10, True)])
def test_analysis_is_due_once_per_interval(last_run_ago, due):
    analysis = (
        {}
        if last_run_ago is None
        else {"lastRunAt": stamp(T0 - dt.timedelta(seconds=last_run_ago))}
    )
    md = make_md({"rollout": ROLLOUT}, status=canary(**analysis))
    assert phase_of(md, "canary1", BOTH, T0).analysis_due is due


def test_gates_passed_counts_only_the_gates_the_spec_asks_for():
    smoke = {**ROLLOUT, "analysis": {"interval": "10s", "smokeTests": {"inputs": [{"a": 1}]}}}
    metadata_only = make_md({"rollout": ROLLOUT}, status=canary())
    with_smoke = make_md({"rollout": smoke}, status=canary())
    assert phase_of(metadata_only, "canary1", BOTH, T0).gates_passed
    assert not phase_of(with_smoke, "canary1", BOTH, T0).gates_passed


def test_a_persons_requests_not_yet_acted_on_and_a_pause_are_read_once():
    annotations = {"modeldeploy.io/promote": "t2", "modeldeploy.io/abort": "t1"}
    status = {**canary(), "actions": {"abort": "t1"}}
    md = make_md({"rollout": {**ROLLOUT, "paused": True}}, status=status, annotations=annotations)
    phase = phase_of(md, "canary1", BOTH, T0)
    assert dict(phase.requests) == {"promote": "t2"} and phase.paused


# ------------------------------------------------------------- what the pass gathers evidence on
@pytest.mark.parametrize(
    ("kind", "canary", "watched", "requests", "judged"),
    [
        (PhaseKind.CANARY, CanaryStage.TRAFFIC, None, {}, Judged.CANARY),
        (PhaseKind.CANARY, CanaryStage.GATES, "r1", {}, Judged.CANARY),  # the canary, not r1
        (PhaseKind.CANARY, CanaryStage.TRAFFIC, None, {"abort": "t"}, Judged.NOTHING),
        (PhaseKind.CANARY, CanaryStage.SHADOW, None, {"promote": "t"}, Judged.NOTHING),
        (PhaseKind.CANARY, CanaryStage.TRAFFIC, None, {"retry": "t"}, Judged.CANARY),
        (PhaseKind.STABLE, None, "r1", {}, Judged.WINDOW),
        (PhaseKind.QUEUED, None, "r1", {}, Judged.WINDOW),
        (PhaseKind.STABLE, None, None, {}, Judged.NOTHING),
        (PhaseKind.NEW_CANARY, None, "r1", {}, Judged.NOTHING),  # the new canary starts first
        (PhaseKind.FIRST_DEPLOY, None, None, {}, Judged.NOTHING),
    ],
)
def test_a_pass_gathers_evidence_only_on_what_its_decision_reads(
    kind: PhaseKind, canary: CanaryStage | None, watched: str | None, requests: dict, judged: Judged
) -> None:
    phase = PassPhase(kind, "r2", "r1", canary=canary, watched=watched, requests=requests)
    assert phase.judged is judged
