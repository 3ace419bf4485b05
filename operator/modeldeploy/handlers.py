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

import dataclasses
import logging
import threading
import time
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException
from prometheus_client import start_http_server

from .api import GROUP, KIND, PLURAL, VERSION
from .config import OperatorConfig
from .credential import SECRET_NAME, load_or_create, operator_namespace
from .health import serve_health
from .kube import Kube
from .naming import MANAGED_BY, MANAGER, OWNER
from .reconcile import PassContext, PassResult, reconcile
from .runtime import Key, Runtime, backoff_seconds

log = logging.getLogger("modeldeploy")
TICK_SECONDS = 0.5
CHILD_RESOURCES = (("apps", "v1", "deployments"), ("", "v1", "services"), ("", "v1", "pods"))
HPA_RESOURCE = ("autoscaling", "v2", "horizontalpodautoscalers")

__all__ = ["Runtime", "register", "run", "run_pass"]


def run_pass(runtime: Runtime, key: Key, trigger: str) -> PassResult | None:
    """Reconcile the ModelDeployment `key` once, with metrics and Events; raises on failure.

    The object is read again under the lock: the body a handler was given may predate the status
    another trigger's pass just wrote, and planning from stale status repeats transitions.
    """
    assert runtime.kube is not None
    namespace, name = key
    with runtime.lock(key), runtime.metrics.reconcile_seconds.time():
        try:
            fresh = runtime.kube.get(f"{GROUP}/{VERSION}", KIND, namespace, name)
            if fresh is None or fresh["metadata"].get("deletionTimestamp"):
                runtime.forget(key)
                return None
            context = PassContext(runtime.snapshots, runtime.tokens, runtime.slots)
            result = reconcile(runtime.kube, runtime.config, fresh, runtime.clock(), context)
        except Exception:
            runtime.metrics.reconciles.labels(trigger=trigger, result="error").inc()
            raise
    runtime.metrics.reconciles.labels(trigger=trigger, result="ok").inc()
    runtime.succeeded(key)
    runtime.record_phase(key, result.plan.status.get("phase"))
    runtime.schedule(key, result.plan.requeue_after)
    weight = result.plan.status.get("effectiveWeight")
    runtime.metrics.canary_weight.labels(namespace=namespace, name=name).set(weight or 0)
    if any(event.reason == "RolledBack" for event in result.events):
        record = result.plan.status.get("lastRollback", {})
        reason = record.get("check", "unknown")
        runtime.metrics.rollbacks.labels(reason=reason).inc()
        detect = str(record.get("timeSinceStart", "")).removesuffix("s")
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


def describe_error(error: BaseException) -> str:
    """One line for the log: what failed, without a traceback (a retry follows)."""
    if isinstance(error, ApiException):
        if not error.status:  # the client's own failure (TLS, connection), no HTTP answer
            reason = " ".join(str(error.reason).split())
            return f"no answer from the API server: {reason}"[:300]
        return f"API server answered {error.status} {error.reason}"
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}"[:300]


def run_guarded(runtime: Runtime, key: Key, trigger: str, *, wait: bool = True) -> None:
    """Run a pass; on failure log one line and retry later with back-off (1 s doubling to 60 s),
    through the resync thread, so an unreachable API server costs one line per retry and a due
    canary is not hammered.

    `wait=False` skips an object whose pass is already running in another thread: that pass
    reads the object afresh, so a second one right after it would find nothing new.
    """
    lock = runtime.lock(key)
    if not wait:
        if not lock.acquire(blocking=False):
            return
        lock.release()
    try:
        run_pass(runtime, key, trigger)
    except Exception as error:
        delay = runtime.failed(key)
        log.warning(
            "%s pass of %s/%s failed (%d in a row), retrying in %.0fs: %s",
            trigger, *key, runtime.failures(key), delay, describe_error(error),
        )  # fmt: skip


def resync_forever(runtime: Runtime) -> None:
    """The periodic level-based pass: every resync period, reconcile every ModelDeployment we
    watch, so drift that raised no event (or an event we missed) is still repaired. In between,
    canaries are reconciled when their next analysis or step is due, and failed passes retried."""
    assert runtime.kube is not None
    next_full = time.monotonic() + runtime.config.resync_seconds
    list_failures = 0
    while not runtime.stop.wait(TICK_SECONDS):
        runtime.beat("idle")
        now = time.monotonic()
        if now >= next_full:
            runtime.beat("listing ModelDeployments")
            try:
                bodies = runtime.kube.list_model_deployments(runtime.config.namespaces)
            except Exception as error:
                list_failures += 1
                delay = min(runtime.config.resync_seconds, 2.0 ** (list_failures - 1))
                next_full = now + delay
                log.warning(
                    "resync: listing ModelDeployments failed (%d in a row), retrying in %.0fs: %s",
                    list_failures, delay, describe_error(error),
                )  # fmt: skip
                keys = runtime.due_now()
                trigger = "retry"
            else:
                list_failures = 0
                next_full = now + runtime.config.resync_seconds
                keys = [(b["metadata"]["namespace"], b["metadata"]["name"]) for b in bodies]
                for gone in runtime.known() - set(keys):  # deleted while we missed the event
                    runtime.forget(gone)
                trigger = "timer"
        else:
            keys = runtime.due_now()
            trigger = "requeue"
        for key in keys:
            if runtime.stop.is_set():
                return
            runtime.beat(f"{trigger} pass of {key[0]}/{key[1]}")
            run_guarded(runtime, key, trigger, wait=False)


