"""The shadow phase: its place in the state machine, its checks, the counts it reads from
stable's /metrics text, and what stable's servers are told."""

from __future__ import annotations

import pytest
from core_fixtures import decide, make_md
from modeldeploy.api import Analysis, CheckOutcome, InvalidModelDeployment, Shadow
from modeldeploy.children import server_env, takes_operator_token
from modeldeploy.evidence import _shadow_delta, parse_shadow_metrics, servers_take_operator_token
from modeldeploy.judge import Check, ShadowMetrics, judge_shadow
from modeldeploy.observed import Observed
from modeldeploy.rollout import Evidence, stamp
from modeldeploy.shadow import mirror_document, wanted
from modelserver import metric_names as m
from test_core_rollout import GATES_OK, READY, ROLLOUT, T0, at, canary_status
from test_core_rollout import PASS as PASS_METRICS

SHADOW_ROLLOUT = {**ROLLOUT, "shadow": {"duration": "30s", "fraction": 0.2, "minAgreement": 0.95}}
AGREE = [Check("shadowAgreement", CheckOutcome.PASSED, "100%", ">= 95%", 50)]
DISAGREE = [
    Check(
        "shadowAgreement",
        CheckOutcome.FAILED,
        "40%",
        ">= 95%",
        50,
        "the canary's answers agreed with stable's on 20 of 50 mirrored requests (40%), below "
        "shadow.minAgreement 95%; rejected before it served a user",
    )
]
FEW = [Check("shadowRequests", CheckOutcome.INCONCLUSIVE, "3", ">= 20", 3, "3 requests")]


def step(status: dict, evidence: Evidence, seconds: float, rollout: dict | None = None):
    md = make_md({"rollout": rollout or SHADOW_ROLLOUT}, status=status)
    return decide(md, "canary1", {"stable1", "canary1"}, evidence, at(seconds), T0)


def shadow_status(started: float = 0, **analysis) -> dict:
    return canary_status(shadowStartedAt=stamp(at(started)), **analysis)


def test_passing_gates_start_the_shadow_phase_at_zero_percent():
    state = step(canary_status(gates=False), Evidence(pods=READY, gates=GATES_OK), 30)
    assert state.weight == 0 and state.step == 0
    assert state.analysis.shadow_started_at == at(30)
    assert state.analysis.traffic_started_at is None
    assert [e.reason for e in state.events] == ["ShadowStarted"]
    assert "20%" in state.events[0].message and wanted(state.status_fields()) == "canary1"


def test_without_gates_the_shadow_phase_waits_for_every_canary_pod_to_be_ready():
    rollout = {**SHADOW_ROLLOUT, "analysis": {**ROLLOUT["analysis"], "compareMetadata": False}}
    waiting = Check("podsReady", CheckOutcome.INCONCLUSIVE, "0/1")
    state = step(canary_status(gates=False), Evidence(pods=waiting), 5, rollout)
    assert state.weight == 0 and state.analysis.shadow_started_at is None
    assert state.analysis.traffic_started_at is None and not state.events
    state = step(canary_status(gates=False), Evidence(pods=READY), 9, rollout)
    assert state.weight == 0 and state.analysis.shadow_started_at == at(9)


def test_without_a_ready_stable_there_is_no_one_to_mirror_and_no_shadow_phase():
    evidence = Evidence(pods=READY, gates=GATES_OK, fallback_ready=False)
    state = step(canary_status(gates=False), evidence, 30)
    # Judged on its own and rolled forward, as without a shadow.
    assert state.stable == "canary1" and state.canary is None
    assert [e.reason for e in state.events] == ["StableUnavailable", "RolledForward"]


def test_without_shadow_the_gates_open_the_first_step_as_before():
    state = step(canary_status(gates=False), Evidence(pods=READY, gates=GATES_OK), 30, ROLLOUT)
    assert state.weight == 10 and state.analysis.shadow_started_at is None


