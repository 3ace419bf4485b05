"""One reconcile pass: read the children, ask the planner, write only what differs.

This is the imperative shell around the pure core; kopf handlers call `reconcile` and nothing
else. A pass goes one way, each step once: read (the cache) → where the rollout stands
(`pass_phase.phase_of`, pure) → the evidence that phase needs (`evidence.gather`, I/O) → the next
state and the plan (`planner.plan`, pure) → apply → status. Status is written once per pass, and
only when it changed.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

from kubernetes.client.exceptions import ApiException

from . import shadow
from .api import (
    InvalidModelDeployment,
    ModelDeployment,
    ShadowMirror,
    parse_model_deployment,
)
from .children import resolve_image
from .conditions import Condition, merge_conditions
from .config import OperatorConfig
from .evidence import SmokeInputs, Snapshots, gather
from .informer import ChildCache
from .kube import Kube
from .naming import owned_selector
from .observed import Observed
from .pass_phase import OPERATOR_CAUSE, SPEC_CAUSE, Admission, CanaryStage, Judged, phase_of
from .planner import Applied, ChildRef, Event, Plan, plan, status_after_apply, timestamp
from .revision import revision_of, rollout_cause
from .rollout import Hold

log = logging.getLogger("modeldeploy.reconcile")

# kopf keeps its own records under status.kopf; they are not ours to compare or overwrite.
FOREIGN_STATUS_KEYS = frozenset({"kopf"})


@dataclass(frozen=True)
class PassResult:
    plan: Plan
    status_written: bool
    seconds: float
    stored: dict[str, Any] | None = None  # the object as the status write left it

    @property
    def events(self) -> list[Event]:
        return self.plan.events


def observe(cache: ChildCache, namespace: str, name: str) -> Observed:
    """The children as the watches last reported them: no API call."""
    return Observed(
        deployments=cache.children("Deployment", namespace, name),
        services=cache.children("Service", namespace, name),
        hpas=cache.children("HorizontalPodAutoscaler", namespace, name),
        pods=cache.children("Pod", namespace, name),
        routes=cache.children("HTTPRoute", namespace, name),
        grpc_routes=cache.children("GRPCRoute", namespace, name),
    )


def read_observed(kube: Kube, namespace: str, name: str) -> Observed:
    """The children read from the API server (6 calls): for callers without a cache."""
    selector = owned_selector(name)
    return Observed(
        deployments=kube.list_objects("apps/v1", "Deployment", namespace, selector),
        services=kube.list_objects("v1", "Service", namespace, selector),
        hpas=kube.list_objects("autoscaling/v2", "HorizontalPodAutoscaler", namespace, selector),
        pods=kube.list_objects("v1", "Pod", namespace, selector),
        routes=_routes(kube, "HTTPRoute", namespace, selector),
        grpc_routes=_routes(kube, "GRPCRoute", namespace, selector),
    )


def _routes(kube: Kube, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
    """HTTPRoutes (or GRPCRoutes), or none where the Gateway API is not installed."""
    try:
        return kube.list_objects("gateway.networking.k8s.io/v1", kind, namespace, selector)
    except ApiException as error:
        if error.status == 404:
            return []
        raise


SMOKE_INPUTS_INVALID = "SmokeInputsInvalid"


def smoke_inputs(kube: Kube, md: ModelDeployment) -> SmokeInputs:
    """Inline smoke-test requests plus those in the referenced ConfigMap key (a JSON array).

    A ConfigMap that is missing, unreadable or not a JSON array of request objects is a problem
    the canary waits on (no gate passes on nothing), named in status and an Event — never an
    exception that would stop this ModelDeployment from being reconciled at all.
    """
    smoke = md.spec.rollout.analysis.smoke_tests
    if smoke is None:
        return SmokeInputs()
    inputs = list(smoke.inputs)
    ref = smoke.config_map_ref
    if ref is None or not md.metadata.namespace:
        return SmokeInputs(inputs)
    where = f"ConfigMap {md.metadata.namespace}/{ref.name}"
    try:
        config_map = kube.get("v1", "ConfigMap", md.metadata.namespace, ref.name)
    except ApiException as error:
        if error.status != 403:
            raise
        return _smoke_problem(f"{where} cannot be read: the operator is forbidden to get it")
    if config_map is None:
        return _smoke_problem(f"{where} (smokeTests.configMapRef) does not exist")
    data = config_map.get("data") or {}
    if ref.key not in data:
        keys = ", ".join(sorted(data)) or "none"
        return _smoke_problem(f"{where} has no key {ref.key!r} (its keys: {keys})")
    problem, requests = parse_smoke_requests(data[ref.key])
    if problem:
        return _smoke_problem(f"{where} key {ref.key!r} {problem}")
    if not inputs and not requests:
        return _smoke_problem(f"{where} key {ref.key!r} is an empty array: nothing to test")
    return SmokeInputs(inputs + requests)


def parse_smoke_requests(raw: str) -> tuple[str | None, list[dict[str, Any]]]:
    """(problem, requests) from a ConfigMap value that should be a JSON array of objects."""
    try:
        value = json.loads(raw)
    except ValueError as error:
        return f"is not valid JSON: {error}", []
    if not isinstance(value, list):
        kind = type(value).__name__.replace("dict", "object").replace("str", "string")
        return f"must be a JSON array of inference requests, not a JSON {kind}", []
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            return f"item {index} is not an inference request object: {json.dumps(item)[:80]}", []
    return None, value


def _smoke_problem(message: str) -> SmokeInputs:
    return SmokeInputs(problem=Hold(SMOKE_INPUTS_INVALID, f"{message}; the canary waits"))


def status_patch(current: dict[str, Any] | None, desired: dict[str, Any]) -> dict[str, Any] | None:
    """A merge patch turning `current` into `desired` (keys we no longer set become null), or None
    when nothing would change."""
    current = {k: v for k, v in (current or {}).items() if k not in FOREIGN_STATUS_KEYS}
    if current == desired:
        return None
    patch: dict[str, Any] = dict(desired)
    for key in current.keys() - desired.keys():
        patch[key] = None
    return patch


def apply_child(kube: Kube, obj: dict[str, Any]) -> dict[str, Any]:
    """Server-side apply; if a hand edit left list entries that make the result invalid, replace.

    Example: someone changed the Service port 80 → 81. Apply merges list entries by key, so our
    port 80 would sit beside their 81 with the same name, and the API server refuses that (422).
    A merge patch replaces the list whole; applying again re-establishes our field ownership.
    """
    try:
        return kube.apply(obj)
    except ApiException as error:
        if error.status != 422:
            raise
        log.warning(
            "apply of %s %s was refused (%s); replacing the drifted fields",
            obj["kind"], obj["metadata"]["name"], error.reason,
        )  # fmt: skip
        kube.merge_patch(obj)
        return kube.apply(obj)


def invalid_status(
    body: dict[str, Any], error: InvalidModelDeployment, now: dt.datetime
) -> dict[str, Any]:
    """Status for an object the API server accepted but the operator cannot read (e.g. a CRD older
    than the operator): Stalled with the field errors, so the user sees why nothing happens."""
    generation = body.get("metadata", {}).get("generation")
    message = str(error)
    return {
        "observedGeneration": generation,
        "phase": "Degraded",
        "conditions": merge_conditions(
            body.get("status", {}).get("conditions"),
            [
                Condition("Ready", False, "InvalidSpec", message),
                Condition("Stalled", True, "InvalidSpec", message),
                Condition("Reconciling", False, "InvalidSpec"),
            ],
            now=timestamp(now),
            generation=generation,
        ),
    }


class RolloutSlots:
    """Fleet-wide cap on rollouts the operator caused itself (a new default image, template or
    credential), so an operator upgrade rolls models forward a few at a time instead of all at
    once. Rollouts of a user's spec change never take a slot. Thread-safe."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._holders: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def acquire(self, key: tuple[str, str], force: bool = False) -> bool:
        """Take a slot for `key` (kept if it has one); `force` for a rollout already running,
        e.g. found in status after a restart."""
        with self._lock:
            if key in self._holders or force or len(self._holders) < self.limit:
                self._holders.add(key)
                return True
            return False

    def release(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._holders.discard(key)

    def in_use(self) -> int:
        with self._lock:
            return len(self._holders)


@dataclass
class PassContext:
    """What a pass shares with every other: remembered scrapes, the operator's credential, the
    rollout slots, and the watch-fed cache of children (None: read them from the API)."""

    snapshots: Snapshots = field(default_factory=Snapshots)
    tokens: tuple[str, ...] = ()
    slots: RolloutSlots | None = None
    children: ChildCache | None = None


class StaleRead(Exception):
    """The object changed since this pass read it (409 on the versioned status write): the pass
    is run again from the newer version."""


def admit(
    md: ModelDeployment, observed: Observed, desired: str, slots: RolloutSlots | None
) -> Admission:
    """Whether a new canary may start: always for the user's changes; for the operator's own,
    when a fleet-wide slot is free (or this object already holds one)."""
    key = (str(md.metadata.namespace), str(md.metadata.name))
    cause = rollout_cause(md, observed, desired)
    if cause != OPERATOR_CAUSE or slots is None:
        return Admission(SPEC_CAUSE)
    running = md.status.canary_revision is not None
    if slots.acquire(key, force=running):
        return Admission(OPERATOR_CAUSE)
    return Admission(
        OPERATOR_CAUSE,
        waiting=(
            f"revision {desired} comes from the operator (serving image, pod template or "
            f"credential), not from the spec; it waits for a rollout slot: {slots.in_use()} of "
            f"{slots.limit} in use (MODELDEPLOY_MAX_CONCURRENT_ROLLOUTS)"
        ),
    )


def reconcile(
    kube: Kube,
    config: OperatorConfig,
    body: dict[str, Any],
    now: dt.datetime,
    context: PassContext | None = None,
) -> PassResult:
    """Bring the children of the ModelDeployment `body` to the planned state and write status."""
    context = context or PassContext()
    started = time.monotonic()
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    try:
        md = parse_model_deployment(body)
    except InvalidModelDeployment as error:
        log.warning("cannot read %s/%s: %s", namespace, name, error)
        patch = status_patch(body.get("status"), invalid_status(body, error, now))
        stored = write_status(kube, body, patch) if patch else None
        return PassResult(Plan(), patch is not None, time.monotonic() - started, stored)

    if context.children is not None:
        observed = observe(context.children, namespace, name)
    else:
        observed = read_observed(kube, namespace, name)
    desired = revision_of(md, resolve_image(md, config), config.operator_token_sha256)
    admission = admit(md, observed, desired, context.slots)
    phase = phase_of(md, desired, observed.revisions(), now, admission)
    gating = phase.judged is Judged.CANARY and phase.canary is CanaryStage.GATES
    inputs = smoke_inputs(kube, md) if gating else SmokeInputs()
    evidence = gather(md, observed, phase, now, context.snapshots, inputs, context.tokens)
    result = plan(md, observed, now, config, phase, evidence)
    if context.slots is not None and result.status.get("canaryCause") != OPERATOR_CAUSE:
        context.slots.release((namespace, name))
    applied = apply_children(kube, result.apply, namespace, context.children)
    _mirror(md, observed, result.status, context.tokens)
    delete_children(kube, result.delete, namespace, context.children)
    result = replace(result, status=status_after_apply(md, result.status, applied, now))
    patch = status_patch(body.get("status"), result.status)
    if patch is None:
        return PassResult(result, False, time.monotonic() - started)
    stored = write_status(kube, body, patch)
    if stored is None:
        return PassResult(Plan(), False, time.monotonic() - started)
    return PassResult(result, True, time.monotonic() - started, stored)


def apply_children(
    kube: Kube, objects: list[dict[str, Any]], namespace: str, children: ChildCache | None
) -> Applied:
    """Apply the planned children; a kind the API server does not serve (e.g. the Gateway API
    CRDs are not installed) is skipped and reported, so the rest of the model keeps running."""
    unserved = []
    for obj in objects:
        log.info("apply %s %s/%s", obj["kind"], namespace, obj["metadata"]["name"])
        try:
            written = apply_child(kube, obj)
        except ApiException as error:
            if error.status != 404:
                raise
            unserved.append(f"{obj['apiVersion']} {obj['kind']}")
            continue
        if children is not None:
            children.remember(written)
    return Applied(tuple(unserved))


def delete_children(
    kube: Kube, refs: list[ChildRef], namespace: str, children: ChildCache | None
) -> None:
    for ref in refs:
        log.info("delete %s %s/%s", ref.kind, namespace, ref.name)
        kube.delete(ref.api_version, ref.kind, namespace, ref.name)
        if children is not None:
            children.forget(ref.kind, namespace, ref.name)


def _mirror(
    md: ModelDeployment, observed: Observed, planned: dict[str, Any], tokens: tuple[str, ...]
) -> None:
    """During a shadow phase, (re)configure stable's servers to mirror to the canary; when the
    phase ends this pass (passed, rejected, replaced, or the shadow removed from the spec), stop
    them at once rather than when their configuration expires."""
    spec = md.spec.rollout.shadow
    canary = shadow.wanted(planned)
    stable = planned.get("stableRevision")
    if spec is not None and spec.mirror == ShadowMirror.SERVER and canary and stable:
        document = shadow.mirror_document(md, observed, canary)
        if document is not None:
            shadow.configure(md, observed, str(stable), document, tokens)
        return
    before = md.status.model_dump(mode="json", by_alias=True, exclude_none=True)
    if shadow.wanted(before) is not None and md.status.stable_revision:
        shadow.configure(md, observed, md.status.stable_revision, None, tokens)


def write_status(kube: Kube, body: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any] | None:
    """Write `patch` to the status of exactly the version of the object the pass read; returns
    the object as stored, or None when it was deleted meanwhile.

    Raises StaleRead on 409: someone wrote since (another replica, the user), and merging our
    plan into their newer status could undo theirs.
    """
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    try:
        return kube.patch_status(namespace, name, patch, meta.get("resourceVersion"))
    except ApiException as error:
        if error.status == 409:
            raise StaleRead(f"{namespace}/{name} changed since this pass read it") from error
        if error.status != 404:
            raise
        # Deleted while this pass ran: its children go with it (owner references).
        log.info("%s/%s was deleted during the pass", namespace, name)
        return None
