"""The planner as worked examples: (spec, observed children, status so far) → writes and status."""

from __future__ import annotations

import datetime as dt

import pytest
from core_fixtures import deployment_of, make_md, observed_deployment, plan_pass
from modeldeploy.children import build_hpa, build_service
from modeldeploy.config import OperatorConfig
from modeldeploy.naming import REVISION
from modeldeploy.observed import Observed
from modeldeploy.planner import Applied, status_after_apply
from modeldeploy.revision import revision_of

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
CONFIG = OperatorConfig(serving_image="img:1")
V8 = {"model": {"uri": "s3://models/fraud/v8/model.joblib", "version": "v8"}}


def rev(md) -> str:
    return revision_of(md, "img:1")


def pinned_service(md, revision: str) -> dict:
    service = build_service(md)
    service["spec"]["selector"][REVISION] = revision
    return service


def expect(ready=0, progressing=0, degraded=0, reconciling=0, stalled=0) -> dict[str, str]:
    flags = {"Ready": ready, "Progressing": progressing, "Degraded": degraded}
    flags |= {"Reconciling": reconciling, "Stalled": stalled}
    return {k: "True" if v else "False" for k, v in flags.items()}


def conditions(status: dict) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status["conditions"]}


def test_first_pass_creates_deployment_and_service_and_is_pending():
    md = make_md({"scaling": {"replicas": 2}})
    result = plan_pass(md, Observed(), NOW, CONFIG)
    assert [o["kind"] for o in result.apply] == ["Deployment", "Service"]
    assert result.apply[1]["spec"]["selector"][REVISION] == rev(md)
    assert result.delete == []
    assert result.status["phase"] == "Pending"
    assert conditions(result.status) == expect(ready=0, progressing=1, degraded=0, reconciling=1)
    assert [e.reason for e in result.events] == ["RevisionCreated"]


def test_rolled_out_children_make_no_writes_and_report_ready():
    md = make_md({"scaling": {"replicas": 2}})
    r = rev(md)
    observed = Observed(
        deployments=[observed_deployment(deployment_of(md, r, "img:1", 2))],
        services=[pinned_service(md, r)],
    )
    result = plan_pass(md, observed, NOW, CONFIG)
    assert result.writes == 0
    assert result.status["phase"] == "Ready"
    assert (result.status["readyReplicas"], result.status["stableRevision"]) == (2, r)
    assert conditions(result.status)["Ready"] == "True"
    assert [e.reason for e in result.events] == ["Ready"]


def test_model_change_starts_a_canary_beside_the_stable_revision():
    old_md = make_md({"scaling": {"replicas": 2}})
    old = rev(old_md)
    md = make_md(
        {"scaling": {"replicas": 2}, **V8}, status={"stableRevision": old, "phase": "Ready"}
    )
    observed = Observed(
        deployments=[observed_deployment(deployment_of(old_md, old, "img:1", 2))],
        services=[pinned_service(old_md, old)],
    )
    result = plan_pass(md, observed, NOW, CONFIG)
    canary = next(o for o in result.apply if o["metadata"]["name"] == f"fraud-{rev(md)}")
    assert canary["spec"]["replicas"] == 1, "one warm pod while the model gates run"
    assert result.delete == []
    assert result.status["phase"] == "Progressing"
    assert result.status["stableRevision"] == old and result.status["canaryRevision"] == rev(md)
    assert result.status["weightSummary"] == "0% → 0%"
    assert conditions(result.status)["Ready"] == "True", "the stable revision still serves"
    assert result.requeue_after is not None


def test_canary_at_a_middle_step_unpins_the_service():
    old_md = make_md({"scaling": {"replicas": 4}})
    old = rev(old_md)
    md = make_md(
        {"scaling": {"replicas": 4}, "rollout": {"steps": [25, 100]}, **V8},
        status={
            "stableRevision": old,
            "canaryRevision": "x",
            "currentStep": 0,
            "stepStartedAt": "2026-11-27T11:59:50Z",
            "analysis": {"checks": [{"name": "modelMetadata", "outcome": "Passed"}]},
        },
    )
    new = rev(md)
    md = make_md(
        {"scaling": {"replicas": 4}, "rollout": {"steps": [25, 100]}, **V8},
        status={
            **md.status.model_dump(mode="json", by_alias=True, exclude_none=True),
            "canaryRevision": new,
        },
    )
    observed = Observed(
        deployments=[
            observed_deployment(deployment_of(old_md, old, "img:1", 4)),
            observed_deployment(deployment_of(md, new, "img:1", 1)),
        ],
        services=[pinned_service(old_md, old)],
    )
    result = plan_pass(md, observed, NOW, CONFIG)
    service = next(o for o in result.apply if o["kind"] == "Service")
    assert REVISION not in service["spec"]["selector"], "traffic spreads over both revisions"
    assert result.status["desiredWeight"] == 25
    assert result.status["weightSummary"] == "25% → 20%"
    split = {c["type"]: c for c in result.status["conditions"]}["TrafficSplitExact"]
    assert split["status"] == "True"


