"""The pure core: from (ModelDeployment, observed children, the pass's phase, evidence, now) to a
plan of writes and a status. Nothing here talks to the cluster or reads a clock; `reconcile`
executes the plan.

Each pass is level-based: it looks only at the spec, the status it wrote last time and what
exists now, so a restarted operator continues where the last one stopped, without a traffic jump.
`rollout.next_state` decides which revisions serve and at what weight; this module turns that
into Deployments, Services, an HPA or HTTPRoute, deletions and the status.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from .api import ModelDeployment, Phase, Router, ShadowMirror, parse_duration
from .children import build_deployment, build_hpa, model_url, resolve_image
from .conditions import Condition, merge_conditions
from .config import OperatorConfig
from .diff import matches
from .naming import deployment_name
from .observed import (
    Observed,
    progress_deadline_exceeded,
    ready_replicas,
    rolled_out,
    total_replicas,
)
from .pass_phase import PassPhase, shadowing
from .planner_types import ChildRef, Event
from .revision import SPEC_DIGEST, spec_digest
from .rollout import Evidence, RolloutState, next_state, parse_time, stamp
from .traffic import (
    build_grpc_route,
    build_http_route,
    build_services,
    effective_weight,
    gateway_split,
    replica_split,
    weight_summary,
)

__all__ = ["Applied", "ChildRef", "Event", "Plan", "plan", "status_after_apply", "timestamp"]

timestamp = stamp


@dataclass
class Plan:
    """What one pass should do: objects to apply, children to delete, the status to write."""

    apply: list[dict[str, Any]] = field(default_factory=list)
    delete: list[ChildRef] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    # Come back this soon (seconds) even if nothing changes: an analysis or a step is due.
    requeue_after: float | None = None

    @property
    def writes(self) -> int:
        return len(self.apply) + len(self.delete)


@dataclass(frozen=True)
class Applied:
    """What applying a plan found that planning could not know: the kinds the API server does not
    serve (`apiVersion kind`), e.g. an HTTPRoute where the Gateway API CRDs are not installed."""

    unserved: tuple[str, ...] = ()


def status_after_apply(
    md: ModelDeployment, planned: dict[str, Any], applied: Applied, now: dt.datetime
) -> dict[str, Any]:
    """The status to write once the plan is applied: the planned one, or, when a kind was not
    served, the same with Stalled saying which and what to install (a person must act)."""
    if not applied.unserved:
        return planned
    kept = [
        Condition(c["type"], c["status"] == "True", c["reason"], c.get("message", ""))
        for c in planned.get("conditions", [])
        if c["type"] != "Stalled"
    ]
    stalled = Condition(
        "Stalled",
        True,
        "KindNotServed",
        f"the API server does not serve {', '.join(applied.unserved)}; "
        "install its CRDs (the gateway-api router needs the Gateway API)",
    )
    # Merged against the stored conditions, not the planned ones (whose Stalled is False): a kind
    # still unserved keeps Stalled's transition time, so the status is not rewritten each pass.
    stored = [
        c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in md.status.conditions
    ]
    conditions = merge_conditions(
        stored,
        [*kept, stalled],
        now=stamp(now),
        generation=md.metadata.generation,
    )
    return {**planned, "conditions": conditions}


def _stable_replicas(md: ModelDeployment, observed: Observed, stable: str) -> int:
    """The stable size the canary is measured against: the HPA's choice when it is in charge."""
    plan = md.spec.scaling.autoscaling_plan()
    if plan is None:
        return md.spec.scaling.fixed_replicas()
    deployment = observed.deployment_for(stable)
    current = (deployment or {}).get("spec", {}).get("replicas")
    return int(current) if current is not None else plan.min_replicas


