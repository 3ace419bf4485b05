"""``ModelDeploymentSpec``: the desired state a user writes and GitOps tools sync."""

from __future__ import annotations

from pydantic import Field

from .model_spec import ModelSpec
from .rollout import Rollout, ShadowMirror
from .rules import ApiModel, Rule
from .scaling import Scaling
from .serving import Serving
from .traffic import Router, Traffic


class ModelDeploymentSpec(ApiModel):
    """What to serve, how to run and scale it, and how to roll out new versions.

    A change to ``model`` or ``serving`` makes a new revision that is rolled out as a canary;
    changes to ``scaling``, ``rollout`` and ``traffic`` apply in place.
    """

    model: ModelSpec = Field(description="The model artifact to serve and how to load it.")
    serving: Serving = Field(
        default_factory=Serving,
        description="The serving pods: image, port, resources, placement, auth, batching.",
    )
    scaling: Scaling = Field(
        default_factory=Scaling,
        description="A fixed replica count, or an autoscaling range. Unset: one replica.",
    )
    rollout: Rollout = Field(
        default_factory=Rollout,
        description="How a new revision is rolled out: canary steps, checks, failure policy.",
    )
    traffic: Traffic = Field(
        default_factory=Traffic,
        description="How traffic is split between stable and canary.",
    )

    __rules__ = (
        Rule(
            cel=(
                "!has(self.rollout) || !has(self.rollout.shadow)"
                " || !has(self.rollout.shadow.mirror) || self.rollout.shadow.mirror != 'Gateway'"
                " || (has(self.traffic) && has(self.traffic.router)"
                " && self.traffic.router == 'gateway-api')"
            ),
            message="rollout.shadow.mirror Gateway needs traffic.router gateway-api",
            check=lambda s: (
                s.rollout.shadow is None
                or s.rollout.shadow.mirror != ShadowMirror.GATEWAY
                or s.traffic.router == Router.GATEWAY_API
            ),
            field_path=".rollout.shadow.mirror",
        ),
    )