def test_first_deploy_past_its_progress_deadline_is_degraded_and_stalled():
    md = make_md()
    r = rev(md)
    stuck = observed_deployment(deployment_of(md, r, "img:1", 1), ready=0)
    stuck["status"]["conditions"] = [
        {
            "type": "Progressing",
            "status": "False",
            "reason": "ProgressDeadlineExceeded",
            "message": "timed out",
        }
    ]
    result = plan_pass(
        md, Observed(deployments=[stuck], services=[pinned_service(md, r)]), NOW, CONFIG
    )
    assert result.status["phase"] == "Degraded"
    assert conditions(result.status) == expect(ready=0, progressing=0, degraded=1, stalled=1)
    assert [e.reason for e in result.events] == ["ProgressDeadlineExceeded"]


def test_autoscaling_adds_an_hpa_and_dropping_it_deletes_the_hpa():
    md = make_md({"scaling": {"minReplicas": 2, "maxReplicas": 4}})
    r = rev(md)
    result = plan_pass(md, Observed(), NOW, CONFIG)
    assert "HorizontalPodAutoscaler" in [o["kind"] for o in result.apply]
    assert "replicas" not in result.apply[0]["spec"]

    fixed = make_md({"scaling": {"replicas": 2}})
    hpa = build_hpa(md, f"fraud-{r}")
    observed = Observed(
        deployments=[observed_deployment(deployment_of(fixed, r, "img:1", 2))],
        services=[pinned_service(fixed, r)],
        hpas=[hpa] if hpa else [],
    )
    assert [d.kind for d in plan_pass(fixed, observed, NOW, CONFIG).delete] == [
        "HorizontalPodAutoscaler"
    ]


def test_status_is_stable_across_passes():
    """Two passes over the same world produce the same status: no write on the second."""
    md = make_md()
    r = rev(md)
    observed = Observed(
        deployments=[observed_deployment(deployment_of(md, r, "img:1", 1))],
        services=[pinned_service(md, r)],
    )
    first = plan_pass(md, observed, NOW, CONFIG)
    again = make_md(status=first.status)
    second = plan_pass(again, observed, NOW + dt.timedelta(minutes=5), CONFIG)
    assert second.status == first.status
    assert second.events == []


def canary_md(spec: dict, stable: str, canary: str, step: int, gates: bool = True):
    status = {
        "stableRevision": stable,
        "canaryRevision": canary,
        "currentStep": step,
        "stepStartedAt": "2026-11-27T11:59:50Z",
        "analysis": {"checks": [{"name": "modelMetadata", "outcome": "Passed"}] if gates else []},
    }
    return make_md(spec, status=status)