def test_the_shadow_phase_holds_zero_percent_until_its_duration_passed():
    state = step(shadow_status(started=0), Evidence(pods=READY, metrics=AGREE), 20)
    assert state.weight == 0 and state.step == 0 and not state.events
    assert state.analysis.traffic_started_at is None


def test_an_agreeing_shadow_opens_the_first_step_after_its_duration():
    state = step(shadow_status(started=0), Evidence(pods=READY, metrics=AGREE), 31)
    assert (state.step, state.weight) == (0, 10)
    assert state.analysis.traffic_started_at == at(31)
    assert state.step_started_at == stamp(at(31))  # the first step's clock starts with traffic
    assert [e.reason for e in state.events] == ["ShadowPassed"]
    assert "100%" in state.events[0].message and wanted(state.status_fields()) is None


def test_inconclusive_shadow_intervals_do_not_count_towards_the_duration():
    state = step(shadow_status(started=0), Evidence(pods=READY, metrics=FEW), 31)
    assert state.weight == 0
    assert state.analysis.shadow_started_at == at(10)  # moved on by one interval


def test_a_disagreeing_shadow_is_rejected_after_failure_threshold_intervals():
    first = step(shadow_status(started=0), Evidence(pods=READY, metrics=DISAGREE), 10)
    assert first.canary == "canary1" and first.analysis.consecutive_failures == 1
    state = step(
        shadow_status(started=0, consecutiveFailures=1), Evidence(pods=READY, metrics=DISAGREE), 20
    )
    assert state.canary is None and state.weight == 0
    record = state.status_fields()["lastRollback"]
    assert record["check"] == "shadowAgreement"
    assert (record["observedValue"], record["threshold"], record["samples"]) == (
        "40%",
        ">= 95%",
        50,
    )
    assert "timeToDetect" not in record  # no user ever got an answer from it
    assert "before it served a user" in record["message"]
    assert state.rejected[0].reason == "ShadowDisagrees"
    assert [e.reason for e in state.events] == ["RolledBack"]


def test_a_shadow_removed_from_the_spec_mid_phase_lets_the_first_step_start():
    state = step(shadow_status(started=0), Evidence(pods=READY, metrics=PASS_METRICS), 5, ROLLOUT)
    assert state.weight == 10 and state.analysis.traffic_started_at == at(5)


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        (ShadowMetrics(mirrored=10, agreed=10), {"shadowRequests": "Inconclusive"}),
        (
            ShadowMetrics(mirrored=50, agreed=49, disagreed=1),
            {"shadowAgreement": "Passed", "shadowErrorRate": "Passed"},
        ),
        (
            ShadowMetrics(mirrored=50, agreed=40, disagreed=10),
            {"shadowAgreement": "Failed", "shadowErrorRate": "Passed"},
        ),
        (ShadowMetrics(mirrored=50, errors=50), {"shadowErrorRate": "Failed"}),
        (None, {"shadowMetrics": "Inconclusive"}),
    ],
)
def test_judge_shadow(counts, expected):
    analysis = Analysis(min_requests=20)
    checks = judge_shadow(analysis, Shadow(min_agreement=0.95), counts)
    assert {c.name: c.outcome.value for c in checks} == expected


def test_judge_shadow_names_agreement_against_the_threshold_and_judges_p99():
    analysis = Analysis(min_requests=20, max_latency_p99="50ms")
    counts = ShadowMetrics(
        mirrored=50, agreed=40, disagreed=10, buckets={0.025: 10, 0.1: 50, float("inf"): 50}
    )
    checks = {c.name: c for c in judge_shadow(analysis, Shadow(min_agreement=0.95), counts)}
    agreement = checks["shadowAgreement"]
    assert (agreement.value, agreement.threshold, agreement.samples) == ("80%", ">= 95%", 50)
    assert "40 of 50" in agreement.message
    assert checks["shadowLatencyP99"].outcome == CheckOutcome.FAILED


