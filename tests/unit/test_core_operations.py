"""Decisions the operator's shell makes about itself: smoke inputs it cannot use, rollout slots,
back-off, and what its health endpoints say."""

from __future__ import annotations

import pytest
from core_fixtures import make_md
from modeldeploy.health import liveness, readiness
from modeldeploy.observed import Observed
from modeldeploy.reconcile import RolloutSlots, admit, parse_smoke_requests
from modeldeploy.revision import SPEC_DIGEST, spec_digest
from modeldeploy.runtime import backoff_seconds


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ('[{"inputs": []}]', None),
        ("[]", None),  # empty is judged by the caller, with the inline inputs in view
        ("[{", "is not valid JSON: Expecting property name"),
        ('{"inputs": []}', "must be a JSON array of inference requests, not a JSON object"),
        ('"x"', "not a JSON string"),
        ('[{"inputs": []}, 3]', "item 1 is not an inference request object: 3"),
    ],
)
def test_smoke_requests_from_a_config_map_value(raw, problem):
    found, _ = parse_smoke_requests(raw)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def md_with_stable(digest_of: dict, canary: str | None = None):
    md = make_md(status={"stableRevision": "old", **({"canaryRevision": canary} if canary else {})})
    annotations = {SPEC_DIGEST: spec_digest(make_md(digest_of).spec)}
    labels = {"modeldeploy.io/revision": "old"}
    deployment = {"metadata": {"name": "fraud-old", "labels": labels, "annotations": annotations}}
    observed = Observed(deployments=[deployment])
    return md, observed


def test_operator_caused_rollouts_share_a_fleet_wide_cap_and_user_changes_skip_it():
    slots = RolloutSlots(limit=1)
    slots.acquire(("ml", "other"))
    md, observed = md_with_stable({})
    waiting = admit(md, observed, "new", slots)
    assert waiting.cause == "Operator" and "1 of 1 in use" in (waiting.waiting or "")
    user_md, user_observed = md_with_stable({"model": {"uri": "s3://models/fraud/v1/m.joblib"}})
    assert admit(user_md, user_observed, "new", slots).waiting is None
    slots.release(("ml", "other"))
    assert admit(md, observed, "new", slots).waiting is None and slots.in_use() == 1


def test_a_running_operator_caused_canary_keeps_its_slot_even_over_the_cap():
    slots = RolloutSlots(limit=1)
    slots.acquire(("ml", "other"))
    md, observed = md_with_stable({}, canary="new")
    assert admit(md, observed, "new", slots).waiting is None, "found running after a restart"
    assert slots.in_use() == 2


def test_backoff_doubles_to_a_minute():
    assert [backoff_seconds(n) for n in (1, 2, 3, 7, 50)] == [1, 2, 4, 60, 60]


def test_liveness_fails_only_when_a_worker_is_stuck_in_one_pass():
    assert liveness(100.0, (90.0, "idle"), 120).ok
    stuck = liveness(300.0, (100.0, "pass of ml/fraud"), 120)
    assert not stuck.ok and stuck.detail["workers"] == "stuck for 200s in pass of ml/fraud"


def test_readiness_names_how_long_the_api_server_has_been_unreachable():
    assert readiness(100.0, None, "").ok
    down = readiness(100.0, 40.0, "ConnectionRefusedError")
    assert not down.ok and down.detail == {
        "apiServer": "unreachable for 60s",
        "lastError": "ConnectionRefusedError",
    }
