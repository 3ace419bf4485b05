"""Builders of ModelDeployments and observed children for the pure-core tables."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

from modeldeploy.api import ModelDeployment, parse_model_deployment
from modeldeploy.children import resolve_image
from modeldeploy.config import OperatorConfig
from modeldeploy.observed import Observed
from modeldeploy.pass_phase import Admission, phase_of
from modeldeploy.planner import Plan, plan
from modeldeploy.revision import revision_of
from modeldeploy.rollout import Evidence, RolloutState, next_state

BASE: dict[str, Any] = {
    "apiVersion": "modeldeploy.io/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "fraud", "namespace": "ml", "uid": "uid-1", "generation": 1},
    "spec": {"model": {"uri": "s3://models/fraud/v7/model.joblib", "format": "sklearn"}},
}


def make_md(
    spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None, **meta: Any
) -> ModelDeployment:
    body = copy.deepcopy(BASE)
    for key, value in (spec or {}).items():
        if isinstance(value, dict) and isinstance(body["spec"].get(key), dict):
            body["spec"][key] = {**body["spec"][key], **value}
        else:
            body["spec"][key] = value
    body["metadata"].update(meta)
    if status:
        body["status"] = status
    return parse_model_deployment(body)


def observed_deployment(
    obj: dict[str, Any], ready: int | None = None, generation: int = 1
) -> dict[str, Any]:
    """A Deployment as the API server would return it after the controller caught up."""
    out = copy.deepcopy(obj)
    replicas = obj["spec"].get("replicas", 1)
    ready = replicas if ready is None else ready
    out["metadata"].update(generation=generation, creationTimestamp="2026-11-27T10:00:00Z")
    out["spec"].setdefault("replicas", replicas)
    out["status"] = {
        "observedGeneration": generation,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": ready,
    }
    return out


def deployment_of(md: ModelDeployment, revision: str, image: str, replicas: int | None) -> dict:
    """A revision's Deployment exactly as the planner builds it (with the spec digest)."""
    from modeldeploy.children import build_deployment
    from modeldeploy.revision import SPEC_DIGEST, spec_digest

    return build_deployment(
        md, revision, image, replicas, annotations={SPEC_DIGEST: spec_digest(md.spec)}
    )


def decide(
    md: ModelDeployment,
    desired: str,
    existing: set[str],
    evidence: Evidence,
    now: dt.datetime,
    canary_created: dt.datetime | None = None,
    admission: Admission | None = None,
) -> RolloutState:
    """The rollout's next state as a pass decides it: where it stands first, then what follows."""
    phase = phase_of(md, desired, existing, now, admission)
    return next_state(md, phase, evidence, now, canary_created)


def plan_pass(
    md: ModelDeployment,
    observed: Observed,
    now: dt.datetime,
    config: OperatorConfig,
    evidence: Evidence | None = None,
    admission: Admission | None = None,
) -> Plan:
    """The pure part of a reconcile pass: the phase of the revision the spec asks for, then the
    plan."""
    desired = revision_of(md, resolve_image(md, config), config.operator_token_sha256)
    phase = phase_of(md, desired, observed.revisions(), now, admission)
    return plan(md, observed, now, config, phase, evidence)
