"""Which passes leave a model settled, so the sweep may skip it until something changes."""

from __future__ import annotations

from typing import Any

import pytest
from modeldeploy.planner import Plan
from modeldeploy.planner_types import Event
from modeldeploy.reconcile import PassResult
from modeldeploy.workers import settled


def conditions(reconciling: str = "False", stalled: str = "False") -> list[dict[str, str]]:
    return [
        {"type": "Ready", "status": "True"},
        {"type": "Reconciling", "status": reconciling},
        {"type": "Stalled", "status": stalled},
    ]


def ready(**changes: Any) -> dict[str, Any]:
    return {"phase": "Ready", "stableRevision": "abc", "conditions": conditions(), **changes}


SERVICE = {"kind": "Service", "metadata": {"name": "fraud"}}


@pytest.mark.parametrize(
    ("plan", "status_written", "expected"),
    [
        (Plan(status=ready()), False, True),  # serving, nothing to do
        (Plan(status=ready()), True, False),  # status just changed: plan once more
        (Plan(apply=[SERVICE], status=ready()), False, False),  # repaired a child
        (Plan(status=ready(), events=[Event("Normal", "Ready", "")]), False, False),
        (Plan(status=ready(), requeue_after=5.0), False, False),  # promoted revision watched
        (Plan(status=ready(canaryRevision="def")), False, False),  # a canary runs
        (Plan(status=ready(conditions=conditions(reconciling="True"))), False, False),  # queued
        (Plan(status=ready(conditions=conditions(stalled="True"))), False, False),  # stalled
        (Plan(status=ready(phase="Progressing")), False, False),
        (Plan(status=ready(phase="Degraded")), False, False),
    ],
)
def test_settled_only_when_nothing_is_done_or_pending(
    plan: Plan, status_written: bool, expected: bool
) -> None:
    assert settled(PassResult(plan, status_written, 0.001)) is expected
