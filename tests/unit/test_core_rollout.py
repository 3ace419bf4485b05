"""The canary state machine as a table of transitions, with `now` passed in."""

from __future__ import annotations

import datetime as dt

import pytest
from core_fixtures import decide, make_md
from modeldeploy.api import CheckOutcome
from modeldeploy.judge import Check
from modeldeploy.pass_phase import OPERATOR_CAUSE, Admission
from modeldeploy.rollout import Evidence, Hold, stamp

T0 = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
ROLLOUT = {
    "steps": [10, 50, 100],
    "stepDuration": "60s",
    "analysis": {"interval": "10s", "failureThreshold": 2, "minRequests": 20, "maxInconclusive": 3},
}
PASS = [Check("errorRate", CheckOutcome.PASSED, "0%", "5%", 100)]
FAIL = [Check("errorRate", CheckOutcome.FAILED, "30%", "5%", 100)]
LOW = [Check("requests", CheckOutcome.INCONCLUSIVE, "3", ">= 20", 3, "3 canary requests")]
GATES_OK = [Check("modelMetadata", CheckOutcome.PASSED)]
READY = Check("podsReady", CheckOutcome.PASSED, "2/2")


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def canary_status(step: int = 0, started: float = 0, gates: bool = True, **analysis) -> dict:
    checks = [{"name": "modelMetadata", "outcome": "Passed"}] if gates else []
    return {
        "stableRevision": "stable1",
        "canaryRevision": "canary1",
        "currentStep": step,
        "stepStartedAt": stamp(at(started)),
        "analysis": {
            "consecutiveFailures": 0,
            "consecutiveInconclusive": 0,
            "checks": checks,
            **analysis,
        },
    }


def state_for(
    status: dict,
    evidence: Evidence,
    now: dt.datetime,
    rollout: dict | None = None,
    desired="canary1",
):
    md = make_md({"rollout": rollout or ROLLOUT}, status=status)
    return decide(md, desired, {"stable1", "canary1"}, evidence, now, T0)


def test_first_revision_goes_straight_to_stable():
    md = make_md({"rollout": ROLLOUT})
    state = decide(md, "rev1", set(), Evidence(), T0)
    assert (state.stable, state.canary, state.weight) == ("rev1", None, 0)


def test_a_new_revision_starts_as_a_canary_with_no_traffic_until_its_gates_pass():
    md = make_md({"rollout": ROLLOUT}, status={"stableRevision": "stable1"})
    state = decide(md, "canary1", {"stable1"}, Evidence(), T0)
    assert (state.canary, state.step, state.weight) == ("canary1", 0, 0)
    assert [e.reason for e in state.events] == ["CanaryStarted"]


def test_passing_gates_open_the_first_step_and_start_its_clock():
    state = state_for(canary_status(gates=False), Evidence(pods=READY, gates=GATES_OK), at(30))
    assert state.weight == 10 and state.step == 0
    assert state.step_started_at == stamp(at(30))


def test_a_step_held_healthy_for_its_duration_advances():
    state = state_for(canary_status(started=0), Evidence(pods=READY, metrics=PASS), at(61))
    assert (state.step, state.weight) == (1, 50)
    assert [e.reason for e in state.events] == ["StepAdvanced"]


def test_a_step_not_yet_held_long_enough_stays():
    state = state_for(canary_status(started=0), Evidence(pods=READY, metrics=PASS), at(30))
    assert (state.step, state.weight) == (0, 10)


def test_the_last_step_promotes_and_keeps_the_old_revision_warm():
    rollout = {**ROLLOUT, "rollbackWindow": "5m"}
    state = state_for(
        canary_status(step=2, started=0), Evidence(pods=READY, metrics=PASS), at(61), rollout
    )
    assert (state.stable, state.canary, state.previous) == ("canary1", None, "stable1")
    assert state.history[0].outcome == "Promoted"


