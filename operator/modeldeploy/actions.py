"""What a person asks of a rollout without editing the model's spec: promote, abort, retry,
pause, resume — through annotations, acknowledged in status.

Why annotations: Git (Argo CD, Flux) owns `spec`, so a request written there would be reverted as
drift or would have to be committed. Annotations that Git does not declare are left alone by
both tools, and the operator never writes metadata: it records in `status.actions` the value of
each one-shot annotation it has acted on, so each request is acted on exactly once and a request
is visible as handled.

- `modeldeploy.io/promote: <token>`  promote the canary now, skipping the remaining steps;
- `modeldeploy.io/abort: <token>`    roll the canary back now and reject its revision;
- `modeldeploy.io/retry: <token>`    try a rejected revision again (like changing
                                     `spec.rollout.retry`, without a commit);
- `modeldeploy.io/paused: "true"`    hold the canary at its step; remove it (or "false") to resume.

A one-shot annotation acts when its value differs from the one acknowledged; any new value (the
kubectl plugin writes the time) asks again. `spec.rollout.paused: true` (declared in Git) pauses
as well; either one holds.
"""

from __future__ import annotations

import hashlib

from .api import ModelDeployment

PREFIX = "modeldeploy.io/"
PROMOTE, ABORT, RETRY = "promote", "abort", "retry"
ONE_SHOT = (ABORT, PROMOTE, RETRY)  # abort wins over promote when both are asked at once
PAUSED = f"{PREFIX}paused"
MAX_TOKEN = 63


def requested(md: ModelDeployment, action: str) -> str | None:
    """The value of a one-shot request not acted on yet, else None."""
    value = md.metadata.annotations.get(f"{PREFIX}{action}")
    if not value:
        return None
    done = md.status.actions.model_dump(by_alias=True).get(action) if md.status.actions else None
    return None if value == done else value


def paused(md: ModelDeployment) -> bool:
    """Paused by the spec (Git) or by the annotation (a person)."""
    value = md.metadata.annotations.get(PAUSED, "").strip().lower()
    return md.spec.rollout.paused or value in ("true", "yes", "1")


def retry_token(md: ModelDeployment) -> str:
    """The token a rejection is recorded under: `spec.rollout.retry`, combined with the retry
    annotation when there is one; changing either retries. At most 63 characters.

    Example: retry "r1" and annotation "2026-11-30T10:00:00Z" → "r1/2026-11-30T10:00:00Z".
    """
    spec = md.spec.rollout.retry or ""
    extra = md.metadata.annotations.get(f"{PREFIX}{RETRY}", "")
    token = f"{spec}/{extra}" if extra else spec
    if len(token) <= MAX_TOKEN:
        return token
    return hashlib.sha256(token.encode()).hexdigest()[:MAX_TOKEN]