def load_credential(runtime: Runtime, attempts: int = 8) -> None:
    """Read (or create) the operator's credential Secret, retrying while the API server is
    unreachable; the pods of models with auth are told its hash (see `credential`)."""
    assert runtime.kube is not None
    namespace = operator_namespace(runtime.config.operator_namespace)
    for attempt in range(1, attempts + 1):
        try:
            credential = load_or_create(runtime.kube, namespace)
            break
        except ApiException as error:
            if error.status != 403 and attempt < attempts:
                log.warning(
                    "reading the operator credential in %s failed (attempt %d), retrying: %s",
                    namespace, attempt, describe_error(error),
                )  # fmt: skip
                time.sleep(backoff_seconds(attempt))
                continue
            if error.status != 403:
                raise
            # Permissions do not come back by retrying: run without a credential. Models with
            # auth are then held (OperatorCredentialRejected); all others work as before.
            log.error(
                "cannot read or create Secret %s/%s (%s): models that require a token cannot be "
                "judged; grant the Role in manifests/base/credential-rbac.yaml",
                namespace, SECRET_NAME, describe_error(error),
            )  # fmt: skip
            return
        except Exception as error:
            if attempt == attempts:
                raise
            log.warning(
                "reading the operator credential in %s failed (attempt %d), retrying: %s",
                namespace, attempt, describe_error(error),
            )  # fmt: skip
            time.sleep(backoff_seconds(attempt))
    runtime.credential = credential
    runtime.config = dataclasses.replace(runtime.config, operator_token_sha256=credential.verifier)


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
            serve_health(runtime, runtime.config.health_port)
        load_credential(runtime)
        threading.Thread(target=resync_forever, args=(runtime,), name="resync", daemon=True).start()

    @kopf.on.cleanup(registry=registry)
    def cleanup(**_: Any) -> None:
        runtime.stop.set()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # In-cluster service account or KUBECONFIG, read by the official client like our own calls.
        return kopf.login_via_client(**kwargs)

    # Handlers never raise: a failed pass is logged in one line and retried by the resync thread
    # with back-off (kopf would log a traceback per attempt, on its own schedule).
    @kopf.on.resume(*md, registry=registry)
    def on_resume(body: kopf.Body, **_: Any) -> None:
        run_guarded(runtime, _key(body), "resume")

    @kopf.on.create(*md, registry=registry)
    def on_create(body: kopf.Body, **_: Any) -> None:
        run_guarded(runtime, _key(body), "create")

    @kopf.on.update(*md, registry=registry, field="spec")
    def on_update(body: kopf.Body, **_: Any) -> None:
        run_guarded(runtime, _key(body), "update")

    # Requests (promote, abort, retry, pause) arrive as annotations: see actions.py.
    @kopf.on.update(*md, registry=registry, field="metadata.annotations")
    def on_request(body: kopf.Body, **_: Any) -> None:
        run_guarded(runtime, _key(body), "request")

    @kopf.on.event(*md, registry=registry)
    def on_model_event(body: kopf.Body, type: str | None, **_: Any) -> None:
        # There is no finalizer (see the module docstring), so deletion is seen as a watch event:
        # children go with their owner through garbage collection; forget the object here.
        if type == "DELETED":
            runtime.forget(_key(body))

    def on_child(body: kopf.Body, type: str | None, **_: Any) -> None:
        labels = body.get("metadata", {}).get("labels", {})
        owner, namespace = labels.get(OWNER), body.get("metadata", {}).get("namespace")
        if not owner or runtime.kube is None or type is None:
            return  # type None: the initial listing, which resume handlers already cover
        run_guarded(runtime, (namespace, owner), "child")

    child_labels: dict[str, Any] = {MANAGED_BY: MANAGER, OWNER: kopf.PRESENT}
    for group, version, plural in (*CHILD_RESOURCES, HPA_RESOURCE):
        kopf.on.event(group, version, plural, labels=child_labels, registry=registry)(on_child)


def _key(body: kopf.Body) -> Key:
    """Only the object's name: run_pass reads it afresh under its lock."""
    meta = body["metadata"]
    return (meta["namespace"], meta["name"])


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
    )
