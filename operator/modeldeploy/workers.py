"""The passes themselves: workers that take keys from the queue, and the periodic sweep.

A pass reads the ModelDeployment and its children from the caches (no API read), gathers the
evidence its phase needs, plans, applies what differs and writes status once — with the object's
resourceVersion, so a pass that planned from a stale copy loses (409) instead of overwriting, and
is run again from the object as the API server holds it now. A failed pass
logs one line and comes back with back-off; a due analysis or step comes back exactly when due.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from collections.abc import Hashable

from kubernetes.client.exceptions import ApiException

from .api import API_VERSION, KIND, Phase
from .reconcile import PassContext, PassResult, StaleRead, reconcile
from .runtime import Key, Runtime
from .workqueue import SWEEP, ShutDown

log = logging.getLogger("modeldeploy")
IDLE_BEAT_SECONDS = 1.0
STALE_RETRY_SECONDS = 0.2
CACHE_WAIT_SECONDS = 1.0


def describe_error(error: BaseException) -> str:
    """One line for the log: what failed, without a traceback (a retry follows)."""
    if isinstance(error, ApiException):
        if not error.status:  # the client's own failure (TLS, connection), no HTTP answer
            reason = " ".join(str(error.reason).split())
            return f"no answer from the API server: {reason}"[:300]
        return f"API server answered {error.status} {error.reason}"
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}"[:300]


def run_pass(runtime: Runtime, key: Key) -> PassResult | None:
    """Reconcile the ModelDeployment `key` once, with metrics and Events; raises on failure."""
    assert runtime.kube is not None
    namespace, name = key
    body = runtime.models.get(namespace, name)
    if body is None:
        runtime.forget(key)
        return None
    if body["metadata"].get("deletionTimestamp"):
        return None  # going away with its children; the watch's DELETED event forgets it
    context = PassContext(runtime.snapshots, runtime.tokens, runtime.slots, runtime.children)
    with runtime.metrics.reconcile_seconds.time():
        result = reconcile(runtime.kube, runtime.config, body, runtime.clock(), context)
    if result.stored is not None:
        runtime.models.put(result.stored)  # write-through: the next pass plans from it
    runtime.succeeded(key)
    runtime.record_phase(key, result.plan.status.get("phase"))
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
            runtime.kube.post_event(body, event.type, event.reason, event.message, stamp)
        except Exception:  # an Event is a courtesy; losing one must not fail the pass
            log.warning("could not post event %s on %s/%s", event.reason, *key)
    if result.plan.writes or result.status_written:
        log.info(
            "reconciled %s/%s: %d applied, %d deleted, status %s, %.0f ms",
            *key, len(result.plan.apply), len(result.plan.delete),
            "written" if result.status_written else "unchanged", result.seconds * 1000,
        )  # fmt: skip
    return result


def pass_inputs(runtime: Runtime, key: Key) -> Hashable | None:
    """What a pass of `key` would plan from, the clock aside: the object's and its children's
    resourceVersions, and the operator's credential. None when the object is not cached."""
    body = runtime.models.get(*key)
    if body is None:
        return None
    version = body["metadata"].get("resourceVersion")
    return version, runtime.children.versions(*key), runtime.tokens


def settled(result: PassResult) -> bool:
    """Whether the pass found nothing to do and nothing pending: the stable revision serves, no
    canary, no promoted revision under watch, no queued rollout, nothing stalled, no timer.

    The plan depends on the clock only while something is pending, so a pass from the same
    inputs would plan the same nothing: the sweep may skip it (at 1,000 objects and a 30 s
    resync, that is 33 passes a second of pure CPU for no change).
    """
    plan = result.plan
    conditions = {c["type"]: c["status"] for c in plan.status.get("conditions", [])}
    return (
        not plan.writes
        and not result.status_written
        and not plan.events
        and plan.requeue_after is None
        and plan.status.get("phase") == Phase.READY.value
        and not plan.status.get("canaryRevision")
        and conditions.get("Reconciling") == "False"
        and conditions.get("Stalled") == "False"
    )


def refresh(runtime: Runtime, key: Key) -> None:
    """After a 409, put the object as the API server holds it now into the cache: one read, so
    the retry plans from fresh state even when the watch event that carries it is still on its
    way (or the conflict came from a write this replica never sees, like a stale leader's)."""
    assert runtime.kube is not None
    try:
        fresh = runtime.kube.get(API_VERSION, KIND, *key)
    except Exception as error:  # the watch brings the new version anyway; retry on its copy
        log.warning("could not re-read %s/%s after a conflict: %s", *key, describe_error(error))
        return
    if fresh is None:
        runtime.forget(key)
    else:
        runtime.models.put(fresh)


