"""Gather the evidence a canary is judged on: pod signals, serving metrics, model gates.

This is I/O (HTTP to pods or to Prometheus); the verdicts are pure functions in `judge`. What to
gather is decided from status alone, so a restarted operator asks for the same evidence.

Metric sources:
- direct: scrape each ready pod's /metrics and sum the inference series of one revision. The
  window is "since the last analysis": the previous scrape of each pod is remembered in memory
  (`Snapshots`); after an operator restart the first window is "since the pod started".
- prometheus: PromQL over the same series, by the `version` label, which the operator sets to
  the revision (MODELSERVER_MODEL_VERSION).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import modelserver.metric_names as names
from prometheus_client.parser import text_string_to_metric_families

from .api import CheckOutcome, MetricSourceType, ModelDeployment, parse_duration
from .judge import (
    Check,
    RevisionMetrics,
    compare_metadata,
    compare_predictions,
    judge_metrics,
    judge_pods,
)
from .naming import OWNER
from .observed import Observed
from .rollout import (
    Evidence,
    analysis_due,
    gates_passed,
    in_rollback_window,
    is_rejected,
    needed_gates,
    previous_revision,
)

log = logging.getLogger("modeldeploy.evidence")
HTTP_TIMEOUT = 3.0
PROMQL_MIN_WINDOW = 30


@dataclass
class PodSample:
    requests: float = 0.0
    errors: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)


# (namespace, ModelDeployment, pod) -> the pod's cumulative series at the last analysis.
Snapshots = dict[tuple[str, str, str], PodSample]


def _ready(pod: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in pod.get("status", {}).get("conditions", []) or []
    )


def _pod_url(pod: dict[str, Any], port: int, path: str) -> str | None:
    ip = pod.get("status", {}).get("podIP")
    return f"http://{ip}:{port}{path}" if ip else None


def _http_json(url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
        return json.loads(response.read())


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


def scrape_revision(
    pods: list[dict[str, Any]], port: int, model: str, snapshots: Snapshots
) -> RevisionMetrics | None:
    """Direct source: the revision's window metrics summed over its ready pods (None: none read)."""
    total, read = PodSample(), 0
    for pod in pods:
        url = _pod_url(pod, port, "/metrics")
        if url is None or not _ready(pod):
            continue
        try:
            with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as response:
                current = parse_pod_metrics(response.read().decode(), model)
        except (OSError, ValueError) as error:
            log.info("scrape %s failed: %s", url, error)
            continue
        meta = pod["metadata"]
        key = (meta["namespace"], meta.get("labels", {}).get(OWNER, ""), meta["name"])
        window = _delta(current, snapshots.get(key))
        snapshots[key] = current
        read += 1
        total.requests += window.requests
        total.errors += window.errors
        for bound, count in window.buckets.items():
            total.buckets[bound] = total.buckets.get(bound, 0.0) + count
    if read == 0:
        return None
    return RevisionMetrics(total.requests, total.errors, total.buckets)


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
            result = _http_json(url)["data"]["result"]
            values[key] = float(result[0]["value"][1]) if result else None
    except (OSError, ValueError, KeyError) as error:
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
    md: ModelDeployment, observed: Observed, revision: str, snapshots: Snapshots
) -> RevisionMetrics | None:
    source = md.spec.rollout.analysis.metric_source
    model = md.spec.model.name or str(md.metadata.name)
    if source.type == MetricSourceType.PROMETHEUS and source.prometheus_url:
        # At least 30 s, so that a Prometheus scraping every 15 s has two samples to diff.
        window = (
            f"{max(int(parse_duration(md.spec.rollout.analysis.interval)), PROMQL_MIN_WINDOW)}s"
        )
        return query_prometheus(source.prometheus_url, model, revision, window)
    return scrape_revision(observed.pods_of(revision), md.spec.serving.port, model, snapshots)