def test_one_failed_interval_below_the_threshold_does_not_roll_back():
    state = state_for(canary_status(), Evidence(pods=READY, metrics=FAIL), at(10))
    assert state.canary == "canary1" and state.analysis.consecutive_failures == 1


def test_failure_threshold_consecutive_failures_roll_back_with_a_record():
    status = canary_status(consecutiveFailures=1, trafficStartedAt=stamp(at(5)))
    state = state_for(status, Evidence(pods=READY, metrics=FAIL), at(20))
    assert (state.stable, state.canary, state.weight) == ("stable1", None, 0)
    record = state.status_fields()["lastRollback"]
    assert (record["check"], record["observedValue"], record["threshold"]) == (
        "errorRate",
        "30%",
        "5%",
    )
    assert (
        record["samples"] == 100 and record["window"] == "10s" and record["timeToDetect"] == "15s"
    )
    assert record["timeSinceStart"] == "20s", "from the canary's creation, not its first traffic"
    assert (
        state.rejected[0].revision == "canary1" and state.rejected[0].reason == "ErrorRateTooHigh"
    )
    assert state.scaled_to_zero == "canary1"
    assert [e.reason for e in state.events] == ["RolledBack"]


def test_a_crash_loop_rolls_back_at_once():
    crash = Check(
        "podsHealthy", CheckOutcome.FAILED, "CrashLoopBackOff", "no container failures", hard=True
    )
    state = state_for(canary_status(), Evidence(pods=crash), at(3))
    assert state.canary is None and state.last_rollback.check == "podsHealthy"


def test_low_traffic_under_hold_stops_the_step_clock_then_fails_at_the_cap():
    state = state_for(canary_status(started=0), Evidence(pods=READY, metrics=LOW), at(61))
    assert state.step == 0, "an inconclusive interval does not count towards the step"
    assert state.analysis.consecutive_inconclusive == 1
    capped = state_for(
        canary_status(consecutiveInconclusive=2), Evidence(pods=READY, metrics=LOW), at(30)
    )
    assert capped.canary is None and capped.last_rollback.check == "requests"
    assert "maxInconclusive" in capped.last_rollback.message


def test_low_traffic_under_rollback_counts_as_failure():
    rollout = {**ROLLOUT, "analysis": {**ROLLOUT["analysis"], "onInconclusive": "Rollback"}}
    once = state_for(canary_status(), Evidence(pods=READY, metrics=LOW), at(10), rollout)
    assert once.canary == "canary1"
    twice = state_for(
        canary_status(consecutiveInconclusive=1), Evidence(pods=READY, metrics=LOW), at(20), rollout
    )
    assert twice.canary is None


def test_a_rejected_revision_is_not_retried_until_the_retry_token_changes():
    status = {"stableRevision": "stable1", "rejectedRevisions": [
        {"revision": "canary1", "retryToken": "", "rejectedAt": stamp(T0), "reason": "PodsFailing"}]}  # fmt: skip
    held = decide(
        make_md({"rollout": ROLLOUT}, status=status),
        "canary1",
        {"stable1", "canary1"},
        Evidence(),
        at(60),
    )
    assert held.canary is None and held.scaled_to_zero == "canary1"
    retried_md = make_md({"rollout": {**ROLLOUT, "retry": "again"}}, status=status)
    retried = decide(retried_md, "canary1", {"stable1", "canary1"}, Evidence(), at(60))
    assert retried.canary == "canary1" and retried.step == 0


def test_a_newer_revision_mid_canary_replaces_it_and_restarts_analysis():
    state = state_for(
        canary_status(step=1, consecutiveFailures=1), Evidence(), at(90), desired="canary2"
    )
    assert (state.canary, state.step, state.weight) == ("canary2", 0, 0)
    assert state.analysis.consecutive_failures == 0
    assert state.history[0].outcome == "Superseded" and state.history[0].revision == "canary1"