METRICS_TEXT = f"""
# TYPE {m.SHADOW_MIRRORED_TOTAL} counter
{m.SHADOW_MIRRORED_TOTAL}{{model="fraud",version="stable1",shadow="canary1"}} 30
{m.SHADOW_MIRRORED_TOTAL}{{model="fraud",version="stable1",shadow="older"}} 99
# TYPE {m.SHADOW_AGREED_TOTAL} counter
{m.SHADOW_AGREED_TOTAL}{{model="fraud",version="stable1",shadow="canary1"}} 25
# TYPE {m.SHADOW_DISAGREED_TOTAL} counter
{m.SHADOW_DISAGREED_TOTAL}{{model="fraud",version="stable1",shadow="canary1"}} 4
# TYPE {m.SHADOW_ERRORS_TOTAL} counter
{m.SHADOW_ERRORS_TOTAL}{{model="fraud",version="stable1",shadow="canary1"}} 1
# TYPE {m.SHADOW_DROPPED_TOTAL} counter
{m.SHADOW_DROPPED_TOTAL}{{model="fraud",version="stable1",shadow="canary1"}} 2
# TYPE {m.SHADOW_DURATION_SECONDS} histogram
{m.SHADOW_DURATION_SECONDS}_bucket{{model="fraud",version="stable1",shadow="canary1",le="0.01"}} 29
{m.SHADOW_DURATION_SECONDS}_bucket{{model="fraud",version="stable1",shadow="canary1",le="+Inf"}} 29
"""


def test_shadow_counts_are_read_for_the_canary_only_and_windowed():
    now = parse_shadow_metrics(METRICS_TEXT, "fraud", "canary1")
    assert (now.mirrored, now.agreed, now.disagreed, now.errors, now.dropped) == (30, 25, 4, 1, 2)
    assert now.buckets == {0.01: 29, float("inf"): 29}
    before = ShadowMetrics(10, 0, 9, 1, 0, {0.01: 10, float("inf"): 10})
    window = _shadow_delta(now, before)
    assert (window.mirrored, window.agreed, window.disagreed, window.errors) == (20, 16, 3, 1)
    restarted = ShadowMetrics(mirrored=40)
    assert _shadow_delta(now, restarted) == now  # counts went down: the pod restarted


