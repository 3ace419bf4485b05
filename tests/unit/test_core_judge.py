"""Judgements of canary evidence and the traffic arithmetic, as worked examples."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from modeldeploy.api import Analysis, CheckOutcome, Router
from modeldeploy.judge import (
    RevisionMetrics,
    compare_metadata,
    compare_predictions,
    histogram_quantile,
    judge_metrics,
    judge_pods,
)
from modeldeploy.traffic import effective_weight, gateway_split, replica_split, weight_summary

T0 = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)


def test_histogram_quantile_interpolates_like_prometheus():
    assert histogram_quantile(0.99, {0.01: 90, 0.1: 100, math.inf: 100}) == pytest.approx(0.091)
    assert histogram_quantile(0.5, {0.01: 0, 0.1: 0, math.inf: 0}) is None
    assert histogram_quantile(0.99, {0.01: 10, math.inf: 100}) == 0.01


def analysis(**kw) -> Analysis:
    return Analysis.model_validate({"minRequests": 20, **kw})


@pytest.mark.parametrize(
    ("canary", "stable", "settings", "expected"),
    [
        (RevisionMetrics(10, 0), None, {}, {"requests": "Inconclusive"}),
        (RevisionMetrics(100, 10), None, {}, {"errorRate": "Failed"}),
        (RevisionMetrics(100, 1), None, {}, {"errorRate": "Passed"}),
        (RevisionMetrics(100, 0, p99_seconds=0.3), None, {"maxLatencyP99": "250ms"}, {"errorRate": "Passed", "latencyP99": "Failed"}),
        (RevisionMetrics(100, 3), RevisionMetrics(100, 0), {"maxErrorRateIncrease": 0.01}, {"errorRate": "Passed", "errorRateVsStable": "Failed"}),
        (RevisionMetrics(100, 0, p99_seconds=0.2), RevisionMetrics(100, 0, p99_seconds=0.1), {"maxLatencyIncrease": 0.5}, {"errorRate": "Passed", "latencyVsStable": "Failed"}),
        (RevisionMetrics(100, 0, p99_seconds=0.2), RevisionMetrics(5, 0, p99_seconds=0.1), {"maxLatencyIncrease": 0.5}, {"errorRate": "Passed"}),
        (None, None, {}, {"metrics": "Inconclusive"}),
    ],
)  # fmt: skip
def test_judge_metrics(canary, stable, settings, expected):
    checks = judge_metrics(analysis(**settings), canary, stable)
    assert {c.name: c.outcome.value for c in checks} == expected


def pod(ready=True, waiting=None, restarts=0, last=None):
    status = {
        "restartCount": restarts,
        "state": {"waiting": {"reason": waiting}} if waiting else {"running": {}},
    }
    if last:
        status["lastState"] = {"terminated": {"reason": last}}
    return {
        "metadata": {"name": "p"},
        "status": {
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [status],
        },
    }


@pytest.mark.parametrize(
    ("pods", "waited", "name", "outcome"),
    [
        ([pod(), pod()], 5, "podsReady", "Passed"),
        ([pod(ready=False)], 5, "podsReady", "Inconclusive"),
        ([pod(ready=False)], 400, "podsReady", "Failed"),
        ([pod(ready=False, waiting="CrashLoopBackOff", restarts=3)], 5, "podsHealthy", "Failed"),
        ([pod(ready=False, waiting="ImagePullBackOff")], 5, "podsHealthy", "Failed"),
        ([pod(restarts=1, last="OOMKilled")], 5, "podsHealthy", "Failed"),
        ([pod(restarts=1)], 5, "podsReady", "Passed"),
        ([pod(restarts=2)], 5, "podsReady", "Passed"),
        ([pod(restarts=3)], 5, "podsHealthy", "Failed"),
    ],
)
def test_judge_pods(pods, waited, name, outcome):
    check = judge_pods(pods, T0, T0 + dt.timedelta(seconds=waited), "300s")
    assert (check.name, check.outcome.value) == (name, outcome)
    assert check.hard == (outcome == "Failed")


def test_restarts_fail_only_above_max_restarts():
    strict = judge_pods([pod(restarts=1)], T0, T0, "300s", max_restarts=0)
    assert (strict.outcome.value, strict.value, strict.threshold) == (
        "Failed",
        "1 restarts",
        "<= 0 restarts",
    )
    assert judge_pods([pod(restarts=5)], T0, T0, "300s", max_restarts=5).outcome.value == "Passed"


def meta(shape):
    return {
        "inputs": [{"name": "input-0", "datatype": "FP32", "shape": shape}],
        "outputs": [{"name": "predict", "datatype": "INT64", "shape": [-1]}],
    }


def test_metadata_gate_compares_names_datatypes_and_shapes():
    assert compare_metadata(meta([-1, 4]), meta([-1, 4])).outcome == CheckOutcome.PASSED
    failed = compare_metadata(meta([-1, 5]), meta([-1, 4]))
    assert failed.outcome == CheckOutcome.FAILED and "inputs" in failed.message


def response(values):
    return {"outputs": [{"name": "p", "datatype": "FP64", "shape": [len(values)], "data": values}]}


def test_smoke_predictions_must_agree_within_tolerance():
    assert (
        compare_predictions([response([0.5])], [response([0.52])], 0.05).outcome
        == CheckOutcome.PASSED
    )
    failed = compare_predictions([response([0.9])], [response([0.5])], 0.05)
    assert failed.outcome == CheckOutcome.FAILED and failed.value == "0.4"
    assert (
        compare_predictions([response([0.9])], [response([0.5])], None).outcome
        == CheckOutcome.PASSED
    )


@pytest.mark.parametrize(
    ("weight", "stable", "canary", "planned"),
    [
        (10, 10, 1, 9.09),
        (50, 3, 3, 50.0),
        (10, 1, 1, 50.0),
        (25, 4, 1, 20.0),
        (100, 4, 4, 100.0),
        (0, 4, 1, 0.0),
    ],
)
def test_replica_split_worked_examples(weight, stable, canary, planned):
    split = replica_split(weight, stable)
    assert split.canary_replicas == canary and split.planned_weight == pytest.approx(
        planned, abs=0.01
    )


def test_gateway_split_needs_only_its_share_of_pods():
    assert gateway_split(10, 10).canary_replicas == 1 and gateway_split(10, 10).planned_weight == 10
    assert gateway_split(60, 10).canary_replicas == 6


def test_effective_weight_and_summary():
    assert effective_weight(Router.REPLICAS, 10, 1, 10) == pytest.approx(100 / 11)
    assert effective_weight(Router.GATEWAY_API, 10, 1, 10) == 10
    assert effective_weight(Router.REPLICAS, 10, 0, 10) == 0
    assert weight_summary(10, 100 / 11) == "10% → 9.1%"
    assert weight_summary(50, 50.0) == "50% → 50%"


def test_each_pod_gets_the_whole_deadline_from_its_own_creation():
    """A pod added at a later step is not held to the canary's start."""
    young = pod(ready=False)
    young["metadata"]["creationTimestamp"] = (
        (T0 + dt.timedelta(seconds=395)).isoformat().replace("+00:00", "Z")
    )
    check = judge_pods([pod(), young], T0, T0 + dt.timedelta(seconds=400), "300s")
    assert check.outcome.value == "Inconclusive"
    old = pod(ready=False)
    old["metadata"]["creationTimestamp"] = T0.isoformat().replace("+00:00", "Z")
    assert (
        judge_pods([pod(), old], T0, T0 + dt.timedelta(seconds=400), "300s").outcome.value
        == "Failed"
    )