def take(runtime: Runtime) -> Key | None:
    """The next key to work on while this replica leads, or None (after up to a second or two).

    Leadership is checked again once a key is in hand: a replica that stood down while it waited
    in `get` (its Lease renewal failed meanwhile) must not write for it. The key goes back into
    the queue, for when this replica leads again (the new leader works from its own queue).
    """
    if not runtime.leading.wait(IDLE_BEAT_SECONDS):
        return None
    key = runtime.queue.get(timeout=IDLE_BEAT_SECONDS)
    if key is None:
        return None
    assert isinstance(key, tuple)
    if not runtime.leading.is_set():
        runtime.queue.add(key)  # added while "processing": re-queued by done()
        runtime.queue.done(key)
        return None
    return key


def work(runtime: Runtime, name: str) -> None:
    """One worker: while this replica leads, take a key, run its pass, schedule what follows."""
    queue = runtime.queue
    while not runtime.stop.is_set():
        runtime.beat(name, "idle")
        try:
            key = take(runtime)
        except ShutDown:
            return
        if key is None:
            continue
        if not runtime.children.synced():
            # A watch broke (the API server went away): wait for the relist rather than plan from
            # a picture of the children that may be minutes old.
            queue.add_after(key, CACHE_WAIT_SECONDS)
            queue.done(key)
            continue
        inputs = pass_inputs(runtime, key)
        if inputs is not None and runtime.settled_on(key, inputs):
            runtime.metrics.reconciles.labels(trigger="queue", result="settled").inc()
            queue.done(key)
            continue
        runtime.beat(name, f"pass of {key[0]}/{key[1]}")
        try:
            result = run_pass(runtime, key)
        except StaleRead:
            runtime.settle(key, None)
            runtime.metrics.reconciles.labels(trigger="queue", result="stale").inc()
            log.info("%s/%s changed since its pass read it (409): re-read, run again", *key)
            refresh(runtime, key)
            queue.add_after(key, STALE_RETRY_SECONDS)
        except Exception as error:
            runtime.settle(key, None)
            runtime.metrics.reconciles.labels(trigger="queue", result="error").inc()
            delay = runtime.failed(key)
            log.warning(
                "pass of %s/%s failed (%d in a row), retrying in %.0fs: %s",
                *key, runtime.failures(key), delay, describe_error(error),
            )  # fmt: skip
            queue.add_after(key, delay)
        else:
            runtime.metrics.reconciles.labels(trigger="queue", result="ok").inc()
            runtime.settle(key, inputs if result is not None and settled(result) else None)
            if result is not None and result.plan.requeue_after is not None:
                queue.add_after(key, result.plan.requeue_after)
        finally:
            queue.done(key)


def sweep_forever(runtime: Runtime) -> None:
    """The level-based safety net: every resync period, queue every cached ModelDeployment behind
    the urgent work, so drift that raised no event is still repaired. It reads the caches only:
    an idle fleet costs no API call."""
    while not runtime.stop.wait(runtime.config.resync_seconds):
        if runtime.leading.is_set():
            for key in runtime.models.names():
                runtime.queue.add(key, SWEEP)


def slow_passes(
    activity: dict[str, tuple[float, str]],
    now: float,
    after: float,
    reported: set[tuple[str, float]],
) -> list[tuple[str, str, float]]:
    """The passes to report as slow: busy for more than `after` seconds and not reported yet
    (one report per pass, keyed by worker and start). Returns (worker, activity, seconds).

    Example: worker-1 in "pass of ml/fraud" since 40 s ago, after 30 → reported once; the same
    worker's next pass is a new one.
    """
    found = []
    for worker, (since, what) in sorted(activity.items()):
        if what != "idle" and now - since > after and (worker, since) not in reported:
            reported.add((worker, since))
            found.append((worker, what, now - since))
    return found


def report_slow_passes(runtime: Runtime) -> None:
    """Log a pass that runs far longer than passes do (milliseconds), with where its thread is:
    a pass that hangs holds its ModelDeployment (one pass per object at a time), and without this
    the only sign is a rollout that stops moving. /healthz fails later
    (MODELDEPLOY_STUCK_SECONDS)."""
    after = max(10.0, runtime.config.stuck_seconds / 4)
    reported: set[tuple[str, float]] = set()
    while not runtime.stop.wait(after / 3):
        threads = {t.name: t.ident for t in threading.enumerate()}
        frames = sys._current_frames()
        for worker, what, seconds in slow_passes(
            dict(runtime.activity), time.monotonic(), after, reported
        ):
            frame = frames.get(threads.get(worker) or -1)
            where = "".join(traceback.format_stack(frame)[-6:]) if frame else "(no stack)"
            log.warning("%s has been in the %s for %.0fs, at:\n%s", worker, what, seconds, where)


def start_workers(runtime: Runtime) -> None:
    for index in range(runtime.config.workers):
        name = f"worker-{index}"
        threading.Thread(target=work, args=(runtime, name), name=name, daemon=True).start()
    threading.Thread(target=sweep_forever, args=(runtime,), name="sweep", daemon=True).start()
    threading.Thread(
        target=report_slow_passes, args=(runtime,), name="slow-passes", daemon=True
    ).start()
