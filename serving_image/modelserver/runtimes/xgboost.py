"""XGBoost runtime: a native model file (``.json`` / ``.ubj``) saved with ``save_model``.

Scores with ``inplace_predict`` (no DMatrix per call) on one thread: the server parallelises
across requests by batching, and XGBoost's thread pool costs more than it saves on small batches.
Missing values (null in the request) are natural to XGBoost, so they are accepted by default.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ..errors import ModelLoadError
from . import LoadOptions, OutputSpec, Runtime


class XGBoostRuntime(Runtime):
    platform = "xgboost"
    allows_missing = True
    input_dtype = np.dtype(np.float32)

    def __init__(self, booster: Any, options: LoadOptions) -> None:
        booster.set_param({"nthread": options.threads})
        self.booster = booster
        config = json.loads(booster.save_config())
        learner = config["learner"]
        self.objective = str(learner["objective"]["name"])
        self.num_class = int(learner["learner_model_param"].get("num_class", "0") or 0)
        self.n_features = int(booster.num_features())
        names = booster.feature_names
        self.feature_names = list(names) if names else None
        self.classifier = self.objective.startswith(("binary:", "multi:"))
        self.outputs = {"predict": OutputSpec("predict", "INT64" if self.classifier else "FP32")}
        if self.objective in ("binary:logistic", "multi:softprob"):
            self.outputs["predict_proba"] = OutputSpec("predict_proba", "FP32")

    def predict(self, x: np.ndarray, outputs: frozenset[str]) -> dict[str, np.ndarray]:
        raw = np.asarray(self.booster.inplace_predict(x))
        result: dict[str, np.ndarray] = {}
        if self.objective == "binary:logistic":
            proba = np.stack([1 - raw, raw], axis=1)
            label = (raw > 0.5).astype(np.int64)
        elif self.objective == "binary:logitraw":
            proba, label = None, (raw > 0).astype(np.int64)
        elif self.objective == "multi:softprob":
            proba, label = raw, raw.argmax(axis=1).astype(np.int64)
        elif self.objective == "multi:softmax":
            proba, label = None, raw.astype(np.int64)
        else:
            proba, label = None, raw
        if "predict" in outputs:
            result["predict"] = label
        if "predict_proba" in outputs and proba is not None:
            result["predict_proba"] = proba
        return result


def load(path: str | None, options: LoadOptions) -> Runtime:
    if path is None:
        raise ModelLoadError("format 'xgboost' needs --model-uri")
    import xgboost

    booster = xgboost.Booster()
    try:
        booster.load_model(path)
    except xgboost.core.XGBoostError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"XGBoost could not load {path} ({first}); save the model with "
            "Booster.save_model / XGBClassifier.save_model as .json or .ubj"
        ) from exc
    return XGBoostRuntime(booster, options)