def run_gates(
    md: ModelDeployment,
    canary_pods: list[dict[str, Any]],
    stable_pods: list[dict[str, Any]],
    smoke_inputs: list[dict[str, Any]],
) -> list[Check]:
    """Model-aware gates: the canary's metadata and smoke predictions against stable's.

    A pod that does not answer makes the gate Inconclusive (retried next pass, bounded by
    progressDeadline), never Passed.
    """
    port = md.spec.serving.port
    model = md.spec.model.name or str(md.metadata.name)
    canary = next((p for p in canary_pods if _ready(p)), None)
    stable = next((p for p in stable_pods if _ready(p)), None)
    checks: list[Check] = []
    for gate in needed_gates(md):
        if canary is None or stable is None:
            checks.append(Check(gate, CheckOutcome.INCONCLUSIVE, message="no ready pod to ask"))
            continue
        try:
            if gate == "modelMetadata":
                ours = _http_json(str(_pod_url(canary, port, f"/v2/models/{model}")))
                theirs = _http_json(str(_pod_url(stable, port, f"/v2/models/{model}")))
                checks.append(compare_metadata(ours, theirs))
            else:
                path = f"/v2/models/{model}/infer"
                ours_list = [_http_json(str(_pod_url(canary, port, path)), b) for b in smoke_inputs]
                theirs_list = [
                    _http_json(str(_pod_url(stable, port, path)), b) for b in smoke_inputs
                ]
                tolerance = md.spec.rollout.analysis.smoke_tests
                checks.append(
                    compare_predictions(
                        ours_list, theirs_list, tolerance.tolerance if tolerance else None
                    )
                )
        except urllib.error.HTTPError as error:
            if error.code in (429, 503):  # not ready yet, or busy: ask again next pass
                checks.append(Check(gate, CheckOutcome.INCONCLUSIVE, message=f"HTTP {error.code}"))
                continue
            checks.append(
                Check(gate, CheckOutcome.FAILED, f"HTTP {error.code}", "HTTP 200",
                      message=f"canary answered {error.code} to the {gate} request", hard=True)
            )  # fmt: skip
        except (OSError, ValueError) as error:
            checks.append(Check(gate, CheckOutcome.INCONCLUSIVE, message=f"no answer: {error}"))
    return checks


def _deadline_passed(md: ModelDeployment, created: dt.datetime | None, now: dt.datetime) -> bool:
    limit = parse_duration(md.spec.rollout.progress_deadline)
    return created is not None and (now - created).total_seconds() > limit


def gather(
    md: ModelDeployment,
    observed: Observed,
    desired: str,
    now: dt.datetime,
    snapshots: Snapshots,
    smoke_inputs: list[dict[str, Any]],
) -> Evidence:
    """The evidence this pass needs, given what status says is going on."""
    forget_gone_pods(snapshots, observed)
    status = md.status
    stable = status.stable_revision
    canary = status.canary_revision
    if stable is None:
        return Evidence()
    if canary is not None and canary == desired and not is_rejected(md, desired):
        deployment = observed.deployment_for(canary)
        created = _created(deployment) or now
        pods = judge_pods(observed.pods_of(canary), created, now, md.spec.rollout.progress_deadline)
        gates = None
        if not gates_passed(md) and pods.outcome == CheckOutcome.PASSED:
            gates = run_gates(md, observed.pods_of(canary), observed.pods_of(stable), smoke_inputs)
            if _deadline_passed(md, created, now):
                gates = [_timed_out(g) for g in gates]
        metrics = None
        if gates_passed(md) and analysis_due(md, now) and pods.outcome != CheckOutcome.FAILED:
            metrics = judge_metrics(
                md.spec.rollout.analysis,
                read_metrics(md, observed, canary, snapshots),
                read_metrics(md, observed, stable, snapshots),
            )
        return Evidence(pods=pods, metrics=metrics, gates=gates)
    if in_rollback_window(md, stable, now):
        previous = previous_revision(md, stable, set(observed.revisions()))
        signals = judge_pods(observed.pods_of(stable), None, now, md.spec.rollout.progress_deadline)
        failing = signals if signals.outcome == CheckOutcome.FAILED else None
        metrics = None
        if analysis_due(md, now):
            baseline = read_metrics(md, observed, previous, snapshots) if previous else None
            metrics = judge_metrics(
                md.spec.rollout.analysis, read_metrics(md, observed, stable, snapshots), baseline
            )
        return Evidence(pods=failing, metrics=metrics)
    return Evidence()


def forget_gone_pods(snapshots: Snapshots, observed: Observed) -> None:
    """Drop the remembered scrapes of this ModelDeployment's pods that no longer exist."""
    if not observed.pods:
        return
    namespace = observed.pods[0]["metadata"]["namespace"]
    owner = observed.pods[0]["metadata"].get("labels", {}).get(OWNER)
    live = {p["metadata"]["name"] for p in observed.pods}
    for key in [k for k in snapshots if k[0] == namespace and k[1] == owner and k[2] not in live]:
        del snapshots[key]


def _timed_out(gate: Check) -> Check:
    """An undecided gate past progressDeadline fails: a canary may not wait forever for it."""
    if gate.outcome != CheckOutcome.INCONCLUSIVE:
        return gate
    message = f"no verdict within progressDeadline: {gate.message}"
    return Check(gate.name, CheckOutcome.FAILED, message=message, hard=True)


def _created(deployment: dict[str, Any] | None) -> dt.datetime | None:
    value = (deployment or {}).get("metadata", {}).get("creationTimestamp")
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None
