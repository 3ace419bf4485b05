"""The kopf layer: the only module that imports kopf. Every handler funnels into `reconcile`.

Triggers: create/update/resume of a ModelDeployment, a periodic level-based pass (the timer), and
any change to a child the operator owns (so a Deployment deleted or edited by hand is restored at
once, and status follows pod readiness without waiting for the timer).

kopf's own bookkeeping (progress, diff-base) lives under `status.kopf`, never in annotations: a
GitOps tool compares metadata and spec with Git, and an annotation that changes on every pass
would make Argo CD or Flux report drift. There is no finalizer either — children go with their
owner through garbage collection — so `kubectl delete` never hangs on a stopped operator. That is
why the periodic pass is our own thread and not a kopf timer: kopf puts a finalizer on every
object that has a timer.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import kopf
from prometheus_client import start_http_server

from .api import GROUP, KIND, PLURAL, VERSION
from .config import OperatorConfig
from .evidence import Snapshots
from .kube import Kube
from .metrics import OperatorMetrics
from .naming import MANAGED_BY, MANAGER, OWNER
from .reconcile import PassResult, reconcile

log = logging.getLogger("modeldeploy")
TICK_SECONDS = 0.5
CHILD_RESOURCES = (("apps", "v1", "deployments"), ("", "v1", "services"), ("", "v1", "pods"))
HPA_RESOURCE = ("autoscaling", "v2", "horizontalpodautoscalers")


@dataclass
class Runtime:
    """Process-wide state the handlers share: settings, API client, metrics, per-object locks."""

    config: OperatorConfig
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    kube: Kube | None = None
    phases: dict[tuple[str, str], str] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    snapshots: Snapshots = field(default_factory=dict)
    # (namespace, name) -> monotonic time a canary's next analysis or step is due.
    due: dict[tuple[str, str], float] = field(default_factory=dict)
    _locks: dict[tuple[str, str], threading.Lock] = field(default_factory=dict)
    _locks_guard: threading.Lock = field(default_factory=threading.Lock)

    def lock(self, key: tuple[str, str]) -> threading.Lock:
        """Timer, change and child handlers may run at once; one pass per object at a time."""
        with self._locks_guard:
            return self._locks.setdefault(key, threading.Lock())

    def record_phase(self, key: tuple[str, str], phase: str | None) -> None:
        if phase is None:
            self.phases.pop(key, None)
        else:
            self.phases[key] = phase
        counts: dict[str, int] = {}
        for value in self.phases.values():
            counts[value] = counts.get(value, 0) + 1
        self.metrics.by_phase.clear()
        for value, count in counts.items():
            self.metrics.by_phase.labels(phase=value).set(count)


def run_pass(runtime: Runtime, body: dict[str, Any], trigger: str) -> PassResult | None:
    """Reconcile the ModelDeployment once, with metrics and Events; re-raises so kopf retries.

    The object is read again under the lock: the body a handler was given may predate the status
    another trigger's pass just wrote, and planning from stale status repeats transitions.
    """
    assert runtime.kube is not None
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    key = (namespace, name)
    with runtime.lock(key), runtime.metrics.reconcile_seconds.time():
        try:
            fresh = runtime.kube.get(f"{GROUP}/{VERSION}", KIND, namespace, name)
            if fresh is None or fresh["metadata"].get("deletionTimestamp"):
                return None
            result = reconcile(
                runtime.kube, runtime.config, fresh, runtime.clock(), runtime.snapshots
            )
        except Exception:
            runtime.metrics.reconciles.labels(trigger=trigger, result="error").inc()
            raise
    runtime.metrics.reconciles.labels(trigger=trigger, result="ok").inc()
    runtime.record_phase(key, result.plan.status.get("phase"))
    if result.plan.requeue_after is None:
        runtime.due.pop(key, None)
    else:
        runtime.due[key] = time.monotonic() + result.plan.requeue_after
    weight = result.plan.status.get("effectiveWeight")
    runtime.metrics.canary_weight.labels(namespace=namespace, name=name).set(weight or 0)
    if any(event.reason == "RolledBack" for event in result.events):
        record = result.plan.status.get("lastRollback", {})
        reason = record.get("check", "unknown")
        runtime.metrics.rollbacks.labels(reason=reason).inc()
        detect = str(record.get("timeToDetect", "")).removesuffix("s")
        if detect.replace(".", "", 1).isdigit():
            runtime.metrics.time_to_rollback.labels(reason=reason).observe(float(detect))
    stamp = runtime.clock().strftime("%Y-%m-%dT%H:%M:%SZ")
    for event in result.events:
        try:
            runtime.kube.post_event(fresh, event.type, event.reason, event.message, stamp)
        except Exception:  # an Event is a courtesy; losing one must not fail the pass
            log.warning("could not post event %s on %s/%s", event.reason, *key)
    if result.plan.writes or result.status_written:
        log.info(
            "reconciled %s/%s (%s): %d applied, %d deleted, status %s, %.0f ms",
            *key, trigger, len(result.plan.apply), len(result.plan.delete),
            "written" if result.status_written else "unchanged", result.seconds * 1000,
        )  # fmt: skip
    return result


def resync_forever(runtime: Runtime) -> None:
    """The periodic level-based pass: every resync period, reconcile every ModelDeployment we
    watch, so drift that raised no event (or an event we missed) is still repaired. In between,
    canaries are reconciled when their next analysis or step is due."""
    assert runtime.kube is not None
    next_full = time.monotonic() + runtime.config.resync_seconds
    while not runtime.stop.wait(TICK_SECONDS):
        now = time.monotonic()
        if now >= next_full:
            next_full = now + runtime.config.resync_seconds
            try:
                bodies = runtime.kube.list_model_deployments(runtime.config.namespaces)
            except Exception:
                log.exception("resync: listing ModelDeployments failed")
                continue
            keys = [(b["metadata"]["namespace"], b["metadata"]["name"]) for b in bodies]
            trigger = "timer"
        else:
            keys = [key for key, due in list(runtime.due.items()) if due <= now]
            trigger = "requeue"
        for namespace, name in keys:
            try:
                run_pass(runtime, {"metadata": {"namespace": namespace, "name": name}}, trigger)
            except Exception:
                log.exception("%s pass of %s/%s failed", trigger, namespace, name)


def configure_settings(settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
    settings.persistence.progress_storage = kopf.StatusProgressStorage(
        field="status.kopf.progress", touch_field="status.kopf.dummy"
    )
    settings.persistence.diffbase_storage = kopf.StatusDiffBaseStorage(
        field="status.kopf.lastHandledConfiguration"
    )
    # No cluster-wide namespace listing or CRD watching: the watched namespaces are exact names
    # and the resources are known at start, and the least-privilege RBAC grants neither.
    settings.scanning.disabled = True
    # kopf logs every handled watch event at info ("Handler ... succeeded"): one line per pod
    # status change. Our own pass summary says what matters; kopf's warnings and errors remain.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    settings.posting.reporting_component = "modeldeploy"
    settings.posting.event_name_prefix = "modeldeploy-"
    settings.execution.max_workers = 8
    settings.execution.default_backoff = 5
    # Re-open watches regularly so a silently dropped connection cannot leave us blind for long.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10


def register(
    registry: kopf.OperatorRegistry, runtime: Runtime, *, serve_metrics: bool = True
) -> None:
    """Attach every handler to `registry`, bound to `runtime`."""
    md = (GROUP, VERSION, PLURAL)

    @kopf.on.startup(registry=registry)
    def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure_settings(settings, runtime.config)
        if runtime.kube is None:
            runtime.kube = Kube.from_environment(runtime.metrics)
        if serve_metrics:
            start_http_server(runtime.config.metrics_port, registry=runtime.metrics.registry)
            log.info("metrics on :%d/metrics", runtime.config.metrics_port)
        threading.Thread(target=resync_forever, args=(runtime,), name="resync", daemon=True).start()

    @kopf.on.cleanup(registry=registry)
    def cleanup(**_: Any) -> None:
        runtime.stop.set()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # In-cluster service account or KUBECONFIG, read by the official client like our own calls.
        return kopf.login_via_client(**kwargs)

    @kopf.on.resume(*md, registry=registry)
    def on_resume(body: kopf.Body, **_: Any) -> None:
        run_pass(runtime, _ref(body), "resume")

    @kopf.on.create(*md, registry=registry)
    def on_create(body: kopf.Body, **_: Any) -> None:
        run_pass(runtime, _ref(body), "create")

    @kopf.on.update(*md, registry=registry, field="spec")
    def on_update(body: kopf.Body, **_: Any) -> None:
        run_pass(runtime, _ref(body), "update")

    @kopf.on.delete(*md, registry=registry, optional=True)
    def on_delete(body: kopf.Body, **_: Any) -> None:
        # Children go with their owner through garbage collection; only forget the object here.
        runtime.record_phase((body["metadata"]["namespace"], body["metadata"]["name"]), None)

    def on_child(body: kopf.Body, type: str | None, **_: Any) -> None:
        labels = body.get("metadata", {}).get("labels", {})
        owner, namespace = labels.get(OWNER), body.get("metadata", {}).get("namespace")
        if not owner or runtime.kube is None or type is None:
            return  # type None: the initial listing, which resume handlers already cover
        run_pass(runtime, {"metadata": {"namespace": namespace, "name": owner}}, "child")

    child_labels: dict[str, Any] = {MANAGED_BY: MANAGER, OWNER: kopf.PRESENT}
    for group, version, plural in (*CHILD_RESOURCES, HPA_RESOURCE):
        kopf.on.event(group, version, plural, labels=child_labels, registry=registry)(on_child)


def _ref(body: kopf.Body) -> dict[str, Any]:
    """Only the object's name: run_pass reads it afresh under its lock."""
    meta = body["metadata"]
    return {"metadata": {"namespace": meta["namespace"], "name": meta["name"]}}


def run(config: OperatorConfig) -> None:
    """Run the operator until interrupted (python -m modeldeploy)."""
    kopf.configure(
        verbose=False,
        log_format=kopf.LogFormat.JSON if config.log_format == "json" else kopf.LogFormat.PLAIN,
    )
    registry = kopf.OperatorRegistry()
    register(registry, Runtime(config))
    kopf.run(
        registry=registry,
        standalone=True,
        clusterwide=not config.namespaces,
        namespaces=config.namespaces,
        liveness_endpoint=f"http://0.0.0.0:{config.health_port}/healthz",
    )
