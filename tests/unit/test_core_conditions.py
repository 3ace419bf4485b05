"""Conditions keep their transition time unless their status flips."""

from __future__ import annotations

from modeldeploy.conditions import Condition, merge_conditions


def test_transition_time_kept_when_only_the_message_changes():
    first = merge_conditions(
        None, [Condition("Ready", False, "PodsNotReady", "0 of 2")], now="T1", generation=1
    )
    second = merge_conditions(
        first, [Condition("Ready", False, "PodsNotReady", "1 of 2")], now="T2", generation=2
    )
    assert second[0]["lastTransitionTime"] == "T1"
    assert second[0]["message"] == "1 of 2" and second[0]["observedGeneration"] == 2


def test_transition_time_moves_when_the_status_flips():
    first = merge_conditions(
        None, [Condition("Ready", False, "PodsNotReady")], now="T1", generation=1
    )
    second = merge_conditions(
        first, [Condition("Ready", True, "Available")], now="T2", generation=1
    )
    assert second[0] == {
        "type": "Ready",
        "status": "True",
        "reason": "Available",
        "message": "",
        "lastTransitionTime": "T2",
        "observedGeneration": 1,
    }


def test_conditions_no_longer_desired_are_dropped():
    first = merge_conditions(
        None,
        [Condition("Ready", True, "A"), Condition("Degraded", True, "B")],
        now="T1",
        generation=1,
    )
    assert [
        c["type"]
        for c in merge_conditions(first, [Condition("Ready", True, "A")], now="T2", generation=1)
    ] == ["Ready"]
