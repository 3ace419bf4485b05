"""The pure core: from (ModelDeployment, observed children, now) to a plan of writes and a status.

Nothing here talks to the cluster or reads a clock; `reconcile` executes the plan. Each pass is
level-based: it looks only at the spec, the status it wrote last time and what exists now, so a
restarted operator continues where the last one stopped.

Traffic with the default replica router flows through one Service. Its selector is the switch:
pinned to one revision (`modeldeploy.io/revision: <rev>`) it sends everything there; without the
pin it spreads requests over every revision's ready pods.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from .api import ModelDeployment, Phase
from .children import build_deployment, build_hpa, build_service, model_url, resolve_image
from .conditions import Condition, merge_conditions
from .config import OperatorConfig
from .diff import matches
from .naming import REVISION, deployment_name
from .observed import (
    Observed,
    progress_deadline_exceeded,
    ready_replicas,
    rolled_out,
    total_replicas,
)
from .revision import revision_of


@dataclass(frozen=True)
class ChildRef:
    api_version: str
    kind: str
    name: str


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class Plan:
    """What one pass should do: objects to apply, children to delete, the status to write."""

    apply: list[dict[str, Any]] = field(default_factory=list)
    delete: list[ChildRef] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)

    @property
    def writes(self) -> int:
        return len(self.apply) + len(self.delete)


def timestamp(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _pin(service: dict[str, Any], revision: str) -> dict[str, Any]:
    service["spec"]["selector"] = {**service["spec"]["selector"], REVISION: revision}
    return service


def plan_children(
    md: ModelDeployment, observed: Observed, config: OperatorConfig
) -> tuple[list[dict[str, Any]], list[ChildRef], str, str]:
    """Desired children for one revision at a time, blue/green: the new revision's Deployment
    comes up at full size while the Service stays pinned to the old one; once every new pod is
    ready the Service switches and the old Deployment is removed.

    Returns (desired objects, children to delete, revision serving traffic, desired revision).
    """
    assert md.metadata.name is not None
    image = resolve_image(md, config)
    desired_revision = revision_of(md.spec, image)
    autoscaling = md.spec.scaling.autoscaling
    replicas = None if autoscaling else md.spec.scaling.fixed_replicas()

    stable = md.status.stable_revision
    if stable is None or observed.deployment_for(stable) is None:
        stable = desired_revision
    new_deployment = observed.deployment_for(desired_revision)
    switch = stable == desired_revision or rolled_out(new_deployment)
    serving_revision = desired_revision if switch else stable

    desired: list[dict[str, Any]] = [build_deployment(md, desired_revision, image, replicas)]
    if not switch:
        old = observed.deployment_for(stable)
        # The old revision keeps serving at the size it has; only its ownership is refreshed.
        assert old is not None
        desired.append(build_deployment(md, stable, _image_of(old, image), None))
    desired.append(_pin(build_service(md), serving_revision))
    hpa = build_hpa(md, deployment_name(md.metadata.name, serving_revision))
    if hpa is not None:
        desired.append(hpa)

    keep = {deployment_name(md.metadata.name, r) for r in {desired_revision, serving_revision}}
    delete = [
        ChildRef("apps/v1", "Deployment", d["metadata"]["name"])
        for d in observed.deployments
        if d["metadata"]["name"] not in keep
    ]
    if hpa is None:
        delete += [
            ChildRef("autoscaling/v2", "HorizontalPodAutoscaler", h["metadata"]["name"])
            for h in observed.hpas
        ]
    return desired, delete, serving_revision, desired_revision


def _image_of(deployment: dict[str, Any], default: str) -> str:
    containers = (
        deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
    )
    return str(containers[0].get("image", default)) if containers else default


def plan(md: ModelDeployment, observed: Observed, now: dt.datetime, config: OperatorConfig) -> Plan:
    """One reconcile pass for the single-revision (blue/green) lifecycle."""
    desired, delete, serving, desired_revision = plan_children(md, observed, config)
    # Re-applying an unchanged child is still a write: only send what differs from the cluster.
    to_apply = [
        obj
        for obj in desired
        if not matches(obj, observed.named(obj["kind"], obj["metadata"]["name"]))
    ]
    # A child about to change is not "done", whatever its status says now.
    changing = {obj["metadata"]["name"] for obj in to_apply if obj["kind"] == "Deployment"}
    status, events = plan_status(md, observed, now, config, serving, desired_revision, changing)
    return Plan(apply=to_apply, delete=delete, status=status, events=events)


def plan_status(
    md: ModelDeployment,
    observed: Observed,
    now: dt.datetime,
    config: OperatorConfig,
    serving: str,
    desired_revision: str,
    changing: set[str] | frozenset[str] = frozenset(),
) -> tuple[dict[str, Any], list[Event]]:
    """The status to write and the Events that announce what changed since the last one."""
    previous = md.status
    current = observed.deployment_for(desired_revision)
    live = observed.deployment_for(serving)
    replicas = sum(total_replicas(d) for d in observed.deployments)
    ready = sum(ready_replicas(d) for d in observed.deployments)
    stuck = progress_deadline_exceeded(current)
    done = (
        serving == desired_revision
        and rolled_out(current)
        and current is not None
        and current["metadata"]["name"] not in changing
    )
    events: list[Event] = []

    if done:
        phase = Phase.READY
        conditions = [
            Condition(
                "Ready",
                True,
                "Available",
                f"{ready_replicas(current)} of {ready_replicas(current)} pods ready",
            ),
            Condition(
                "Progressing",
                False,
                "RolloutComplete",
                f"revision {desired_revision} serves all traffic",
            ),
            Condition("Degraded", False, "Healthy"),
            Condition("Reconciling", False, "Reconciled"),
            Condition("Stalled", False, "Reconciled"),
        ]
    elif stuck:
        serving_ok = serving != desired_revision and ready_replicas(live) > 0
        phase = Phase.DEGRADED
        conditions = [
            Condition(
                "Ready",
                serving_ok,
                "PreviousRevisionServing" if serving_ok else "ProgressDeadlineExceeded",
                stuck,
            ),
            Condition("Progressing", False, "ProgressDeadlineExceeded", stuck),
            Condition(
                "Degraded",
                True,
                "ProgressDeadlineExceeded",
                f"revision {desired_revision}: {stuck}",
            ),
            Condition("Reconciling", False, "ProgressDeadlineExceeded"),
            Condition("Stalled", True, "ProgressDeadlineExceeded", stuck),
        ]
    else:
        first = serving == desired_revision
        phase = Phase.PENDING if first and ready == 0 else Phase.PROGRESSING
        want = md.spec.scaling.autoscaling_plan()
        wanted = want.min_replicas if want else md.spec.scaling.fixed_replicas()
        message = f"revision {desired_revision}: {ready_replicas(current)} of {wanted} pods ready"
        serving_ok = not first and ready_replicas(live) > 0
        conditions = [
            Condition(
                "Ready",
                serving_ok,
                "PreviousRevisionServing" if serving_ok else "PodsNotReady",
                message,
            ),
            Condition("Progressing", True, "NewRevision" if not first else "ScalingUp", message),
            Condition("Degraded", False, "Healthy"),
            Condition("Reconciling", True, "RolloutInProgress", message),
            Condition("Stalled", False, "Progressing"),
        ]

    stamp = timestamp(now)
    status: dict[str, Any] = {
        "observedGeneration": md.metadata.generation,
        "phase": phase.value,
        "conditions": merge_conditions(
            [c.model_dump(mode="json", by_alias=True) for c in previous.conditions],
            conditions,
            now=stamp,
            generation=md.metadata.generation,
        ),
        "replicas": replicas,
        "readyReplicas": ready,
        "stableRevision": serving,
        "stableVersion": md.spec.model.version
        if serving == desired_revision
        else previous.stable_version,
        "url": model_url(md, config),
    }
    if previous.stable_revision != serving and serving == desired_revision and done:
        events.append(Event("Normal", "RevisionReady", f"revision {serving} serves all traffic"))
    if previous.phase != phase and phase == Phase.DEGRADED:
        events.append(
            Event("Warning", "ProgressDeadlineExceeded", f"revision {desired_revision}: {stuck}")
        )
    if current is None:
        events.append(Event("Normal", "RevisionCreated", f"creating revision {desired_revision}"))
    return {k: v for k, v in status.items() if v is not None}, events