def _others_own_replicas(deployment: dict[str, Any] | None) -> bool:
    """True when another field manager (the HPA) also owns spec.replicas.

    Server-side apply deletes a field its only owner stops sending; so we stop sending replicas
    for an HPA-scaled Deployment only once the HPA co-owns them, or the count would drop to 1.
    """
    for entry in (deployment or {}).get("metadata", {}).get("managedFields", []) or []:
        if entry.get("manager") == "modeldeploy":
            continue
        if "f:replicas" in entry.get("fieldsV1", {}).get("f:spec", {}):
            return True
    return False


def _hpa_replicas(deployment: dict[str, Any] | None) -> int | None:
    if deployment is None or _others_own_replicas(deployment):
        return None
    return deployment.get("spec", {}).get("replicas")


def reapply_from_observed(deployment: dict[str, Any], replicas: int | None) -> dict[str, Any]:
    """Our apply configuration for a revision the spec no longer describes (the stable one
    during a canary): its template is taken from the cluster, only the size is ours to change."""
    meta = deployment["metadata"]
    spec = deployment["spec"]
    out: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "labels": meta.get("labels", {}),
            "ownerReferences": meta.get("ownerReferences", []),
        },
        "spec": {"selector": spec["selector"], "template": spec["template"]},
    }
    digest = (meta.get("annotations") or {}).get(SPEC_DIGEST)
    if digest:  # ours: leaving it out of the apply would make server-side apply delete it
        out["metadata"]["annotations"] = {SPEC_DIGEST: digest}
    if replicas is not None:
        out["spec"]["replicas"] = replicas
    return out


def plan_children(
    md: ModelDeployment,
    observed: Observed,
    state: RolloutState,
    desired: str,
    image: str,
    operator_token_sha256: str | None = None,
) -> tuple[list[dict[str, Any]], list[ChildRef], int]:
    """Desired children and deletions for `state`; also returns the stable size used."""
    assert md.metadata.name is not None
    name = md.metadata.name
    digest = {SPEC_DIGEST: spec_digest(md.spec)}

    def build(revision: str, replicas: int | None) -> dict[str, Any]:
        return build_deployment(md, revision, image, replicas, operator_token_sha256, digest)

    autoscaling = md.spec.scaling.autoscaling
    stable_size = _stable_replicas(md, observed, state.stable)
    objects: list[dict[str, Any]] = []

    stable_replicas = (
        _hpa_replicas(observed.deployment_for(state.stable))
        if autoscaling
        else md.spec.scaling.fixed_replicas()
    )
    if state.stable == desired:
        objects.append(build(desired, stable_replicas))
    else:
        current = observed.deployment_for(state.stable)
        if current is not None:
            objects.append(reapply_from_observed(current, stable_replicas))
    if state.canary is not None:
        split = (
            gateway_split(state.weight, stable_size)
            if md.spec.traffic.router == Router.GATEWAY_API
            else replica_split(state.weight, stable_size)
        )
        objects.append(build(state.canary, split.canary_replicas))
    if state.scaled_to_zero == desired and state.canary is None and desired != state.stable:
        objects.append(build(desired, 0))
    objects += build_services(md, state.stable, state.canary, state.weight)
    shadow = md.spec.rollout.shadow
    mirror = (
        shadow is not None
        and shadow.mirror == ShadowMirror.GATEWAY
        and shadowing(md, state.analysis)
    )
    route = build_http_route(md, state.canary, state.weight, mirror)
    if route is not None:
        objects.append(route)
    grpc_route = build_grpc_route(md, state.canary, state.weight, mirror)
    if grpc_route is not None:
        objects.append(grpc_route)
    hpa = build_hpa(md, deployment_name(name, state.stable))
    if hpa is not None:
        objects.append(hpa)

    keep = {deployment_name(name, r) for r in (state.stable, state.canary, state.previous) if r}
    if state.scaled_to_zero == desired:
        keep.add(deployment_name(name, desired))
    delete = [
        ChildRef("apps/v1", "Deployment", d["metadata"]["name"])
        for d in observed.deployments
        if d["metadata"]["name"] not in keep
    ]
    wanted_services = {o["metadata"]["name"] for o in objects if o["kind"] == "Service"}
    delete += [
        ChildRef("v1", "Service", s["metadata"]["name"])
        for s in observed.services
        if s["metadata"]["name"] not in wanted_services
    ]
    if hpa is None:
        delete += [
            ChildRef("autoscaling/v2", "HorizontalPodAutoscaler", h["metadata"]["name"])
            for h in observed.hpas
        ]
    if route is None:
        delete += [
            ChildRef("gateway.networking.k8s.io/v1", "HTTPRoute", r["metadata"]["name"])
            for r in observed.routes
        ]
    if grpc_route is None:
        delete += [
            ChildRef("gateway.networking.k8s.io/v1", "GRPCRoute", r["metadata"]["name"])
            for r in observed.grpc_routes
        ]
    return objects, delete, stable_size


