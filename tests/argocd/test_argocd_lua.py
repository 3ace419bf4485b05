"""The Argo CD health check and resource actions over the committed fixtures, as Argo CD tests its
own (resource_customizations/*/*/health_test.yaml): no cluster, only the Lua VM Argo CD embeds
(tests/argocd/runner, built from the Go module proxy).

The fixtures are ModelDeployments recorded from real rollouts by
tests/integration/test_operate.py (`make argocd-fixtures`), which also checks that each still is
the situation it stands for.
"""

from __future__ import annotations

import copy
from typing import Any

import argocdkit as kit
import pytest
import yaml

VERDICTS = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing"}


def health_tests() -> list[dict[str, Any]]:
    return list(yaml.safe_load(kit.HEALTH_TESTS.read_text())["tests"])


def fixture_name(test: dict[str, Any]) -> str:
    return str(test["inputPath"]).removeprefix("testdata/").removesuffix(".yaml")


def test_every_fixture_has_its_health_test():
    names = [fixture_name(t) for t in health_tests()]
    assert sorted(names) == sorted(kit.FIXTURES)
    assert {t["healthStatus"]["status"] for t in health_tests()} == VERDICTS


def test_health_lua_gives_each_fixture_its_verdict_and_message():
    tests = health_tests()
    cases = [
        {
            "op": "health",
            "script": kit.shipped().health,
            "object": kit.load_fixture(fixture_name(t)),
        }
        for t in tests
    ]
    results = kit.run(cases)
    for test, result in zip(tests, results, strict=True):
        assert "error" not in result, (test["inputPath"], result)
        assert result["health"] == test["healthStatus"], test["inputPath"]


def test_health_tests_say_what_a_person_should_read():
    """health_test.yaml agrees with the verdicts written out per situation in argocdkit, which
    are derived from the fixture's fields independently of the Lua."""
    for test in health_tests():
        name = fixture_name(test)
        assert test["healthStatus"] == kit.expected_health(name, kit.load_fixture(name)), name


@pytest.mark.parametrize("name", kit.FIXTURES)
def test_each_situation_offers_the_actions_that_apply(name):
    assert kit.enabled(kit.load_fixture(name)) == kit.ENABLED_ACTIONS[name]


def test_an_unknown_phase_is_unknown_not_healthy():
    obj = copy.deepcopy(kit.load_fixture("ready"))
    obj["status"]["phase"] = "Sideways"
    assert kit.health(obj) == {
        "status": "Unknown",
        "message": "phase Sideways is not known to this health check",
    }


def test_a_queued_operator_rollout_is_progressing_not_healthy():
    obj = copy.deepcopy(kit.load_fixture("ready"))
    others = [c for c in obj["status"]["conditions"] if c["type"] != "Reconciling"]
    obj["status"]["conditions"] = [
        *others,
        {
            "type": "Reconciling",
            "status": "True",
            "reason": "RolloutQueued",
            "message": "waiting for a rollout slot (10 in flight)",
        },
    ]
    assert kit.health(obj) == {
        "status": "Progressing",
        "message": "RolloutQueued: waiting for a rollout slot (10 in flight)",
    }


@pytest.mark.parametrize("action", kit.ONE_SHOT)
def test_one_shot_actions_write_a_fresh_request_and_nothing_else(action):
    obj = kit.load_fixture("progressing-canary" if action != "retry" else "rolled-back")
    run = kit.act(obj, action)
    assert run["statusPatch"] is None
    patch = run["patch"]
    assert patch == {"metadata": {"annotations": {f"modeldeploy.io/{action}": patch["metadata"]["annotations"][f"modeldeploy.io/{action}"]}}}  # fmt: skip
    token = patch["metadata"]["annotations"][f"modeldeploy.io/{action}"]
    assert kit.TOKEN.fullmatch(token), token
    # Asked again with that request still on the object: the value changes, so the operator,
    # which acts on values it has not acknowledged, sees a new request.
    again = copy.deepcopy(obj)
    again["metadata"].setdefault("annotations", {})[f"modeldeploy.io/{action}"] = token
    second = kit.act(again, action)["patch"]["metadata"]["annotations"][f"modeldeploy.io/{action}"]
    assert second != token and kit.TOKEN.fullmatch(second), (token, second)


def test_pause_and_resume_set_and_remove_the_annotation():
    obj = kit.load_fixture("progressing-canary")
    assert kit.act(obj, "pause")["patch"] == {
        "metadata": {"annotations": {"modeldeploy.io/paused": "true"}}
    }
    paused = kit.load_fixture("paused")
    assert kit.act(paused, "resume")["patch"] == {
        "metadata": {"annotations": {"modeldeploy.io/paused": None}}
    }
