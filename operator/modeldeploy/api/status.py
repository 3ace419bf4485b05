"""``ModelDeploymentStatus``: what the operator observed and decided. Only the operator writes it.

Readers are people (``kubectl get md``, ``describe``) and tools: kstatus (Flux, ``kubectl wait``)
reads ``observedGeneration`` and the ``Ready``/``Reconciling``/``Stalled`` conditions, Argo CD a
health check over ``phase`` and ``Ready``. Everything the operator needs to continue a rollout
after a restart lives here, including kopf's own bookkeeping under ``kopf``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, ConfigDict, Field

from .rules import ApiModel
from .types import LABEL_VALUE, QUALIFIED_NAME

Revision = Annotated[str, Field(min_length=1, max_length=63, pattern=LABEL_VALUE)]
ShortText = Annotated[str, Field(max_length=256)]
Message = Annotated[str, Field(max_length=32768)]
CamelReason = Annotated[
    str, Field(min_length=1, max_length=1024, pattern="^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
]

MAX_CONDITIONS = 16
MAX_HISTORY = 10
MAX_REJECTED = 20
MAX_CHECKS = 16


class StatusModel(ApiModel):
    """Base of status models: tolerant of fields it does not know.

    The spec refuses unknown fields so users hear about typos; status is written by the
    operator, and an operator downgraded below the CRD version must still read it.
    """

    model_config = ConfigDict(extra="ignore")


class Phase(StrEnum):
    """One-word summary for ``kubectl get``; conditions carry the detail.

    Pending: no ready serving pods yet. Progressing: a canary is being rolled out. Paused: a
    rollout waits for a person (spec.rollout.paused or onFailure Pause). RollingBack: traffic is
    returning to stable after a failed check. Ready: the stable revision serves with all pods
    ready. Degraded: serving, but the last rollout was rolled back or pods are missing.
    """

    PENDING = "Pending"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    ROLLING_BACK = "RollingBack"
    READY = "Ready"
    DEGRADED = "Degraded"


class ConditionType(StrEnum):
    """Condition types the operator sets.

    Ready: serving with every desired pod ready. Progressing: a rollout is under way. Degraded:
    the last rollout was rolled back (reason names the failed check). Reconciling and Stalled are
    the kstatus abnormal-true pair: Reconciling while observed state lags the spec, Stalled when
    the operator cannot make progress without a change from a person.
    """

    READY = "Ready"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"


class Condition(StatusModel):
    """A standard Kubernetes condition (the shape of metav1.Condition)."""

    type: Annotated[str, Field(min_length=1, max_length=316, pattern=QUALIFIED_NAME)] = Field(
        description="Condition type, e.g. Ready, Progressing, Degraded, Reconciling, Stalled."
    )
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation the condition was computed for."
    )
    last_transition_time: AwareDatetime = Field(
        description="When status last changed (not when the condition was last written)."
    )
    reason: CamelReason = Field(description="CamelCase reason for the last transition.")
    message: Message = Field(default="", description="Human-readable detail.")


class CheckOutcome(StrEnum):
    """The verdict of one check in one analysis interval."""

    PASSED = "Passed"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"


class CheckResult(StatusModel):
    """One check's latest result."""

    name: ShortText = Field(description="Check name, e.g. errorRate, latencyP99, podsReady.")
    outcome: CheckOutcome = Field(description="Passed, Failed or Inconclusive.")
    value: ShortText | None = Field(default=None, description="Observed value, e.g. 2.5% or 310ms.")
    threshold: ShortText | None = Field(default=None, description="The limit, e.g. 5% or 250ms.")
    samples: int | None = Field(default=None, ge=0, description="Requests the value is based on.")
    message: Message | None = Field(default=None, description="Human-readable detail.")


class AnalysisStatus(StatusModel):
    """The latest analysis of the canary."""

    last_run_at: AwareDatetime | None = Field(default=None, description="When the checks last ran.")
    outcome: CheckOutcome | None = Field(default=None, description="Overall verdict of that run.")
    traffic_started_at: AwareDatetime | None = Field(
        default=None,
        description=(
            "When the canary first got traffic (its model gates passed, and its shadow phase "
            "if spec.rollout.shadow is set)."
        ),
    )
    shadow_started_at: AwareDatetime | None = Field(
        default=None,
        description=(
            "When the canary's shadow phase started: it answers copies of live requests, "
            "compared with stable's answers, and serves no user until the phase passes. Moved "
            "on by inconclusive intervals, which do not count towards shadow.duration."
        ),
    )
    without_stable: bool | None = Field(
        default=None,
        description=(
            "True when stable had no ready pod: the canary is judged on its own and promoted "
            "without steps once healthy."
        ),
    )
    consecutive_failures: int = Field(default=0, ge=0, description="Failed runs in a row.")
    consecutive_inconclusive: int = Field(
        default=0, ge=0, description="Inconclusive runs in a row."
    )
    checks: Annotated[list[CheckResult], Field(max_length=MAX_CHECKS)] = Field(
        default_factory=list, description="Each check's latest result."
    )