def test_spec_back_to_stable_aborts_the_canary():
    state = state_for(canary_status(step=1), Evidence(), at(90), desired="stable1")
    assert state.canary is None and state.history[0].outcome == "Superseded"


def test_paused_rollout_holds_its_weight():
    state = state_for(canary_status(step=1, started=0), Evidence(pods=READY, metrics=PASS), at(600),
                      {**ROLLOUT, "paused": True})  # fmt: skip
    assert (state.step, state.weight, state.paused) == (1, 50, True)


def test_on_failure_pause_holds_instead_of_rolling_back():
    state = state_for(canary_status(consecutiveFailures=1), Evidence(pods=READY, metrics=FAIL), at(20),
                      {**ROLLOUT, "onFailure": "Pause"})  # fmt: skip
    assert state.canary == "canary1" and state.paused and state.failed is not None
    assert state.last_rollback is None


@pytest.mark.parametrize("window_left", [True, False])
def test_a_failure_in_the_rollback_window_restores_the_previous_revision(window_left):
    promoted = at(0)
    status = {
        "stableRevision": "canary1",
        "history": [
            {"revision": "canary1", "outcome": "Promoted", "finishedAt": stamp(promoted)},
            {"revision": "stable1", "outcome": "Promoted", "finishedAt": stamp(at(-3600))},
        ],
        "analysis": {"consecutiveFailures": 1},
    }
    md = make_md({"rollout": {**ROLLOUT, "rollbackWindow": "5m"}}, status=status)
    now = at(60 if window_left else 600)
    state = decide(md, "canary1", {"stable1", "canary1"}, Evidence(metrics=FAIL), now)
    if window_left:
        assert state.stable == "stable1" and state.last_rollback.revision == "canary1"
    else:
        assert state.stable == "canary1" and state.previous is None


# --- configurations users have (issue: holds, outages, restarts, operator-caused rollouts) ------

UNREACHABLE = Hold("PodsUnreachable", "cannot reach pod c-1 at http://10.0.0.9:8080: refused")


def test_a_held_canary_neither_advances_nor_fails_and_says_why_once():
    status = canary_status(started=0)
    state = state_for(status, Evidence(pods=READY, hold=UNREACHABLE), at(600))
    assert (state.canary, state.step, state.weight) == ("canary1", 0, 10), "no step, no rollback"
    assert state.held == UNREACHABLE
    assert [e.reason for e in state.events] == ["PodsUnreachable"]
    # The next pass finds the hold already in status: no second Event.
    status["conditions"] = [{"type": "Stalled", "status": "True", "reason": UNREACHABLE.reason,
                             "message": UNREACHABLE.message, "lastTransitionTime": stamp(at(600))}]  # fmt: skip
    again = state_for(status, Evidence(pods=READY, hold=UNREACHABLE), at(610))
    assert again.held == UNREACHABLE and again.events == []


def test_a_hold_does_not_shield_a_crash_loop():
    crash = Check("podsHealthy", CheckOutcome.FAILED, "CrashLoopBackOff", hard=True)
    state = state_for(canary_status(), Evidence(pods=crash, hold=UNREACHABLE), at(5))
    assert state.canary is None and state.last_rollback.check == "podsHealthy"


def test_with_no_ready_stable_pod_a_healthy_canary_is_promoted_without_steps():
    status = canary_status(gates=False)
    evidence = Evidence(pods=READY, gates=GATES_OK, fallback_ready=False)
    state = state_for(status, evidence, at(3))
    assert (state.stable, state.canary, state.previous) == ("canary1", None, None)
    assert [e.reason for e in state.events] == ["StableUnavailable", "RolledForward"]
    assert "without steps" in state.history[0].message


def test_with_no_ready_stable_pod_a_canary_waits_for_its_own_pods():
    waiting = Check("podsReady", CheckOutcome.INCONCLUSIVE, "0/1")
    state = state_for(
        canary_status(gates=False), Evidence(pods=waiting, fallback_ready=False), at(3)
    )
    assert state.canary == "canary1" and state.stable == "stable1"
    assert state.analysis.without_stable is True


