"""Tell stable's running model servers where to mirror during a canary's shadow phase.

Why over HTTP, and not an environment variable or a mounted ConfigMap: stable's pods serve
users; changing their pod template restarts them, and a ConfigMap volume must have been mounted
before the phase (adding one is a template change too) and reaches the pods only after kubelet's
sync period, up to a minute or more. A ``PUT /v2/shadow`` to each ready stable pod, with the
operator's credential (the same one its gates and scrapes use), takes effect at once on pods
that keep running, and costs the live requests nothing.

The document is re-sent every pass of the phase and carries a time to live, so the servers stop
mirroring by themselves when no operator confirms it (it crashed, lost its lease, or the
ModelDeployment was deleted), and a stable pod that started mid-phase is configured on the next
pass. When the phase ends (passed or rejected) the operator sends ``DELETE /v2/shadow`` at once.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from typing import Any

from .api import ModelDeployment, parse_duration
from .evidence import HTTP_TIMEOUT, pod_target, served_model
from .observed import Observed, pod_ready

log = logging.getLogger("modeldeploy.shadow")
MIN_TTL_SECONDS = 30.0
MAX_TTL_SECONDS = 3600.0


def mirror_document(md: ModelDeployment, observed: Observed, canary: str) -> dict[str, Any] | None:
    """What stable's servers are told: the canary's ready pods, its model name, the share to
    copy, the tolerance and a time to live of three analysis intervals (at least 30 s), so one
    missed pass does not interrupt the phase. None when the canary has no ready pod."""
    shadow = md.spec.rollout.shadow
    if shadow is None:
        return None
    default_model = served_model(observed, canary, md.spec.model.name or str(md.metadata.name))
    targets = [
        target
        for pod in observed.pods_of(canary)
        if pod_ready(pod)
        and (target := pod_target(pod, default_model, md.spec.serving.port)) is not None
    ]
    if not targets:
        return None
    interval = parse_duration(md.spec.rollout.analysis.interval)
    return {
        "revision": canary,
        "model": targets[0].model,  # as the canary's pods run, not as the spec says now
        "targets": sorted(t.base_url for t in targets)[:100],
        "fraction": shadow.fraction,
        "tolerance": shadow.tolerance,
        "maxQueue": shadow.max_queue,
        "ttlSeconds": min(max(3 * interval, MIN_TTL_SECONDS), MAX_TTL_SECONDS),
    }


def wanted(status: dict[str, Any]) -> str | None:
    """The canary a planned (or stored) status says is shadowing, if any."""
    analysis = status.get("analysis") or {}
    canary = status.get("canaryRevision")
    if canary and analysis.get("shadowStartedAt") and not analysis.get("trafficStartedAt"):
        return str(canary)
    return None


def configure(
    md: ModelDeployment,
    observed: Observed,
    stable: str,
    document: dict[str, Any] | None,
    tokens: tuple[str, ...] = (),
) -> int:
    """PUT `document` to every ready stable pod (DELETE when None); returns the pods that took
    it. A pod that cannot be reached is only logged: its shadow counts go missing and the
    interval is judged on the others, or is inconclusive."""
    method = "PUT" if document is not None else "DELETE"
    data = None if document is None else json.dumps(document).encode()
    done = 0
    default_model = md.spec.model.name or str(md.metadata.name)
    for pod in observed.pods_of(stable):
        target = pod_target(pod, default_model, md.spec.serving.port) if pod_ready(pod) else None
        if target is None:
            continue
        if _send(f"{target.base_url}/v2/shadow", method, data, tokens):
            done += 1
    return done


def _send(url: str, method: str, data: bytes | None, tokens: tuple[str, ...]) -> bool:
    """One request with the operator's credential; a 401 with the current token is retried
    with the previous one (a rotation in progress), as for the gates."""
    for attempt, token in enumerate(tokens or (None,)):
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
                response.read()
                return True
        except urllib.error.HTTPError as error:
            if error.code == 401 and attempt + 1 < len(tokens):
                continue
            log.warning("%s %s answered %s: %s", method, url, error.code, error.read()[:200])
            return False
        except OSError as error:
            log.info("%s %s failed: %s", method, url, error)
            return False
    return False