def test_canary_is_sized_from_the_hpa_s_choice_and_the_hpa_keeps_the_stable_replicas():
    scaling = {"minReplicas": 2, "maxReplicas": 10}
    old_md = make_md({"scaling": scaling})
    old = rev(old_md)
    stable = observed_deployment(deployment_of(old_md, old, "img:1", 6))
    stable["metadata"]["managedFields"] = [
        {"manager": "kube-controller-manager", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
    ]
    spec = {"scaling": scaling, "rollout": {"steps": [50, 100]}, **V8}
    new = rev(make_md(spec))
    md = canary_md(spec, old, new, 0)
    result = plan_pass(
        md, Observed(deployments=[stable], services=[pinned_service(old_md, old)]), NOW, CONFIG
    )
    canary = next(o for o in result.apply if o["metadata"]["name"] == f"fraud-{new}")
    assert canary["spec"]["replicas"] == 6, "50% beside the HPA's 6 stable pods"
    assert all(
        "replicas" not in o["spec"] for o in result.apply if o["metadata"]["name"] == f"fraud-{old}"
    )
    hpa = next(o for o in result.apply if o["kind"] == "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == f"fraud-{old}", "the HPA stays on stable"


def test_gateway_router_writes_exact_weights_on_an_http_route():
    traffic = {"router": "gateway-api", "gateway": {"parentRefs": [{"name": "public"}]}}
    old_md = make_md({"scaling": {"replicas": 10}, "traffic": traffic})
    old = rev(old_md)
    spec = {"scaling": {"replicas": 10}, "traffic": traffic, "rollout": {"steps": [10, 100]}, **V8}
    new = rev(make_md(spec))
    md = canary_md(spec, old, new, 0)
    observed = Observed(deployments=[observed_deployment(deployment_of(old_md, old, "img:1", 10))])
    result = plan_pass(md, observed, NOW, CONFIG)
    route = next(o for o in result.apply if o["kind"] == "HTTPRoute")
    assert [(b["name"], b["weight"]) for b in route["spec"]["rules"][0]["backendRefs"]] == [
        ("fraud-stable", 90), ("fraud-canary", 10),
    ]  # fmt: skip
    services = {
        o["metadata"]["name"]: o["spec"]["selector"].get(REVISION)
        for o in result.apply
        if o["kind"] == "Service"
    }
    # In-cluster callers of `fraud` follow the split too (pod ratio), not only Gateway clients.
    assert services == {"fraud": None, "fraud-stable": old, "fraud-canary": new}
    canary = next(o for o in result.apply if o["metadata"]["name"] == f"fraud-{new}")
    assert canary["spec"]["replicas"] == 1, "exact weights need only the canary's share of pods"
    assert route["spec"]["parentRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "public"}
    ]


def test_with_grpc_on_a_grpc_route_carries_the_same_weights_to_the_grpc_port():
    traffic = {"router": "gateway-api", "gateway": {"parentRefs": [{"name": "public"}],
                                                    "hostnames": ["fraud.example.com"]}}  # fmt: skip
    serving = {"grpc": {"enabled": True, "port": 9001}}
    old_md = make_md({"scaling": {"replicas": 10}, "traffic": traffic, "serving": serving})
    old = rev(old_md)
    spec = {"scaling": {"replicas": 10}, "traffic": traffic, "serving": serving,
            "rollout": {"steps": [10, 100]}, **V8}  # fmt: skip
    new = rev(make_md(spec))
    observed = Observed(deployments=[observed_deployment(deployment_of(old_md, old, "img:1", 10))])
    result = plan_pass(canary_md(spec, old, new, 0), observed, NOW, CONFIG)
    http = next(o for o in result.apply if o["kind"] == "HTTPRoute")
    grpc = next(o for o in result.apply if o["kind"] == "GRPCRoute")
    assert grpc["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert [(b["name"], b["port"], b["weight"]) for b in grpc["spec"]["rules"][0]["backendRefs"]] == [
        ("fraud-stable", 9001, 90), ("fraud-canary", 9001, 10),
    ]  # fmt: skip
    for key in ("parentRefs", "hostnames"):
        assert grpc["spec"][key] == http["spec"][key]
    assert grpc["metadata"]["name"] == http["metadata"]["name"] == "fraud"
    # gRPC turned off: the GRPCRoute goes; REST-only models never get one.
    plain = {**spec, "serving": {}}
    observed_route = Observed(
        deployments=observed.deployments, grpc_routes=[{"metadata": {"name": "fraud"}}]
    )
    result = plan_pass(canary_md(plain, old, rev(make_md(plain)), 0), observed_route, NOW, CONFIG)
    assert not [o for o in result.apply if o["kind"] == "GRPCRoute"]
    assert [(d.kind, d.name) for d in result.delete if d.kind == "GRPCRoute"] == [
        ("GRPCRoute", "fraud")
    ]


def test_gateway_router_with_a_mesh_attaches_the_route_to_the_models_service():
    traffic = {
        "router": "gateway-api",
        "gateway": {"parentRefs": [{"name": "public"}], "mesh": True},
    }
    md = make_md({"traffic": traffic})
    result = plan_pass(md, Observed(), NOW, CONFIG)
    route = next(o for o in result.apply if o["kind"] == "HTTPRoute")
    assert {"group": "", "kind": "Service", "name": "fraud"} in route["spec"]["parentRefs"]


def test_a_weight_the_replicas_cannot_realise_is_reported():
    old_md = make_md({"scaling": {"replicas": 1}})
    old = rev(old_md)
    spec = {"scaling": {"replicas": 1}, "rollout": {"steps": [10, 100]}, **V8}
    new = rev(make_md(spec))
    observed = Observed(deployments=[observed_deployment(deployment_of(old_md, old, "img:1", 1))])
    result = plan_pass(canary_md(spec, old, new, 0), observed, NOW, CONFIG)
    split = {c["type"]: c for c in result.status["conditions"]}["TrafficSplitExact"]
    assert split["status"] == "False" and split["reason"] == "TooFewReplicas"
    assert "the canary gets 50%" in split["message"]


def test_a_canary_comes_back_when_its_next_analysis_is_due():
    old_md = make_md({"scaling": {"replicas": 2}})
    old = rev(old_md)
    spec = {
        "scaling": {"replicas": 2},
        "rollout": {"steps": [50, 100], "stepDuration": "60s", "analysis": {"interval": "30s"}},
        **V8,
    }
    new = rev(make_md(spec))
    md = canary_md(spec, old, new, 0)
    status = md.status.model_dump(mode="json", by_alias=True, exclude_none=True)
    status["analysis"]["lastRunAt"] = "2026-11-27T11:59:48Z"  # 12 s before NOW
    md = make_md(spec, status=status)
    observed = Observed(deployments=[observed_deployment(deployment_of(old_md, old, "img:1", 2))])
    assert plan_pass(md, observed, NOW, CONFIG).requeue_after == pytest.approx(18)


@pytest.mark.parametrize(("canary_pods", "phase"), [(1, "RollingBack"), (0, "Degraded")])
def test_a_rolled_back_revision_is_rolling_back_until_its_pods_are_gone(canary_pods, phase):
    old_md = make_md({"scaling": {"replicas": 2}})
    old = rev(old_md)
    new = rev(make_md({"scaling": {"replicas": 2}, **V8}))
    rejected = [{"revision": new, "rejectedAt": "2026-11-27T11:59:00Z", "reason": "PodsFailing"}]
    md = make_md(
        {"scaling": {"replicas": 2}, **V8},
        status={"stableRevision": old, "rejectedRevisions": rejected,
                "lastRollback": {"revision": new, "check": "podsHealthy", "time": "2026-11-27T11:59:00Z"}},
    )  # fmt: skip
    canary = observed_deployment(deployment_of(md, new, "img:1", 0))
    canary["status"]["replicas"] = canary_pods
    observed = Observed(
        deployments=[observed_deployment(deployment_of(old_md, old, "img:1", 2)), canary],
        services=[pinned_service(old_md, old)],
    )
    result = plan_pass(md, observed, NOW, CONFIG)
    assert result.status["phase"] == phase
    assert conditions(result.status)["Degraded"] == "True"


def test_an_operator_caused_revision_waiting_for_a_slot_keeps_stable_ready_and_says_why():
    from modeldeploy.pass_phase import OPERATOR_CAUSE, Admission

    md = make_md(
        {"scaling": {"replicas": 2}}, status={"stableRevision": "old1234567", "phase": "Ready"}
    )
    old_md = make_md({"scaling": {"replicas": 2}, "serving": {"image": "img:0"}})
    stable = observed_deployment(deployment_of(old_md, "old1234567", "img:0", 2))
    observed = Observed(deployments=[stable], services=[pinned_service(md, "old1234567")])
    admission = Admission(OPERATOR_CAUSE, waiting="waits for a rollout slot: 10 of 10 in use")
    result = plan_pass(md, observed, NOW, CONFIG, admission=admission)
    assert result.status["phase"] == "Ready" and "canaryRevision" not in result.status
    reconciling = {c["type"]: c for c in result.status["conditions"]}["Reconciling"]
    assert (reconciling["status"], reconciling["reason"]) == ("True", "RolloutQueued")
    assert [o["metadata"]["name"] for o in result.apply if o["kind"] == "Deployment"] == [], (
        "stable untouched"
    )


def test_a_kind_the_api_server_does_not_serve_stalls_with_what_to_install():
    md = make_md({"scaling": {"replicas": 2}})
    planned = plan_pass(md, Observed(), NOW, CONFIG).status
    assert status_after_apply(md, planned, Applied(), NOW) is planned
    route = "gateway.networking.k8s.io/v1 HTTPRoute"
    status = status_after_apply(md, planned, Applied((route,)), NOW)
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "KindNotServed")
    assert route in stalled["message"] and "install its CRDs" in stalled["message"]
    others = [c for c in status["conditions"] if c["type"] != "Stalled"]
    assert others == [c for c in planned["conditions"] if c["type"] != "Stalled"]
    assert {k: v for k, v in status.items() if k != "conditions"} == {
        k: v for k, v in planned.items() if k != "conditions"
    }


def test_a_kind_still_not_served_next_pass_writes_the_same_status():
    """The Stalled condition keeps its transition time while the kind stays unserved: before, it
    was merged against the planned Stalled=False and restamped every pass, so each pass wrote
    status, whose watch event ran the next pass — a write loop for as long as the CRDs were
    missing."""
    route = ("gateway.networking.k8s.io/v1 HTTPRoute",)
    md = make_md({"scaling": {"replicas": 2}})
    first = status_after_apply(
        md, plan_pass(md, Observed(), NOW, CONFIG).status, Applied(route), NOW
    )
    later = NOW + dt.timedelta(seconds=30)
    stored = make_md({"scaling": {"replicas": 2}}, status=first)
    planned = plan_pass(stored, Observed(), later, CONFIG).status
    again = status_after_apply(stored, planned, Applied(route), later)
    assert again["conditions"] == first["conditions"]
