"""The ``ModelDeployment`` object and how the operator reads it: :func:`parse_model_deployment`."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import InvalidModelDeployment, format_errors
from .rules import ApiModel, Rule
from .spec import ModelDeploymentSpec
from .status import ModelDeploymentStatus
from .types import DNS1035_LABEL

GROUP: Final = "modeldeploy.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = "modeldeploy.io/v1alpha1"
KIND: Final = "ModelDeployment"
PLURAL = "modeldeployments"
SINGULAR = "modeldeployment"
SHORT_NAMES = ("md",)
CATEGORIES = ("ml",)
CRD_NAME = f"{PLURAL}.{GROUP}"
MAX_NAME_LENGTH = 63


class ObjectMeta(BaseModel):
    """The parts of metadata the operator reads; everything else is kept as is."""

    model_config = ConfigDict(extra="allow")

    # The CRD declares the same limit under metadata.name (see crd.py): the name is also the
    # Service's name and a pod label value, both limited to 63 characters.
    name: str | None = Field(default=None, max_length=MAX_NAME_LENGTH, description="Object name.")
    namespace: str | None = Field(default=None, description="Object namespace.")
    generation: int | None = Field(default=None, description="Spec generation.")
    uid: str | None = Field(default=None, description="Object UID.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations.")


class ModelDeployment(ApiModel):
    """A machine-learning model served by a shared image, rolled out as analysed canaries.

    The name must be a DNS-1035 label of at most 63 characters because it is also the name of
    the model's Service and a label value on its pods.
    """

    api_version: Literal["modeldeploy.io/v1alpha1"] = Field(
        default=API_VERSION,
        alias="apiVersion",
        description="The versioned schema of this object: modeldeploy.io/v1alpha1.",
    )
    kind: Literal["ModelDeployment"] = Field(default=KIND, description="ModelDeployment.")
    metadata: ObjectMeta = Field(
        default_factory=ObjectMeta, description="Standard object metadata."
    )
    spec: ModelDeploymentSpec = Field(description="The desired state.")
    status: ModelDeploymentStatus = Field(
        default_factory=ModelDeploymentStatus,
        description="The observed state, written by the operator.",
    )

    __rules__ = (
        Rule(
            cel=f"self.metadata.name.matches('{DNS1035_LABEL}')",
            message=(
                "metadata.name must start with a letter and contain only lowercase letters, "
                "digits and '-' (a DNS-1035 label), because it names the Service"
            ),
            check=lambda md: (
                md.metadata.name is None or bool(re.fullmatch(DNS1035_LABEL, md.metadata.name))
            ),
            field_path=".metadata.name",
        ),
    )


M = TypeVar("M", bound=BaseModel)


def _strict_validate(model: type[M], obj: Mapping[str, Any]) -> M:
    """Validate like the API server does: JSON types exactly, camelCase names only.

    Going through JSON with ``strict=True`` refuses ``"3"`` for an integer (the API server does
    too) while still reading enums and timestamps from strings.
    """
    text = json.dumps(obj, default=_plain)
    return model.model_validate_json(text, strict=True, by_alias=True, by_name=False)


def _plain(value: object) -> dict[str, Any]:
    """kopf hands handlers read-only Mapping views (``spec``, ``status``), not dicts."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def parse_model_deployment(obj: Mapping[str, Any]) -> ModelDeployment:
    """Validate a whole ModelDeployment dict (as the API returns it) into the model.

    Raises :class:`InvalidModelDeployment` listing every field at fault, in the API server's
    ``spec.field.path: message`` form.
    """
    try:
        return _strict_validate(ModelDeployment, obj)
    except ValidationError as exc:
        raise InvalidModelDeployment(format_errors(exc)) from None


def parse_spec(spec: Mapping[str, Any]) -> ModelDeploymentSpec:
    """Validate only a spec (what a kopf handler receives as ``spec``); paths start at ``spec``."""
    try:
        return _strict_validate(ModelDeploymentSpec, spec)
    except ValidationError as exc:
        raise InvalidModelDeployment(format_errors(exc, prefix="spec")) from None


def parse_status(status: Mapping[str, Any] | None) -> ModelDeploymentStatus:
    """Read a status back; unknown fields are ignored, missing ones take their defaults."""
    try:
        return _strict_validate(ModelDeploymentStatus, status or {})
    except ValidationError as exc:
        raise InvalidModelDeployment(format_errors(exc, prefix="status")) from None