def test_a_failing_canary_is_not_rolled_back_to_a_stable_with_no_ready_pod():
    crash = Check("podsHealthy", CheckOutcome.FAILED, "CrashLoopBackOff", hard=True)
    state = state_for(canary_status(), Evidence(pods=crash, fallback_ready=False), at(5))
    assert (state.stable, state.canary) == ("stable1", "canary1"), "no rollback, no rejection"
    assert state.rejected == [] and state.last_rollback is None
    assert (
        state.no_fallback is not None
        and "stable revision stable1 has no ready pod" in state.no_fallback[1]
    )
    assert "NoRollbackTarget" in [e.reason for e in state.events]


def test_the_rollback_window_does_not_return_to_a_previous_revision_with_no_ready_pod():
    md = make_md(
        {"rollout": {**ROLLOUT, "rollbackWindow": "10m"}},
        status={"stableRevision": "canary1", "history": [
            {"revision": "canary1", "outcome": "Promoted", "finishedAt": stamp(at(0))}]},
    )  # fmt: skip
    crash = Check("podsHealthy", CheckOutcome.FAILED, "CrashLoopBackOff", hard=True)
    state = decide(
        md, "canary1", {"stable1", "canary1"}, Evidence(pods=crash, fallback_ready=False), at(60)
    )
    assert (state.stable, state.canary) == ("canary1", None)
    assert state.no_fallback is not None and state.last_rollback is None


def test_an_operator_caused_revision_waits_for_a_slot_and_says_why():
    md = make_md({"rollout": ROLLOUT}, status={"stableRevision": "stable1"})
    admission = Admission(OPERATOR_CAUSE, waiting="waits for a rollout slot: 10 of 10 in use")
    state = decide(md, "canary1", {"stable1"}, Evidence(), T0, T0, admission)
    assert state.canary is None and state.queued is not None
    assert [e.reason for e in state.events] == ["RolloutQueued"]
    started = decide(md, "canary1", {"stable1"}, Evidence(), T0, T0, Admission(OPERATOR_CAUSE))
    assert started.canary == "canary1" and started.status_fields()["canaryCause"] == "Operator"


def test_a_running_canary_is_never_queued():
    admission = Admission(OPERATOR_CAUSE, waiting="no slot")
    md = make_md({"rollout": ROLLOUT}, status=canary_status())
    state = decide(md, "canary2", {"stable1", "canary1"}, Evidence(), T0, T0, admission)
    assert state.canary == "canary2", "a newer revision replaces the running canary at once"


def test_a_model_scaled_to_zero_takes_a_new_revision_without_a_canary():
    md = make_md(
        {"rollout": ROLLOUT, "scaling": {"replicas": 0}}, status={"stableRevision": "stable1"}
    )
    state = decide(md, "canary1", {"stable1"}, Evidence(), T0)
    assert (state.stable, state.canary) == ("canary1", None)


def test_the_records_status_had_are_written_back_as_they_were():
    records = {
        "lastRollback": {"revision": "old1", "check": "errorRate", "time": "2026-11-27T11:00:00Z"},
        "rejectedRevisions": [
            {"revision": "old1", "retryToken": "", "rejectedAt": "2026-11-27T11:00:00Z"}
        ],
        "history": [
            {"revision": "stable1", "outcome": "Promoted", "finishedAt": "2026-11-27T10:00:00Z"}
        ],
        "actions": {"retry": "t0"},
    }
    status = {**canary_status(trafficStartedAt=stamp(at(0))), **records}
    state = state_for(status, Evidence(pods=READY), at(5))
    fields = state.status_fields()
    assert {k: fields[k] for k in records} == records
    assert fields["analysis"] == status["analysis"]