def plan(
    md: ModelDeployment,
    observed: Observed,
    now: dt.datetime,
    config: OperatorConfig,
    phase: PassPhase,
    evidence: Evidence | None = None,
) -> Plan:
    """One reconcile pass, from where the rollout stands (`phase`) and what was gathered."""
    image = resolve_image(md, config)
    desired = phase.desired
    canary_deployment = observed.deployment_for(desired)
    created = parse_time((canary_deployment or {}).get("metadata", {}).get("creationTimestamp"))
    state = next_state(md, phase, evidence or Evidence(), now, created or now)
    objects, delete, stable_size = plan_children(
        md, observed, state, desired, image, config.operator_token_sha256
    )
    # Re-applying an unchanged child is still a write: only send what differs from the cluster.
    to_apply = [
        obj
        for obj in objects
        if not matches(obj, observed.named(obj["kind"], obj["metadata"]["name"]))
    ]
    changing = {o["metadata"]["name"] for o in to_apply if o["kind"] == "Deployment"}
    status = plan_status(md, observed, state, desired, now, config, changing, stable_size)
    return Plan(
        apply=to_apply,
        delete=delete,
        status=status,
        events=state.events + _first_deploy_events(md, observed, state, desired, status),
        requeue_after=_requeue_after(md, state, now),
    )


def _requeue_after(md: ModelDeployment, state: RolloutState, now: dt.datetime) -> float | None:
    """While a canary runs (or a promoted revision is watched), come back when the next analysis
    is due or the step ends, whichever is sooner.

    Example: interval 30 s, last analysis 12 s ago, step ends in 40 s → 18 s. Coming back a full
    interval after *this* pass instead would let an analysis slip by up to one interval.
    """
    if state.canary is None and state.previous is None:
        return None
    interval = parse_duration(md.spec.rollout.analysis.interval)
    last_run = state.analysis.last_run_at if state.analysis else None
    waits = [interval - (now - last_run).total_seconds() if last_run else interval]
    started = parse_time(state.step_started_at)
    if started is not None:
        waits.append(
            parse_duration(md.spec.rollout.step_duration) - (now - started).total_seconds()
        )
    return max(0.5, min(waits))


def _first_deploy_events(
    md: ModelDeployment,
    observed: Observed,
    state: RolloutState,
    desired: str,
    status: dict[str, Any],
) -> list[Event]:
    events = []
    if observed.deployment_for(desired) is None and state.scaled_to_zero != desired:
        events.append(Event("Normal", "RevisionCreated", f"creating revision {desired}"))
    if status["phase"] == Phase.READY.value and md.status.phase != Phase.READY:
        events.append(Event("Normal", "Ready", f"revision {state.stable} serves all traffic"))
    degraded = status["phase"] == Phase.DEGRADED.value and md.status.phase != Phase.DEGRADED
    if degraded and state.canary is None and not state.events:
        reason = next(c["reason"] for c in status["conditions"] if c["type"] == "Degraded")
        message = next(c["message"] for c in status["conditions"] if c["type"] == "Degraded")
        events.append(Event("Warning", reason, message))
    return events


