"""LightGBM runtime: a text model file saved with ``Booster.save_model``.

Binary objectives return the positive-class probability, which becomes ``predict_proba`` (two
columns) and a 0/1 ``predict``; multiclass returns one column per class. Missing values are
natural to LightGBM and accepted by default.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ModelLoadError
from . import LoadOptions, OutputSpec, Runtime


class LightGBMRuntime(Runtime):
    platform = "lightgbm"
    allows_missing = True
    input_dtype = np.dtype(np.float64)

    def __init__(self, booster: Any, options: LoadOptions) -> None:
        self.booster = booster
        self.threads = options.threads
        objective = str(booster.dump_model(num_iteration=1).get("objective", "regression"))
        self.objective = objective.split()[0]
        self.n_features = int(booster.num_feature())
        self.feature_names = list(booster.feature_name())
        self.binary = self.objective in ("binary", "cross_entropy")
        self.multiclass = self.objective in ("multiclass", "multiclassova")
        classifier = self.binary or self.multiclass
        self.outputs = {"predict": OutputSpec("predict", "INT64" if classifier else "FP64")}
        if classifier:
            self.outputs["predict_proba"] = OutputSpec("predict_proba", "FP64")

    def predict(self, x: np.ndarray, outputs: frozenset[str]) -> dict[str, np.ndarray]:
        raw = np.asarray(self.booster.predict(x, num_threads=self.threads))
        if self.binary:
            proba = np.stack([1 - raw, raw], axis=1)
            label = (raw > 0.5).astype(np.int64)
        elif self.multiclass:
            proba, label = raw, raw.argmax(axis=1).astype(np.int64)
        else:
            proba, label = None, raw
        result = {"predict": label} if "predict" in outputs else {}
        if "predict_proba" in outputs and proba is not None:
            result["predict_proba"] = proba
        return result


def load(path: str | None, options: LoadOptions) -> Runtime:
    if path is None:
        raise ModelLoadError("format 'lightgbm' needs --model-uri")
    import lightgbm

    try:
        booster = lightgbm.Booster(model_file=path)
    except lightgbm.basic.LightGBMError as exc:
        raise ModelLoadError(
            f"LightGBM could not load {path} ({exc}); save the model with Booster.save_model"
        ) from exc
    return LightGBMRuntime(booster, options)
