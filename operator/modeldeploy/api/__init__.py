"""The ModelDeployment API: pydantic models are the single source of truth.

The models validate what the operator reads; :mod:`modeldeploy.api.crd` turns the same models
into the CRD the API server enforces (``make crds``). Cross-field rules are written once in
:mod:`modeldeploy.api.rules` and run on both sides.
"""

from .analysis import Analysis, InconclusivePolicy, MetricSource, MetricSourceType, SmokeTests
from .errors import FieldError, InvalidModelDeployment
from .model_spec import ModelFormat, ModelSpec
from .resource import (
    API_VERSION,
    CRD_NAME,
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    ModelDeployment,
    parse_model_deployment,
    parse_spec,
    parse_status,
)
from .rollout import FailurePolicy, Rollout, Shadow, ShadowMirror
from .scaling import AutoscalingPlan, Scaling
from .serving import (
    RESERVED_LABEL_PREFIX,
    GrpcServing,
    PayloadLogging,
    PayloadLogMode,
    Serving,
)
from .spec import ModelDeploymentSpec
from .status import (
    AnalysisStatus,
    CheckOutcome,
    CheckResult,
    Condition,
    ConditionType,
    HistoryEntry,
    ModelDeploymentStatus,
    Phase,
    RejectedRevision,
    RollbackRecord,
    RolloutOutcome,
)
from .traffic import Gateway, Router, Traffic
from .types import parse_duration, parse_quantity

__all__ = [
    "API_VERSION",
    "CRD_NAME",
    "GROUP",
    "KIND",
    "PLURAL",
    "RESERVED_LABEL_PREFIX",
    "VERSION",
    "Analysis",
    "AnalysisStatus",
    "AutoscalingPlan",
    "CheckOutcome",
    "CheckResult",
    "Condition",
    "ConditionType",
    "FailurePolicy",
    "FieldError",
    "Gateway",
    "GrpcServing",
    "HistoryEntry",
    "InconclusivePolicy",
    "InvalidModelDeployment",
    "MetricSource",
    "MetricSourceType",
    "ModelDeployment",
    "ModelDeploymentSpec",
    "ModelDeploymentStatus",
    "ModelFormat",
    "ModelSpec",
    "PayloadLogMode",
    "PayloadLogging",
    "Phase",
    "RejectedRevision",
    "RollbackRecord",
    "Rollout",
    "RolloutOutcome",
    "Router",
    "Scaling",
    "Serving",
    "Shadow",
    "ShadowMirror",
    "SmokeTests",
    "Traffic",
    "parse_duration",
    "parse_model_deployment",
    "parse_quantity",
    "parse_spec",
    "parse_status",
]
