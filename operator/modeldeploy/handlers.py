"""The kopf layer: the only module that imports kopf. It wires the operator together and feeds the
ModelDeployment cache; passes run on the work queue's workers (workers.py).

kopf is the operator's frame: start-up and clean shutdown, login (in-cluster account or
KUBECONFIG), and the watch of ModelDeployments — filtered on the server by
`MODELDEPLOY_SELECTOR` when set, so several operators can split one cluster's fleet. Its watch
events put each object into the cache and queue it when its spec, annotations (requests, see
actions.py) or deletion changed; status-only changes (our own writes) queue nothing. Children
come from our own server-side filtered watches (informer.py).

What kopf filters where (kopf 1.45.2, as installed): `settings.watching.label_selectors` goes to
the API server as the list's and watch's `labelSelector` (kopf/_cogs/clients/watching.py and
fetching.py), while a handler's `labels=` filter is matched client-side, after every object has
been received (`_matches_labels` in kopf/_core/intents/registries.py). So the selector goes into
the settings, never into a handler filter.

No kopf handler writes anything: there are no create/update handlers (so no `status.kopf`
bookkeeping and no annotations that GitOps tools would see as drift) and no finalizer (children go
with their owner through garbage collection, and `kubectl delete` never hangs on a stopped
operator).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import threading
import time
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException
from prometheus_client import start_http_server

from .api import GROUP, PLURAL, VERSION
from .config import OperatorConfig
from .credential import SECRET_NAME, load_or_create, operator_namespace
from .health import serve_health
from .kube import Kube
from .leader import LEASE_NAME, LeaderElector, default_identity
from .runtime import Key, Runtime, backoff_seconds
from .workers import describe_error, start_workers
from .workqueue import SWEEP

log = logging.getLogger("modeldeploy")
CACHE_SYNC_SECONDS = 120.0

__all__ = ["Runtime", "register", "run"]


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
            if error.status == 403:
                # Permissions do not come back by retrying: run without a credential. Models
                # with auth are then held (OperatorCredentialRejected); all others work.
                log.error(
                    "cannot read or create Secret %s/%s (%s): models that require a token "
                    "cannot be judged; grant the Role in manifests/base/credential-rbac.yaml",
                    namespace, SECRET_NAME, describe_error(error),
                )  # fmt: skip
                return
            if attempt == attempts:
                raise
            _retrying(namespace, attempt, error)
        except Exception as error:
            if attempt == attempts:
                raise
            _retrying(namespace, attempt, error)
    runtime.credential = credential
    runtime.config = dataclasses.replace(runtime.config, operator_token_sha256=credential.verifier)


def _retrying(namespace: str, attempt: int, error: Exception) -> None:
    log.warning(
        "reading the operator credential in %s failed (attempt %d), retrying: %s",
        namespace, attempt, describe_error(error),
    )  # fmt: skip
    time.sleep(backoff_seconds(attempt))


def start(runtime: Runtime) -> None:
    """Caches first, then leadership: a replica works only once it leads and its caches hold
    the whole picture (an empty cache would look like children to create)."""
    assert runtime.kube is not None
    config = runtime.config
    runtime.children.start(runtime.kube, config.namespaces, _queue(runtime), runtime.stop)
    if not runtime.children.wait_synced(CACHE_SYNC_SECONDS):
        log.warning("child caches not synced after %.0fs; starting anyway", CACHE_SYNC_SECONDS)
    start_workers(runtime)
    if not config.leader_election:
        runtime.leading.set()
        return

    def started() -> None:
        for key in runtime.models.names():  # everything, once, in the new leader's hands
            runtime.queue.add(key, SWEEP)

    elector = LeaderElector(
        runtime.kube,
        operator_namespace(config.operator_namespace),
        name=lease_name(config.selector),
        on_started=started,
        on_stopped=lambda: None,
        duration=config.lease_seconds,
        retry=max(0.5, config.lease_seconds / 5),
        leading=runtime.leading,  # the workers wait on this event
    )
    runtime.elector = elector
    elector.start()


def lease_name(selector: str) -> str:
    """One Lease per shard: operators with different selectors lead independently.

    Example: "" → modeldeploy-operator; "team=fraud" → modeldeploy-operator-<8 hex>.
    """
    if not selector:
        return LEASE_NAME
    return f"{LEASE_NAME}-{hashlib.sha256(selector.encode()).hexdigest()[:8]}"


def _queue(runtime: Runtime) -> Any:
    def on_change(owner: Key) -> None:
        runtime.queue.add(owner)

    return on_change


def configure_settings(settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
    # No cluster-wide namespace listing or CRD watching: the watched namespaces are exact names
    # and the resources are known at start, and the least-privilege RBAC grants neither.
    settings.scanning.disabled = True
    # kopf logs every handled watch event at info: one line per status write. Our own pass
    # summary says what matters; kopf's warnings and errors remain.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    settings.posting.enabled = False  # our Events come from the passes
    settings.execution.max_workers = 4
    if config.selector:
        # A (group, plural) key: kopf would parse "modeldeploy.io/modeldeployments" as the
        # resource "modeldeploy" of a group "io/modeldeployments" and match nothing.
        settings.watching.label_selectors[GROUP, PLURAL] = config.selector
    # Re-open watches regularly so a silently dropped connection cannot leave us blind for long.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10


def _wants_pass(before: dict[str, Any] | None, after: dict[str, Any]) -> bool:
    """A pass is due when what the user controls changed, not when our own status write came
    back: spec (generation), annotations (requests), or deletion."""
    if before is None:
        return True
    old, new = before.get("metadata", {}), after.get("metadata", {})
    return (
        old.get("generation") != new.get("generation")
        or (old.get("annotations") or {}) != (new.get("annotations") or {})
        or old.get("deletionTimestamp") != new.get("deletionTimestamp")
    )


def register(
    registry: kopf.OperatorRegistry, runtime: Runtime, *, serve_metrics: bool = True
) -> None:
    """Attach every handler to `registry`, bound to `runtime`."""
    md = (GROUP, VERSION, PLURAL)

    @kopf.on.startup(registry=registry)
    def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure_settings(settings, runtime.config)
        if runtime.kube is None:
            runtime.kube = Kube.from_environment(runtime.metrics, default_identity())
        if serve_metrics:
            start_http_server(runtime.config.metrics_port, registry=runtime.metrics.registry)
            log.info("metrics on :%d/metrics", runtime.config.metrics_port)
            serve_health(runtime, runtime.config.health_port)
        load_credential(runtime)
        threading.Thread(target=start, args=(runtime,), name="start", daemon=True).start()

    @kopf.on.cleanup(registry=registry)
    def cleanup(**_: Any) -> None:
        runtime.stop.set()
        if runtime.elector is not None:
            runtime.elector.stop()
        runtime.queue.shutdown()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # In-cluster service account or KUBECONFIG, read by the official client like our own calls.
        return kopf.login_via_client(**kwargs)

    @kopf.on.event(*md, registry=registry)
    def on_model(body: kopf.Body, type: str | None, **_: Any) -> None:
        obj = copy.deepcopy(dict(body))
        key = _key(body)
        if type == "DELETED":
            runtime.forget(key)
            return
        before = runtime.models.get(*key)
        runtime.models.put(obj)
        if _wants_pass(before, obj):
            runtime.queue.add(key)


def _key(body: kopf.Body) -> Key:
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
