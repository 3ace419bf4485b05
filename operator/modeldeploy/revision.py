"""A revision is the hash of what the pods run.

Only `spec.model`, `spec.serving` and the image the operator resolves for it go in: a change of
scaling, rollout or traffic settings applies in place and never starts a canary.
"""

from __future__ import annotations

import hashlib
import json

from .api import ModelDeploymentSpec

REVISION_LENGTH = 10


def revision_of(spec: ModelDeploymentSpec, image: str) -> str:
    """10 hex digits of sha256 over the canonical JSON of model, serving and the resolved image.

    Canonical means sorted keys with default values left out: `port: 8080` written out or left to
    its default give the same revision, and a field added to the API later (with a default) does
    not turn every existing ModelDeployment into a canary on upgrade.
    """
    payload = {
        "model": spec.model.model_dump(mode="json", by_alias=True, exclude_defaults=True),
        "serving": spec.serving.model_dump(mode="json", by_alias=True, exclude_defaults=True),
        "image": image,
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:REVISION_LENGTH]
