"""Requests a person makes through annotations — promote, abort, retry, pause — as worked
examples: each acts once, is acknowledged in status, and never needs an edit of the spec."""

from __future__ import annotations

from core_fixtures import decide, make_md
from modeldeploy.actions import paused, requested, retry_token
from modeldeploy.rollout import Evidence
from test_core_rollout import PASS, READY, ROLLOUT, T0, at, canary_status


def md_with(annotations: dict, status: dict | None = None, **rollout):
    return make_md({"rollout": {**ROLLOUT, **rollout}}, status=status, annotations=annotations)


def test_promote_skips_the_remaining_steps_once():
    md = md_with({"modeldeploy.io/promote": "t1"}, canary_status(step=0))
    state = decide(
        md, "canary1", {"stable1", "canary1"}, Evidence(pods=READY, metrics=PASS), at(5), T0
    )
    assert (state.stable, state.canary) == ("canary1", None)
    assert state.status_fields()["actions"] == {"promote": "t1"}
    assert "on request, skipping 2 of 3 steps" in state.history[0].message
    assert [e.reason for e in state.events] == ["PromotedOnRequest"]
    # Acknowledged: the same value asks nothing more.
    done = md_with(
        {"modeldeploy.io/promote": "t1"}, {**canary_status(), "actions": {"promote": "t1"}}
    )
    assert requested(done, "promote") is None


def test_abort_rolls_back_now_and_rejects_the_revision():
    md = md_with({"modeldeploy.io/abort": "t1", "modeldeploy.io/promote": "t1"}, canary_status())
    state = decide(md, "canary1", {"stable1", "canary1"}, Evidence(pods=READY), at(5), T0)
    assert (state.stable, state.canary) == ("stable1", None)
    assert state.last_rollback.check == "userAbort" and state.rejected[0].reason == "Aborted"
    # Abort wins; the promote asked at the same time then finds no canary, and says so.
    assert state.status_fields()["actions"] == {"abort": "t1", "promote": "t1"}
    assert [e.reason for e in state.events] == ["RolledBack", "RequestIgnored"]


def test_a_request_without_a_canary_is_acknowledged_and_said_to_do_nothing():
    md = md_with({"modeldeploy.io/promote": "t1"}, {"stableRevision": "stable1"})
    state = decide(md, "stable1", {"stable1"}, Evidence(), T0)
    assert state.status_fields()["actions"] == {"promote": "t1"}
    assert [e.reason for e in state.events] == ["RequestIgnored"]


def test_retry_annotation_retries_a_rejected_revision_without_a_spec_change():
    rejected = [{"revision": "canary1", "retryToken": "", "rejectedAt": "2026-11-27T11:00:00Z"}]
    before = decide(md_with({}, {"stableRevision": "stable1", "rejectedRevisions": rejected}),
                        "canary1", {"stable1", "canary1"}, Evidence(), T0)  # fmt: skip
    assert before.canary is None, "rejected: not retried"
    md = md_with(
        {"modeldeploy.io/retry": "t1"}, {"stableRevision": "stable1", "rejectedRevisions": rejected}
    )
    state = decide(md, "canary1", {"stable1", "canary1"}, Evidence(), T0)
    assert state.canary == "canary1" and state.actions.retry == "t1"
    assert retry_token(md) == "/t1"


def test_the_paused_annotation_holds_like_the_spec_field():
    md = md_with({"modeldeploy.io/paused": "true"}, canary_status(started=0))
    assert paused(md)
    state = decide(
        md, "canary1", {"stable1", "canary1"}, Evidence(pods=READY, metrics=PASS), at(600), T0
    )
    assert state.paused and state.step == 0
    assert not paused(md_with({"modeldeploy.io/paused": "false"}))
    assert paused(md_with({}, paused=True))


def test_a_long_retry_token_is_cut_to_what_status_can_hold():
    md = make_md(
        {"rollout": {**ROLLOUT, "retry": "r" * 63}}, annotations={"modeldeploy.io/retry": "x" * 40}
    )
    assert len(retry_token(md)) == 63


def test_pause_and_resume_each_say_so_once():
    progressing = {
        "type": "Progressing",
        "status": "True",
        "reason": "CanaryProgressing",
        "lastTransitionTime": "2026-11-27T12:00:00Z",
    }
    md = md_with(
        {"modeldeploy.io/paused": "true"},
        {**canary_status(started=0), "conditions": [progressing]},
    )
    state = decide(md, "canary1", {"stable1", "canary1"}, Evidence(pods=READY), at(5), T0)
    assert [(e.reason, e.message) for e in state.events] == [
        ("Paused", "canary canary1 held at 10% by annotation modeldeploy.io/paused")
    ]
    paused_before = {**progressing, "reason": "Paused"}
    still = md_with(
        {"modeldeploy.io/paused": "true"},
        {**canary_status(started=0), "conditions": [paused_before]},
    )
    state = decide(still, "canary1", {"stable1", "canary1"}, Evidence(pods=READY), at(6), T0)
    assert state.events == [], "no Event while it stays paused"
    resumed = md_with({}, {**canary_status(started=0), "conditions": [paused_before]})
    state = decide(resumed, "canary1", {"stable1", "canary1"}, Evidence(pods=READY), at(7), T0)
    assert [(e.reason, e.message) for e in state.events] == [
        ("Resumed", "canary canary1 goes on from 10%")
    ]