def plan_status(
    md: ModelDeployment,
    observed: Observed,
    state: RolloutState,
    desired: str,
    now: dt.datetime,
    config: OperatorConfig,
    changing: set[str],
    stable_size: int,
) -> dict[str, Any]:
    """The status to write: phase, kstatus conditions, sizes, revisions, weights, records."""
    stable_dep = observed.deployment_for(state.stable)
    canary_dep = observed.deployment_for(state.canary) if state.canary else None
    replicas = sum(total_replicas(d) for d in observed.deployments)
    ready = sum(ready_replicas(d) for d in observed.deployments)
    stable_ready = ready_replicas(stable_dep)
    stable_done = (
        rolled_out(stable_dep)
        and stable_dep is not None
        and stable_dep["metadata"]["name"] not in changing
    )
    stuck = progress_deadline_exceeded(stable_dep) if state.stable == desired else None
    rejected = state.scaled_to_zero == desired and state.canary is None

    fields: dict[str, Any] = {}
    conditions: list[Condition]
    serving = f"{stable_ready} of {stable_size} stable pods ready"
    if state.canary is not None:
        router = md.spec.traffic.router
        effective = effective_weight(router, state.weight, ready_replicas(canary_dep), stable_ready)
        fields = {
            "desiredWeight": state.weight,
            "effectiveWeight": round(effective, 1),
            "weightSummary": weight_summary(state.weight, effective),
        }
        step_text = f"step {(state.step or 0) + 1}/{len(md.spec.rollout.steps)}"
        progress = f"canary {state.canary} at {state.weight}% ({step_text})"
        shadow = md.spec.rollout.shadow
        if shadow is not None and shadowing(md, state.analysis):
            progress = (
                f"canary {state.canary} shadows stable at 0% (copies of "
                f"{shadow.fraction * 100:g}% of requests, compared with stable's answers) before "
                f"{step_text}"
            )
        if state.analysis and state.analysis.without_stable:
            progress += (
                f"; stable {state.stable} has no ready pod, so the canary is judged on its own "
                "and promoted without steps once healthy"
            )
        if state.failed is not None:
            why = state.failed.message or f"{state.failed.name} {state.failed.value}"
            reason = state.no_fallback[0] if state.no_fallback else "AnalysisFailed"
            phase = Phase.DEGRADED if state.no_fallback else Phase.PAUSED
            stalled = why if state.no_fallback else f"onFailure is Pause: {why}"
            conditions = [
                Condition("Ready", stable_ready > 0, "StableServing", serving),
                Condition("Progressing", False, reason, why),
                Condition("Degraded", True, reason, why),
                Condition("Reconciling", False, reason),
                Condition("Stalled", True, reason, stalled),
            ]
        elif state.held is not None:
            phase = Phase.PAUSED
            held = state.held
            conditions = [
                Condition("Ready", stable_ready > 0, "StableServing", serving),
                Condition("Progressing", True, held.reason, f"{progress}; waiting: {held.message}"),
                Condition("Degraded", False, "Healthy"),
                Condition("Reconciling", True, held.reason, progress),
                Condition("Stalled", True, held.reason, held.message),
            ]
        else:
            phase = Phase.PAUSED if state.paused else Phase.PROGRESSING
            reason = "Paused" if state.paused else "CanaryProgressing"
            conditions = [
                Condition("Ready", stable_ready > 0, "StableServing", serving),
                Condition("Progressing", True, reason, progress),
                Condition("Degraded", False, "Healthy"),
                Condition("Reconciling", True, reason, progress),
                Condition("Stalled", False, reason),
            ]
        conditions.append(_split_condition(md, state, stable_size))
    elif rejected:
        record = state.last_rollback
        message = record.message if record else None
        why = message if message is not None else f"revision {desired} was rolled back"
        rejected_reason = next((r.reason for r in state.rejected if r.revision == desired), None)
        # RollingBack while the rejected revision still has pods; Degraded once they are gone.
        draining = total_replicas(observed.deployment_for(desired)) > 0
        phase = Phase.ROLLING_BACK if draining else Phase.DEGRADED
        conditions = [
            Condition("Ready", stable_ready > 0, "StableServing", serving),
            Condition("Progressing", False, "RolledBack", why),
            Condition("Degraded", True, rejected_reason or "RolledBack", why),
            Condition("Reconciling", False, "RolledBack"),
            Condition(
                "Stalled", True, "RevisionRejected",
                f"revision {desired} was rolled back; change the model or rollout.retry to retry",
            ),
        ]  # fmt: skip
    elif stable_done and state.no_fallback is not None:
        reason, why = state.no_fallback
        phase = Phase.DEGRADED
        conditions = [
            Condition("Ready", True, "Available", serving),
            Condition("Progressing", False, reason, why),
            Condition("Degraded", True, reason, why),
            Condition("Reconciling", False, reason),
            Condition("Stalled", True, reason, why),
        ]
    elif stable_done:
        phase = Phase.READY
        waiting = state.queued
        conditions = [
            Condition("Ready", True, "Available", serving),
            Condition("Progressing", False, "RolloutComplete", f"revision {state.stable} serves"),
            Condition("Degraded", False, "Healthy"),
            Condition("Reconciling", False, "Reconciled")
            if waiting is None
            else Condition("Reconciling", True, waiting.reason, waiting.message),
            Condition("Stalled", False, "Reconciled"),
        ]
    elif stuck:
        phase = Phase.DEGRADED
        conditions = [
            Condition("Ready", False, "ProgressDeadlineExceeded", stuck),
            Condition("Progressing", False, "ProgressDeadlineExceeded", stuck),
            Condition("Degraded", True, "ProgressDeadlineExceeded", f"revision {desired}: {stuck}"),
            Condition("Reconciling", False, "ProgressDeadlineExceeded"),
            Condition("Stalled", True, "ProgressDeadlineExceeded", stuck),
        ]
    else:
        phase = Phase.PENDING if stable_ready == 0 else Phase.PROGRESSING
        message = f"revision {state.stable}: {serving}"
        conditions = [
            Condition("Ready", False, "PodsNotReady", message),
            Condition("Progressing", True, "ScalingUp", message),
            Condition("Degraded", False, "Healthy"),
            Condition("Reconciling", True, "ScalingUp", message),
            Condition("Stalled", False, "Progressing"),
        ]

    status: dict[str, Any] = {
        "observedGeneration": md.metadata.generation,
        "phase": phase.value,
        "conditions": merge_conditions(
            [c.model_dump(mode="json", by_alias=True) for c in md.status.conditions],
            conditions,
            now=stamp(now),
            generation=md.metadata.generation,
        ),
        "replicas": replicas,
        "readyReplicas": ready,
        "url": model_url(md, config),
        **state.status_fields(),
        **fields,
    }
    return {k: v for k, v in status.items() if v is not None}


def _split_condition(md: ModelDeployment, state: RolloutState, stable_size: int) -> Condition:
    """Say so when the replica count cannot realise the step's weight (e.g. 10% with 1 pod)."""
    if md.spec.traffic.router == Router.GATEWAY_API or state.weight in (0, 100):
        return Condition("TrafficSplitExact", True, "Exact", f"{state.weight}%")
    planned = replica_split(state.weight, stable_size).planned_weight
    if abs(planned - state.weight) <= max(2.0, 0.25 * state.weight):
        return Condition(
            "TrafficSplitExact", True, "CloseEnough", weight_summary(state.weight, planned)
        )
    needed = max(1, round((100 - state.weight) / state.weight))
    return Condition(
        "TrafficSplitExact",
        False,
        "TooFewReplicas",
        f"{state.weight}% needs about {needed} stable pods per canary pod; with {stable_size} "
        f"stable pods the canary gets {planned:.3g}%. Add replicas or use the gateway-api router.",
    )
