"""``spec.model``: what to serve. A change here makes a new revision (and a canary)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from .rules import ApiModel, Rule
from .types import PYTHON_IMPORT_PATH, LabelValue, ModelUri


class ModelFormat(StrEnum):
    """The model runtime the serving image loads the artifact with."""

    SKLEARN = "sklearn"
    XGBOOST = "xgboost"
    LIGHTGBM = "lightgbm"
    ONNX = "onnx"
    CUSTOM = "custom"


class ModelSpec(ApiModel):
    """The model artifact and how to load it."""

    uri: ModelUri = Field(
        description=(
            "Where the artifact lives: file:///path (inside the image), http(s)://host/path, "
            "s3://bucket/key, gs://bucket/key, or pvc://claim-name/path (a PersistentVolumeClaim "
            "in the same namespace, mounted read-only). Credentials for s3 and gs come from "
            "serving.storageSecretRef."
        )
    )
    format: ModelFormat = Field(
        description=(
            "The runtime that loads the artifact: sklearn (joblib/pickle), xgboost, lightgbm, "
            "onnx, or custom (a Python class named by customClass)."
        )
    )
    sha256: Annotated[str, Field(min_length=64, max_length=64, pattern="^[a-f0-9]{64}$")] | None = (
        Field(
            default=None,
            description=(
                "Expected SHA-256 of the artifact as 64 lowercase hex digits. The server refuses "
                "to load an artifact whose digest differs."
            ),
        )
    )
    name: (
        Annotated[str, Field(min_length=1, max_length=63, pattern="^[a-zA-Z0-9][-a-zA-Z0-9_.]*$")]
        | None
    ) = Field(
        default=None,
        description=(
            "The model name in inference URLs (/v2/models/{name}/infer). Unset: the "
            "ModelDeployment's metadata.name."
        ),
    )
    version: LabelValue | None = Field(
        default=None,
        description=(
            "A human label for this model version (for example v7 or 2024-06-01), shown in "
            "kubectl get and copied to pod labels. It is part of the revision like every model "
            "field."
        ),
    )
    custom_class: (
        Annotated[str, Field(min_length=1, max_length=256, pattern=PYTHON_IMPORT_PATH)] | None
    ) = Field(
        default=None,
        description=(
            "Import path of the model class for format custom, as module:Class or "
            "module.Class (for example mypkg.models:FraudModel). Required for format custom and "
            "refused for other formats."
        ),
    )
    predict_proba: bool = Field(
        default=False,
        description=(
            "Return class probabilities (predict_proba) instead of labels for classifiers that "
            "support them."
        ),
    )

    __rules__ = (
        Rule(
            cel="self.format != 'custom' || has(self.customClass)",
            message="customClass is required when format is custom",
            check=lambda m: m.format != ModelFormat.CUSTOM or m.custom_class is not None,
            field_path=".customClass",
            reason="FieldValueRequired",
        ),
        Rule(
            cel="self.format == 'custom' || !has(self.customClass)",
            message="customClass is only allowed when format is custom",
            check=lambda m: m.format == ModelFormat.CUSTOM or m.custom_class is None,
            field_path=".customClass",
            reason="FieldValueForbidden",
        ),
    )