class RollbackRecord(StatusModel):
    """Why and how fast the last rollback happened."""

    revision: Revision = Field(description="The revision that was rolled back.")
    version: Annotated[str, Field(max_length=63)] | None = Field(
        default=None, description="Its model version label."
    )
    check: ShortText = Field(description="The check that failed, e.g. errorRate or podsReady.")
    observed_value: ShortText | None = Field(default=None, description="What was observed.")
    threshold: ShortText | None = Field(default=None, description="The limit it broke.")
    samples: int | None = Field(default=None, ge=0, description="Requests behind the value.")
    window: ShortText | None = Field(default=None, description="Measurement window, e.g. 30s.")
    time_to_detect: ShortText | None = Field(
        default=None,
        description=(
            "From the canary's first traffic to the failure verdict, e.g. 42s. Unset when it "
            "failed before getting any traffic (a crash loop, a failed model gate)."
        ),
    )
    time_since_start: ShortText | None = Field(
        default=None,
        description="From the canary's start (its Deployment's creation) to the failure verdict.",
    )
    time: AwareDatetime = Field(description="When the rollback started.")
    message: Message | None = Field(default=None, description="Human-readable summary.")


class RejectedRevision(StatusModel):
    """A revision that was rolled back and will not be retried as is."""

    revision: Revision = Field(description="The rejected revision.")
    retry_token: Annotated[str, Field(max_length=63)] = Field(
        default="",
        description="spec.rollout.retry at rejection; changing it retries the revision.",
    )
    rejected_at: AwareDatetime = Field(description="When it was rejected.")
    reason: CamelReason | None = Field(default=None, description="Why, e.g. ErrorRateTooHigh.")


class CanaryCause(StrEnum):
    """Why the canary exists."""

    SPEC = "Spec"
    OPERATOR = "Operator"


class RolloutOutcome(StrEnum):
    """How a revision's rollout ended."""

    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    SUPERSEDED = "Superseded"


class HistoryEntry(StatusModel):
    """One finished rollout."""

    revision: Revision = Field(description="The revision rolled out.")
    version: Annotated[str, Field(max_length=63)] | None = Field(
        default=None, description="Its model version label."
    )
    outcome: RolloutOutcome = Field(description="Promoted, RolledBack or Superseded.")
    started_at: AwareDatetime | None = Field(default=None, description="When the canary started.")
    finished_at: AwareDatetime = Field(description="When the rollout ended.")
    message: Message | None = Field(default=None, description="Human-readable summary.")


class ActionsStatus(StatusModel):
    """The value of each one-shot request annotation (modeldeploy.io/promote, abort, retry) the
    operator has acted on; a different value is a new request."""

    promote: ShortText | None = Field(default=None, description="Last promote request handled.")
    abort: ShortText | None = Field(default=None, description="Last abort request handled.")
    retry: ShortText | None = Field(default=None, description="Last retry request handled.")


class ModelDeploymentStatus(StatusModel):
    """Observed state, rollout progress and health evidence."""

    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation this status describes."
    )
    phase: Phase | None = Field(default=None, description="One-word summary; see conditions.")
    conditions: Annotated[list[Condition], Field(max_length=MAX_CONDITIONS)] = Field(
        default_factory=list,
        description="Standard conditions: Ready, Progressing, Degraded, Reconciling, Stalled.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    replicas: int | None = Field(default=None, ge=0, description="Serving pods, all revisions.")
    ready_replicas: int | None = Field(default=None, ge=0, description="Ready serving pods.")
    stable_revision: Revision | None = Field(
        default=None, description="Revision that serves by default (hash of model and serving)."
    )
    stable_version: Annotated[str, Field(max_length=63)] | None = Field(
        default=None, description="model.version of the stable revision, for display."
    )
    canary_revision: Revision | None = Field(default=None, description="Revision being rolled out.")
    canary_version: Annotated[str, Field(max_length=63)] | None = Field(
        default=None, description="model.version of the canary revision."
    )
    canary_cause: CanaryCause | None = Field(
        default=None,
        description=(
            "Spec: the user changed model or serving. Operator: only what the operator renders "
            "changed (default image, pod template, credential); such rollouts take a fleet-wide "
            "slot (MODELDEPLOY_MAX_CONCURRENT_ROLLOUTS)."
        ),
    )
    desired_weight: int | None = Field(
        default=None, ge=0, le=100, description="Canary traffic percent the current step asks for."
    )
    effective_weight: float | None = Field(
        default=None,
        ge=0,
        le=100,
        description=(
            "Canary traffic percent actually in effect (the ready-pod ratio with router replicas)."
        ),
    )
    weight_summary: ShortText | None = Field(
        default=None, description="Desired → effective weight for display, e.g. 10% → 9.1%."
    )
    current_step: int | None = Field(
        default=None, ge=0, description="Index into spec.rollout.steps of the current step."
    )
    step_started_at: AwareDatetime | None = Field(
        default=None, description="When the current step began."
    )
    analysis: AnalysisStatus | None = Field(default=None, description="Latest canary analysis.")
    last_rollback: RollbackRecord | None = Field(default=None, description="The last rollback.")
    rejected_revisions: Annotated[list[RejectedRevision], Field(max_length=MAX_REJECTED)] = Field(
        default_factory=list,
        description=(
            "Revisions rolled back and not retried until the spec or rollout.retry changes."
        ),
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["revision"],
        },
    )
    history: Annotated[list[HistoryEntry], Field(max_length=MAX_HISTORY)] = Field(
        default_factory=list, description=f"The last {MAX_HISTORY} finished rollouts, newest first."
    )
    actions: ActionsStatus | None = Field(
        default=None, description="Requests made through annotations that have been acted on."
    )
    url: Annotated[str, Field(max_length=2048)] | None = Field(
        default=None, description="In-cluster base URL of the inference endpoint."
    )
    kopf: dict[str, Any] = Field(
        default_factory=dict,
        description="The operator framework's progress and diff-base records; not for humans.",
    )