def pod(name: str, revision: str, ip: str, ready: bool = True) -> dict:
    return {
        "metadata": {
            "name": name,
            "namespace": "ml",
            "labels": {"modeldeploy.io/name": "fraud", "modeldeploy.io/revision": revision},
        },
        "spec": {
            "containers": [
                {
                    "name": "server",
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "env": [{"name": "MODELSERVER_MODEL_NAME", "value": "fraud-v2"}],
                }
            ]
        },
        "status": {
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def test_stable_servers_are_told_the_canarys_ready_pods_and_a_time_to_live():
    md = make_md({"rollout": SHADOW_ROLLOUT})
    observed = Observed(
        pods=[
            pod("c-1", "canary1", "10.0.0.2"),
            pod("c-2", "canary1", "10.0.0.1"),
            pod("c-3", "canary1", "10.0.0.3", ready=False),
            pod("s-1", "stable1", "10.0.0.9"),
        ]
    )
    doc = mirror_document(md, observed, "canary1")
    assert doc == {
        "revision": "canary1",
        "model": "fraud-v2",
        "targets": ["http://10.0.0.1:8080", "http://10.0.0.2:8080"],
        "fraction": 0.2,
        "tolerance": 0.0,
        "maxQueue": 1000,
        "ttlSeconds": 30.0,  # three 10 s intervals, and at least 30 s
    }
    assert (
        mirror_document(md, Observed(pods=[pod("s-1", "stable1", "10.0.0.9")]), "canary1") is None
    )


def test_shadow_duration_must_cover_one_analysis_interval():
    with pytest.raises(InvalidModelDeployment, match=r"at least analysis\.interval"):
        make_md({"rollout": {**ROLLOUT, "shadow": {"duration": "5s"}}})
    with pytest.raises(InvalidModelDeployment):
        make_md({"rollout": {**ROLLOUT, "shadow": {"fraction": 0}}})
    assert make_md({"rollout": {**ROLLOUT, "shadow": {}}}).spec.rollout.shadow == Shadow()


GATEWAY_TRAFFIC = {"router": "gateway-api", "gateway": {"parentRefs": [{"name": "public"}]}}


def test_gateway_mirroring_needs_the_gateway_api_router():
    rollout = {**ROLLOUT, "shadow": {"mirror": "Gateway"}}
    with pytest.raises(InvalidModelDeployment, match=r"needs traffic\.router gateway-api"):
        make_md({"rollout": rollout})
    md = make_md({"rollout": rollout, "traffic": GATEWAY_TRAFFIC})
    assert md.spec.rollout.shadow is not None and md.spec.rollout.shadow.mirror == "Gateway"


def test_the_http_route_mirrors_a_fraction_to_the_canary_only_while_shadowing():
    from modeldeploy.traffic import build_http_route

    rollout = {**ROLLOUT, "shadow": {"mirror": "Gateway", "fraction": 0.125}}
    md = make_md({"rollout": rollout, "traffic": GATEWAY_TRAFFIC})
    route = build_http_route(md, "canary1", 0, mirror=True)
    assert route is not None
    rule = route["spec"]["rules"][0]
    assert rule["filters"] == [
        {
            "type": "RequestMirror",
            "requestMirror": {
                "backendRef": {"name": "fraud-canary", "port": 80},
                "fraction": {"numerator": 1250, "denominator": 10000},
            },
        }
    ]
    assert [b["weight"] for b in rule["backendRefs"]] == [100, 0]
    after = build_http_route(md, "canary1", 10, mirror=False)
    assert after is not None and "filters" not in after["spec"]["rules"][0]


def route_filters(
    rollout: dict, shadow_started: bool, traffic_started: bool
) -> dict[str, list | None]:
    """The filters of the HTTPRoute and the GRPCRoute the planner writes for a gRPC-on model
    with the canary at 0%, by kind (None: the rule has none)."""
    from modeldeploy.api import AnalysisStatus
    from modeldeploy.planner import plan_children
    from modeldeploy.rollout import RolloutState

    serving = {"grpc": {"enabled": True, "port": 9001}}
    md = make_md({"rollout": rollout, "traffic": GATEWAY_TRAFFIC, "serving": serving})
    analysis = AnalysisStatus(
        shadow_started_at=at(0) if shadow_started else None,
        traffic_started_at=at(30) if traffic_started else None,
    )
    state = RolloutState(stable="stable1", canary="canary1", weight=0, step=0, analysis=analysis)
    objects, _, _ = plan_children(md, Observed(), state, "canary1", "img:1")
    return {
        o["kind"]: o["spec"]["rules"][0].get("filters")
        for o in objects
        if o["kind"] in ("HTTPRoute", "GRPCRoute")
    }


def test_with_grpc_on_the_grpc_route_mirrors_the_same_fraction_to_the_canarys_grpc_port():
    rollout = {**SHADOW_ROLLOUT, "shadow": {**SHADOW_ROLLOUT["shadow"], "mirror": "Gateway"}}
    filters = route_filters(rollout, shadow_started=True, traffic_started=False)
    mirror = {"name": "fraud-canary", "port": 9001}
    fraction = {"numerator": 2000, "denominator": 10000}
    assert filters["GRPCRoute"] == [
        {"type": "RequestMirror", "requestMirror": {"backendRef": mirror, "fraction": fraction}}
    ]
    # The same copy as REST's, to the Services' grpc port instead of port 80.
    assert filters["HTTPRoute"] is not None
    assert filters["HTTPRoute"][0]["requestMirror"]["fraction"] == fraction
    assert filters["HTTPRoute"][0]["requestMirror"]["backendRef"]["port"] == 80
    # Once live traffic started, and without a shadow phase, neither route mirrors.
    live = route_filters(rollout, shadow_started=True, traffic_started=True)
    assert live == {"HTTPRoute": None, "GRPCRoute": None}
    plain = route_filters(ROLLOUT, shadow_started=False, traffic_started=False)
    assert plain == {"HTTPRoute": None, "GRPCRoute": None}


def test_gateway_shadow_is_judged_on_the_canarys_own_errors_without_agreement():
    from modeldeploy.judge import RevisionMetrics, judge_shadow_alone

    checks = judge_shadow_alone(Analysis(min_requests=20), RevisionMetrics(100, 30))
    assert [(c.name, c.outcome.value, c.value) for c in checks] == [
        ("shadowErrorRate", "Failed", "30%")
    ]
    few = judge_shadow_alone(Analysis(min_requests=20), RevisionMetrics(3, 0))
    assert few[0].name == "shadowRequests" and "requests mirrored to the canary" in few[0].message


# --- /v2/shadow takes the operator's credential ---------------------------------------------


def test_a_stable_started_before_the_shadow_was_set_cannot_mirror_and_the_phase_is_skipped():
    evidence = Evidence(pods=READY, gates=GATES_OK, stable_mirrors=False)
    state = step(canary_status(gates=False), evidence, 30)
    # Straight to the first step, saying why, instead of a phase whose copies never come.
    assert state.weight == 10 and state.analysis.shadow_started_at is None
    assert [e.reason for e in state.events] == ["ShadowSkipped"]
    assert state.events[0].type == "Warning" and "stable1" in state.events[0].message


def test_the_gateway_mirror_needs_nothing_of_stables_servers():
    rollout = {**SHADOW_ROLLOUT, "shadow": {**SHADOW_ROLLOUT["shadow"], "mirror": "Gateway"}}
    md = make_md(
        {"rollout": rollout, "traffic": GATEWAY_TRAFFIC}, status=canary_status(gates=False)
    )
    evidence = Evidence(pods=READY, gates=GATES_OK, stable_mirrors=False)
    state = decide(md, "canary1", {"stable1", "canary1"}, evidence, at(30), T0)
    assert state.weight == 0 and state.analysis.shadow_started_at == at(30)


@pytest.mark.parametrize(
    "spec, carries",
    [
        ({}, False),  # no auth, no shadow: the revision does not depend on the credential
        ({"rollout": SHADOW_ROLLOUT}, True),  # stable's /v2/shadow needs it
        ({"serving": {"authSecretRef": {"name": "s"}}}, True),  # gates and scrapes need it
    ],
)
def test_pods_carry_the_operators_digest_where_auth_or_mirroring_needs_it(spec, carries):
    md = make_md(spec)
    env = {e["name"]: e.get("value") for e in server_env(md, "r1", "file:///m", "d" * 64)}
    assert ("MODELSERVER_OPERATOR_TOKEN_SHA256" in env) is carries
    assert takes_operator_token(md) is carries


def test_stables_servers_take_the_token_as_their_deployment_says():
    def deployment(revision: str, env: list[dict]) -> dict:
        container = {"name": "model-server", "env": env}
        return {
            "metadata": {"name": revision, "labels": {"modeldeploy.io/revision": revision}},
            "spec": {"template": {"spec": {"containers": [container]}}},
        }

    digest = [{"name": "MODELSERVER_OPERATOR_TOKEN_SHA256", "value": "d" * 64}]
    observed = Observed(deployments=[deployment("old", []), deployment("new", digest)])
    assert not servers_take_operator_token(observed, "old")
    assert servers_take_operator_token(observed, "new")
    assert not servers_take_operator_token(observed, "gone")
