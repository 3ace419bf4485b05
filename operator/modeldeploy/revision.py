"""A revision is the hash of what the pods run; a spec digest says whether the user changed it.

The revision hashes the pod template the operator renders (with the revision itself left out),
so *any* change to what the pods run makes a new revision and goes out as a canary — a new model
or serving setting, a new default serving image, a new operator that renders templates
differently, the operator's credential — instead of an in-place restart of the stable pods.
Scaling, rollout and traffic settings are not in the template: they apply in place.

The spec digest covers only what the user wrote in `spec.model` and `spec.serving` (defaults
left out). It is kept on each revision's Deployment, so a new revision whose digest equals
stable's was caused by the operator, not the user: such rollouts are rate-limited fleet-wide
(`MODELDEPLOY_MAX_CONCURRENT_ROLLOUTS`), while the user's own changes never wait behind them.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .api import ModelDeployment, ModelDeploymentSpec
from .children import build_pod_template
from .observed import Observed
from .pass_phase import OPERATOR_CAUSE, SPEC_CAUSE

REVISION_LENGTH = 10
SPEC_DIGEST = "modeldeploy.io/spec-digest"


def _digest(payload: Any) -> str:
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:REVISION_LENGTH]


def revision_of(md: ModelDeployment, image: str, operator_token_sha256: str | None = None) -> str:
    """10 hex digits of sha256 over the canonical JSON of the rendered pod template.

    Canonical means sorted keys; the template holds values, not how they were written, so
    `port: 8080` written out or left to its default give the same revision, and a field added to
    the API later (with a default the template already had) does not start a canary on upgrade.
    """
    return _digest(build_pod_template(md, "", image, operator_token_sha256))


def spec_digest(spec: ModelDeploymentSpec) -> str:
    """The user's part of a revision: `spec.model` and `spec.serving` without defaults."""
    return _digest(
        {
            "model": spec.model.model_dump(mode="json", by_alias=True, exclude_defaults=True),
            "serving": spec.serving.model_dump(mode="json", by_alias=True, exclude_defaults=True),
        }
    )


def rollout_cause(md: ModelDeployment, observed: Observed, desired: str) -> str | None:
    """Who asked for revision `desired`: Spec (the user's model or serving changed) or Operator
    (the spec digest equals stable's, so only what the operator renders changed). None when no
    rollout is due. A stable Deployment from an operator that kept no digest counts as Operator:
    the usual reason for such a change is the upgrade itself."""
    stable = md.status.stable_revision
    deployment = observed.deployment_for(stable) if stable else None
    if deployment is None or desired == stable:
        return None
    digest = (deployment["metadata"].get("annotations") or {}).get(SPEC_DIGEST)
    return OPERATOR_CAUSE if digest in (None, spec_digest(md.spec)) else SPEC_CAUSE
