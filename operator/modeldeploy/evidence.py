"""Gather the evidence a canary is judged on: pod signals, serving metrics, model gates.

This is I/O (HTTP to pods or to Prometheus); the verdicts are pure functions in `judge`. What to
gather follows the pass's phase (`pass_phase`), which is decided from status alone, so a
restarted operator asks for the same evidence.

Each revision is addressed as it runs: the port and model name come from its own pods (their
container port and MODELSERVER_MODEL_NAME), never from the current spec, so an update that
changes `serving.port` or `model.name` still reaches stable where stable listens.

Every request carries the operator's credential (a bearer token whose SHA-256 the pods know), so
gates and scrapes work on models that require a token; see `credential`.

Metric sources:
- direct: scrape each ready pod's /metrics and sum the inference series of one revision. The
  window is "since the last analysis": the previous scrape of each pod is remembered in memory
  (`Snapshots`); after an operator restart the first window is "since the pod started".
- prometheus: PromQL over the same series, by the `version` label, which the operator sets to
  the revision (MODELSERVER_MODEL_VERSION).

A pod that Kubernetes reports Ready but that the operator cannot connect to (refused, or no
route: a default-deny NetworkPolicy) is not the canary's fault: the canary is held with the
reason `PodsUnreachable` instead of counting inconclusive intervals towards a rollback.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, TypeVar

import modelserver.metric_names as names
from prometheus_client.parser import text_string_to_metric_families

from .api import CheckOutcome, MetricSourceType, ModelDeployment, ShadowMirror, parse_duration
from .children import CONTAINER
from .judge import (
    Check,
    RevisionMetrics,
    ShadowMetrics,
    check_answers,
    check_metadata,
    compare_metadata,
    compare_predictions,
    judge_metrics,
    judge_pods,
    judge_shadow,
    judge_shadow_alone,
)
from .naming import OWNER
from .observed import Observed, pod_ready, ready_since
from .pass_phase import CanaryStage, Judged, PassPhase, needed_gates
from .rollout import Evidence, Hold

log = logging.getLogger("modeldeploy.evidence")
HTTP_TIMEOUT = 3.0
PROMQL_MIN_WINDOW = 30
UNREACHABLE = "PodsUnreachable"
# A pod that turned Ready this recently and refuses a connection is still coming up (or its
# readiness was reported a moment early): ask again rather than hold the canary.
UNREACHABLE_GRACE_SECONDS = 10.0
CREDENTIAL_REJECTED = "OperatorCredentialRejected"
CREDENTIAL_HINT = (
    "the pod does not accept the operator's credential: auth configured through spec.serving.env "
    "instead of authSecretRef, or pods older than the credential Secret"
)
NETWORK_HINT = (
    "Kubernetes reports it Ready, so something between the operator and the pod drops the "
    "connection; a default-deny namespace needs the NetworkPolicy in manifests/networkpolicy"
)


@dataclass
class PodSample:
    requests: float = 0.0
    errors: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)


SnapshotKey = tuple[str, str, str]  # (namespace, ModelDeployment, pod)
# A stable pod's shadow series are remembered under the pod's name with this suffix.
SHADOW_KEY_SUFFIX = "#shadow"
Sample = TypeVar("Sample", PodSample, ShadowMetrics)


class Snapshots:
    """Each pod's cumulative series at its last analysis.

    Shared by every thread that runs passes (kopf's handler threads and the resync thread), each
    working on a different ModelDeployment; the lock makes "forget" safe while another thread
    records a scrape.
    """

    def __init__(self) -> None:
        self._data: dict[SnapshotKey, Any] = {}
        self._lock = threading.Lock()

    def swap(self, key: SnapshotKey, current: Sample) -> Sample | None:
        """Remember `current` for `key`; return what was remembered before (of its type)."""
        with self._lock:
            before = self._data.get(key)
            self._data[key] = current
        return before if isinstance(before, type(current)) else None

    def forget(self, namespace: str, owner: str, keep: set[str] | None = None) -> None:
        """Drop the scrapes of `owner`'s pods, except those named in `keep`."""
        with self._lock:
            for key in [k for k in self._data if k[0] == namespace and k[1] == owner]:
                if keep is None or key[2] not in keep:
                    del self._data[key]

    def keys(self) -> set[SnapshotKey]:
        with self._lock:
            return set(self._data)


class Unreachable(Exception):
    """The connection to a pod could not be made (refused, no route, connect timeout)."""

    def __init__(self, reason: str, target: PodTarget | None = None) -> None:
        super().__init__(reason)
        self.reason, self.target = reason, target


@dataclass(frozen=True)
class PodTarget:
    """Where one pod serves, as it runs: its name, base URL and model name, and since when it
    is Ready."""

    name: str
    base_url: str
    model: str
    ready_since: dt.datetime | None = None

    def just_ready(self, now: dt.datetime) -> bool:
        since = self.ready_since
        return since is None or (now - since).total_seconds() < UNREACHABLE_GRACE_SECONDS


def pod_target(pod: dict[str, Any], default_model: str, default_port: int) -> PodTarget | None:
    """The pod's own address: the `http` port of the server container and the model name in
    its environment (the spec may have moved on since the pod was made)."""
    ip = pod.get("status", {}).get("podIP")
    if not ip:
        return None
    containers = pod.get("spec", {}).get("containers", []) or []
    container = next((c for c in containers if c.get("name") == CONTAINER), None)
    container = container or (containers[0] if containers else {})
    ports = container.get("ports", []) or []
    port = next((p for p in ports if p.get("name") == "http"), ports[0] if ports else {})
    env = {e.get("name"): e.get("value") for e in container.get("env", []) or []}
    model = env.get("MODELSERVER_MODEL_NAME") or default_model
    number = port.get("containerPort", default_port)
    since = ready_since(pod)
    return PodTarget(
        pod["metadata"]["name"],
        f"http://{ip}:{number}",
        str(model),
        dt.datetime.fromisoformat(since.replace("Z", "+00:00")) if since else None,
    )


def template_env(observed: Observed, revision: str, name: str) -> str | None:
    """A variable of the revision's Deployment's pod template, as its pods run (the spec may
    have moved on since)."""
    deployment = observed.deployment_for(revision) or {}
    containers = deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers")
    for container in containers or []:
        for env in container.get("env", []) or []:
            if env.get("name") == name and env.get("value"):
                return str(env["value"])
    return None


def served_model(observed: Observed, revision: str, default: str) -> str:
    """The model name a revision serves under, read from its Deployment's pod template."""
    return template_env(observed, revision, "MODELSERVER_MODEL_NAME") or default


def servers_take_operator_token(observed: Observed, revision: str) -> bool:
    """Whether the revision's servers accept the operator's credential (their pods carry its
    digest): without it their ``/v2/shadow`` refuses to be configured."""
    return template_env(observed, revision, "MODELSERVER_OPERATOR_TOKEN_SHA256") is not None


def _open(url: str, tokens: tuple[str, ...] = (), body: Any = None) -> bytes:
    """GET (or POST `body` as JSON) with the operator's credential; connection failures raise
    `Unreachable`, HTTP errors `HTTPError`, a read that times out `TimeoutError`.

    A 401 with the current token is retried with the previous one (a rotation in progress).
    """
    data = None if body is None else json.dumps(body).encode()
    for attempt, token in enumerate(tokens or (None,)):
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(url, data=data, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as error:
            if error.code != 401 or attempt + 1 >= len(tokens):
                raise
        except urllib.error.URLError as error:  # raised while connecting or sending
            raise Unreachable(str(error.reason)) from error
        except ConnectionError as error:
            raise Unreachable(str(error)) from error
    raise AssertionError("unreachable: the loop returns or raises")


def _json(url: str, tokens: tuple[str, ...] = (), body: Any = None) -> Any:
    return json.loads(_open(url, tokens, body))


def parse_pod_metrics(text: str, model: str) -> PodSample:
    """Sum one model's inference requests, 5xx errors and latency buckets from /metrics text."""
    sample = PodSample()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = s.labels
            if labels.get(names.LABEL_MODEL) != model:
                continue
            if labels.get(names.LABEL_ENDPOINT) not in names.INFERENCE_ENDPOINTS:
                continue
            if s.name == names.REQUESTS_TOTAL:
                sample.requests += s.value
                if str(labels.get(names.LABEL_CODE, "")).startswith("5"):
                    sample.errors += s.value
            elif s.name == f"{names.REQUEST_DURATION_SECONDS}_bucket":
                bound = float(labels["le"])
                sample.buckets[bound] = sample.buckets.get(bound, 0.0) + s.value
    return sample


def _delta(now: PodSample, before: PodSample | None) -> PodSample:
    """Counter increase since `before`; a counter that went down means the pod restarted."""
    if before is None or now.requests < before.requests:
        return now
    return PodSample(
        now.requests - before.requests,
        now.errors - before.errors,
        {b: v - before.buckets.get(b, 0.0) for b, v in now.buckets.items()},
    )


@dataclass(frozen=True)
class MetricsRead:
    """A revision's window metrics (None: none could be read), and why a ready pod could not be
    read when that is no fault of the model (no connection, the operator's token refused)."""

    metrics: RevisionMetrics | None
    problem: Hold | None = None


def scrape_revision(
    pods: list[dict[str, Any]],
    default_port: int,
    default_model: str,
    snapshots: Snapshots,
    tokens: tuple[str, ...] = (),
    now: dt.datetime | None = None,
) -> MetricsRead:
    """Direct source: the revision's window metrics summed over its ready pods."""
    total, read, problem = PodSample(), 0, None
    for pod in pods:
        target = pod_target(pod, default_model, default_port)
        if target is None or not pod_ready(pod):
            continue
        url = f"{target.base_url}/metrics"
        try:
            current = parse_pod_metrics(_open(url, tokens).decode(), target.model)
        except Unreachable as error:
            if now is None or not target.just_ready(now):
                problem = _unreachable(Unreachable(error.reason, target))
            continue
        except urllib.error.HTTPError as error:
            if error.code in (401, 403):
                problem = _rejected(target, error.code)
            else:
                log.info("scrape %s failed: %s", url, error)
            continue
        except (OSError, ValueError) as error:
            log.info("scrape %s failed: %s", url, error)
            continue
        meta = pod["metadata"]
        key = (meta["namespace"], meta.get("labels", {}).get(OWNER, ""), meta["name"])
        window = _delta(current, snapshots.swap(key, current))
        read += 1
        total.requests += window.requests
        total.errors += window.errors
        for bound, count in window.buckets.items():
            total.buckets[bound] = total.buckets.get(bound, 0.0) + count
    metrics = RevisionMetrics(total.requests, total.errors, total.buckets) if read else None
    return MetricsRead(metrics, problem)


def query_prometheus(
    base_url: str, model: str, revision: str, window: str
) -> RevisionMetrics | None:
    """Prometheus source: increase of requests and errors, and p99, over `window`."""
    selector = (
        f'{names.LABEL_MODEL}="{model}",{names.LABEL_VERSION}="{revision}",'
        f'{names.LABEL_ENDPOINT}=~"{"|".join(names.INFERENCE_ENDPOINTS)}"'
    )
    queries = {
        "requests": f"sum(increase({names.REQUESTS_TOTAL}{{{selector}}}[{window}]))",
        "errors": (
            f"sum(increase({names.REQUESTS_TOTAL}"
            f'{{{selector},{names.LABEL_CODE}=~"5.."}}[{window}]))'
        ),
        "p99": names.latency_quantile_query(model, revision, 0.99, window),
    }
    values: dict[str, float | None] = {}
    try:
        for key, query in queries.items():
            url = f"{base_url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
            result = _json(url)["data"]["result"]
            values[key] = float(result[0]["value"][1]) if result else None
    except (OSError, ValueError, KeyError, Unreachable) as error:
        log.info("prometheus query failed: %s", error)
        return None
    if values["requests"] is None:
        return RevisionMetrics(0.0, 0.0)
    p99 = values["p99"]
    return RevisionMetrics(
        values["requests"] or 0.0,
        values["errors"] or 0.0,
        p99_seconds=None if p99 is None or math.isnan(p99) else p99,
    )


def read_metrics(
    md: ModelDeployment,
    observed: Observed,
    revision: str,
    snapshots: Snapshots,
    tokens: tuple[str, ...] = (),
    now: dt.datetime | None = None,
) -> MetricsRead:
    source = md.spec.rollout.analysis.metric_source
    model = served_model(observed, revision, md.spec.model.name or str(md.metadata.name))
    if source.type == MetricSourceType.PROMETHEUS and source.prometheus_url:
        # At least 30 s, so that a Prometheus scraping every 15 s has two samples to diff.
        window = (
            f"{max(int(parse_duration(md.spec.rollout.analysis.interval)), PROMQL_MIN_WINDOW)}s"
        )
        return MetricsRead(query_prometheus(source.prometheus_url, model, revision, window))
    port = md.spec.serving.port
    return scrape_revision(observed.pods_of(revision), port, model, snapshots, tokens, now)


def parse_shadow_metrics(text: str, model: str, shadow: str) -> ShadowMetrics:
    """One stable pod's `modelserver_shadow_*` counts about the copies sent to `shadow`."""
    counts = dict.fromkeys(("mirrored", "dropped", "agreed", "disagreed", "errors"), 0.0)
    series = {
        names.SHADOW_MIRRORED_TOTAL: "mirrored",
        names.SHADOW_DROPPED_TOTAL: "dropped",
        names.SHADOW_AGREED_TOTAL: "agreed",
        names.SHADOW_DISAGREED_TOTAL: "disagreed",
        names.SHADOW_ERRORS_TOTAL: "errors",
    }
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = s.labels
            if labels.get(names.LABEL_MODEL) != model or labels.get(names.LABEL_SHADOW) != shadow:
                continue
            if s.name in series:
                counts[series[s.name]] += s.value
            elif s.name == f"{names.SHADOW_DURATION_SECONDS}_bucket":
                bound = float(labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + s.value
    return ShadowMetrics(buckets=buckets, **counts)


def _shadow_delta(now: ShadowMetrics, before: ShadowMetrics | None) -> ShadowMetrics:
    """Increase since `before`; a count that went down means the pod restarted."""
    if before is None or now.mirrored < before.mirrored or now.dropped < before.dropped:
        return now
    return ShadowMetrics(
        now.mirrored - before.mirrored,
        now.dropped - before.dropped,
        now.agreed - before.agreed,
        now.disagreed - before.disagreed,
        now.errors - before.errors,
        {b: v - before.buckets.get(b, 0.0) for b, v in now.buckets.items()},
    )


def scrape_shadow(
    md: ModelDeployment,
    observed: Observed,
    stable: str,
    canary: str,
    snapshots: Snapshots,
    tokens: tuple[str, ...] = (),
) -> ShadowMetrics | None:
    """The shadow counts of the window, summed over stable's ready pods (which do the
    mirroring and the comparing); None when no pod could be read. Always read from the pods,
    whatever the metric source: the shadow phase is short and the counts are exact there."""
    default_model = served_model(observed, stable, md.spec.model.name or str(md.metadata.name))
    totals: list[ShadowMetrics] = []
    for pod in observed.pods_of(stable):
        target = pod_target(pod, default_model, md.spec.serving.port)
        if target is None or not pod_ready(pod):
            continue
        try:
            text = _open(f"{target.base_url}/metrics", tokens).decode()
        except (Unreachable, OSError, ValueError) as error:
            log.info("shadow scrape of %s failed: %s", target.name, error)
            continue
        current = parse_shadow_metrics(text, target.model, canary)
        meta = pod["metadata"]
        key = (
            meta["namespace"],
            meta.get("labels", {}).get(OWNER, ""),
            meta["name"] + SHADOW_KEY_SUFFIX,
        )
        totals.append(_shadow_delta(current, snapshots.swap(key, current)))
    if not totals:
        return None
    buckets: dict[float, float] = {}
    for t in totals:
        for bound, count in t.buckets.items():
            buckets[bound] = buckets.get(bound, 0.0) + count
    return ShadowMetrics(
        sum(t.mirrored for t in totals),
        sum(t.dropped for t in totals),
        sum(t.agreed for t in totals),
        sum(t.disagreed for t in totals),
        sum(t.errors for t in totals),
        buckets,
    )


@dataclass(frozen=True)
class SmokeInputs:
    """The smoke-test requests to send, or the reason they cannot be read (the canary waits)."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    problem: Hold | None = None


def run_gates(
    md: ModelDeployment,
    canary_pods: list[dict[str, Any]],
    stable_pods: list[dict[str, Any]] | None,
    smoke_inputs: list[dict[str, Any]],
    tokens: tuple[str, ...] = (),
    now: dt.datetime | None = None,
) -> tuple[list[Check], Hold | None]:
    """Model-aware gates: the canary's metadata and smoke predictions against stable's.

    `stable_pods` None means stable has no ready pod (an outage being fixed): the canary is then
    judged on its own — metadata is not compared, smoke requests must be answered with outputs.
    A pod that does not answer makes the gate Inconclusive (retried next pass, bounded by
    progressDeadline), never Passed; a pod that cannot be connected to holds the canary.
    """
    default_model = md.spec.model.name or str(md.metadata.name)
    port = md.spec.serving.port
    canary_pod = next((p for p in canary_pods if pod_ready(p)), None)
    stable_pod = next((p for p in stable_pods or [] if pod_ready(p)), None)
    canary = pod_target(canary_pod, default_model, port) if canary_pod else None
    stable = pod_target(stable_pod, default_model, port) if stable_pod else None
    alone = stable_pods is None
    checks: list[Check] = []
    for gate in needed_gates(md):
        if canary is None or (stable is None and not alone):
            checks.append(Check(gate, CheckOutcome.INCONCLUSIVE, message="no ready pod to ask"))
            continue
        try:
            checks.append(_gate(md, gate, canary, None if alone else stable, smoke_inputs, tokens))
        except Unreachable as error:
            if now is None or (error.target is not None and error.target.just_ready(now)):
                checks.append(Check(gate, CheckOutcome.INCONCLUSIVE, message=f"{error.reason}"))
                continue
            return checks, _unreachable(error)
        except PodRefused as error:
            return checks, _rejected(error.target, error.code)
        except urllib.error.HTTPError as error:
            if error.code in (429, 503):  # not ready yet, or busy: ask again next pass
                checks.append(Check(gate, CheckOutcome.INCONCLUSIVE, message=f"HTTP {error.code}"))
                continue
            checks.append(
                Check(gate, CheckOutcome.FAILED, f"HTTP {error.code}", "HTTP 200",
                      message=f"{error.url} answered {error.code} to the {gate} request",
                      hard=True)
            )  # fmt: skip
        except (OSError, ValueError) as error:
            checks.append(Check(gate, CheckOutcome.INCONCLUSIVE, message=f"no answer: {error}"))
    return checks, None


def _gate(
    md: ModelDeployment,
    gate: str,
    canary: PodTarget,
    stable: PodTarget | None,
    smoke_inputs: list[dict[str, Any]],
    tokens: tuple[str, ...],
) -> Check:
    """One gate against one canary pod and (unless judged alone) one stable pod."""

    def ask(target: PodTarget, path: str, body: Any = None) -> Any:
        try:
            return _json(f"{target.base_url}/v2/models/{target.model}{path}", tokens, body)
        except Unreachable as error:
            raise Unreachable(error.reason, target) from error
        except urllib.error.HTTPError as error:
            if error.code in (401, 403):
                raise PodRefused(target, error.code) from error
            raise

    if gate == "modelMetadata":
        ours = ask(canary, "")
        if stable is None:
            return check_metadata(ours)
        return compare_metadata(ours, ask(stable, ""))
    ours = [ask(canary, "/infer", body) for body in smoke_inputs]
    if stable is None:
        return check_answers(ours)
    theirs = [ask(stable, "/infer", body) for body in smoke_inputs]
    smoke = md.spec.rollout.analysis.smoke_tests
    return compare_predictions(ours, theirs, smoke.tolerance if smoke else None)


class PodRefused(Exception):
    """A pod answered 401/403 to the operator's credential."""

    def __init__(self, target: PodTarget, code: int) -> None:
        super().__init__(f"{target.name}: HTTP {code}")
        self.target, self.code = target, code


def _rejected(target: PodTarget, code: int) -> Hold:
    message = f"pod {target.name} at {target.base_url} answered HTTP {code}: {CREDENTIAL_HINT}"
    return Hold(CREDENTIAL_REJECTED, message)


def _unreachable(error: Unreachable) -> Hold:
    target = error.target
    where = f"pod {target.name} at {target.base_url}" if target else "a pod"
    return Hold(UNREACHABLE, f"cannot reach {where}: {error.reason}. {NETWORK_HINT}")


def _deadline_passed(md: ModelDeployment, created: dt.datetime | None, now: dt.datetime) -> bool:
    limit = parse_duration(md.spec.rollout.progress_deadline)
    return created is not None and (now - created).total_seconds() > limit


def has_ready_pod(observed: Observed, revision: str | None) -> bool:
    """Whether `revision` serves anything: a rollback to a revision without one helps nobody."""
    return revision is not None and any(pod_ready(p) for p in observed.pods_of(revision))


def gather(
    md: ModelDeployment,
    observed: Observed,
    phase: PassPhase,
    now: dt.datetime,
    snapshots: Snapshots,
    smoke: SmokeInputs | None = None,
    tokens: tuple[str, ...] = (),
) -> Evidence:
    """The evidence `phase` needs (`PassPhase.judged`): about the canary status names, at its
    stage; or about the promoted revision watched in its rollback window; else none."""
    forget_gone_pods(snapshots, observed)
    stable = phase.stable
    if stable is None:
        return Evidence()
    match phase.judged:
        case Judged.CANARY:
            return _canary_evidence(md, observed, phase, stable, now, snapshots, smoke, tokens)
        case Judged.WINDOW:
            assert phase.watched is not None
            return _window_evidence(md, observed, phase, phase.watched, now, snapshots, tokens)
    return Evidence()


def _canary_evidence(
    md: ModelDeployment,
    observed: Observed,
    phase: PassPhase,
    stable: str,
    now: dt.datetime,
    snapshots: Snapshots,
    smoke: SmokeInputs | None,
    tokens: tuple[str, ...],
) -> Evidence:
    """Pod signals always; the model gates until they pass; metrics once due after them (the
    shadow phase's comparisons while it lasts)."""
    canary, stage, analysis = phase.desired, phase.canary, md.spec.rollout.analysis
    deployment = observed.deployment_for(canary)
    created = _created(deployment) or now
    canary_pods = observed.pods_of(canary)
    fallback_ready = has_ready_pod(observed, stable)
    stable_mirrors = servers_take_operator_token(observed, stable)
    pods = judge_pods(
        canary_pods, created, now, md.spec.rollout.progress_deadline, analysis.max_restarts
    )
    gates, hold = None, None
    if stage is CanaryStage.GATES and pods.outcome == CheckOutcome.PASSED:
        smoke = smoke or SmokeInputs()
        hold = smoke.problem
        if hold is None:
            stable_pods = observed.pods_of(stable) if fallback_ready else None
            gates, hold = run_gates(md, canary_pods, stable_pods, smoke.requests, tokens, now)
        if hold is None and gates is not None and _deadline_passed(md, created, now):
            gates = [_timed_out(g) for g in gates]
    metrics = None
    # Until the gates passed, and before the shadow phase starts, there is nothing to judge yet.
    judged = stage in (CanaryStage.SHADOW, CanaryStage.TRAFFIC)
    due = judged and phase.analysis_due and pods.outcome != CheckOutcome.FAILED
    shadow = md.spec.rollout.shadow
    if due and shadow is not None and stage is CanaryStage.SHADOW:
        if shadow.mirror == ShadowMirror.GATEWAY:
            ours = read_metrics(md, observed, canary, snapshots, tokens, now)
            hold = ours.problem if ours.metrics is None else None
            metrics = None if hold else judge_shadow_alone(analysis, ours.metrics)
            return Evidence(pods, metrics, gates, hold, fallback_ready, stable_mirrors)
        counts = scrape_shadow(md, observed, stable, canary, snapshots, tokens)
        metrics = judge_shadow(analysis, shadow, counts)
        # Keep the canary's own window current, so its first live interval does not count
        # the copies it answered here.
        read_metrics(md, observed, canary, snapshots, tokens, now)
    elif due:
        ours = read_metrics(md, observed, canary, snapshots, tokens, now)
        if ours.metrics is None and ours.problem is not None:
            hold = ours.problem
        else:
            theirs = read_metrics(md, observed, stable, snapshots, tokens, now)
            metrics = judge_metrics(analysis, ours.metrics, theirs.metrics)
    return Evidence(pods, metrics, gates, hold, fallback_ready, stable_mirrors)


def _window_evidence(
    md: ModelDeployment,
    observed: Observed,
    phase: PassPhase,
    promoted: str,
    now: dt.datetime,
    snapshots: Snapshots,
    tokens: tuple[str, ...],
) -> Evidence:
    """A promoted revision in its rollback window: its failing pod signals, and its metrics once
    due, against those of the previous revision kept warm."""
    analysis, previous = md.spec.rollout.analysis, phase.previous
    signals = judge_pods(
        observed.pods_of(promoted), None, now, md.spec.rollout.progress_deadline,
        analysis.max_restarts,
    )  # fmt: skip
    failing = signals if signals.outcome == CheckOutcome.FAILED else None
    metrics = None
    if phase.analysis_due:
        baseline = (
            read_metrics(md, observed, previous, snapshots, tokens, now) if previous else None
        )
        metrics = judge_metrics(
            analysis,
            read_metrics(md, observed, promoted, snapshots, tokens, now).metrics,
            baseline.metrics if baseline else None,
        )
    return Evidence(pods=failing, metrics=metrics, fallback_ready=has_ready_pod(observed, previous))


def forget_gone_pods(snapshots: Snapshots, observed: Observed) -> None:
    """Drop the remembered scrapes of this ModelDeployment's pods that no longer exist."""
    if not observed.pods:
        return
    namespace = observed.pods[0]["metadata"]["namespace"]
    owner = observed.pods[0]["metadata"].get("labels", {}).get(OWNER, "")
    names = {p["metadata"]["name"] for p in observed.pods}
    snapshots.forget(namespace, owner, keep=names | {n + SHADOW_KEY_SUFFIX for n in names})


def _timed_out(gate: Check) -> Check:
    """An undecided gate past progressDeadline fails: a canary may not wait forever for it."""
    if gate.outcome != CheckOutcome.INCONCLUSIVE:
        return gate
    message = f"no verdict within progressDeadline: {gate.message}"
    return Check(gate.name, CheckOutcome.FAILED, message=message, hard=True)


def _created(deployment: dict[str, Any] | None) -> dt.datetime | None:
    value = (deployment or {}).get("metadata", {}).get("creationTimestamp")
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None
